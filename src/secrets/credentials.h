// Credentials: a provider's credential fields in clear, as the read path
// hands them out (shared, immutable, zeroed when the last reference goes).
//
// The payload sealed in an envelope is the canonical JSON object of the
// fields (keys sorted, compact). Fingerprint() is the first 16 hex digits of
// HMAC-SHA-256 over that text under a per-deployment key: enough to tell two
// values apart in an API response, never enough to recover one, and, keyed,
// no way to confirm a guessed credential offline. The key is 32 random bytes
// kept in the registry's settings, made once (SettingsRepository::
// PutIfAbsent) so that every instance on one database agrees. Pure functions are thread-safe;
// DeploymentFingerprintKey fails only when the database does.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "core/result.h"
#include "core/secret_bytes.h"

namespace dyad {

using CredentialFields = std::map<std::string, SecretBytes>;

// Cache-line aligned: readers on different cores bump the reference counts
// of different values, and those counts must not share a line with anything.
struct alignas(64) Credentials {
  CredentialFields fields;
  int64_t version = 0;      // credentials version (envelope cv)
  std::string origin;       // store | environment | fallback
  uint32_t key_version = 0; // 0 when not from an envelope
};

using CredentialsPtr = std::shared_ptr<const Credentials>;

SecretBytes CredentialsToJson(const CredentialFields& fields);
// Parses a JSON object of string values; errors never include values.
Result<CredentialFields> CredentialsFromJson(std::string_view json);
std::string Fingerprint(const SecretBytes& key, const CredentialFields& fields);

class SettingsRepository;
class Random;
inline constexpr size_t kFingerprintKeySize = 32;
// The deployment's fingerprint key, created on first use.
Result<SecretBytes> DeploymentFingerprintKey(SettingsRepository& settings, Random& random);

}  // namespace dyad
