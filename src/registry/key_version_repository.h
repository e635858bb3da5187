// KeyVersionRepository: the versions of a KeyManager's keys, kept in the
// registry database so that every instance on it agrees on them (the local
// keyring's sealed versions, the gateway's versions of a KMS key).
//
// A key id has versions 1, 2, … (never deleted), each with a state (active |
// retiring | retired), a creation time, `material` whose meaning is the key
// manager's (a sealed key; a count of KMS rotations) and a wear counter: an
// upper bound of the encryptions made under it. What is atomic, also against
// other instances on the same database:
// - CreateFirst: of concurrent callers, at most one inserts version 1;
// - Advance: reading the latest version and writing what `decide` makes of
//   it is one write transaction, so two callers never make the same version
//   and each decides on the latest as it stands;
// - ReserveEncryptions: one statement that never lowers the counter.
// List, SetState and SetMaterial are single statements; another instance may
// change a version right after List read it.
//
// Thread-safe. Errors: kUnavailable when the database cannot be reached or
// stays busy, with the database's message; an error from `decide` aborts
// Advance (nothing written) and is returned as it is.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"

namespace dyad {

struct KeyVersionRecord {
  uint32_t version = 0;
  std::string state;       // active | retiring | retired
  std::string created_at;  // ISO 8601, UTC
  std::string material;    // opaque bytes, the key manager's
  uint64_t encryptions = 0;
};

// What Advance() writes, decided from the key's latest version.
struct KeyVersionChange {
  // Replaces the latest version's material (ignored without a latest).
  std::optional<std::string> latest_material;
  // Inserted as version latest + 1 (1 for a key without versions); its
  // `version` and `encryptions` are ignored (the counter starts at 0).
  std::optional<KeyVersionRecord> next;
};

class KeyVersionRepository {
 public:
  virtual ~KeyVersionRepository() = default;

  // Every version of `key_id`, oldest first; empty for an unknown key.
  virtual Result<std::vector<KeyVersionRecord>> List(const std::string& key_id) = 0;

  // Inserts `first` as version 1 only while `key_id` has no version at all;
  // true when this call inserted it.
  virtual Result<bool> CreateFirst(const std::string& key_id, const KeyVersionRecord& first) = 0;

  // In one write transaction: reads the latest version of `key_id` (nullopt
  // when it has none), calls `decide` with it and applies the change.
  // `decide` runs inside the transaction: keep it short, make no network
  // call and do not call the repository from it. Returns the version
  // inserted, 0 when none was.
  using Decide = std::function<Result<KeyVersionChange>(const std::optional<KeyVersionRecord>& latest)>;
  virtual Result<uint32_t> Advance(const std::string& key_id, const Decide& decide) = 0;

  // Sets a version's state, or its material; no error (and no change) for a
  // version that does not exist. States only go forward (active → retiring →
  // retired), checked in the write itself: a change that would go back (a
  // late BeginRetire after another instance's Retire) changes nothing and is
  // no error.
  virtual Status SetState(const std::string& key_id, uint32_t version, const std::string& state) = 0;
  virtual Status SetMaterial(const std::string& key_id, uint32_t version, const std::string& material) = 0;

  // Records that `block` more encryptions may be made under the version
  // beyond `floor` (what the caller last recorded): the counter becomes
  // max(counter, floor) + block, so concurrent reservers add up and a crash
  // leaves the count too high, never too low.
  virtual Status ReserveEncryptions(const std::string& key_id, uint32_t version, uint64_t floor, uint64_t block) = 0;
};

}  // namespace dyad
