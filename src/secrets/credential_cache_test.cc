#include "secrets/credential_cache.h"

#include <gtest/gtest.h>
#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <future>
#include <latch>
#include <new>
#include <thread>

// What the heap holds when a block is freed, for EvictedValueIsZeroedWhenItsLastReaderLetsGo:
// at each free, a look at the bytes of up to two watched ranges, in the block that contains
// them, just before that block goes back to the allocator. A SecretBytes that wiped its
// buffer shows zeros there, one that did not still shows the secret. In a plain build the
// global operator new/delete of this test binary are replaced by malloc/free (what
// libstdc++'s are) plus that look; a sanitizer's runtime owns operator new/delete, so
// there the look is its free hook, which runs before the block is released.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define DYAD_TEST_SANITIZER_ALLOCATOR 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define DYAD_TEST_SANITIZER_ALLOCATOR 1
#endif
#endif

namespace {
struct FreeWatch {
  std::atomic<const unsigned char*> begin{nullptr};
  size_t size = 0;
  std::atomic<bool> freed{false};
  std::atomic<bool> zeroed{false};
};
FreeWatch g_free_watch[2];

void LookBeforeFree(const void* p, size_t block_size) noexcept {
  if (!p) return;
  const auto* block = static_cast<const unsigned char*>(p);
  for (auto& w : g_free_watch) {
    const unsigned char* begin = w.begin.load(std::memory_order_acquire);
    if (!begin || begin < block || begin + w.size > block + block_size) continue;
    w.zeroed = std::all_of(begin, begin + w.size, [](unsigned char c) { return c == 0; });
    w.freed = true;
    w.begin.store(nullptr, std::memory_order_release);  // the block may be reused from here on
  }
}
}  // namespace

#ifdef DYAD_TEST_SANITIZER_ALLOCATOR
// From <sanitizer/allocator_interface.h>, which GCC does not ship (its runtimes have them).
extern "C" int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void*, size_t),
                                                         void (*free_hook)(const volatile void*));
extern "C" size_t __sanitizer_get_allocated_size(const volatile void* p);

