// SettingsRepository: small named values kept in the registry database and
// shared by every instance on it (the rotation toggle, the deployment's
// fingerprint key).
//
// Atomic, also against other instances: Put (last writer wins) and
// PutIfAbsent (of concurrent callers, one value is stored and every caller
// gets that one back). A value may be secret (the fingerprint key): the
// repository never logs values, and the caller wipes its copies.
//
// Thread-safe. Errors: kUnavailable when the database cannot be reached or
// stays busy, with the database's message.
#pragma once

#include <optional>
#include <string>

#include "core/result.h"

namespace dyad {

class SettingsRepository {
 public:
  virtual ~SettingsRepository() = default;
  // The value of `key`; nullopt when it was never set.
  virtual Result<std::optional<std::string>> Get(const std::string& key) = 0;
  // Sets `key` to `value`, whatever it was.
  virtual Status Put(const std::string& key, const std::string& value) = 0;
  // Stores `value` unless `key` already has one; returns the stored value
  // (this caller's, or the one that was there first).
  virtual Result<std::string> PutIfAbsent(const std::string& key, const std::string& value) = 0;
};

}  // namespace dyad
