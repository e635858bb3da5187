// BackendMigration: `dyad-gateway migrate --to-env-file`: copies every
// provider's credentials from the configured backend (the source, through
// its SecretsService) to another backend (the target: a SecretStore, a
// KeyManager and an encryption mode opened on the same registry database).
//
// First one read of a name no provider has in the target: a target that does
// not answer (kUnavailable, kUnauthenticated) ends the run before anything is
// copied, and the copy pass stops after kMaxUnavailableInARow providers in a
// row failed as unavailable (each such call may wait for the backend's
// timeouts and retries).
//
// Per provider, under the source's provider lock (the registry lease, so a
// `serve` writing that provider meanwhile waits for the copy): read the
// source secret and open it, read what the target holds. A target that opens
// to the same credentials is left as it is ("skipped"). Otherwise the value
// about to be written is recorded first (MigrationProgressRepository:
// "copying", the source's version, the keyed fingerprint and credentials
// version about to be written, and the target version this migration may
// replace), then sealed under the target's key (same credentials version)
// and written: created where the target holds nothing, else replaced — only
// if the target's value is one this migration wrote (its recorded version)
// or was about to write when a run stopped (the record's fingerprint); a
// value anyone else wrote there (a credential rotated on an already serving
// target, say) is kept and the provider fails, naming it. Then the source is
// read again: a source that changed meanwhile (another writer, a key
// rotation) is copied again before the provider is recorded "copied" with
// the target's new version. A run killed at any point resumes from these
// records.
//
// After the copy pass the providers are listed again and the ones created
// (or given credentials) meanwhile are copied too; after the last pass they
// are listed once more, and any that appeared since are reported as not
// copied (the run is then not clean).
//
// Verify opens every provider's credentials under the target and compares
// them (keyed fingerprint and credentials version) with the source read
// anew. The source secrets are deleted (delete_source) only after a verify
// with no failure at all, each only while it still holds the version that
// was verified. After a clean run with a verify pass, the records keep only
// their state and versions: the keyed fingerprints are cleared (a re-run
// recognises its writes by the target's version). Every write to the target
// (audited as migration.copy) and every deletion from the source
// (secret.delete) goes to the source's audit log as `caller`'s. A dry run
// reads everything and writes nothing. Nothing here logs, reports or records
// a value: items carry provider ids and the backends' error messages. Not
// thread-safe: one run at a time (the CLI holds a lock file).
#pragma once

#include <functional>
#include <map>
#include <optional>
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
  // "<source location> -> <target location>" (BackendFactory::StoreLocation:
  // region, address, namespace, mount, prefix), part of the migration's id,
  // so that runs to two places that name their secrets alike (two Vault
  // servers, two regions) never share progress records.
  std::string route;
};

struct MigrationOptions {
  bool dry_run = false;
  bool verify = false;
  bool delete_source = false;  // implies verify
  int max_attempts = 3;        // copies of one provider whose source keeps changing
};

struct MigrationItem {
  std::string provider_id;
  // copied | skipped | failed | would copy | would skip | no credentials |
  // not copied (created after the last listing)
  std::string outcome;
  std::string detail;  // the backend's error or why; never a value
  ErrorCode code = ErrorCode::kInternal;  // of a failure
};

struct MigrationReport {
  std::string migration;  // the name of the source -> target pair
  std::vector<MigrationItem> items;
  int64_t copied = 0, skipped = 0, failed = 0;
  int64_t without_credentials = 0;  // "no credentials": nothing to copy, not counted as skipped
  bool verified = false;  // a verify pass ran
  int64_t verify_ok = 0, verify_failed = 0;
  std::vector<MigrationItem> verify_failures;
  int64_t source_deleted = 0;
  std::vector<MigrationItem> delete_failures;
  std::string delete_refused;  // why the source was kept although asked to delete it
  std::string stopped;         // why the copy pass ended early (a backend unavailable)
  // Providers created (or given credentials) after the copy passes listed
  // them: not copied.
  std::vector<MigrationItem> late;
  bool fingerprints_cleared = false;  // a clean run's records keep versions only
  std::string fingerprints_kept;      // why they could not be cleared
  bool Clean() const {
    return failed == 0 && verify_failed == 0 && delete_failures.empty() && delete_refused.empty() &&
           stopped.empty() && late.empty();
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

  // Providers failing in a row as unavailable before the copy pass stops.
  static constexpr int kMaxUnavailableInARow = 3;

  // kInvalidArgument when the target is the source itself; kUnavailable
  // when the registry cannot be read or the target does not answer its
  // first read (kUnauthenticated when it refuses the credentials). A
  // provider's failure is in the report.
  Result<MigrationReport> Run(const MigrationOptions& options, const Progress& progress, const Caller& caller);

 private:
  using Records = std::map<std::string, MigrationRecord>;
  struct SourceValue {
    StoredSecret raw;
    CredentialFields fields;
    int64_t credentials_version = 0;
    std::string fingerprint;
  };
  // What the target holds for a provider.
  struct TargetValue {
    std::string version;
    std::optional<std::string> fingerprint;  // nullopt: it does not open under the target's key
    int64_t credentials_version = 0;
    std::string open_error;  // why it does not open
  };
  // kNotFound when the source holds no secret for `p`.
  Result<SourceValue> ReadSource(const Provider& p);
  // nullopt when the target holds no secret for the provider.
  Result<std::optional<TargetValue>> ReadTarget(const std::string& provider_id);
  // Whether source and target are one store spelled two ways (a Vault by
  // name and by address, an AWS FIPS endpoint, localhost and 127.0.0.1):
  // they name secrets alike and a probe written through the target is read
  // through the source. Checked before --delete-source, which would then
  // delete the only copy.
  Result<bool> OneStoreSpelledTwice();
  // Whether `t` opens to these credentials (the credentials version too,
  // where the target's mode keeps one).
  bool Holds(const TargetValue& t, const std::string& fingerprint, int64_t credentials_version) const;
  // Whether `t` is what this migration wrote (`record`'s target version) or
  // was about to write (its fingerprint, while kept).
  bool Ours(const TargetValue& t, const MigrationRecord* record) const;
  MigrationItem CopyOne(const Provider& p, const MigrationOptions& options, Records& done, const Caller& caller);
  // Creates the secret (`replacing` nullopt) or replaces the version
  // `replacing` only; audited.
  Result<std::string> WriteTarget(const std::string& provider_id, const std::string& sealed,
                                  const std::optional<std::string>& replacing, const CredentialFields& fields,
                                  const Caller& caller);
  MigrationItem VerifyOne(const Provider& p, const Records& done);
  // Whether `p` was copied by this migration (a `copied` record) and the
  // target still holds what was copied: with no source secret left, a
  // delete pass removed it after its verify.
  bool MovedAndSourceDeleted(const Provider& p, const Records& done);
  MigrationItem DeleteOne(const Provider& p, const Records& done, const Caller& caller);

  SecretsService& source_;
  ProviderRepository& providers_;
  MigrationProgressRepository& records_;
  MigrationTarget target_;
  Sealer target_sealer_;
  std::map<std::string, std::string> verified_versions_;  // provider id -> source version verified
};

}  // namespace dyad