namespace {
void InstallFreeWatch() {
  static const bool installed = __sanitizer_install_malloc_and_free_hooks(
      [](const volatile void*, size_t) {},
      [](const volatile void* p) {
        const void* block = const_cast<const void*>(p);
        if (g_free_watch[0].begin.load() || g_free_watch[1].begin.load()) {
          LookBeforeFree(block, __sanitizer_get_allocated_size(p));
        }
      }) != 0;
  ASSERT_TRUE(installed) << "no free hook";
}
}  // namespace
#else
namespace {
void InstallFreeWatch() {}
std::atomic<uint64_t> g_allocations{0};  // operator new calls, in a plain build
void* Allocate(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void Free(void* p) noexcept {
  if (p && (g_free_watch[0].begin.load() || g_free_watch[1].begin.load())) LookBeforeFree(p, malloc_usable_size(p));
  std::free(p);
}
}  // namespace

void* operator new(std::size_t n) { return Allocate(n); }
void* operator new[](std::size_t n) { return Allocate(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return std::malloc(n ? n : 1); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return std::malloc(n ? n : 1); }
void operator delete(void* p) noexcept { Free(p); }
void operator delete[](void* p) noexcept { Free(p); }
void operator delete(void* p, std::size_t) noexcept { Free(p); }
void operator delete[](void* p, std::size_t) noexcept { Free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { Free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { Free(p); }
// The over-aligned forms too (the cache's fronts and aliases are), so that g_allocations sees them.
namespace {
void* AllocateAligned(std::size_t n, std::align_val_t a) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  const size_t al = static_cast<size_t>(a);
  if (void* p = std::aligned_alloc(al, (n + al - 1) / al * al + (n ? 0 : al))) return p;
  throw std::bad_alloc();
}
}  // namespace
void* operator new(std::size_t n, std::align_val_t a) { return AllocateAligned(n, a); }
void* operator new[](std::size_t n, std::align_val_t a) { return AllocateAligned(n, a); }
void operator delete(void* p, std::align_val_t) noexcept { Free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { Free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { Free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { Free(p); }
#endif

namespace dyad {
namespace {

using namespace std::chrono_literals;

CredentialsPtr Creds(const std::string& value, int64_t version = 1) {
  auto c = std::make_shared<Credentials>();
  c->fields.emplace("api_key", SecretBytes(value));
  c->version = version;
  c->origin = "store";
  return c;
}

std::string Value(const CacheRead& r) { return std::string(r.value->fields.at("api_key").view()); }

class CacheTest : public ::testing::Test {
 protected:
  CacheOptions Options() {
    CacheOptions o;
    o.max_entries = 3;
    o.ttl = 300s;
    o.stale_if_error = 3600s;
    o.negative_ttl = 5s;
    o.error_backoff = 5s;
    return o;
  }
  // Refresh-ahead tasks queue here; tests run them when they choose.
  CredentialCache::Spawner Queue() {
    return [this](std::function<void()> f) { queued_.push_back(std::move(f)); };
  }
  CredentialCache::Loader Loader(const std::string& value) {
    return [this, value](const std::string&) -> Result<CredentialsPtr> {
      ++loads_;
      if (fail_) return *fail_;
      return Creds(value);
    };
  }

  FakeClock clock_;
  std::atomic<int> loads_{0};
  std::optional<Error> fail_;
  std::vector<std::function<void()>> queued_;
};

TEST_F(CacheTest, HitThenExpiryAfterTtl) {
  CredentialCache cache(Options(), clock_, Queue());
  auto r = cache.Get("a", Loader("v1"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->source, CacheSource::kLoaded);
  clock_.Advance(100s);
  r = cache.Get("a", Loader("v2"));
  EXPECT_EQ(r->source, CacheSource::kHit);
  EXPECT_EQ(Value(*r), "v1");
  clock_.Advance(201s);
  r = cache.Get("a", Loader("v2"));
  EXPECT_EQ(r->source, CacheSource::kLoaded);
  EXPECT_EQ(Value(*r), "v2");
  EXPECT_EQ(loads_, 2);
}

TEST_F(CacheTest, LruBoundEvictsLeastRecentlyUsed) {
  CredentialCache cache(Options(), clock_, Queue());
  for (std::string k : {"a", "b", "c"}) {
    ASSERT_TRUE(cache.Get(k, Loader(k)).ok());
    clock_.Advance(1s);
  }
  ASSERT_TRUE(cache.Get("a", Loader("a")).ok());  // a is now the most recent
  clock_.Advance(1s);
  ASSERT_TRUE(cache.Get("d", Loader("d")).ok());
  EXPECT_EQ(cache.Size(), 3u);
  EXPECT_EQ(cache.Stats().evictions, 1u);
  int before = loads_;
  EXPECT_EQ(cache.Get("a", Loader("a"))->source, CacheSource::kHit);
  EXPECT_EQ(cache.Get("c", Loader("c"))->source, CacheSource::kHit);
  EXPECT_EQ(cache.Get("b", Loader("b"))->source, CacheSource::kLoaded);  // b was evicted
  EXPECT_EQ(loads_, before + 1);
}

TEST_F(CacheTest, SingleFlightThousandConcurrentMisses) {
  CredentialCache cache(Options(), clock_, Queue());
  std::atomic<bool> release{false};
  std::atomic<int> calls{0};
  auto slow = [&](const std::string&) -> Result<CredentialsPtr> {
    ++calls;
    while (!release) std::this_thread::yield();
    return Creds("v");
  };
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < 1000; ++i) {
    threads.emplace_back([&] {
      auto r = cache.Get("k", slow);
      if (r.ok() && Value(*r) == "v") ++ok;
    });
  }
  // Every thread has missed (and so joined the one load in flight) before it
  // is let go: a miss is counted under the shard lock, before the join.
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (cache.Stats().misses < 1000 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  EXPECT_EQ(cache.Stats().misses, 1000u);
  EXPECT_EQ(calls, 1);  // all of them waiting on that one load
  release = true;
  for (auto& t : threads) t.join();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(ok, 1000);
}

TEST_F(CacheTest, StaleIfErrorInsideTheWindowThenErrorBeyond) {
  CredentialCache cache(Options(), clock_, Queue());
  ASSERT_TRUE(cache.Get("a", Loader("v1")).ok());
  fail_ = MakeError(ErrorCode::kUnavailable, "backend down");
  clock_.Advance(301s);
  auto r = cache.Get("a", Loader("v1"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->source, CacheSource::kStale);
  EXPECT_EQ(Value(*r), "v1");
  int loads = loads_;
  clock_.Advance(1s);  // inside the error backoff: no new call to the backend
  EXPECT_EQ(cache.Get("a", Loader("v1"))->source, CacheSource::kStale);
  EXPECT_EQ(loads_, loads);
  clock_.Advance(3600s);  // beyond ttl + stale window
  r = cache.Get("a", Loader("v1"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.code(), ErrorCode::kUnavailable);
  EXPECT_GE(cache.Stats().stale, 2u);
}

TEST_F(CacheTest, StaleIsNotServedForOtherErrors) {
  CredentialCache cache(Options(), clock_, Queue());
  ASSERT_TRUE(cache.Get("a", Loader("v1")).ok());
  fail_ = MakeError(ErrorCode::kPermissionDenied, "denied");
  clock_.Advance(301s);
  EXPECT_EQ(cache.Get("a", Loader("v1")).code(), ErrorCode::kPermissionDenied);
}

TEST_F(CacheTest, NegativeCachingOfNotFoundIsShort) {
  CredentialCache cache(Options(), clock_, Queue());
  fail_ = MakeError(ErrorCode::kNotFound, "none");
  EXPECT_EQ(cache.Get("a", Loader("x")).code(), ErrorCode::kNotFound);
  EXPECT_EQ(cache.Get("a", Loader("x")).code(), ErrorCode::kNotFound);
  EXPECT_EQ(loads_, 1);
  fail_.reset();
  clock_.Advance(6s);
  EXPECT_TRUE(cache.Get("a", Loader("x")).ok());
  EXPECT_EQ(loads_, 2);
}

TEST_F(CacheTest, InvalidationOnWrite) {
  CredentialCache cache(Options(), clock_, Queue());
  ASSERT_TRUE(cache.Get("a", Loader("old")).ok());
  cache.Invalidate("a");
  auto r = cache.Get("a", Loader("new"));
  EXPECT_EQ(r->source, CacheSource::kLoaded);
  EXPECT_EQ(Value(*r), "new");
}

TEST_F(CacheTest, LoadStartedBeforeInvalidationDoesNotReinsertOldValue) {
  CredentialCache cache(Options(), clock_, Queue());
  auto racing = [&](const std::string&) -> Result<CredentialsPtr> {
    cache.Invalidate("a");  // a write lands while this load is in flight
    return Creds("old");
  };
  auto r = cache.Get("a", racing);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(Value(*r), "old");  // the caller gets what it read ...
  EXPECT_EQ(cache.Get("a", Loader("new"))->source, CacheSource::kLoaded);  // ... but it was not cached
}

// Read-your-writes: a read that starts after a write was acknowledged never
// joins a load that began before the write (and so may return the old value).
TEST_F(CacheTest, ReadAfterInvalidationDoesNotJoinALoadBegunBefore) {
  CredentialCache cache(Options(), clock_, Queue());
  std::latch started(1), release(1);
  auto slow_old = [&](const std::string&) -> Result<CredentialsPtr> {
    started.count_down();
    release.wait();  // read the old value, then stalled before publishing
    return Creds("old");
  };
  auto before = std::async(std::launch::async, [&] { return cache.Get("a", slow_old); });
  started.wait();
  cache.Invalidate("a");  // the write is acknowledged here
  auto after = std::async(std::launch::async, [&] { return cache.Get("a", Loader("new")); });
  // Joining the stalled load would block until it is released: give up
  // waiting after a while, release it, and see what the late reader got.
  bool answered_alone = after.wait_for(5s) == std::future_status::ready;
  release.count_down();
  auto late = after.get();
  EXPECT_TRUE(answered_alone);
  ASSERT_TRUE(late.ok());
  EXPECT_EQ(Value(*late), "new");
  auto early = before.get();
  ASSERT_TRUE(early.ok());
  EXPECT_EQ(Value(*early), "old");  // it started before the write: either answer is allowed
  auto now = cache.Get("a", Loader("newer"));
  ASSERT_TRUE(now.ok());
  EXPECT_EQ(Value(*now), "new");  // the old load published nothing over the new value
  EXPECT_EQ(now->source, CacheSource::kHit);
}

TEST_F(CacheTest, RefreshAheadRunsInTheBackground) {
  CredentialCache cache(Options(), clock_, Queue());
  ASSERT_TRUE(cache.Get("a", Loader("v1")).ok());
  clock_.Advance(280s);  // inside the last 10% of the TTL
  auto r = cache.Get("a", Loader("v2"));
  EXPECT_EQ(r->source, CacheSource::kHit);
  EXPECT_EQ(Value(*r), "v1");
  ASSERT_EQ(queued_.size(), 1u);
  EXPECT_EQ(cache.Get("a", Loader("v2"))->source, CacheSource::kHit);
  EXPECT_EQ(queued_.size(), 1u);  // one refresh at a time
  queued_[0]();
  clock_.Advance(30s);  // past the first TTL: the refreshed entry is fresh
  r = cache.Get("a", Loader("v3"));
  EXPECT_EQ(r->source, CacheSource::kHit);
  EXPECT_EQ(Value(*r), "v2");
}

// GetIfFresh (the /v1 path on an I/O thread) never loads and never waits:
// a fresh hit or null, the rest left to Get.
TEST_F(CacheTest, GetIfFreshServesOnlyAFreshHitAndNeverLoads) {
  CredentialCache cache(Options(), clock_, Queue());
  EXPECT_EQ(cache.GetIfFresh("a", Loader("v1")), nullptr);  // a miss: not loaded here
  EXPECT_EQ(loads_, 0);
  EXPECT_EQ(cache.Stats().misses, 0u);  // nor counted: Get counts it when it loads
  ASSERT_TRUE(cache.Get("a", Loader("v1")).ok());
  const uint64_t hits = cache.Stats().hits;
  CredentialsPtr fresh = cache.GetIfFresh("a", Loader("v2"));
  ASSERT_NE(fresh, nullptr);
  EXPECT_EQ(std::string(fresh->fields.at("api_key").view()), "v1");
  EXPECT_EQ(cache.Stats().hits, hits + 1);
  clock_.Advance(301s);  // expired: Get would load (or serve stale)
  EXPECT_EQ(cache.GetIfFresh("a", Loader("v2")), nullptr);
  EXPECT_EQ(loads_, 1);
  fail_ = MakeError(ErrorCode::kUnavailable, "down");
  EXPECT_EQ(cache.Get("a", Loader("v2"))->source, CacheSource::kStale);
  EXPECT_EQ(cache.GetIfFresh("a", Loader("v2")), nullptr);  // stale is Get's to serve
}

TEST_F(CacheTest, GetIfFreshLeavesANotFoundEntryToGet) {
  CredentialCache cache(Options(), clock_, Queue());
  fail_ = MakeError(ErrorCode::kNotFound, "none");
  EXPECT_EQ(cache.Get("a", Loader("x")).code(), ErrorCode::kNotFound);
  const uint64_t hits = cache.Stats().hits;
  EXPECT_EQ(cache.GetIfFresh("a", Loader("x")), nullptr);
  EXPECT_EQ(cache.Stats().hits, hits);  // Get counts the negative hit when it answers it
  EXPECT_EQ(loads_, 1);
}

TEST_F(CacheTest, GetIfFreshStartsTheRefreshAheadAsGetDoes) {
  CredentialCache cache(Options(), clock_, Queue());
  ASSERT_TRUE(cache.Get("a", Loader("v1")).ok());
  clock_.Advance(280s);  // inside the last 10% of the TTL
  ASSERT_NE(cache.GetIfFresh("a", Loader("v2")), nullptr);
  ASSERT_EQ(queued_.size(), 1u);
  queued_[0]();
  clock_.Advance(30s);
  CredentialsPtr fresh = cache.GetIfFresh("a", Loader("v3"));
  ASSERT_NE(fresh, nullptr);
  EXPECT_EQ(std::string(fresh->fields.at("api_key").view()), "v2");
}

TEST_F(CacheTest, ClearReturnsCount) {
  CredentialCache cache(Options(), clock_, Queue());
  ASSERT_TRUE(cache.Get("a", Loader("a")).ok());
  ASSERT_TRUE(cache.Get("b", Loader("b")).ok());
  EXPECT_EQ(cache.Clear(), 2u);
  EXPECT_EQ(cache.Size(), 0u);
}

TEST_F(CacheTest, EvictedValueIsZeroedWhenItsLastReaderLetsGo) {
  InstallFreeWatch();
  for (auto& w : g_free_watch) {
    w.freed = false;
    w.zeroed = false;
  }
  CredentialCache cache(Options(), clock_, Queue());
  const std::string long_secret(100, 'L');  // on the heap
  const std::string short_secret = "s3cr";   // small enough to sit inside the object
  std::weak_ptr<const Credentials> weak;
  {
    auto r = cache.Get("a", [&](const std::string&) -> Result<CredentialsPtr> {
      auto c = std::make_shared<Credentials>();
      c->fields.emplace("api_key", SecretBytes(long_secret));
      c->fields.emplace("org", SecretBytes(short_secret));
      return CredentialsPtr(std::move(c));
    });
    ASSERT_TRUE(r.ok());
    weak = r->value;
    const SecretBytes& a = r->value->fields.at("api_key");
    const SecretBytes& o = r->value->fields.at("org");
    ASSERT_EQ(a.view(), long_secret);
    g_free_watch[0].size = a.size();
    g_free_watch[0].begin = a.data();
    g_free_watch[1].size = o.size();
    g_free_watch[1].begin = o.data();
  }
  EXPECT_FALSE(weak.expired());  // the cache still holds it
  EXPECT_FALSE(g_free_watch[0].freed);
  for (std::string k : {"b", "c", "d"}) {
    clock_.Advance(1s);
    ASSERT_TRUE(cache.Get(k, Loader(k)).ok());
  }
  EXPECT_EQ(cache.Stats().evictions, 1u);
  EXPECT_TRUE(weak.expired());  // evicted, and no reader holds it: released
  for (auto& w : g_free_watch) {
    w.begin = nullptr;
    EXPECT_TRUE(w.freed) << "the secret's bytes were never handed back to the heap";
    EXPECT_TRUE(w.zeroed) << "the secret's bytes were freed without being zeroed";
  }
}

// The per-thread fronts (see the header's opening comment).

TEST_F(CacheTest, HitsFromAThreadsFrontAreCounted) {
  CredentialCache cache(Options(), clock_, Queue());
  ASSERT_EQ(cache.Get("a", Loader("v1"))->source, CacheSource::kLoaded);
  for (int i = 0; i < 5; ++i) {
    auto r = cache.Get("a", Loader("v2"));
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->source, CacheSource::kHit);
    EXPECT_EQ(Value(*r), "v1");
  }
  EXPECT_EQ(cache.Stats().hits, 5u);
  EXPECT_EQ(loads_, 1);
}

// Read-your-writes across threads: a reader whose front holds the old value
// reads the new one once Invalidate() has returned, with no clock movement.
TEST_F(CacheTest, InvalidateReachesEveryThreadsFront) {
  CredentialCache cache(Options(), clock_, Queue());
  std::latch filled(1), written(1);
  std::string seen_after;
  CacheSource source_after = CacheSource::kHit;
  std::thread reader([&] {
    for (int i = 0; i < 3; ++i) ASSERT_EQ(Value(*cache.Get("a", Loader("old"))), "old");  // load, fill, front hit
    filled.count_down();
    written.wait();
    auto r = cache.Get("a", Loader("new"));
    seen_after = Value(*r);
    source_after = r->source;
  });
  filled.wait();
  cache.Invalidate("a");
  written.count_down();
  reader.join();
  EXPECT_EQ(seen_after, "new");
  EXPECT_EQ(source_after, CacheSource::kLoaded);
}

// A front never serves past the start of the refresh-ahead window: the read
// there goes to the shard, which starts the refresh.
TEST_F(CacheTest, FrontEntryEndsWhereRefreshAheadBegins) {
  CredentialCache cache(Options(), clock_, Queue());
  ASSERT_TRUE(cache.Get("a", Loader("v1")).ok());
  clock_.Advance(270s - 1ms);
  ASSERT_EQ(cache.Get("a", Loader("v2"))->source, CacheSource::kHit);  // fills the front until 270 s
  EXPECT_TRUE(queued_.empty());
  clock_.Advance(2ms);
  EXPECT_EQ(Value(*cache.Get("a", Loader("v2"))), "v1");
  EXPECT_EQ(queued_.size(), 1u);
}

TEST_F(CacheTest, FrontEntryLivesAtMostTheFrontLifetime) {
  CredentialCache cache(Options(), clock_, nullptr);
  ASSERT_TRUE(cache.Get("a", Loader("v1")).ok());
  ASSERT_TRUE(cache.Get("a", Loader("v1")).ok());  // fills the front
  EXPECT_EQ(cache.Stats().hits, 1u);
  ASSERT_TRUE(cache.Get("a", Loader("v1")).ok());  // served by the front
  clock_.Advance(CredentialCache::kFrontLifetime);
  ASSERT_TRUE(cache.Get("a", Loader("v1")).ok());  // back to the shard, which records the access for the LRU
  EXPECT_EQ(cache.Stats().hits, 3u);
  EXPECT_EQ(loads_, 1);
}

// An evicted value held only by another thread's front (that thread alive
// and idle) is released: the eviction sweeps every front.
TEST_F(CacheTest, EvictionReleasesTheValueFromAnIdleThreadsFront) {
  CredentialCache cache(Options(), clock_, Queue());
  std::weak_ptr<const Credentials> weak;
  std::latch filled(1), done(1);
  std::thread reader([&] {
    auto first = cache.Get("a", Loader("a"));
    weak = first->value;
    first = MakeError(ErrorCode::kInternal, "drop the reader's own reference");
    for (int i = 0; i < 2; ++i) ASSERT_EQ(cache.Get("a", Loader("a"))->source, CacheSource::kHit);
    filled.count_down();
    done.wait();
  });
  filled.wait();
  EXPECT_FALSE(weak.expired());
  for (std::string k : {"b", "c", "d"}) {
    clock_.Advance(1s);
    ASSERT_TRUE(cache.Get(k, Loader(k)).ok());
  }
  EXPECT_EQ(cache.Stats().evictions, 1u);
  EXPECT_TRUE(weak.expired()) << "a thread's front kept an evicted value alive";
  done.count_down();
  reader.join();
}

TEST_F(CacheTest, ClearEmptiesEveryThreadsFront) {
  CredentialCache cache(Options(), clock_, Queue());
  std::weak_ptr<const Credentials> weak;
  {
    auto r = cache.Get("a", Loader("a"));
    weak = r->value;
  }
  ASSERT_EQ(cache.Get("a", Loader("a"))->source, CacheSource::kHit);
  ASSERT_EQ(cache.Get("a", Loader("a"))->source, CacheSource::kHit);
  EXPECT_EQ(cache.Clear(), 1u);
  EXPECT_TRUE(weak.expired());
  EXPECT_EQ(cache.Get("a", Loader("b"))->source, CacheSource::kLoaded);
}

// Many readers of one hot key while a writer replaces it: a read that
// begins after a write was acknowledged never returns an older version.
TEST_F(CacheTest, HotKeyReadersNeverSeeAVersionOlderThanTheLastAcknowledgedWrite) {
  CredentialCache cache(Options(), clock_, Queue());
  std::atomic<int64_t> current{1}, acknowledged{1};
  const CredentialCache::Loader load = [&](const std::string&) -> Result<CredentialsPtr> { return Creds("v", current.load()); };
  std::atomic<bool> stop{false};
  std::atomic<int> stale_reads{0};
  std::atomic<uint64_t> reads{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        const int64_t floor = acknowledged.load();
        auto r = cache.Get("hot", load);
        if (!r.ok() || r->value->version < floor) ++stale_reads;
        if (++reads % 64 == 0) std::this_thread::yield();  // let the writer run on a busy machine
      }
    });
  }
  for (int64_t v = 2; v <= 200; ++v) {
    // Reads between every two writes, however the threads are scheduled (a
    // slow sanitizer build once let the writer finish before any read).
    while (reads.load() < static_cast<uint64_t>(2 * v)) std::this_thread::yield();
    current.store(v);
    cache.Invalidate("hot");  // the write of version v is acknowledged when this returns
    acknowledged.store(v);
    if (v % 50 == 0) cache.Clear();
    std::this_thread::yield();
  }
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(stale_reads.load(), 0);
  EXPECT_GT(reads.load(), 200u);
}

}  // namespace
}  // namespace dyad

namespace dyad {
namespace {

size_t HeapInUse() {
  struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

// A thread that exits must not leave its front (~16 KB with the default 100
// entries) behind until some write sweeps: threads made per task on a cache
// nobody writes would grow the heap without bound.
TEST_F(CacheTest, FrontsOfEndedThreadsAreReclaimedWithoutAWrite) {
  CacheOptions o;  // the defaults, as SecretsService uses them
  CredentialCache cache(o, clock_, nullptr);
  ASSERT_TRUE(cache.Get("hot", Loader("v")).ok());
  auto read_in_a_new_thread = [&] {
    std::thread t([&] {
      for (int i = 0; i < 2; ++i) (void)cache.Get("hot", Loader("v"));
    });
    t.join();
  };
  read_in_a_new_thread();  // whatever a first thread allocates once
  const size_t before = HeapInUse();
  for (int i = 0; i < 1000; ++i) read_in_a_new_thread();
  const size_t after = HeapInUse();
  const size_t grown = after > before ? after - before : 0;
  EXPECT_LT(grown, size_t{1} << 20) << "1000 exited threads left " << grown << " bytes of fronts behind";
}

// A thread_local made before the thread's first cache read is destroyed
// after the thread's fronts; its destructor may still read caches (and so
// may static destructors and atexit handlers on the main thread): reads then
// skip the fronts instead of using freed ones.
struct RunAtThreadExit {
  std::function<void()> fn;
  ~RunAtThreadExit() {
    if (fn) fn();
  }
};

TEST_F(CacheTest, ReadFromAThreadLocalDestructorIsSafe) {
  CredentialCache cache(Options(), clock_, nullptr);
  CredentialCache other(Options(), clock_, nullptr);
  ASSERT_TRUE(cache.Get("a", Loader("a")).ok());
  ASSERT_TRUE(other.Get("b", Loader("b")).ok());
  std::string seen_a, seen_b;
  std::thread t([&] {
    thread_local RunAtThreadExit at_exit;  // constructed before the cache's thread-local state
    at_exit.fn = [&] {
      (void)cache.Get("a", Loader("a"));   // refills the front ~ThreadFronts retired
      cache.Invalidate("unrelated");       // the sweep frees that retired front
      auto r = cache.Get("a", Loader("a"));  // ThreadFronts::last now dangles
      if (r.ok()) seen_a = Value(*r);
      (void)other.Get("b", Loader("b"));   // walks/grows ThreadFronts::all, a destroyed vector
      auto r2 = other.Get("b", Loader("b"));
      if (r2.ok()) seen_b = Value(*r2);
    };
    for (int i = 0; i < 2; ++i) (void)cache.Get("a", Loader("a"));
  });
  t.join();
  EXPECT_EQ(seen_a, "a");
  EXPECT_EQ(seen_b, "b");
}

}  // namespace
}  // namespace dyad

namespace dyad {
namespace {

// Stress (for TSan too): read-your-writes on several keys under
// eviction (3 entries, 5 keys), Clear, refresh ahead run inline, expiry, and
// reader threads that come and go (new fronts made during sweeps).
TEST_F(CacheTest, StressReadYourWritesWithEvictionRefreshAndShortLivedReaders) {
  std::atomic<int64_t> current[5], acknowledged[5];
  for (int k = 0; k < 5; ++k) current[k] = acknowledged[k] = 1;
  CredentialCache cache(Options(), clock_, [](std::function<void()> f) { f(); });
  auto key = [](int k) { return "k" + std::to_string(k); };
  const CredentialCache::Loader load = [&](const std::string& k) -> Result<CredentialsPtr> {
    return Creds("v", current[k[1] - '0'].load());
  };
  std::atomic<bool> stop{false};
  std::atomic<int> stale_reads{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&, t] {
      while (!stop.load()) {
        std::thread shortlived([&] {
          for (int i = 0; i < 200 && !stop.load(); ++i) {
            const int k = (i * 7 + t) % 5;
            const int64_t floor = acknowledged[k].load();
            auto r = cache.Get(key(k), load);
            if (r.ok() && r->value->version < floor) ++stale_reads;
          }
        });
        shortlived.join();
      }
    });
  }
  for (int64_t v = 2; v <= 20000; ++v) {
    const int k = static_cast<int>(v % 5);
    current[k].store(v);
    cache.Invalidate(key(k));
    acknowledged[k].store(v);
    if (v % 97 == 0) cache.Clear();
    if (v % 13 == 0) clock_.Advance(std::chrono::milliseconds(3));
    if (v % 101 == 0) clock_.Advance(275s);
    std::this_thread::yield();
  }
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(stale_reads.load(), 0);
}

// The size is counted where the entry is made, under the shard's lock: an
// Invalidate() right after a load's insert never subtracts first (the size
// wrapped below zero, and /metrics and the LRU bound read it so).
TEST_F(CacheTest, SizeNeverCountsBelowZeroWhileLoadsAndInvalidationsRace) {
  CredentialCache cache(Options(), clock_, Queue());
  std::atomic<bool> stop{false};
  std::thread invalidator([&] {
    while (!stop.load(std::memory_order_relaxed)) cache.Invalidate("a");
  });
  size_t largest = 0;
  std::thread watcher([&] {
    while (!stop.load(std::memory_order_relaxed)) largest = std::max(largest, cache.Size());
  });
  int failed = 0;
  for (int i = 0; i < 300000; ++i) {
    if (!cache.Get("a", Loader("v")).ok()) ++failed;
    if (i % 2) cache.Invalidate("a");  // the next Get loads, as the invalidator may
  }
  stop = true;
  invalidator.join();
  watcher.join();
  EXPECT_EQ(failed, 0);
  EXPECT_LE(largest, 1u);
  EXPECT_LE(cache.Size(), 1u);
  EXPECT_EQ(cache.Stats().evictions, 0u);
}

}  // namespace
}  // namespace dyad

namespace dyad {
namespace {

// More keys than a front holds (2 x max_entries slots, at most 512): the
// keys that do not fit are served by the shards, without churning the
// front (a new alias per hit made a hit 2-3x slower than the shards alone).
TEST_F(CacheTest, HitsOnAWorkingSetLargerThanTheFrontAllocateNothing) {
#ifdef DYAD_TEST_SANITIZER_ALLOCATOR
  GTEST_SKIP() << "counts operator new of the plain build";
#else
  CacheOptions o = Options();
  o.max_entries = 1000;
  CredentialCache cache(o, clock_, nullptr);
  std::vector<std::string> keys;
  for (int i = 0; i < 1000; ++i) keys.push_back("2f1c7e4a-8d3b-4c55-9e61-" + std::to_string(100000000000 + i));
  auto v = Creds("v");
  const CredentialCache::Loader load = [&](const std::string&) -> Result<CredentialsPtr> { return v; };
  for (const auto& k : keys) ASSERT_TRUE(cache.Get(k, load).ok());
  for (const auto& k : keys) ASSERT_EQ(cache.Get(k, load)->source, CacheSource::kHit);
  const uint64_t before = g_allocations.load();
  for (const auto& k : keys) ASSERT_EQ(cache.Get(k, load)->source, CacheSource::kHit);
  const uint64_t allocated = g_allocations.load() - before;
  EXPECT_EQ(allocated, 0u) << "1000 hits allocated " << allocated << " times";
#endif
}

}  // namespace
}  // namespace dyad
