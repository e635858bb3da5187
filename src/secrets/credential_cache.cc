#include "secrets/credential_cache.h"

#include <algorithm>
#include <bit>
#include <limits>

namespace dyad {

CredentialCache::CredentialCache(CacheOptions options, const Clock& clock, Spawner spawn)
    : options_(options), clock_(clock), spawn_(std::move(spawn)) {
  size_t want = options_.shards ? options_.shards : std::clamp<size_t>(options_.max_entries * 8, 64, 4096);
  options_.shards = std::bit_ceil(want);
  shard_mask_ = options_.shards - 1;
  shards_ = std::make_unique<Shard[]>(options_.shards);
}

CredentialCache::~CredentialCache() = default;

CredentialCache::Shard& CredentialCache::ShardFor(const std::string& key) {
  return shards_[std::hash<std::string>{}(key) & shard_mask_];
}

static Error NotFoundError(const std::string& key) {
  return MakeError(ErrorCode::kNotFound, "no credentials for '" + key + "'");
}

Result<CacheRead> CredentialCache::Get(const std::string& key, const Loader& loader) {
  const Clock::Instant now = clock_.CoarseNow();
  Shard& shard = ShardFor(key);
  shard.mu.Lock();
  CredentialsPtr stale_value;
  Clock::Instant stale_until{};
  auto it = shard.entries.find(key);
  if (it != shard.entries.end()) {
    auto& e = it->second;
    if (now < e.expires) {
      if (e.last_access != now) e.last_access = now;  // coarse time: rarely a write
      ++shard.hits;
      if (!e.value) {
        shard.mu.Unlock();
        return NotFoundError(key);
      }
      CacheRead read{e.value, CacheSource::kHit};
      auto ahead = std::chrono::duration_cast<Clock::Duration>(options_.ttl * options_.refresh_ahead_fraction);
      if (!e.refreshing && !e.leased && now >= e.expires - ahead && spawn_) {
        e.refreshing = true;
        shard.mu.Unlock();
        StartRefresh(shard, key, loader);
        return read;
      }
      shard.mu.Unlock();
      return read;
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
    result.emplace(loader());
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
  bool grew = false;
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
        grew = true;
      } else {
        it->second = std::move(e);
      }
    } else if (it != shard.entries.end()) {
      it->second.retry_after = now + options_.error_backoff;
      it->second.refreshing = false;
    }
  }
  if (grew) {
    size_.fetch_add(1, std::memory_order_relaxed);
    EvictIfFull();
  }
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
    Result<CredentialsPtr> result = loader();
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
    MutexLock lock(&shards_[best_shard].mu);
    auto& entries = shards_[best_shard].entries;
    auto it = entries.find(best_key);
    if (it != entries.end() && it->second.last_access == best_time) {
      entries.erase(it);  // the value is zeroed when its last reader drops it
      size_.fetch_sub(1, std::memory_order_relaxed);
      evictions_.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

void CredentialCache::Invalidate(const std::string& key) {
  Shard& shard = ShardFor(key);
  MutexLock lock(&shard.mu);
  ++shard.epoch;
  // A load in flight may have read the value this write replaced: readers
  // arriving from now on start a load of their own instead of joining it
  // (the detached one still answers the readers it already has).
  shard.flights.erase(key);
  if (shard.entries.erase(key)) size_.fetch_sub(1, std::memory_order_relaxed);
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
  s.evictions = evictions_.load(std::memory_order_relaxed);
  s.size = Size();
  return s;
}

}  // namespace dyad
