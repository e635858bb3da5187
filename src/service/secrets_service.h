// SecretsService: the read and write paths of provider credentials
// (DESIGN.md §4–§6) over one SecretStore and one KeyManager.
//
// Get(): cache → store → (on kUnavailable only) stale-if-error → the
// DYAD_PROVIDER_<SLUG>_<FIELD> fallback. With the environment provider those
// variables are also the read-only source of a provider with no stored
// secret. Writes seal with a fresh DEK, replace the secret, then ask for the
// state of the key version sealed under and seal again under the primary if
// it is no longer active (so a blob is never left on a version another
// process retires meanwhile), and invalidate the cache. Every read that
// misses the cache, every write and every admin action is audited; nothing
// here logs a value. Orphans (a stored secret without its provider row) are
// only counted at start; CollectOrphans (`secrets gc`) deletes old ones,
// never a secret whose create is running. The DYAD_PROVIDER_* values are
// held as SecretBytes. Thread-safe.
//
// A stored envelope whose credentials version is older than its registry
// row's is a rollback (an old value put back behind the gateway's back): it
// is refused with kDataLoss, audited as secret.tampered and counted in
// /metrics, never served.
//
// A credential field may refer to a dynamic secret (CredentialReference)
// when the backend has a DynamicSecretSource: Load() resolves it through
// LeasedSecrets (one read per path, the lease reused and renewed), and the
// cache keeps the result no longer than the next renewal. Replacing the
// credentials, clearing them or deleting the provider revokes its leases
// (best effort, audited as lease.revoke; a failure never fails the write). (Provider mode stores plain JSON with no version,
// so there the row's version is all there is.)
//
// Health() never waits for a backend: a probe thread asks the store and the
// KMS (at most once a second, when health is asked for) and Health()
// returns the last answer, or "unhealthy: … has not answered the health
// probe for N s" while a probe hangs; the key versions it shows are the
// registry's as they are now (KeyManager::KnownState()). When the system
// refuses the probe's thread (started on first use), Health() says so in
// its store error (unhealthy, nothing probed), logs it once at warn, and the
// next Health() tries again.
#pragma once

#include <atomic>
#include <concepts>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "audit/audit_sink.h"
#include "backends/key_manager.h"
#include "backends/secret_store.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/environment.h"
#include "core/mutex.h"
#include "core/random.h"
#include "core/thread.h"
#include "metrics/metrics.h"
#include "registry/change_feed.h"
#include "registry/provider_repository.h"
#include "secrets/credential_cache.h"
#include "secrets/sealer.h"
#include "service/leased_secrets.h"
#include "service/provider_locks.h"
#include "transport/retry.h"

