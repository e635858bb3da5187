// ProviderLeases: a per-provider lease in the registry database, so that
// instances sharing one database make each read-modify-write of a provider
// row and its secret one at a time (DESIGN.md §4).
//
// A lease has an owner (a random token per acquisition) and an expiry in
// wall-clock time; TryAcquire() takes a free or expired lease, or reports
// that someone else holds it; Release() frees it only for its owner. An
// owner that outlives its lease's TTL may lose it to a takeover, so the TTL
// must exceed the longest operation held under it. Thread-safe. Errors:
// kUnavailable when the database cannot be reached, with its message.
#pragma once

#include <string>

#include "core/clock.h"
#include "core/result.h"

namespace dyad {

class ProviderLeases {
 public:
  virtual ~ProviderLeases() = default;
  // True when `owner` now holds the lease until now + ttl.
  virtual Result<bool> TryAcquire(const std::string& provider_id, const std::string& owner, Clock::Duration ttl) = 0;
  // Extends `owner`'s lease to now + ttl; false when another owner holds it
  // now (it ran out and was taken over).
  virtual Result<bool> Renew(const std::string& provider_id, const std::string& owner, Clock::Duration ttl) = 0;
  virtual Status Release(const std::string& provider_id, const std::string& owner) = 0;
};

}  // namespace dyad
