#include "secrets/credential_cache.h"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <latch>
#include <thread>

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
    return [this, value]() -> Result<CredentialsPtr> {
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
  auto slow = [&]() -> Result<CredentialsPtr> {
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
  while (calls == 0) std::this_thread::yield();
  std::this_thread::sleep_for(50ms);  // let the others pile up behind the one load
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
  auto racing = [&]() -> Result<CredentialsPtr> {
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
  auto slow_old = [&]() -> Result<CredentialsPtr> {
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

TEST_F(CacheTest, ClearReturnsCount) {
  CredentialCache cache(Options(), clock_, Queue());
  ASSERT_TRUE(cache.Get("a", Loader("a")).ok());
  ASSERT_TRUE(cache.Get("b", Loader("b")).ok());
  EXPECT_EQ(cache.Clear(), 2u);
  EXPECT_EQ(cache.Size(), 0u);
}

TEST_F(CacheTest, EvictedValueIsReleased) {
  CredentialCache cache(Options(), clock_, Queue());
  std::weak_ptr<const Credentials> weak;
  {
    auto r = cache.Get("a", Loader("a"));
    weak = r->value;
  }
  for (std::string k : {"b", "c", "d"}) {
    clock_.Advance(1s);
    ASSERT_TRUE(cache.Get(k, Loader(k)).ok());
  }
  EXPECT_TRUE(weak.expired());  // no reader holds it: its SecretBytes were zeroed
}

}  // namespace
}  // namespace dyad