namespace dyad {

struct SecretsOptions {
  bool cache_enabled = true;
  CacheOptions cache;
  bool fallback_enabled = true;
  bool fallback_to_env = true;
  // The DYAD_PROVIDER_* variables are also the read-only source of a
  // provider with no stored secret (the backend's BackendTraits).
  bool env_is_source = false;
  SealMode seal_mode = SealMode::kEnvelope;
  // The registry's per-provider leases (nullptr: one process, in-process
  // locks only) and their timing; see ProviderLocks.
  ProviderLeases* leases = nullptr;
  ProviderLeaseOptions lease;
  // The key of the validate fingerprint (DeploymentFingerprintKey); a
  // random one for this process when empty.
  SecretBytes fingerprint_key;
  // A health probe is asked for when the last answer is this old, and is
  // reported as hanging when it has run this long.
  std::chrono::milliseconds probe_interval{1000};
  std::chrono::milliseconds probe_stuck_after{2000};
  // A store that keeps replicas has them checked (one sample secret) by the
  // health probe at most this often.
  std::chrono::milliseconds replication_interval{std::chrono::minutes(1)};
  // Starts the refresh-ahead worker's thread (in Create) and the health
  // probe's (on first use); StartThread when unset (core/thread.h).
  ThreadStarter start_thread = nullptr;
  // `secrets gc` never deletes a secret changed more recently than this,
  // whatever --older-than says: longer than a create can take from writing
  // its secret to inserting its registry row (see CollectOrphans).
  std::chrono::seconds min_orphan_age{60};
  // The backend's dynamic secrets (Backend::dynamic), which a credential
  // field may refer to; null: a reference is refused (kInvalidArgument on
  // write, kFailedPrecondition on read). Must outlive the service.
  DynamicSecretSource* dynamic = nullptr;
  // The registry's change feed (null: one instance, nothing to tell). Every
  // credential write or delete is published on it after the cache entry is
  // dropped; a change from another instance drops that provider's entry
  // (kEverything: the whole cache) and a key epoch change of this key
  // makes the key manager read its versions again (KeyManager::MarkStale).
  // Must outlive the service.
  ChangeFeed* changes = nullptr;
};

// Who asked, for the audit log.
struct Caller {
  std::string actor = "system";
  std::string request_id;
};

struct CredentialRead {
  CredentialsPtr credentials;
  std::string source;  // cache | store | stale | fallback | environment
};

struct SecretsHealth {
  std::string status;  // healthy | degraded | unhealthy
  std::string provider;
  bool cache_enabled = false;
  size_t cache_size = 0;
  std::string last_checked;
  std::string store_error;  // empty when the store answered
  std::optional<KeyState> key_state;
  std::string key_error;
  bool audit_ok = true;
  uint64_t stale_serves = 0;
  uint64_t fallback_reads = 0;
  int64_t orphaned_secrets = -1;  // found by ReportOrphans() at start; -1: not counted
  // The store's replicas (SecretStore::KeepsReplicas), as last checked on a
  // sample secret; nullopt when it keeps none or none was checked yet.
  // The check is the probe's own phase, after the store's and the key
  // manager's: a slow or hanging one is reported here, never as theirs.
  struct Replication {
    SecretStore::ReplicationReport report;
    std::string checked_at;
    double duration_ms = 0;  // how long the check took
    std::string error;       // the check failed, or hangs
    std::string status;      // healthy | degraded (Health(): a replica not InSync or InProgress, or an error)
  };
  std::optional<Replication> replication;
};

struct ProbeStep {
  std::string name;
  bool ok = false;
  double latency_ms = 0;
  std::string error;
};

class SecretsService {
 public:
  // `provider_env`: the DYAD_PROVIDER_* variables (Config::provider_env).
  // Starts the refresh-ahead worker's thread: kUnavailable when the system
  // (or options.start_thread) refuses it.
  static Result<std::unique_ptr<SecretsService>> Create(SecretsOptions options, SecretStore& store, KeyManager& keys,
                                                        ProviderRepository& providers, AuditSink& audit,
                                                        Metrics& metrics, const Clock& clock, Random& random,
                                                        SecretEnv provider_env);
  // Takes the DYAD_PROVIDER_* variables of `env` (tests).
  template <typename Env>
    requires std::same_as<Env, EnvMap>
  static Result<std::unique_ptr<SecretsService>> Create(SecretsOptions options, SecretStore& store, KeyManager& keys,
                                                        ProviderRepository& providers, AuditSink& audit,
                                                        Metrics& metrics, const Clock& clock, Random& random,
                                                        const Env& env) {
    return Create(std::move(options), store, keys, providers, audit, metrics, clock, random, ProviderVariables(env));
  }
  ~SecretsService();

  std::string SecretName(const std::string& provider_id) const { return store_.SecretName(provider_id); }

  // How long a write whose answer was lost is settled for: reading it back,
  // and undoing it, are tried again while the store or registry is
  // unavailable (a PostgreSQL restart takes a second or two), for up to
  // about 8 s a round, the provider's lock held. A provider write may run
  // three rounds back to back (the store read-back, the row read-back, the
  // undo); none of them retries past the write's deadline (Held::deadline()),
  // which keeps them inside its lease.
  static constexpr RetryPolicy kSettle{8, std::chrono::milliseconds(100), std::chrono::milliseconds(2000),
                                       std::chrono::milliseconds(8000)};

