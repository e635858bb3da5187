// AuditKeyRepository: the audit chain's key, kept in the registry database
// only wrapped by the KeyManager (one per deployment), so that every
// instance on the database writes one chain under one key.
//
// Atomic, also against other instances: InsertIfAbsent (of concurrent
// callers, one key is stored and every caller gets that one back) and
// ReplaceWrapping (a compare-and-set on the stored version and wrapping:
// when another instance moved the key meanwhile, theirs stands). The wrapped
// key is not secret without the KeyManager, and is never logged.
//
// Thread-safe. Errors: kUnavailable when the database cannot be reached or
// stays busy, with the database's message.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "core/result.h"

namespace dyad {

struct AuditKeyRecord {
  std::string kind;     // the KeyManager's Kind()
  std::string key_id;   // and KeyId()
  uint32_t key_version = 0;
  std::string wrapped;  // by that key version
  std::string created_at;
};

class AuditKeyRepository {
 public:
  virtual ~AuditKeyRepository() = default;
  // The stored audit key; nullopt when none was ever stored.
  virtual Result<std::optional<AuditKeyRecord>> Get() = 0;
  // Stores `key` unless one is stored; returns the stored one.
  virtual Result<AuditKeyRecord> InsertIfAbsent(const AuditKeyRecord& key) = 0;
  // Rewraps the stored key as (to_version, to_wrapped) only if it is still
  // (from_version, from_wrapped); true when it was replaced.
  virtual Result<bool> ReplaceWrapping(uint32_t from_version, const std::string& from_wrapped, uint32_t to_version,
                                       const std::string& to_wrapped) = 0;
  // The same, moving the key to another KeyManager (`migrate`): `to`'s
  // kind, key id, version and wrapping replace the stored ones.
  virtual Result<bool> ReplaceKey(uint32_t from_version, const std::string& from_wrapped,
                                  const AuditKeyRecord& to) = 0;
};

}  // namespace dyad
