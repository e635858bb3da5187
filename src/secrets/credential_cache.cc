#include "secrets/credential_cache.h"

#include <algorithm>
#include <bit>
#include <limits>

namespace dyad {
namespace {

std::atomic<uint64_t> g_next_cache_id{1};

constexpr size_t kFrontProbes = 4;  // slots a key may sit in: hash, hash+1, …

// The reference a front hands out: an alias of the shared value whose
// control block is this holder's, made for one thread, so copying it counts
// on a line of that thread's. The holder owns one reference to the value.
// Aligned so that its counts share a cache line with nothing else.
struct alignas(64) AliasHolder {
  CredentialsPtr value;
};

CredentialsPtr PerThreadAlias(const CredentialsPtr& value) {
  auto holder = std::make_shared<AliasHolder>(AliasHolder{value});
  return CredentialsPtr(holder, value.get());
}

}  // namespace

struct alignas(64) CredentialCache::Front {
  struct Slot {
    size_t hash = 0;
    std::string key;
    CredentialsPtr value;  // a per-thread alias; null: an empty slot
    Clock::Instant until{};
  };

  explicit Front(size_t n) : mask(n - 1), slots(n) {}

  // The owner's hit counter: only the owner writes it (a load and a store,
  // no read-modify-write); Stats() reads it.
  void CountHit() { hits.store(hits.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed); }

  Slot* Find(size_t hash, const std::string& key) DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    for (size_t i = 0; i < kFrontProbes; ++i) {
      Slot& s = slots[(hash + i) & mask];
      if (s.value && s.hash == hash && s.key == key) return &s;
    }
    return nullptr;
  }
  // An empty or expired slot where `hash` may go, else null: live entries
  // are never pushed out, so a working set larger than the front leaves
  // the rest to the shards instead of churning.
  Slot* Free(size_t hash, Clock::Instant now) DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    for (size_t i = 0; i < kFrontProbes; ++i) {
      Slot& s = slots[(hash + i) & mask];
      if (!s.value || s.until <= now) return &s;
    }
    return nullptr;
  }
  // Empties the key's slot (every slot when `key` is null), moving the
  // values to `released`, to be let go after the lock.
  void Drop(const std::string* key, std::vector<CredentialsPtr>& released) DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    auto empty = [&](Slot& s) {
      if (s.value) released.push_back(std::move(s.value));
      s = Slot{};
    };
    if (!key) {
      for (Slot& s : slots) empty(s);
    } else if (Slot* s = Find(std::hash<std::string>{}(*key), *key)) {
      empty(*s);
    }
  }
  // Its thread ended, or its cache did: it stays empty from now on.
  void Retire() {
    std::vector<CredentialsPtr> released;
    SpinLockHolder lock(&mu);
    retired = true;
    Drop(nullptr, released);
  }

  SpinLock mu;
  std::atomic<uint64_t> hits{0};
  const size_t mask;
  bool retired DYAD_GUARDED_BY(mu) = false;
  std::vector<Slot> slots DYAD_GUARDED_BY(mu);
};

struct CredentialCache::ThreadFronts {
  uint64_t last_id = 0;  // the cache read last, and its front
  Front* last = nullptr;
  std::vector<std::pair<uint64_t, std::shared_ptr<Front>>> all;
};

CredentialCache::CredentialCache(CacheOptions options, const Clock& clock, Spawner spawn)
    : options_(options), clock_(clock), spawn_(std::move(spawn)), id_(g_next_cache_id.fetch_add(1)) {
  size_t want = options_.shards ? options_.shards : std::clamp<size_t>(options_.max_entries * 8, 64, 4096);
  options_.shards = std::bit_ceil(want);
  shard_mask_ = options_.shards - 1;
  shards_ = std::make_unique<Shard[]>(options_.shards);
  refresh_ahead_ = std::chrono::duration_cast<Clock::Duration>(options_.ttl * options_.refresh_ahead_fraction);
  front_slots_ = std::bit_ceil(std::clamp<size_t>(options_.max_entries * 2, 16, 512));
}

CredentialCache::~CredentialCache() {
  MutexLock lock(&fronts_mu_);
  for (auto& front : fronts_) front->Retire();
}