  // The hot path (through the cache unless SECRETS_CACHE_ENABLED=false).
  Result<CredentialRead> Get(const std::string& provider_id, const Caller& caller);
  // Get's cache hit alone, never waiting (CredentialCache::GetIfFresh): the
  // credentials Get would serve from the cache, else null (a miss, a stale
  // or leased-out entry, the cache off): Get must be asked, off the I/O threads.
  CredentialsPtr GetCached(const std::string& provider_id);
  bool cache_enabled() const { return options_.cache_enabled; }

  // Seal and store under the provider's lock (locks().Hold()), returning
  // the document stored and its version. Create fails with kAlreadyExists
  // on a taken name. Put replaces only if the store still holds `expected`
  // (what ReadRaw() gave under the lock; nullopt: no secret), else
  // kConflict: a writer whose lease ran out never overwrites the one that
  // took it over.
  Result<StoredSecret> Create(const std::string& provider_id, int64_t version, const CredentialFields& fields,
                              const Caller& caller, ProviderLocks::Held& held);
  Result<StoredSecret> Put(const std::string& provider_id, int64_t version, const CredentialFields& fields,
                           const std::optional<StoredSecret>& expected, const Caller& caller,
                           ProviderLocks::Held& held);
  Status Delete(const std::string& provider_id, const Caller& caller);
  // Deletes the provider's secret under its lock only if it is still the
  // one `read` (or a rotation's rewrap of it); kConflict otherwise.
  Status DeleteIfUnchanged(const std::string& provider_id, const StoredSecret& read, const Caller& caller,
                           ProviderLocks::Held& held);
  // After a Create() and its registry row: seals again under the primary
  // if the version sealed under is no longer active (write-then-check, see
  // ResealIfRetiring); returns what is stored. Never fails the write.
  StoredSecret Settle(const std::string& provider_id, int64_t version, const CredentialFields& fields,
                      StoredSecret stored, ProviderLocks::Held& held);

  // The stored document and its version, for a fenced write and for
  // compensation; nullopt when absent.
  Result<std::optional<StoredSecret>> ReadRaw(const std::string& provider_id);
  // The fields of `raw` (what ReadRaw() gave under the provider's lock) in
  // clear, references unresolved, for a read-modify-write of them: kDataLoss
  // (audited as secret.tampered) when it does not open or is older than the
  // registry row's `row_version` (a rollback). The version it carries
  // (above `row_version` when a write stored it and its row update did not
  // follow) is SealedVersion(raw), authenticated once this succeeded.
  Result<CredentialFields> OpenRaw(const std::string& provider_id, const StoredSecret& raw, int64_t row_version);
  // The credentials version `raw`'s envelope header names, read without
  // opening it; 0 without one (the provider seal mode, not an envelope).
  // Not authenticated by itself: for choosing a version past it, never for
  // trusting what it holds, unless OpenRaw(raw) succeeded (the figure is
  // then the one its AAD sealed).
  static int64_t SealedVersion(const StoredSecret& raw);
  // "DYAD_PROVIDER_<SLUG>_" when the environment is the source of `p`'s
  // credentials while nothing is stored (SECRETS_PROVIDER=environment and
  // one of its variables set); empty otherwise.
  std::string EnvironmentSource(const Provider& p) const;
  // The DYAD_PROVIDER_<SLUG>_<FIELD> variables set (not empty) for `p`, by
  // field: its credential fields and api_key, what the fallback reads. A
  // slug and a field can spell another provider's variable ("google-api"'s
  // field key and "google"'s api_key are both DYAD_PROVIDER_GOOGLE_API_KEY):
  // such a name is read for neither (logged), and none is read when the
  // registry cannot be listed to tell.
  std::map<std::string, std::string> EnvironmentVariables(const Provider& p) const;
  // Their values (the fallback's credentials for `p`).
  CredentialFields EnvironmentFields(const Provider& p) const { return EnvironmentFields(EnvironmentVariables(p)); }
  // The values of `variables`, as EnvironmentVariables gave them (one
  // reading of the registry for both).
  CredentialFields EnvironmentFields(const std::map<std::string, std::string>& variables) const;
  // The names of every DYAD_PROVIDER_* variable set (not empty), sorted.
  std::vector<std::string> EnvironmentVariableNames() const;
  // Undoes a write: puts `raw` back (nullopt: deletes) only where the store
  // still holds version `written` (nullopt: still holds nothing); another
  // writer's document stands. Tried again while the store is unavailable
  // (kSettle, until held.deadline()); the change is published once, at the
  // end (an attempt whose answer was lost may have put `raw` back). A lease
  // lost to another instance (held.lost()) refuses it with kConflict.
  Status RestoreRaw(const std::string& provider_id, const std::optional<std::string>& written,
                    const std::optional<std::string>& raw, ProviderLocks::Held& held);

