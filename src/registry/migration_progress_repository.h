// MigrationProgressRepository: how far `dyad-gateway migrate` got copying
// each provider's credentials from one backend to another, kept in the
// registry database so that a run killed midway resumes where it stopped.
//
// A migration is named by its source and target (BackendMigration makes the
// name); each of its providers has one record, replaced as the copy moves
// on: "copying" (the target may hold a half-done write), then "copied".
// A record holds version tokens and the keyed fingerprint of the value
// copied, never a value; after a clean run the fingerprints are cleared and
// the versions stay. Every call is one statement. Thread-safe. Errors:
// kUnavailable when the database cannot be reached or stays busy.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "core/result.h"

namespace dyad {

struct MigrationRecord {
  std::string provider_id;
  std::string state;           // copying | copied
  std::string source_version;  // the source's version token of the value read
  std::string target_version;  // the target's token of what was written
  std::string fingerprint;     // keyed fingerprint of the credentials copied
  int64_t credentials_version = 0;
};

class MigrationProgressRepository {
 public:
  virtual ~MigrationProgressRepository() = default;
  // Every record of `migration`, by provider id.
  virtual Result<std::map<std::string, MigrationRecord>> Load(const std::string& migration) = 0;
  // Inserts or replaces the provider's record.
  virtual Status Put(const std::string& migration, const MigrationRecord& record) = 0;
  // Empties the fingerprint of every record of `migration` (state and
  // versions kept).
  virtual Status ClearFingerprints(const std::string& migration) = 0;
};

}  // namespace dyad