// The thread's fronts live behind trivially destructible thread_locals, so
// code that runs while the thread's thread_locals are destroyed (another
// one's destructor, or at exit static destructors and atexit handlers) can
// still call Get(): once the reaper has run, reads skip the fronts.
CredentialCache::ThreadFronts* CredentialCache::ThisThread(bool create) {
  thread_local ThreadFronts* fronts = nullptr;
  thread_local bool ended = false;
  struct Reaper {
    ~Reaper() {
      ended = true;
      for (auto& [id, front] : fronts->all) front->Retire();
      delete fronts;
      fronts = nullptr;
    }
  };
  if (fronts || ended || !create) return fronts;
  fronts = new ThreadFronts;
  // Made after `fronts`: destroyed before every thread_local made earlier
  // (whose destructors then find `ended`), after every one made later
  // (whose destructors may still use the fronts).
  thread_local Reaper reaper;
  (void)reaper;
  return fronts;
}

CredentialCache::Front* CredentialCache::FrontOfThisThread(bool create) {
  ThreadFronts* t = ThisThread(create);
  if (!t) return nullptr;
  if (t->last_id == id_) return t->last;
  for (auto& [id, front] : t->all) {
    if (id == id_) {
      t->last_id = id;
      t->last = front.get();
      return t->last;
    }
  }
  if (!create) return nullptr;
  // Fronts of caches since destroyed are dropped as this thread meets a new one.
  std::erase_if(t->all, [](const auto& entry) {
    SpinLockHolder lock(&entry.second->mu);
    return entry.second->retired;
  });
  auto made = std::make_shared<Front>(front_slots_);
  {
    MutexLock lock(&fronts_mu_);
    std::vector<CredentialsPtr> none;
    SweepFronts(nullptr, /*drop=*/false, none);  // let go of the fronts of threads that ended
    fronts_.push_back(made);
  }
  t->all.emplace_back(id_, made);
  t->last_id = id_;
  t->last = made.get();
  return t->last;
}

void CredentialCache::FillFront(Shard& shard, Front& front, size_t hash, const std::string& key, const Shard::Entry& e,
                                Clock::Instant now) {
  // Never past the point where the shard path has work to do for this key.
  Clock::Instant until = e.leased || !spawn_ ? e.expires : e.expires - refresh_ahead_;
  until = std::min(until, now + kFrontLifetime);
  if (until <= now || !e.value) return;
  {
    SpinLockHolder lock(&front.mu);
    if (Front::Slot* s = front.Find(hash, key); s && s->value.get() == e.value.get()) {
      s->until = until;  // the same value: no new alias
      return;
    }
    if (!front.Find(hash, key) && !front.Free(hash, now)) return;  // no room: the shard serves this key
  }
  // Only this thread fills its front, and sweeps only empty slots, so the
  // room found above is still there; the alias is made outside the lock.
  CredentialsPtr alias = PerThreadAlias(e.value);
  CredentialsPtr released;  // let go after the lock
  SpinLockHolder lock(&front.mu);
  Front::Slot* s = front.Find(hash, key);
  if (!s) s = front.Free(hash, now);
  if (!s) return;
  released = std::move(s->value);
  s->hash = hash;
  if (s->key != key) s->key = key;
  s->value = std::move(alias);
  s->until = until;
}

void CredentialCache::SweepFronts(const std::string* key, bool drop, std::vector<CredentialsPtr>& released) {
  for (size_t i = 0; i < fronts_.size();) {
    const std::shared_ptr<Front> front = fronts_[i];  // outlives front_lock
    SpinLockHolder front_lock(&front->mu);
    if (front->retired) {  // its thread ended: keep its count, let it go
      retired_front_hits_ += front->hits.load(std::memory_order_relaxed);
      fronts_[i] = std::move(fronts_.back());
      fronts_.pop_back();
      continue;
    }
    if (drop) front->Drop(key, released);
    ++i;
  }
}

void CredentialCache::DropFromFronts(const std::string* key) {
  std::vector<CredentialsPtr> released;  // let go after the locks
  MutexLock lock(&fronts_mu_);
  SweepFronts(key, /*drop=*/true, released);
}

static Error NotFoundError(const std::string& key) {
  return MakeError(ErrorCode::kNotFound, "no credentials for '" + key + "'");
}

Result<CacheRead> CredentialCache::Get(const std::string& key, const Loader& loader) {
  return *Lookup(key, loader, /*may_wait=*/true);
}

CredentialsPtr CredentialCache::GetIfFresh(const std::string& key, const Loader& loader) {
  auto read = Lookup(key, loader, /*may_wait=*/false);
  return read && read->ok() && (*read)->source == CacheSource::kHit ? (*read)->value : nullptr;
}

