// CredentialCache: the in-memory read cache of DESIGN.md §6.
//
// Keyed by provider id. TTL expiry; an entry bound with least-recently-used
// eviction across all shards; single-flight (concurrent misses of one key
// make one load); refresh ahead of expiry through the injected spawner;
// stale-if-error within a window when the load fails with kUnavailable
// (failed refreshes back off, so a down backend sees no storm); short
// negative caching of kNotFound; Invalidate()/Clear() on every write.
// Read-your-writes: a load that started before an invalidation never
// re-inserts its older value, and no reader arriving after the invalidation
// joins it (it is detached from its key, so that reader starts a load of its
// own). A value holding leased fields (Credentials::refresh_by,
// usable_until) is kept no longer than its refresh_by, without refresh
// ahead, and never served stale after its usable_until. Times come from
// Clock::CoarseNow(): TTLs and LRU order are exact to a few milliseconds.
// Values are shared_ptr<const Credentials>: an evicted, replaced or
// invalidated value is zeroed when its last reader lets it go. Thread-safe.
//
// Two levels, so that hits on one hot key scale with cores. The shards (a
// mutex and a map each) hold the truth: entries, flights, LRU times. In
// front of them each reading thread has a small table of its own (a
// "front") of values it found fresh in a shard less than kFrontLifetime
// (5 ms) ago. A hit in the front writes only memory of that thread: its
// front's lock (uncontended: a SpinLock others take only to remove entries)
// and its hit counter (relaxed, one writer), and it hands out a copy of a
// per-thread alias of the value (a shared_ptr whose control block belongs to
// that thread, owning one reference to the shared value), so no reference
// count, lock or counter line moves between cores on the hit path.
//
// Why this stays correct (the memory-ordering argument):
//  - A front is filled only under the shard's mutex, from the shard's current
//    entry. Every change that makes a value unservable — Invalidate, Clear,
//    eviction, a load publishing a different value — first changes the shard
//    under that mutex and then, before returning, removes the key (or
//    everything) from every front under the front's lock. A fill ordered
//    before the change by the shard mutex is removed by that sweep (the
//    front lock's release/acquire orders the fill before the removal); a
//    fill ordered after it sees the changed shard. So once Invalidate()
//    returns, no front holds the old value, and the owner's next lookup,
//    which takes the front lock after the sweep released it, cannot find it:
//    read-your-writes holds across threads.
//  - A front entry expires at the earliest of: fill time + 5 ms, the entry's
//    expiry (its lease's refresh_by if leased), and the start of its
//    refresh-ahead window. Past that the read takes the shard path, which
//    does everything the single-level cache did: TTL, refresh ahead,
//    stale-if-error, and the LRU access time (so a hot key's LRU time is at
//    most 5 ms old; eviction order is exact to that).
//  - Fronts are swept on the events above, cleared when their thread exits
//    and when the cache is destroyed, so a value is released (and zeroed)
//    once the shard entry, every alias and every reader's copy are gone.
//    An ended thread's front is forgotten at the next sweep or the next new
//    thread's first read. A front never pushes out a live entry: a working
//    set larger than it (2 × max_entries slots, at most 512) is served by
//    the shards for the keys that did not fit, as before.
//  - Lock order: shard mutex, then fronts_mu_, then a front's lock.
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
#include "core/spin_lock.h"
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
  // Loads `key` on a miss or a refresh. Given the key so that one loader,
  // made once, serves every key: a hit then allocates nothing.
  using Loader = std::function<Result<CredentialsPtr>(const std::string& key)>;
  using Spawner = std::function<void(std::function<void()>)>;

  CredentialCache(CacheOptions options, const Clock& clock, Spawner spawn);
  ~CredentialCache();

  Result<CacheRead> Get(const std::string& key, const Loader& loader);
  // Get's fresh hit alone, for a caller that must not wait (the /v1 path on
  // an I/O thread): the value Get would serve as a hit (a refresh ahead is
  // started as Get starts it), else null, without counting a miss: a miss,
  // a load to join, a stale or not-found entry are left to Get.
  CredentialsPtr GetIfFresh(const std::string& key, const Loader& loader);
  void Invalidate(const std::string& key);
  size_t Clear();  // returns how many entries it dropped
  size_t Size() const { return size_.load(std::memory_order_relaxed); }
  CacheStats Stats() const;

  // How long a thread serves a value from its own front before asking the
  // shard again.
  static constexpr Clock::Duration kFrontLifetime = std::chrono::milliseconds(5);

 private:
  struct Front;         // one thread's table of recently found values
  struct ThreadFronts;  // a thread's fronts, one per cache it read from
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
  Shard& ShardFor(size_t hash) { return shards_[hash & shard_mask_]; }
  // This thread's fronts; null while its thread_locals are being destroyed
  // (and, without `create`, before its first read).
  static ThreadFronts* ThisThread(bool create);
  Front* FrontOfThisThread(bool create) DYAD_LOCKS_EXCLUDED(fronts_mu_);
  // Puts the shard's fresh entry `e` in this thread's `front`, if it has room.
  void FillFront(Shard& shard, Front& front, size_t hash, const std::string& key, const Shard::Entry& e,
                 Clock::Instant now) DYAD_EXCLUSIVE_LOCKS_REQUIRED(shard.mu);
  // Removes `key` (every key when null) from every thread's front.
  void DropFromFronts(const std::string* key) DYAD_LOCKS_EXCLUDED(fronts_mu_);
  // Forgets the fronts of ended threads and, with `drop`, empties `key`'s
  // slots (every slot when null) of the others into `released`.
  void SweepFronts(const std::string* key, bool drop, std::vector<CredentialsPtr>& released)
      DYAD_EXCLUSIVE_LOCKS_REQUIRED(fronts_mu_);
  // Entered with shard.mu held; releases it.
  // Get, or with `may_wait` false GetIfFresh (nullopt where Get would wait).
  std::optional<Result<CacheRead>> Lookup(const std::string& key, const Loader& loader, bool may_wait);
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
  Clock::Duration refresh_ahead_{};
  size_t front_slots_ = 0;
  const uint64_t id_;  // never reused: names this cache in threads' fronts
  mutable Mutex fronts_mu_;
  std::vector<std::shared_ptr<Front>> fronts_ DYAD_GUARDED_BY(fronts_mu_);
  uint64_t retired_front_hits_ DYAD_GUARDED_BY(fronts_mu_) = 0;  // of fronts whose thread ended
};

}  // namespace dyad
