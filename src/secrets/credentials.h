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
#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/result.h"
#include "core/secret_bytes.h"

namespace dyad {

using CredentialFields = std::map<std::string, SecretBytes>;

// A field may refer to a dynamic secret instead of holding a value; in JSON
// (the API body and the sealed payload) it is the object
// {"vault":"<path>","field":"<name>"}, e.g. {"vault":"database/creds/
// readonly","field":"password"}. In CredentialFields such a field's value is
// EncodeReference(): a 0xFF byte, which no JSON string holds (JSON text is
// UTF-8), then the path, a NUL and the field name; so every write path
// carries references without a type of its own, and the read path replaces
// each with the value it resolves to (SecretsService) before anyone sees it.
struct CredentialReference {
  std::string path;   // "database/creds/readonly": segments of [A-Za-z0-9._-]
  std::string field;  // a field of the secret read there: [A-Za-z0-9._-]
};
inline constexpr size_t kMaxReferencePath = 512;
inline constexpr size_t kMaxReferenceField = 128;
// Paths with a sys, auth, identity or cubbyhole segment, at any depth, are
// refused: they hold the backend's own tokens and settings
// (auth/token/lookup-self answers with the token itself; ns1/auth/… is a
// child namespace's). Which paths are allowed is the backend's to say
// (DynamicSecretSource::CheckPath).
// kInvalidArgument naming the part at fault ("vault" or "field").
Status CheckReference(const CredentialReference& ref);
SecretBytes EncodeReference(const CredentialReference& ref);
// nullopt for a value that is not a reference.
std::optional<CredentialReference> DecodeReference(const SecretBytes& value);
bool HasReferences(const CredentialFields& fields);
// The field names, in order; never a value.
std::vector<std::string> FieldNames(const CredentialFields& fields);

// Cache-line aligned: readers on different cores bump the reference counts
// of different values, and those counts must not share a line with anything.
struct alignas(64) Credentials {
  CredentialFields fields;
  int64_t version = 0;      // credentials version (envelope cv)
  std::string origin;       // store | environment | fallback
  // When the store's answer (and the dynamic secrets it refers to) was read
  // (origin store); the clock's epoch for values no store gave. A /v1 call
  // sends a key read at t only with a provider catalog whose registry read
  // began after t (ProxyService).
  Clock::Instant read_at{};
  uint32_t key_version = 0; // 0 when not from an envelope
  // Fields resolved from leased secrets: the cache keeps these credentials
  // no later than `refresh_by` (the next load renews a lease then) and never
  // serves them, stale or not, after `usable_until` (the first lease ends).
  // Clock::Instant::max() when no field is leased.
  Clock::Instant refresh_by = Clock::Instant::max();
  Clock::Instant usable_until = Clock::Instant::max();
  std::map<std::string, Clock::Instant> lease_ends;  // leased field -> end of its lease
};

using CredentialsPtr = std::shared_ptr<const Credentials>;

SecretBytes CredentialsToJson(const CredentialFields& fields);
// Parses a JSON object of string values and reference objects (checked as
// CheckReference does); errors never include values.
Result<CredentialFields> CredentialsFromJson(std::string_view json);
std::string Fingerprint(const SecretBytes& key, const CredentialFields& fields);

class SettingsRepository;
class Random;
inline constexpr size_t kFingerprintKeySize = 32;
// The deployment's fingerprint key, created on first use.
Result<SecretBytes> DeploymentFingerprintKey(SettingsRepository& settings, Random& random);

}  // namespace dyad