std::optional<Result<CacheRead>> CredentialCache::Lookup(const std::string& key, const Loader& loader, bool may_wait) {
  const Clock::Instant now = clock_.CoarseNow();
  const size_t hash = std::hash<std::string>{}(key);
  Front* front = FrontOfThisThread(/*create=*/true);
  if (front) {
    front->mu.Lock();
    if (Front::Slot* s = front->Find(hash, key); s && now < s->until) {
      CacheRead read{s->value, CacheSource::kHit};
      front->mu.Unlock();
      front->CountHit();
      return read;
    }
    front->mu.Unlock();
  }
  Shard& shard = ShardFor(hash);
  shard.mu.Lock();
  CredentialsPtr stale_value;
  Clock::Instant stale_until{};
  auto it = shard.entries.find(key);
  if (it != shard.entries.end()) {
    auto& e = it->second;
    if (now < e.expires) {
      if (e.last_access != now) e.last_access = now;  // coarse time: rarely a write
      if (!e.value) {
        if (may_wait) ++shard.hits;
        shard.mu.Unlock();
        if (!may_wait) return std::nullopt;
        return NotFoundError(key);
      }
      ++shard.hits;
      CacheRead read{e.value, CacheSource::kHit};
      if (!e.refreshing && !e.leased && now >= e.expires - refresh_ahead_ && spawn_) {
        e.refreshing = true;
        shard.mu.Unlock();
        StartRefresh(shard, key, loader);
        return read;
      }
      if (front) FillFront(shard, *front, hash, key, e, now);
      shard.mu.Unlock();
      return read;
    }
    if (!may_wait) {
      shard.mu.Unlock();
      return std::nullopt;
    }
    if (e.value && now < e.stale_until && now < e.retry_after) {
      // The last load failed moments ago: serve stale without asking again.
      e.last_access = now;
      ++shard.stale;
      CacheRead read{e.value, CacheSource::kStale};
      shard.mu.Unlock();
      return read;
    }
    stale_value = e.value;
    stale_until = e.stale_until;
  }
  if (!may_wait) {
    shard.mu.Unlock();
    return std::nullopt;
  }
  ++shard.misses;
  return LoadOrJoin(shard, key, loader, std::move(stale_value), stale_until);
}

Result<CacheRead> CredentialCache::LoadOrJoin(Shard& shard, const std::string& key, const Loader& loader,
                                              CredentialsPtr stale_value, Clock::Instant stale_until) {
  std::shared_ptr<Flight> flight;
  bool leader = false;
  if (auto f = shard.flights.find(key); f != shard.flights.end()) {
    flight = f->second;
  } else {
    flight = std::make_shared<Flight>();
    shard.flights.emplace(key, flight);
    leader = true;
  }
  const uint64_t epoch = shard.epoch;
  shard.mu.Unlock();

  std::optional<Result<CredentialsPtr>> result;
  if (leader) {
    result.emplace(loader(key));
    Publish(shard, key, flight, epoch, *result, clock_.CoarseNow());
    {
      MutexLock fl(&flight->mu);
      flight->result = *result;
    }
    flight->cv.SignalAll();
  } else {
    MutexLock fl(&flight->mu);
    while (!flight->result.has_value()) flight->cv.Wait(&flight->mu);
    result = *flight->result;
  }
  if (result->ok()) return CacheRead{result->value(), CacheSource::kLoaded};
  if (result->code() == ErrorCode::kUnavailable && stale_value && clock_.CoarseNow() < stale_until) {
    MutexLock relock(&shard.mu);
    ++shard.stale;
    return CacheRead{std::move(stale_value), CacheSource::kStale};
  }
  return result->error();
}

void CredentialCache::Publish(Shard& shard, const std::string& key, const std::shared_ptr<Flight>& flight,
                              uint64_t epoch, const Result<CredentialsPtr>& result, Clock::Instant now) {
  bool grew = false, replaced = false;
  {
    MutexLock lock(&shard.mu);
    // An invalidation may have detached this flight, and a later reader
    // started another under the same key: that one is not ours to end.
    if (auto f = shard.flights.find(key); f != shard.flights.end() && f->second == flight) shard.flights.erase(f);
    ++shard.loads;
    if (!result.ok()) ++shard.load_errors;
    bool current = shard.epoch == epoch;  // no invalidation since the load began
    auto it = shard.entries.find(key);
    if (result.ok() || result.code() == ErrorCode::kNotFound) {
      if (!current) return;
      Shard::Entry e;
      e.value = result.ok() ? result.value() : nullptr;
      e.expires = now + (result.ok() ? options_.ttl : options_.negative_ttl);
      e.stale_until = result.ok() ? e.expires + options_.stale_if_error : e.expires;
      if (e.value && e.value->refresh_by < e.expires) {
        // Leased: kept until the next renewal is due, which a load then makes
        // (no refresh ahead: a load before then would find the same lease).
        e.expires = e.value->refresh_by;
        e.leased = true;
      }
      if (e.value) e.stale_until = std::min(e.stale_until, e.value->usable_until);
      e.retry_after = now;
      e.last_access = now;
      if (it == shard.entries.end()) {
        shard.entries.emplace(key, std::move(e));
        // Counted under the shard's lock: an Invalidate() of this entry,
        // which takes it next, never subtracts before this adds (a wrapped
        // size would make EvictIfFull() evict live entries).
        size_.fetch_add(1, std::memory_order_relaxed);
        grew = true;
      } else {
        replaced = it->second.value != e.value;
        it->second = std::move(e);
      }
    } else if (it != shard.entries.end()) {
      it->second.retry_after = now + options_.error_backoff;
      it->second.refreshing = false;
    }
  }
  if (replaced) DropFromFronts(&key);
  if (grew) EvictIfFull();
}

