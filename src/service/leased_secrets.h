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
// it). Leases of a provider whose credentials version changed, or of paths
// it no longer refers to, are revoked; RevokeAll() ends them all (provider
// deleted, credentials replaced).
//
// One mutex: resolves are serialised, backend calls included (they happen
// about once per lease third per provider). Each instance holds its own
// leases: another instance's run out at their TTL. Nothing here logs or
// returns a value. Thread-safe.
#pragma once

#include <map>
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

  size_t LeaseCount(const std::string& provider_id) const DYAD_LOCKS_EXCLUDED(mu_);

 private:
  struct Lease {
    std::string lease_id;
    std::map<std::string, SecretBytes> fields;
    std::chrono::seconds granted{0};  // the TTL of the read: what a renewal asks for
    bool renewable = false;
    Clock::Instant renew_at, end;
  };
  struct Held {
    int64_t version = 0;
    std::map<std::string, Lease> by_path;
  };
  // The lease of `path`, reused, renewed or read anew; `read_once` when the
  // secret has no lease (used once, never kept). A lease dropped for a new
  // read (ended, refused, cut short) is added to `dropped`, to revoke.
  Result<const Lease*> LeaseFor(Held& held, const std::string& path, Lease& read_once,
                                std::vector<std::string>& dropped) DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RevokeQuietly(const std::vector<std::string>& lease_ids);

  DynamicSecretSource& source_;
  const Clock& clock_;
  mutable Mutex mu_;
  std::map<std::string, Held> held_ DYAD_GUARDED_BY(mu_);
};

}  // namespace dyad
