// LeasedSecrets: the leases a gateway holds on the dynamic secrets its
// providers' credentials refer to (CredentialReference), per provider.
//
// Resolve() replaces each reference in a provider's credentials with the
// field it names. Fields referring to one path share ONE read, so one lease
// (the username and password of one database credential belong together).
// A lease is reused while it runs and renewed when a resolve finds it in its
// last third (a renewable one, asking for its first TTL again); a lease that
// is not renewable, that the backend refuses to renew, or whose renewal is
// cut short by its max TTL (less than half of what was asked) is dropped and
// the path read again, and the old lease revoked quietly (best effort,
// after the lock; one that has ended is not): it would otherwise stay live,
// and its database role with it, until its max TTL. A renewal that fails with kUnavailable keeps the lease
// until it ends. The credentials say until when the cache may keep them
// (Credentials::refresh_by: the next renewal) and use them (usable_until).
// A secret without a lease is read on every resolve (the cache TTL bounds
// it). Only a NEWER credentials version supersedes a provider's leases (they
// are revoked); a resolve of an OLDER version than the one held or ended (a
// loader that read the store before an update or a delete, finishing after
// it) reads nothing, revokes nothing and fails with kConflict ("read
// again"): its credentials are no longer the provider's. Leases of paths the
// provider no longer refers to are revoked; RevokeAll() ends them all
// (provider deleted, credentials replaced or cleared) and remembers the
// newest version it has seen as ended, so a late resolve of it caches
// nothing. A provider's slot stays while it has a version (one per live
// provider); the marks of providers with no lease left are bounded: the
// oldest are forgotten past kMaxEnded. A provider never resolved before its
// RevokeAll has no version to remember (the caller would have to pass it).
//
// Locking: mu_ guards only the map of per-provider slots and is never held
// across a backend call. Each provider's slot has its own mutex, held across
// that provider's reads and renewals (single-flight: concurrent resolves of
// one provider make one read), so a slow or sealed Vault call for one
// provider does not hold up another's. Lock order: a slot's mu, then mu_.
// Each instance holds its own leases: another instance's run out at their
// TTL. Nothing here logs or returns a value. Thread-safe.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backends/dynamic_secrets.h"
#include "core/clock.h"
#include "core/mutex.h"
#include "secrets/credentials.h"

namespace dyad {

class LeasedSecrets {
 public:
  LeasedSecrets(DynamicSecretSource& source, const Clock& clock) : source_(source), clock_(clock) {}

  // Errors name the field and path: the backend's (kUnavailable falls back),
  // kFailedPrecondition for a field the secret does not have.
  Status Resolve(const std::string& provider_id, Credentials& creds) DYAD_LOCKS_EXCLUDED(mu_);

  struct Revoked {
    size_t revoked = 0, failed = 0;
    std::string first_error;
  };
  // Best effort: tries every lease of the provider and forgets them all.
  Revoked RevokeAll(const std::string& provider_id) DYAD_LOCKS_EXCLUDED(mu_);
  // The credentials of `version` are the provider's again: an undo put them
  // back after the write that replaced them failed (and its RevokeAll ended
  // their leases). `version` resolves again, with new leases; older versions
  // stay refused. Leases held for another version (the undone write's,
  // resolved meanwhile) are revoked quietly. A loader that read the undone
  // write before the undo and resolves it after this is not told apart
  // from a newer write: until the next write, `version` is then refused.
  void Reopen(const std::string& provider_id, int64_t version) DYAD_LOCKS_EXCLUDED(mu_);

  size_t LeaseCount(const std::string& provider_id) const DYAD_LOCKS_EXCLUDED(mu_);

 private:
  struct Lease {
    std::string lease_id;
    std::map<std::string, SecretBytes> fields;
    std::chrono::seconds granted{0};  // the TTL of the read: what a renewal asks for
    bool renewable = false;
    Clock::Instant renew_at, end;
  };
  // One provider's leases; mu is held across its backend calls.
  struct Slot {
    Mutex mu;
    int64_t version DYAD_GUARDED_BY(mu) = 0;  // of the leases held
    int64_t ended DYAD_GUARDED_BY(mu) = 0;    // versions <= this were ended by RevokeAll
    std::map<std::string, Lease> by_path DYAD_GUARDED_BY(mu);
  };
  struct Entry {
    std::shared_ptr<Slot> slot;
    // Mirrors of the slot (under mu_, for pruning without the slot's lock).
    size_t leases = 0;
    bool ended = false;
    uint64_t ended_seq = 0;  // order of the RevokeAll calls: the oldest marks go first
  };
  static constexpr size_t kMaxEnded = 4096;

  std::shared_ptr<Slot> SlotOf(const std::string& provider_id) DYAD_LOCKS_EXCLUDED(mu_);
  // After a change of `slot` (whose mu is held): mirrors it and forgets
  // entries nobody uses that hold nothing to remember.
  void Settle(const std::string& provider_id, Slot& slot, bool just_ended) DYAD_EXCLUSIVE_LOCKS_REQUIRED(slot.mu)
      DYAD_LOCKS_EXCLUDED(mu_);
  // The lease of `path`, reused, renewed or read anew; `read_once` when the
  // secret has no lease (used once, never kept). A lease dropped for a new
  // read (ended, refused, cut short) is added to `dropped`, to revoke.
  Result<const Lease*> LeaseFor(Slot& slot, const std::string& path, Lease& read_once,
                                std::vector<std::string>& dropped) DYAD_EXCLUSIVE_LOCKS_REQUIRED(slot.mu);
  void RevokeQuietly(const std::vector<std::string>& lease_ids);

  DynamicSecretSource& source_;
  const Clock& clock_;
  mutable Mutex mu_;
  std::map<std::string, Entry> slots_ DYAD_GUARDED_BY(mu_);
  uint64_t ended_seq_ DYAD_GUARDED_BY(mu_) = 0;
};

}  // namespace dyad
