// AuditKeyRepository: the audit chain's key, kept in the registry database
// only wrapped: one wrapping per KeyManager that may open it, identified by
// the KeyManager's (Kind(), KeyId()). Every wrapping holds the same key (the
// audit log is one chain): the first is made once per deployment, and
// `migrate` adds the target's beside the source's, so both configurations
// go on writing the one chain; the source's is dropped only when a run
// deleted the source.
//
// Atomic, also against other instances: InsertFirst (of concurrent first
// makers, one key is stored), InsertIfAbsent (of concurrent adders of one
// KeyManager's wrapping, one row is stored and every caller gets that one
// back), ReplaceWrapping (a compare-and-set on one KeyManager's row: when
// another instance moved it meanwhile, theirs stands) and RemoveBeside (never
// the last wrapping). The wrapped key is not secret without its KeyManager,
// and is never logged.
//
// Thread-safe. Errors: kUnavailable when the database cannot be reached or
// stays busy, with the database's message.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"

namespace dyad {

// The KeyManager a wrapping belongs to.
struct AuditKeyHolder {
  std::string kind;    // its Kind()
  std::string key_id;  // and KeyId()
  bool operator==(const AuditKeyHolder&) const = default;
};

struct AuditKeyRecord {
  std::string kind;     // the KeyManager's Kind()
  std::string key_id;   // and KeyId()
  uint32_t key_version = 0;
  std::string wrapped;  // by that key version
  std::string created_at;  // when the key (not this wrapping) was made
  AuditKeyHolder holder() const { return {kind, key_id}; }
};

class AuditKeyRepository {
 public:
  virtual ~AuditKeyRepository() = default;
  // `holder`'s wrapping; nullopt when it has none.
  virtual Result<std::optional<AuditKeyRecord>> Get(const AuditKeyHolder& holder) = 0;
  // Every wrapping, by kind and key id; empty when no key was ever made.
  virtual Result<std::vector<AuditKeyRecord>> List() = 0;
  // Makes the key: stores `key` only if no wrapping at all is stored; then
  // returns `key`'s holder's wrapping (of whichever first maker won),
  // nullopt when the key is held by other KeyManagers only.
  virtual Result<std::optional<AuditKeyRecord>> InsertFirst(const AuditKeyRecord& key) = 0;
  // Adds `key` (another KeyManager's wrapping of the stored key) unless its
  // holder has one; returns the holder's stored wrapping.
  virtual Result<AuditKeyRecord> InsertIfAbsent(const AuditKeyRecord& key) = 0;
  // Rewraps `from`'s holder's key as (to_version, to_wrapped) only if it is
  // still `from`'s version and wrapping; true when it was replaced. Other
  // holders' wrappings are untouched.
  virtual Result<bool> ReplaceWrapping(const AuditKeyRecord& from, uint32_t to_version,
                                       const std::string& to_wrapped) = 0;
  // Drops `drop`'s wrapping only while `keep` holds one (so the key is never
  // lost); true when it was dropped.
  virtual Result<bool> RemoveBeside(const AuditKeyHolder& drop, const AuditKeyHolder& keep) = 0;
};

}  // namespace dyad
