// BackendMigration: `dyad-gateway migrate --to-env-file`: copies every
// provider's credentials from the configured backend (the source, through
// its SecretsService) to another backend (the target: a SecretStore, a
// KeyManager and an encryption mode opened on the same registry database).
//
// Per provider, under the source's provider lock (the registry lease, so a
// `serve` writing that provider meanwhile waits for the copy): read the
// source secret, open it, seal it under the target's key (same credentials
// version), write it into the target store (create, or replace what a
// previous half-done run left), then read the source again: a source that
// changed meanwhile (another writer, a key rotation) is copied again before
// the provider is recorded "copied". Progress is recorded in the registry
// (MigrationProgressRepository) before and after each write, so a run killed
// midway resumes: a provider recorded "copied" whose source is unchanged and
// whose target value still opens to the same fingerprint is skipped, anything
// else is copied again. A write the source receives after its provider was
// copied is found by the verify pass and by the next run (which copies it
// again); the README says to stop writers (or re-run) before switching.
//
// Verify opens every provider's credentials under the target and compares
// them (keyed fingerprint and credentials version) with the source read
// anew. The source secrets are deleted (delete_source) only after a verify
// with no failure at all, each only while it still holds the version that
// was verified. A dry run reads everything and writes nothing. Nothing here
// logs, reports or records a value: items carry provider ids and the
// backends' error messages. Not thread-safe: one run at a time (the CLI
// holds a lock file).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "backends/key_manager.h"
#include "backends/secret_store.h"
#include "registry/migration_progress_repository.h"
#include "registry/provider_repository.h"
#include "secrets/sealer.h"
#include "service/secrets_service.h"

namespace dyad {

struct MigrationTarget {
  SecretStore& store;
  KeyManager& keys;
  SealMode mode = SealMode::kEnvelope;
  Random& random;
};

struct MigrationOptions {
  bool dry_run = false;
  bool verify = false;
  bool delete_source = false;  // implies verify
  int max_attempts = 3;        // copies of one provider whose source keeps changing
};

struct MigrationItem {
  std::string provider_id;
  // copied | skipped | failed | would copy | would skip | no credentials
  std::string outcome;
  std::string detail;  // the backend's error or why; never a value
};

struct MigrationReport {
  std::string migration;  // the name of the source -> target pair
  std::vector<MigrationItem> items;
  int64_t copied = 0, skipped = 0, failed = 0;
  bool verified = false;  // a verify pass ran
  int64_t verify_ok = 0, verify_failed = 0;
  std::vector<MigrationItem> verify_failures;
  int64_t source_deleted = 0;
  std::vector<MigrationItem> delete_failures;
  std::string delete_refused;  // why the source was kept although asked to delete it
  bool Clean() const {
    return failed == 0 && verify_failed == 0 && delete_failures.empty() && delete_refused.empty();
  }
};

class BackendMigration {
 public:
  // `progress` hears (done, total) after each provider of each pass.
  using Progress = std::function<void(std::string_view pass, size_t done, size_t total)>;

  BackendMigration(SecretsService& source, ProviderRepository& providers, MigrationProgressRepository& records,
                   MigrationTarget target);

  // The name progress is recorded under: the source's and target's stores
  // and keys, so another target starts afresh.
  std::string Name() const;

  // kInvalidArgument when the target is the source itself; kUnavailable
  // when the registry cannot be read. A provider's failure is in the report.
  Result<MigrationReport> Run(const MigrationOptions& options, const Progress& progress, const Caller& caller);

 private:
  struct SourceValue {
    StoredSecret raw;
    CredentialFields fields;
    int64_t credentials_version = 0;
    std::string fingerprint;
  };
  // kNotFound when the source holds no secret for `p`.
  Result<SourceValue> ReadSource(const Provider& p);
  // The target's value opened: its fingerprint and credentials version.
  Result<std::pair<std::string, int64_t>> ReadTarget(const std::string& provider_id, std::string* version = nullptr);
  MigrationItem CopyOne(const Provider& p, const MigrationOptions& options,
                        const std::map<std::string, MigrationRecord>& done);
  Result<std::string> WriteTarget(const std::string& name, const std::string& sealed);
  MigrationItem VerifyOne(const Provider& p, const std::map<std::string, MigrationRecord>& done);
  // Whether `p` was copied by this migration (a `copied` record) and the
  // target still opens to what was copied: with no source secret left, a
  // delete pass removed it after its verify.
  bool MovedAndSourceDeleted(const Provider& p, const std::map<std::string, MigrationRecord>& done);
  MigrationItem DeleteOne(const Provider& p, const Caller& caller);

  SecretsService& source_;
  ProviderRepository& providers_;
  MigrationProgressRepository& records_;
  MigrationTarget target_;
  Sealer target_sealer_;
  std::map<std::string, std::string> verified_versions_;  // provider id -> source version verified
};

}  // namespace dyad