void CredentialCache::StartRefresh(Shard& shard, const std::string& key, const Loader& loader) {
  std::shared_ptr<Flight> flight;
  uint64_t epoch;
  {
    MutexLock lock(&shard.mu);
    if (shard.flights.count(key)) return;
    flight = std::make_shared<Flight>();
    shard.flights.emplace(key, flight);
    epoch = shard.epoch;
  }
  spawn_([this, &shard, key, loader, flight, epoch] {
    Result<CredentialsPtr> result = loader(key);
    Publish(shard, key, flight, epoch, result, clock_.CoarseNow());
    {
      MutexLock fl(&flight->mu);
      flight->result = result;
    }
    flight->cv.SignalAll();
  });
}

void CredentialCache::EvictIfFull() {
  while (size_.load(std::memory_order_relaxed) > options_.max_entries) {
    size_t best_shard = options_.shards;
    std::string best_key;
    Clock::Instant best_time = Clock::Instant::max();
    for (size_t i = 0; i < options_.shards; ++i) {
      MutexLock lock(&shards_[i].mu);
      for (const auto& [k, e] : shards_[i].entries) {
        if (e.last_access < best_time) {
          best_time = e.last_access;
          best_shard = i;
          best_key = k;
        }
      }
    }
    if (best_shard == options_.shards) return;
    bool evicted = false;
    {
      MutexLock lock(&shards_[best_shard].mu);
      auto& entries = shards_[best_shard].entries;
      auto it = entries.find(best_key);
      if (it != entries.end() && it->second.last_access == best_time) {
        entries.erase(it);  // the value is zeroed when its last reader drops it
        size_.fetch_sub(1, std::memory_order_relaxed);
        evictions_.fetch_add(1, std::memory_order_relaxed);
        evicted = true;
      }
    }
    if (evicted) DropFromFronts(&best_key);
  }
}

void CredentialCache::Invalidate(const std::string& key) {
  Shard& shard = ShardFor(std::hash<std::string>{}(key));
  {
    MutexLock lock(&shard.mu);
    ++shard.epoch;
    // A load in flight may have read the value this write replaced: readers
    // arriving from now on start a load of their own instead of joining it
    // (the detached one still answers the readers it already has).
    shard.flights.erase(key);
    if (shard.entries.erase(key)) size_.fetch_sub(1, std::memory_order_relaxed);
  }
  DropFromFronts(&key);
}

size_t CredentialCache::Clear() {
  size_t cleared = 0;
  for (size_t i = 0; i < options_.shards; ++i) {
    MutexLock lock(&shards_[i].mu);
    ++shards_[i].epoch;
    shards_[i].flights.clear();  // as Invalidate(): no reader joins a load begun before
    cleared += shards_[i].entries.size();
    size_.fetch_sub(shards_[i].entries.size(), std::memory_order_relaxed);
    shards_[i].entries.clear();
  }
  DropFromFronts(nullptr);
  return cleared;
}

CacheStats CredentialCache::Stats() const {
  CacheStats s;
  for (size_t i = 0; i < options_.shards; ++i) {
    MutexLock lock(&shards_[i].mu);
    s.hits += shards_[i].hits;
    s.misses += shards_[i].misses;
    s.stale += shards_[i].stale;
    s.loads += shards_[i].loads;
    s.load_errors += shards_[i].load_errors;
  }
  {
    MutexLock lock(&fronts_mu_);
    s.hits += retired_front_hits_;
    for (const auto& front : fronts_) s.hits += front->hits.load(std::memory_order_relaxed);
  }
  s.evictions = evictions_.load(std::memory_order_relaxed);
  s.size = Size();
  return s;
}

}  // namespace dyad
