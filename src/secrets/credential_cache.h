// CredentialCache: the in-memory read cache of DESIGN.md §6.
//
// Keyed by provider id. TTL expiry; an entry bound with least-recently-used
// eviction across all shards; sharded locks so hits on two cores do not
// contend; single-flight (concurrent misses of one key make one load);
// refresh ahead of expiry through the injected spawner; stale-if-error
// within a window when the load fails with kUnavailable (failed refreshes
// back off, so a down backend sees no storm); short negative caching of
// kNotFound; Invalidate()/Clear() on every write. Read-your-writes: a load
// that started before an invalidation never re-inserts its older value, and
// no reader arriving after the invalidation joins it (it is detached from
// its key, so that reader starts a load of its own). A value holding leased
// fields (Credentials::refresh_by, usable_until) is kept no longer than its
// refresh_by, without refresh ahead, and never served stale after its
// usable_until. Times come from
// Clock::CoarseNow(): TTLs and LRU order are exact to a few milliseconds. Values are
// shared_ptr<const Credentials>: an evicted value is zeroed when its last
// reader lets it go. Thread-safe.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/clock.h"
#include "core/mutex.h"
#include "secrets/credentials.h"

namespace dyad {

struct CacheOptions {
  size_t max_entries = 100;
  Clock::Duration ttl = std::chrono::seconds(300);
  Clock::Duration stale_if_error = std::chrono::seconds(3600);
  Clock::Duration negative_ttl = std::chrono::seconds(5);
  Clock::Duration error_backoff = std::chrono::seconds(5);
  double refresh_ahead_fraction = 0.1;  // refresh in the last 10% of the TTL
  // 0: a power of two near 8 × max_entries (64 to 4096). Hits on different
  // keys then rarely share a shard's lock line, which is what lets reads
  // scale with cores; a shard is 256 bytes.
  size_t shards = 0;
};

enum class CacheSource { kHit, kLoaded, kStale };

struct CacheRead {
  CredentialsPtr value;
  CacheSource source = CacheSource::kHit;
};

struct CacheStats {
  uint64_t hits = 0, misses = 0, stale = 0, evictions = 0, loads = 0, load_errors = 0;
  size_t size = 0;
};

class CredentialCache {
 public:
  using Loader = std::function<Result<CredentialsPtr>()>;
  using Spawner = std::function<void(std::function<void()>)>;

  CredentialCache(CacheOptions options, const Clock& clock, Spawner spawn);
  ~CredentialCache();

  Result<CacheRead> Get(const std::string& key, const Loader& loader);
  void Invalidate(const std::string& key);
  size_t Clear();  // returns how many entries it dropped
  size_t Size() const { return size_.load(std::memory_order_relaxed); }
  CacheStats Stats() const;

 private:
  struct Flight {
    Mutex mu;
    CondVar cv;
    std::optional<Result<CredentialsPtr>> result DYAD_GUARDED_BY(mu);
  };
  struct alignas(64) Shard {
    struct Entry {
      CredentialsPtr value;  // null: a cached "not found"
      Clock::Instant expires;
      Clock::Instant stale_until;
      Clock::Instant retry_after;
      Clock::Instant last_access;
      bool refreshing = false;
      bool leased = false;  // expires at the value's refresh_by
    };
    // What a hit writes (the lock and the hit count) shares the first cache
    // line with nothing else; the maps after it are only read by hits.
    mutable Mutex mu;
    uint64_t hits DYAD_GUARDED_BY(mu) = 0;
    alignas(64) std::unordered_map<std::string, Entry> entries DYAD_GUARDED_BY(mu);
    std::unordered_map<std::string, std::shared_ptr<Flight>> flights DYAD_GUARDED_BY(mu);
    uint64_t epoch DYAD_GUARDED_BY(mu) = 0;  // bumped by every invalidation in this shard
    uint64_t misses DYAD_GUARDED_BY(mu) = 0, stale DYAD_GUARDED_BY(mu) = 0, loads DYAD_GUARDED_BY(mu) = 0,
             load_errors DYAD_GUARDED_BY(mu) = 0;
  };
  Shard& ShardFor(const std::string& key);
  // Entered with shard.mu held; releases it.
  Result<CacheRead> LoadOrJoin(Shard& shard, const std::string& key, const Loader& loader,
                               CredentialsPtr stale_value, Clock::Instant stale_until)
      DYAD_UNLOCK_FUNCTION(shard.mu);
  void Publish(Shard& shard, const std::string& key, const std::shared_ptr<Flight>& flight, uint64_t epoch,
               const Result<CredentialsPtr>& result, Clock::Instant now) DYAD_LOCKS_EXCLUDED(shard.mu);
  void StartRefresh(Shard& shard, const std::string& key, const Loader& loader) DYAD_LOCKS_EXCLUDED(shard.mu);
  void EvictIfFull();

  CacheOptions options_;
  const Clock& clock_;
  Spawner spawn_;
  std::unique_ptr<Shard[]> shards_;
  size_t shard_mask_ = 0;
  std::atomic<size_t> size_{0};
  std::atomic<uint64_t> evictions_{0};
};

}  // namespace dyad