  // Replaces version `version` of `name` with `value`, under the provider's
  // `held` lock: a conditional write where the store has one, else a read
  // that finds `version` still stored (skipped when `read_under_held`: the
  // caller read it under this same hold), the lease renewed, and
  // Overwrite(). kConflict when `version` is no longer stored or the lease
  // was lost.
  Result<std::string> ReplaceHeld(const std::string& name, std::string_view value, const std::string& version,
                                  ProviderLocks::Held& held, bool read_under_held = false);

  // One writer at a time per provider: credential writes, re-encryption in
  // a store without conditional writes, `secrets gc`.
  ProviderLocks& locks() { return locks_; }

  // The names of every stored provider secret: the store's list and the
  // registry's providers (a store may not permit listing: then the
  // registry's alone, said once in the log). Sorted, unique. `listed`, when
  // given, says whether the store's own list was read (false: only this
  // instance's registry named them, and another instance's may be missing).
  Result<std::vector<std::string>> StoredSecretNames(bool* listed = nullptr);

  size_t ClearCache(const Caller& caller);
  // Loads the provider's credentials into the cache as a miss would (no
  // fallback), for CacheWarmer; audited as cache.warm. kFailedPrecondition
  // with the cache disabled, kNotFound when it has no credentials.
  Status Warm(const std::string& provider_id);
  // Never blocks on a backend (see above); asks for a new probe when due.
  SecretsHealth Health() DYAD_LOCKS_EXCLUDED(probe_mu_);
  // Waits (real time, up to `timeout`) until no probe is due or running
  // and one has answered; false on timeout. For start-up and tests.
  bool AwaitProbe(std::chrono::milliseconds timeout) DYAD_LOCKS_EXCLUDED(probe_mu_);
  // Start-up check that the configured key sealed the data already stored:
  // reads up to `sample` stored secrets spread over the list and fails with
  // kFailedPrecondition naming both key ids when one was sealed by another
  // key, or when the key (same id) unwraps none of their data keys;
  // kUnavailable (not a mismatch) when the store or KMS cannot be reached.
  Status CheckStoredKeys(size_t sample);
  // The validate fingerprint of `fields` under the deployment's key ("" in
  // the unlikely case that no key could be drawn).
  std::string Fingerprint(const CredentialFields& fields) const;
  std::vector<ProbeStep> TestConnection(const Caller& caller);
  // Opens every stored provider secret; names the first that fails.
  struct VerifyReport {
    int64_t total = 0, ok = 0, failed = 0;
    std::string first_error;
  };
  Result<VerifyReport> VerifyAll();

  // Orphans: stored secrets under <prefix>/providers/ without a provider row
  // (left by a failed compensation, or a create still between its secret and
  // its row). Nothing deletes them at start; FindOrphans() deletes nothing.
  struct Orphan {
    std::string name, provider_id;
    std::optional<Clock::WallTime> changed_at;  // from the store, if it knows
  };
  Result<std::vector<Orphan>> FindOrphans();
  // FindOrphans() for start-up: the count is kept for Health().
  Result<size_t> ReportOrphans();

