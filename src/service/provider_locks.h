// ProviderLocks: one writer at a time per provider, in this process and
// across the instances that share the registry database.
//
// Hold() takes the provider's in-process mutex, then its lease in the
// registry (ProviderLeases), waiting at most `max_wait` for both; the
// returned Held releases both. Every read-modify-write of a provider's row
// and secret runs under it, and so does each re-encryption of a secret in a
// store without conditional writes (SecretStore::HasConditionalWrites()).
// A lease can run out under a holder that stalls (a pause, a slow backend);
// so a write that only the lease fences calls Confirm() right before it:
// that renews the lease, or fails with kConflict when another instance has
// taken it over. `ttl` must then exceed one store write (App derives it from
// the backend's retry budget). Without a ProviderLeases (unit tests, one
// process) only the mutex is taken. Thread-safe.
//
// A holder's retries (a write's settle rounds: SecretsService::kSettle) stop
// at its deadline(): the lease's TTL less `margin` after it was asked for, so
// that a call retried before the deadline ends while the lease still holds
// and its fenced write finds it this holder's. A round reached only after
// the deadline makes one attempt, which its fence (a version, Confirm())
// keeps from overwriting another writer's.
//
// Interrupt() (the server's shutdown began) ends every wait in Hold() at
// once, and refuses every later one, with kUnavailable: a write waiting up
// to max_wait for another writer would otherwise keep the process past its
// shutdown grace (the server joins its handlers' threads). A provider free
// at once is still taken (a request in flight finishes its write), and a
// write that holds its lock already is not interrupted: its settle rounds
// may run to its deadline (ttl − margin, 20 s by default), past a shorter
// grace.
#pragma once

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include "core/clock.h"
#include "core/random.h"
#include "core/result.h"
#include "registry/provider_lease.h"

namespace dyad {

struct ProviderLeaseOptions {
  // Longer than one store write takes (its retries included): a holder
  // renews the lease before each write only the lease fences.
  Clock::Duration ttl = std::chrono::seconds(30);
  // The longest one call under the lease can take (a busy registry pool's
  // wait, a store call with its own retries): the holder's deadline is this
  // long before its lease, taken, would run out.
  Clock::Duration margin = std::chrono::seconds(10);
  // Longer than the TTL, so a lease its holder abandoned is taken over.
  Clock::Duration max_wait = std::chrono::seconds(40);
  Clock::Duration poll = std::chrono::milliseconds(5);
};

class ProviderLocks {
 public:
  ProviderLocks(ProviderLeases* leases, const Clock& clock, Random& random, ProviderLeaseOptions options = {})
      : leases_(leases), clock_(clock), random_(random), options_(options) {}

  class Held {
   public:
    Held(std::unique_lock<std::mutex> lock, ProviderLeases* leases, std::string id, std::string owner,
         Clock::Duration ttl, Clock::Instant deadline)
        : lock_(std::move(lock)),
          leases_(leases),
          id_(std::move(id)),
          owner_(std::move(owner)),
          ttl_(ttl),
          deadline_(deadline) {}
    Held(const Held&) = delete;
    ~Held() {
      if (leases_) (void)leases_->Release(id_, owner_);  // an unreleased lease expires
    }
    // Renews the lease; kConflict when it was lost to another instance
    // (lost() then says so: a version conflict is another kConflict).
    Status Confirm();
    bool lost() const { return lost_; }
    // When the holder's retries stop (see above): one deadline for all of
    // them, fixed when the lease was taken.
    Clock::Instant deadline() const { return deadline_; }

   private:
    std::unique_lock<std::mutex> lock_;
    ProviderLeases* leases_;
    std::string id_, owner_;
    Clock::Duration ttl_;
    Clock::Instant deadline_;
    std::atomic<bool> lost_{false};
  };

  // kConflict when another holder keeps the provider past max_wait;
  // kUnavailable when it would wait after Interrupt().
  Result<std::unique_ptr<Held>> Hold(const std::string& provider_id);
  void Interrupt() { interrupted_.store(true); }

 private:
  std::mutex& MutexOf(const std::string& provider_id);
  // The deadline of a holder whose lease was asked for at `asked`.
  Clock::Instant DeadlineFrom(Clock::Instant asked) const;

  ProviderLeases* leases_;
  const Clock& clock_;
  Random& random_;
  const ProviderLeaseOptions options_;
  // Not dyad::Mutex: these guard no member (they serialise a provider's
  // writers), and a holder's lock moves into a heap-allocated Held, a
  // lifetime the analysis cannot follow.
  // Plain mutexes polled with try_lock (ThreadSanitizer does not follow
  // the timed waits of std::timed_mutex).
  std::array<std::mutex, 64> mutexes_;
  std::atomic<bool> interrupted_{false};
};

}  // namespace dyad
