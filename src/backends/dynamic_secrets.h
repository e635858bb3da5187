// DynamicSecretSource: a backend's secrets that are made on demand and come
// with a lease (Vault's `database/creds/<role>`, …): what a provider
// credential field refers to instead of holding a value (see
// CredentialReference in secrets/credentials.h).
//
// Read(path) reads the secret at `path` (a path the backend understands,
// e.g. "database/creds/readonly"): its string fields, and its lease when it
// has one (lease_id empty and lease_ttl 0 for a secret without one, such as
// a static KV secret). Renew(lease_id, increment) asks for the lease to run
// `increment` longer and returns the TTL granted (the backend may grant less:
// a max TTL near). Revoke(lease_id) ends the lease now (the backend deletes
// what it made, e.g. the database role).
//
// CheckPath(path) says whether a credential may refer to `path` at all (the
// operator's allowlist, the backend's own mounts): OkStatus, or
// kInvalidArgument with a message to follow "credentials.<field>: " that
// names the setting at fault, never a value. The service asks it when a
// reference is written; Read and Renew enforce it again themselves (a
// stored reference, or a lease of a path no longer allowed, is refused with
// kFailedPrecondition).
//
// Errors keep the backend's message and never hold a value: kNotFound,
// kPermissionDenied (naming the path and capability), kInvalidArgument (a
// lease the backend refuses to renew: expired, unknown, not renewable),
// kUnavailable (may fall back), kDataLoss (an answer of the wrong shape).
// Implementations are thread-safe.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <string_view>

#include "core/result.h"
#include "core/secret_bytes.h"

namespace dyad {

struct DynamicSecret {
  std::map<std::string, SecretBytes> fields;  // the secret's string fields
  std::string lease_id;                       // "" when the secret has no lease
  std::chrono::seconds lease_ttl{0};
  bool renewable = false;
};

class DynamicSecretSource {
 public:
  virtual ~DynamicSecretSource() = default;
  virtual Status CheckPath(std::string_view path) const = 0;
  virtual Result<DynamicSecret> Read(const std::string& path) = 0;
  virtual Result<std::chrono::seconds> Renew(const std::string& lease_id, std::chrono::seconds increment) = 0;
  virtual Status Revoke(const std::string& lease_id) = 0;
};

}  // namespace dyad