  // `secrets gc`: deletes, through the store's normal Delete() (a recovery
  // window is kept), each orphan last changed at least max(older_than,
  // min_orphan_age) ago, re-checking under the provider lock that it still
  // has no row. Audited per secret. `dry_run` deletes nothing.
  struct GcItem {
    std::string name;
    std::string outcome;  // deleted | would delete | too young | age unknown | has a row | failed: …
  };
  struct GcReport {
    std::chrono::seconds grace{0};
    std::vector<GcItem> items;
    int64_t deleted = 0, kept = 0, failed = 0;
  };
  Result<GcReport> CollectOrphans(std::chrono::seconds older_than, bool dry_run, const Caller& caller);

  CredentialCache& cache() { return cache_; }
  // Tells the other instances (ChangeFeed) that this key's versions or
  // their states changed: after a rotation, a retirement. Never fails the
  // caller (a publish that fails is logged; they learn it within the key
  // manager's periodic re-read).
  void PublishKeyEpoch();
  // Null without a dynamic secret source.
  LeasedSecrets* leased() { return leased_.get(); }
  // Records `event` in the audit log as `caller`'s (actor, request id): for
  // writes made elsewhere on the deployment's behalf (BackendMigration).
  void Audit(AuditEvent event, const Caller& caller);
  SecretStore& store() { return store_; }
  KeyManager& keys() { return keys_; }
  Sealer& sealer() { return sealer_; }

 private:
  SecretsService(SecretsOptions options, SecretStore& store, KeyManager& keys, ProviderRepository& providers,
                 AuditSink& audit, Metrics& metrics, const Clock& clock, Random& random, SecretEnv provider_env);
  Result<CredentialsPtr> Load(const std::string& provider_id);
  // Drops the provider's cache entry and tells the other instances.
  void Changed(const std::string& provider_id, Change::Kind kind);
  void Publish(const Change& change);
  // A change another instance published (the feed's thread).
  void OnChange(const Change& change);
  // Opens a stored document, counting the KMS call; kDataLoss is audited.
  Result<OpenedSecret> OpenChecked(const std::string& provider_id, std::string_view stored);
  // kDataLoss (audited) for an envelope older than its registry row.
  Status CheckNotRolledBack(const std::string& provider_id, const OpenedSecret& opened, int64_t row_version);
  Result<CredentialsPtr> FromEnvironment(const std::string& provider_id, const std::string& origin);
  Result<StoredSecret> Write(const std::string& provider_id, int64_t version, const CredentialFields& fields,
                             const Caller& caller, bool create, const std::optional<StoredSecret>& expected,
                             ProviderLocks::Held& held);
  // A write that failed with kUnavailable may have been applied (the answer
  // lost after the commit), or failed before it reached the store. The
  // secret is read back (kSettle). An envelope's bytes, or a rewrap of them,
  // mean it was applied (they are this writer's alone: a fresh data key and
  // nonce each time). No secret, the version `expected` (what a replace
  // read; nullopt for a create), or an envelope's other bytes mean it was
  // not: `failed`. Otherwise (another mode's bytes may be another writer's
  // identical ones; the store unreadable), `failed` saying so.
  Result<StoredSecret> ReadBack(const std::string& name, const std::string& sealed,
                                const std::optional<std::string>& expected, Error failed, Clock::Instant deadline);
  // One attempt of RestoreRaw().
  Status RestoreOnce(const std::string& name, const std::optional<std::string>& written,
                     const std::optional<std::string>& raw, ProviderLocks::Held& held);
  Result<StoredSecret> ReplaceFenced(const std::string& name, StoredSecret expected, const std::string& sealed,
                                     ProviderLocks::Held& held);
  Result<StoredSecret> ResealIfRetiring(const std::string& name, int64_t version, const SecretBytes& payload,
                                        StoredSecret sealed, ProviderLocks::Held& held);
  // A "secret.delete" line: `s` the store's answer (kNotFound is a success).
  void AuditDelete(const std::string& provider_id, const Status& s, Clock::Instant t0, const Caller& caller);
  // A credential that refers to a dynamic secret needs a source of them.
  Status CheckReferences(const CredentialFields& fields) const;
  // Ends the provider's leases (best effort, audited): its credentials are
  // gone or replaced. Never fails the caller.
  void RevokeLeases(const std::string& provider_id, const Caller& caller, std::string_view why);
  template <typename F>
  auto TimedStore(std::string_view op, const std::string& name, F&& f);
  static void LogBackendCall(std::string_view part, std::string_view op, std::string_view name, const Error* error,
                             Clock::Duration elapsed);
  void Spawn(std::function<void()> task) DYAD_LOCKS_EXCLUDED(work_mu_);
  // worker_'s loop: runs what Spawn queued until stopping_ and nothing is left.
  void WorkLoop() DYAD_LOCKS_EXCLUDED(work_mu_);
  void RecordTampered(const std::string& provider_id, std::string_view reason, const Error& error);
  void ProbeLoop() DYAD_LOCKS_EXCLUDED(probe_mu_);
  void NoteListingRefused(const Error& e);  // logs once

  SecretsOptions options_;
  SecretStore& store_;
  KeyManager& keys_;
  ProviderRepository& providers_;
  AuditSink& audit_;
  Metrics& metrics_;
  const Clock& clock_;
  Random& random_;
  Sealer sealer_;
  SecretEnv env_;  // DYAD_PROVIDER_* only
  CredentialCache cache_;
  // Made once, so that a cache hit allocates nothing for its loader.
  const CredentialCache::Loader load_ = [this](const std::string& provider_id) { return Load(provider_id); };
  std::atomic<uint64_t> stale_serves_{0}, fallback_reads_{0};
  std::atomic<int64_t> orphans_at_start_{-1};
  std::atomic<int64_t> last_degraded_ns_{INT64_MIN / 2};
  ProviderLocks locks_;
  std::unique_ptr<LeasedSecrets> leased_;  // null without options_.dynamic
  std::atomic<bool> listing_refused_{false};
  uint64_t subscription_ = 0;  // on options_.changes
  // The backend half of Health() (a store probe, a KMS probe), made by
  // probe_thread_ and reused for probe_interval: /readyz is
  // unauthenticated, and with a cloud backend every probe is a billed API
  // call that shares the account's request quota with the gateway's reads.
  struct BackendProbe {
    Clock::Instant at;
    std::string checked_at;
    std::string store_error, key_error;
  };
  Mutex probe_mu_;
  CondVar probe_cv_;       // a probe is wanted, or stopping
  CondVar probe_done_cv_;  // a probe answered
  std::optional<BackendProbe> last_probe_ DYAD_GUARDED_BY(probe_mu_);
  std::optional<SecretsHealth::Replication> replication_ DYAD_GUARDED_BY(probe_mu_);
  std::optional<Clock::Instant> replication_at_ DYAD_GUARDED_BY(probe_mu_);
  bool probe_wanted_ DYAD_GUARDED_BY(probe_mu_) = false;
  bool probe_stopping_ DYAD_GUARDED_BY(probe_mu_) = false;
  std::optional<Clock::Instant> probe_started_ DYAD_GUARDED_BY(probe_mu_);  // while one runs
  const char* probe_phase_ DYAD_GUARDED_BY(probe_mu_) = "";                // what it waits for
  // Started on first use under probe_mu_; joined by the destructor once
  // probe_stopping_ forbids another start (not under the lock: the loop needs it).
  std::thread probe_thread_;
  // Why the probe's thread could not be started, until it can ("": it could).
  std::string probe_start_error_ DYAD_GUARDED_BY(probe_mu_);

  // Refresh-ahead worker (declared last: stopped first).
  Mutex work_mu_;
  CondVar work_cv_;
  std::deque<std::function<void()>> work_ DYAD_GUARDED_BY(work_mu_);
  bool stopping_ DYAD_GUARDED_BY(work_mu_) = false;
  std::thread worker_;  // started by Create()
};

}  // namespace dyad
