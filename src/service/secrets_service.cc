#include "service/secrets_service.h"

#include <algorithm>
#include <cctype>

#include <set>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "core/time_format.h"
#include "secrets/envelope.h"

namespace dyad {
namespace {

using Seconds = std::chrono::duration<double>;

std::string EnvSegment(std::string_view s) {
  std::string out;
  for (char c : s) {
    out.push_back(std::isalnum(static_cast<unsigned char>(c)) ? static_cast<char>(std::toupper(static_cast<unsigned char>(c)))
                                                               : '_');
  }
  return out;
}

// A store may hand back the document it was given serialised anew (Vault KV:
// compact, keys sorted, as kv_store.h says): the same JSON is the same
// probe. The probe holds no credential, so nothing needs wiping.
bool SameProbe(const std::string& written, const std::string& read) {
  if (written == read) return true;
  auto a = nlohmann::json::parse(written, nullptr, false);
  auto b = nlohmann::json::parse(read, nullptr, false);
  return !a.is_discarded() && !b.is_discarded() && a == b;
}

}  // namespace

SecretsService::SecretsService(SecretsOptions options, SecretStore& store, KeyManager& keys,
                               ProviderRepository& providers, AuditSink& audit, Metrics& metrics, const Clock& clock,
                               Random& random, SecretEnv provider_env)
    : options_(std::move(options)),
      store_(store),
      keys_(keys),
      providers_(providers),
      audit_(audit),
      metrics_(metrics),
      clock_(clock),
      random_(random),
      sealer_(keys, random, options_.seal_mode),
      env_(std::move(provider_env)),
      cache_(options_.cache, clock, [this](std::function<void()> task) { Spawn(std::move(task)); }),
      locks_(options_.leases, clock, random, options_.lease),
      leased_(options_.dynamic ? std::make_unique<LeasedSecrets>(*options_.dynamic, clock) : nullptr) {
  if (options_.fingerprint_key.empty()) {
    options_.fingerprint_key = SecretBytes(kFingerprintKeySize);
    if (!random.Fill(options_.fingerprint_key.data(), kFingerprintKeySize).ok()) {
      options_.fingerprint_key = SecretBytes();  // no key, no fingerprint: never a guessable one
    }
  }
  metrics_.SetCacheStats([this] { return cache_.Stats(); });
  if (options_.changes) subscription_ = options_.changes->Subscribe([this](const Change& c) { OnChange(c); });
}

Result<std::unique_ptr<SecretsService>> SecretsService::Create(SecretsOptions options, SecretStore& store,
                                                               KeyManager& keys, ProviderRepository& providers,
                                                               AuditSink& audit, Metrics& metrics, const Clock& clock,
                                                               Random& random, SecretEnv provider_env) {
  std::unique_ptr<SecretsService> service(new SecretsService(std::move(options), store, keys, providers, audit,
                                                             metrics, clock, random, std::move(provider_env)));
  auto started = StartThread(service->options_.start_thread, [s = service.get()] { s->WorkLoop(); });
  if (!started.ok()) {
    return MakeError(started.code(), "cannot start the credential cache's refresh-ahead thread: " +
                                         started.error().message);
  }
  service->worker_ = std::move(started).value();
  return service;
}

void SecretsService::WorkLoop() {
  work_mu_.Lock();
  while (true) {
    while (!stopping_ && work_.empty()) work_cv_.Wait(&work_mu_);
    if (work_.empty()) break;  // stopping with nothing left
    auto task = std::move(work_.front());
    work_.pop_front();
    work_mu_.Unlock();
    task();
    work_mu_.Lock();
  }
  work_mu_.Unlock();
}

SecretsService::~SecretsService() {
  if (options_.changes) options_.changes->Unsubscribe(subscription_);  // waits for a running OnChange
  {
    MutexLock lock(&probe_mu_);
    probe_stopping_ = true;
  }
  probe_cv_.SignalAll();
  if (probe_thread_.joinable()) probe_thread_.join();
  {
    MutexLock lock(&work_mu_);
    stopping_ = true;
  }
  work_cv_.SignalAll();
  if (worker_.joinable()) worker_.join();  // not when Create() was refused its thread
  metrics_.SetCacheStats(nullptr);
}

void SecretsService::Publish(const Change& change) {
  if (!options_.changes) return;
  if (Status s = options_.changes->Publish(change); !s.ok()) {
    const bool kept = s.code() == ErrorCode::kUnavailable;  // ChangeFeed: told once the registry answers
    spdlog::warn("cannot tell the other instances of a change ({} {}): {}; {}", ChangeKindName(change.kind),
                 change.subject, s.error().message,
                 kept ? "kept until the registry answers" : "they learn of it at their cache TTL");
  }
}

void SecretsService::Changed(const std::string& provider_id, Change::Kind kind) {
  cache_.Invalidate(provider_id);
  Publish(Change{kind, provider_id});
}

void SecretsService::PublishKeyEpoch() { Publish(Change{Change::Kind::kKeyEpoch, keys_.KeyId()}); }

void SecretsService::OnChange(const Change& change) {
  switch (change.kind) {
    case Change::Kind::kCredentials:
    case Change::Kind::kDeleted:
      cache_.Invalidate(change.subject);
      break;
    case Change::Kind::kKeyEpoch:
      if (change.subject == keys_.KeyId()) keys_.MarkStale();
      break;
    case Change::Kind::kEverything:
      keys_.MarkStale();
      cache_.Clear();
      break;
  }
}

void SecretsService::Spawn(std::function<void()> task) {
  {
    MutexLock lock(&work_mu_);
    if (stopping_) return;
    work_.push_back(std::move(task));
  }
  work_cv_.Signal();
}

template <typename F>
auto SecretsService::TimedStore(std::string_view op, const std::string& name, F&& f) {
  auto t0 = clock_.Now();
  auto r = f();
  bool ok = r.ok() || r.code() == ErrorCode::kNotFound;
  const auto elapsed = clock_.Now() - t0;
  metrics_.ObserveStore(op, Seconds(elapsed).count(), ok);
  LogBackendCall("store", op, name, r.ok() ? nullptr : &r.error(), elapsed);
  return r;
}

// At debug: the operation, the secret's name, the outcome and the time;
// never a value (an error's message is left out too: a backend's answer
// may quote what it was sent).
void SecretsService::LogBackendCall(std::string_view part, std::string_view op, std::string_view name,
                                    const Error* error, Clock::Duration elapsed) {
  if (!spdlog::should_log(spdlog::level::debug)) return;
  spdlog::debug("backend call: {}.{} secret={} status={} duration_ms={:.3f}", part, op, name,
                error ? ErrorCodeName(error->code) : std::string_view("OK"), Seconds(elapsed).count() * 1000);
}

void SecretsService::Audit(AuditEvent event, const Caller& caller) {
  event.actor = caller.actor;
  event.request_id = caller.request_id;
  audit_.Record(event);
}

Status SecretsService::CheckReferences(const CredentialFields& fields) const {
  for (const auto& [name, value] : fields) {
    auto ref = DecodeReference(value);
    if (!ref) continue;
    if (!leased_) {
      return MakeError(ErrorCode::kInvalidArgument, "credentials." + name + ": references a Vault secret, but "
                                                    "SECRETS_PROVIDER=" + store_.Name() + " has no dynamic secrets");
    }
    // The backend says which paths a credential may read (its allowlist).
    if (Status ok = options_.dynamic->CheckPath(ref->path); !ok.ok()) {
      return MakeError(ErrorCode::kInvalidArgument, "credentials." + name + ": " + ok.error().message);
    }
  }
  return OkStatus();
}

void SecretsService::RevokeLeases(const std::string& provider_id, const Caller& caller, std::string_view why) {
  if (!leased_) return;
  auto t0 = clock_.Now();
  LeasedSecrets::Revoked r = leased_->RevokeAll(provider_id);
  if (r.revoked + r.failed == 0) return;
  AuditEvent e;
  e.action = "lease.revoke";
  e.resource = provider_id;
  e.duration_ms = Seconds(clock_.Now() - t0).count() * 1000;
  e.detail = std::string(why) + ": " + std::to_string(r.revoked) + " revoked, " + std::to_string(r.failed) +
             " failed (they run out at their TTL)";
  if (r.failed > 0) {
    SetFailure(e, MakeError(ErrorCode::kUnavailable, r.first_error));
    e.detail += "; " + r.first_error;
    spdlog::warn("provider {}: {} dynamic secret lease(s) not revoked: {}", provider_id, r.failed, r.first_error);
  }
  Audit(std::move(e), caller);
}

void SecretsService::RecordTampered(const std::string& provider_id, std::string_view reason, const Error& error) {
  metrics_.CountTampered(reason);
  AuditEvent e;
  e.action = "secret.tampered";
  e.resource = provider_id;
  e.source = "store";
  SetFailure(e, error);
  e.detail = std::string(reason) + ": " + e.detail;
  Audit(std::move(e), Caller{});
}

Result<OpenedSecret> SecretsService::OpenChecked(const std::string& provider_id, std::string_view stored) {
  auto t0 = clock_.Now();
  const std::string name = SecretName(provider_id);
  auto opened = sealer_.Open(name, stored);
  const auto elapsed = clock_.Now() - t0;
  metrics_.ObserveKeyManager("decrypt", Seconds(elapsed).count(), opened.ok());
  LogBackendCall("keys", "decrypt", name, opened.ok() ? nullptr : &opened.error(), elapsed);
  if (!opened.ok() && opened.code() == ErrorCode::kDataLoss) RecordTampered(provider_id, "integrity", opened.error());
  return opened;
}

Status SecretsService::CheckNotRolledBack(const std::string& provider_id, const OpenedSecret& opened,
                                          int64_t row_version) {
  if (sealer_.mode() != SealMode::kEnvelope || opened.credentials_version >= row_version) return OkStatus();
  Error rollback = MakeError(ErrorCode::kDataLoss,
                             "stored credentials of provider '" + provider_id + "' are version " +
                                 std::to_string(opened.credentials_version) + ", older than the registry's " +
                                 std::to_string(row_version) + ": refused as a rollback (tampered)");
  RecordTampered(provider_id, "rollback", rollback);
  return rollback;
}

int64_t SecretsService::SealedVersion(const StoredSecret& raw) {
  auto e = ParseEnvelope(raw.value);
  return e.ok() ? e->credentials_version : 0;
}

Result<CredentialFields> SecretsService::OpenRaw(const std::string& provider_id, const StoredSecret& raw,
                                                 int64_t row_version) {
  DYAD_ASSIGN_OR_RETURN(OpenedSecret opened, OpenChecked(provider_id, raw.value));
  DYAD_RETURN_IF_ERROR(CheckNotRolledBack(provider_id, opened, row_version));
  return CredentialsFromJson(opened.payload.view());
}

Result<CredentialsPtr> SecretsService::Load(const std::string& provider_id) {
  const std::string name = SecretName(provider_id);
  // The row before the secret: a write stores the secret and then moves the
  // row on, so a row read first never names a version newer than the
  // secret read after it, and a stored version below the row's is a
  // rollback, never a race with a writer.
  std::optional<int64_t> row_version;
  bool cleared = false;  // the row says: no credentials (a clear deletes the secret after the row)
  if (auto row = providers_.Get(provider_id); row.ok()) {
    row_version = row->credentials_version;
    cleared = row->credential_fields.empty() && row->credentials_version > 0;
  } else if (row.code() != ErrorCode::kNotFound) {
    return row.error();
  }
  auto blob = TimedStore("get", name, [&] { return store_.Get(name); });
  if (!blob.ok()) {
    if (blob.code() == ErrorCode::kNotFound && options_.env_is_source) {
      return FromEnvironment(provider_id, "environment");
    }
    return blob.error();
  }
  DYAD_ASSIGN_OR_RETURN(OpenedSecret opened, OpenChecked(provider_id, blob->value));
  if (cleared && opened.credentials_version < *row_version) {  // not a rollback: the clear's delete is behind
    if (options_.env_is_source) return FromEnvironment(provider_id, "environment");
    return MakeError(ErrorCode::kNotFound, "provider '" + provider_id + "' has no credentials");
  }
  if (row_version) DYAD_RETURN_IF_ERROR(CheckNotRolledBack(provider_id, opened, *row_version));
  DYAD_ASSIGN_OR_RETURN(CredentialFields fields, CredentialsFromJson(opened.payload.view()));
  auto creds = std::make_shared<Credentials>();
  creds->fields = std::move(fields);
  creds->version = opened.credentials_version;
  creds->key_version = opened.key_version;
  if (sealer_.mode() == SealMode::kProvider && row_version) {  // plain JSON carries no version: the row has it
    creds->version = *row_version;
  }
  creds->origin = "store";
  if (HasReferences(creds->fields)) {
    if (!leased_) {
      return MakeError(ErrorCode::kFailedPrecondition, "provider '" + provider_id +
                                                           "': its credentials refer to dynamic secrets, but "
                                                           "SECRETS_PROVIDER=" + store_.Name() + " has none");
    }
    DYAD_RETURN_IF_ERROR(leased_->Resolve(provider_id, *creds));
  }
  creds->read_at = clock_.Now();  // after every read (the secret, and the values it refers to)
  return CredentialsPtr(std::move(creds));
}

namespace {

// The variable each field the fallback reads for `p` is named by: its
// credential fields and api_key.
std::vector<std::pair<std::string, std::string>> VariablesOf(const Provider& p) {
  std::vector<std::string> fields = p.credential_fields;
  if (std::find(fields.begin(), fields.end(), "api_key") == fields.end()) fields.push_back("api_key");
  const std::string prefix = "DYAD_PROVIDER_" + EnvSegment(p.slug) + "_";
  std::vector<std::pair<std::string, std::string>> out;
  for (auto& field : fields) {
    std::string variable = prefix + EnvSegment(field);
    out.emplace_back(std::move(field), std::move(variable));
  }
  return out;
}

}  // namespace

std::map<std::string, std::string> SecretsService::EnvironmentVariables(const Provider& p) const {
  std::map<std::string, std::string> out;
  for (auto& [field, variable] : VariablesOf(p)) {
    auto it = env_.find(variable);
    if (it != env_.end() && !it->second.empty()) out.emplace(std::move(field), std::move(variable));
  }
  if (out.empty()) return out;
  std::map<std::string, std::string> spelled;  // another provider's variable -> that provider's slug
  Status listed = ForEachProvider(providers_, [&](const Provider& other) {
    if (other.id == p.id) return true;
    for (auto& [field, variable] : VariablesOf(other)) spelled.emplace(std::move(variable), other.slug);
    return true;
  });
  if (!listed.ok()) {
    spdlog::warn("provider '{}': DYAD_PROVIDER_* variables not read: cannot list the providers to tell whether "
                 "another one's name is the same: {}", p.slug, listed.error().message);
    return {};
  }
  for (auto it = out.begin(); it != out.end();) {
    auto other = spelled.find(it->second);
    if (other == spelled.end()) {
      ++it;
      continue;
    }
    spdlog::warn("{} names field '{}' of provider '{}' and a field of provider '{}': read for neither; store the "
                 "credentials, or change a slug or field name", it->second, it->first, p.slug, other->second);
    it = out.erase(it);
  }
  return out;
}

CredentialFields SecretsService::EnvironmentFields(const std::map<std::string, std::string>& variables) const {
  CredentialFields out;
  for (const auto& [field, variable] : variables) out.emplace(field, env_.at(variable));
  return out;
}

std::vector<std::string> SecretsService::EnvironmentVariableNames() const {
  std::vector<std::string> out;
  for (const auto& [name, value] : env_) {
    if (!value.empty()) out.push_back(name);
  }
  return out;
}

std::string SecretsService::EnvironmentSource(const Provider& p) const {
  if (!options_.env_is_source || EnvironmentFields(p).empty()) return "";
  return "DYAD_PROVIDER_" + EnvSegment(p.slug) + "_";
}

Result<CredentialsPtr> SecretsService::FromEnvironment(const std::string& provider_id, const std::string& origin) {
  DYAD_ASSIGN_OR_RETURN(Provider p, providers_.Get(provider_id));
  auto creds = std::make_shared<Credentials>();
  creds->origin = origin;
  creds->fields = EnvironmentFields(p);
  if (creds->fields.empty()) {
    return MakeError(ErrorCode::kNotFound, "no stored credentials and no DYAD_PROVIDER_" + EnvSegment(p.slug) +
                                               "_* variables for provider '" + provider_id + "'");
  }
  return CredentialsPtr(std::move(creds));
}

CredentialsPtr SecretsService::GetCached(const std::string& provider_id) {
  if (!options_.cache_enabled) return nullptr;
  auto t0 = clock_.Now();
  CredentialsPtr hit = cache_.GetIfFresh(provider_id, load_);
  if (hit && Metrics::SampleHit()) metrics_.ObserveRead(ReadSource::kCache, clock_.Now() - t0, Metrics::kHitSample);
  return hit;
}

Result<CredentialRead> SecretsService::Get(const std::string& provider_id, const Caller& caller) {
  auto t0 = clock_.Now();
  Result<CredentialRead> read = MakeError(ErrorCode::kInternal, "unset");
  if (options_.cache_enabled) {
    auto r = cache_.Get(provider_id, load_);
    if (r.ok()) {
      if (r->source == CacheSource::kHit) {  // not audited: the hot path
        if (Metrics::SampleHit()) metrics_.ObserveRead(ReadSource::kCache, clock_.Now() - t0, Metrics::kHitSample);
        if (spdlog::should_log(spdlog::level::debug)) spdlog::debug("cache hit: provider={}", provider_id);
        return CredentialRead{r->value, "cache"};
      }
      std::string source = r->source == CacheSource::kStale ? "stale" : r->value->origin;
      read = CredentialRead{r->value, source};
    } else {
      read = r.error();
    }
  } else {
    auto r = Load(provider_id);
    if (r.ok()) read = CredentialRead{*r, (*r)->origin};
    else read = r.error();
  }
  std::string store_error;
  if (!read.ok() && read.code() == ErrorCode::kUnavailable && options_.fallback_enabled && options_.fallback_to_env) {
    store_error = read.error().message;
    auto fb = FromEnvironment(provider_id, "fallback");
    if (fb.ok()) {
      read = CredentialRead{*fb, "fallback"};
      fallback_reads_.fetch_add(1, std::memory_order_relaxed);
      metrics_.CountFallbackRead();
    }
  }
  if (read.ok() && read->source == "stale") stale_serves_.fetch_add(1, std::memory_order_relaxed);
  if (read.ok() && (read->source == "stale" || read->source == "fallback")) {
    last_degraded_ns_ = clock_.Now().time_since_epoch().count();
  }
  const auto elapsed = clock_.Now() - t0;
  if (read.ok()) metrics_.ObserveRead(ReadSourceOf(read->source), elapsed);
  if (spdlog::should_log(spdlog::level::debug)) {
    // The cache's decision: a miss loaded from the store (or the
    // environment), a stale entry served, the fallback, or an error.
    std::string_view decision = !options_.cache_enabled ? "bypassed"
                                : !read.ok()            ? "error"
                                : read->source == "stale"    ? "stale"
                                : read->source == "fallback" ? "fallback"
                                                             : "miss";
    spdlog::debug("cache {}: provider={} source={} status={} duration_ms={:.3f}", decision, provider_id,
                  read.ok() ? std::string_view(read->source) : std::string_view("none"),
                  read.ok() ? std::string_view("OK") : ErrorCodeName(read.code()), Seconds(elapsed).count() * 1000);
  }
  AuditEvent e;
  e.action = "secret.get";
  e.resource = provider_id;
  e.duration_ms = Seconds(elapsed).count() * 1000;
  if (read.ok()) {
    e.source = read->source;
    e.fields = FieldNames(read->credentials->fields);
    e.detail = store_error;
  } else {
    SetFailure(e, read.error());
  }
  Audit(std::move(e), caller);
  return read;
}

namespace {

// Two envelopes of one sealing: the same nonce and ciphertext, the data key
// perhaps rewrapped under another key version by a rotation (which is not
// another writer).
bool SameSealedPayload(const std::string& a, const std::string& b) {
  auto x = ParseEnvelope(a);
  auto y = ParseEnvelope(b);
  return x.ok() && y.ok() && x->nonce == y->nonce && x->ciphertext == y->ciphertext;
}

Error ChangedMeanwhile(const std::string& name) {
  return MakeError(ErrorCode::kConflict,
                   "'" + name + "' was changed by another writer meanwhile; read the provider again and retry");
}

}  // namespace

Result<StoredSecret> SecretsService::Write(const std::string& provider_id, int64_t version,
                                           const CredentialFields& fields, const Caller& caller, bool create,
                                           const std::optional<StoredSecret>& expected, ProviderLocks::Held& held) {
  const std::string name = SecretName(provider_id);
  auto t0 = clock_.Now();
  SecretBytes payload = CredentialsToJson(fields);
  // A reference the backend cannot resolve is refused before any KMS call.
  Status refs = CheckReferences(fields);
  Result<std::string> sealed = refs.ok() ? sealer_.Seal(name, version, payload) : Result<std::string>(refs.error());
  if (refs.ok()) {
    metrics_.ObserveKeyManager("seal", Seconds(clock_.Now() - t0).count(), sealed.ok());
    LogBackendCall("keys", "seal", name, sealed.ok() ? nullptr : &sealed.error(), clock_.Now() - t0);
  }
  Result<StoredSecret> stored = MakeError(ErrorCode::kInternal, "unset");
  if (!sealed.ok()) {
    stored = sealed.error();
  } else if (create || !expected) {
    auto created = TimedStore("create", name, [&] { return store_.Create(name, *sealed); });
    if (created.ok()) stored = StoredSecret{*sealed, std::move(created).value()};
    else stored = !create && created.code() == ErrorCode::kAlreadyExists ? ChangedMeanwhile(name) : created.error();
  } else {
    stored = ReplaceFenced(name, *expected, *sealed, held);
  }
  if (sealed.ok() && !stored.ok() && stored.code() == ErrorCode::kUnavailable) {
    const bool replacing = !create && expected;
    stored = ReadBack(name, *sealed, replacing ? std::optional(expected->version) : std::nullopt, stored.error(),
                      held.deadline());
  }
  // A create settles once its row is in (ProviderService): until then a
  // retirer's recount, which may only know the registry's providers, does
  // not see this secret.
  if (stored.ok() && !create) stored = Settle(provider_id, version, fields, std::move(stored).value(), held);
  if (sealed.ok()) Changed(provider_id, Change::Kind::kCredentials);
  else cache_.Invalidate(provider_id);
  if (stored.ok() && !create) RevokeLeases(provider_id, caller, "credentials replaced");
  AuditEvent e;
  e.action = "secret.put";
  e.resource = provider_id;
  e.fields = FieldNames(fields);
  e.source = "store";
  e.duration_ms = Seconds(clock_.Now() - t0).count() * 1000;
  if (!stored.ok()) {
    SetFailure(e, stored.error());
  }
  Audit(std::move(e), caller);
  return stored;
}

Result<StoredSecret> SecretsService::ReadBack(const std::string& name, const std::string& sealed,
                                              const std::optional<std::string>& expected, Error failed,
                                              Clock::Instant deadline) {
  const bool envelope = sealer_.mode() == SealMode::kEnvelope;
  auto now = WithRetries(kSettle, clock_, random_, deadline, [&] { return store_.GetSettled(name); });
  if (now.ok() && envelope && SameSealedPayload(now->value, sealed)) return std::move(now).value();
  // Absent, as read, or (an envelope) another writer's bytes: not this write.
  if (now.ok() ? envelope || now->version == expected : now.code() == ErrorCode::kNotFound) return failed;
  failed.message += "; whether secret '" + name + "' was written is unknown, and its credentials may be served";
  return failed;
}

Result<std::string> SecretsService::ReplaceHeld(const std::string& name, std::string_view value,
                                                const std::string& version, ProviderLocks::Held& held,
                                                bool read_under_held) {
  auto replaced = store_.Replace(name, value, version);
  if (replaced.ok() || replaced.code() != ErrorCode::kUnimplemented) return replaced;
  // No conditional write: the lease is the fence. Read, renew, write.
  if (!read_under_held) {
    DYAD_ASSIGN_OR_RETURN(StoredSecret current, store_.Get(name));
    if (current.version != version) {
      return MakeError(ErrorCode::kConflict, "secret '" + name + "' was changed by another writer");
    }
  }
  DYAD_RETURN_IF_ERROR(held.Confirm());
  return store_.Overwrite(name, value);
}

// Replaces `expected` with `sealed`. A key rotation may have re-encrypted
// `expected` meanwhile (the same payload, nonce and ciphertext, its data key
// wrapped under a newer key version): that is not another writer, so the
// swap is tried again on what it wrote.
Result<StoredSecret> SecretsService::ReplaceFenced(const std::string& name, StoredSecret expected,
                                                   const std::string& sealed, ProviderLocks::Held& held) {
  constexpr int kAttempts = 4;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    auto replaced = TimedStore("put", name, [&] { return ReplaceHeld(name, sealed, expected.version, held); });
    if (replaced.ok()) return StoredSecret{sealed, std::move(replaced).value()};
    if (replaced.code() == ErrorCode::kNotFound) return ChangedMeanwhile(name);
    if (replaced.code() != ErrorCode::kConflict) return replaced.error();
    auto current = store_.Get(name);
    if (!current.ok()) return current.code() == ErrorCode::kNotFound ? ChangedMeanwhile(name) : current.error();
    if (!SameSealedPayload(expected.value, current->value)) return ChangedMeanwhile(name);
    expected = std::move(current).value();
  }
  return ChangedMeanwhile(name);
}

// Write-then-check: the key version sealed under is asked for after the
// store write. Still active then, the retirer's recount (which runs after it
// marks the version retiring) sees this blob; no longer active, the payload
// is sealed again under the primary this process now knows (replacing only
// this writer's own document), and checked again. Either way no blob is
// left on a version that gets retired.
Result<StoredSecret> SecretsService::ResealIfRetiring(const std::string& name, int64_t version,
                                                      const SecretBytes& payload, StoredSecret sealed,
                                                      ProviderLocks::Held& held) {
  if (sealer_.mode() != SealMode::kEnvelope) return sealed;
  constexpr int kAttempts = 5;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    DYAD_ASSIGN_OR_RETURN(Envelope env, ParseEnvelope(sealed.value));
    DYAD_ASSIGN_OR_RETURN(std::string state, keys_.CurrentState(env.key_version));
    if (state == "active") return sealed;
    DYAD_ASSIGN_OR_RETURN(std::string again, sealer_.Seal(name, version, payload));
    DYAD_ASSIGN_OR_RETURN(sealed, ReplaceFenced(name, sealed, again, held));
  }
  return MakeError(ErrorCode::kUnavailable, "'" + name + "': the key version kept changing while it was written");
}

StoredSecret SecretsService::Settle(const std::string& provider_id, int64_t version, const CredentialFields& fields,
                                    StoredSecret stored, ProviderLocks::Held& held) {
  auto settled = ResealIfRetiring(SecretName(provider_id), version, CredentialsToJson(fields), stored, held);
  if (settled.ok()) return std::move(settled).value();
  // The write stands, on a version being retired: the retirer's recount
  // finds it (the provider has its row) and keeps that version until a
  // later run moves the secret.
  spdlog::warn("provider {}: could not seal again under the primary key version: {}", provider_id,
               settled.error().message);
  return stored;
}

Result<StoredSecret> SecretsService::Create(const std::string& provider_id, int64_t version,
                                            const CredentialFields& fields, const Caller& caller,
                                            ProviderLocks::Held& held) {
  return Write(provider_id, version, fields, caller, true, std::nullopt, held);
}

Result<StoredSecret> SecretsService::Put(const std::string& provider_id, int64_t version,
                                         const CredentialFields& fields, const std::optional<StoredSecret>& expected,
                                         const Caller& caller, ProviderLocks::Held& held) {
  return Write(provider_id, version, fields, caller, false, expected, held);
}

Status SecretsService::DeleteIfUnchanged(const std::string& provider_id, const StoredSecret& read,
                                         const Caller& caller, ProviderLocks::Held& held) {
  auto current = store_.Get(SecretName(provider_id));
  if (!current.ok()) return current.code() == ErrorCode::kNotFound ? OkStatus() : Status(current.error());
  if (current->version != read.version && !SameSealedPayload(current->value, read.value)) {
    return MakeError(ErrorCode::kConflict, "the secret of provider '" + provider_id +
                                               "' was written by another writer since it was read; it stays");
  }
  auto t0 = clock_.Now();
  Status s = store_.DeleteIfVersion(SecretName(provider_id), current->version);
  if (s.ok() || s.code() != ErrorCode::kUnimplemented) {
    Changed(provider_id, Change::Kind::kDeleted);
    if (s.ok()) RevokeLeases(provider_id, caller, "credentials cleared");
    // Audited as Delete() audits: `migrate --delete-source` deletes here.
    AuditDelete(provider_id, s, t0, caller);
    return s;
  }
  DYAD_RETURN_IF_ERROR(held.Confirm());
  return Delete(provider_id, caller);
}

Status SecretsService::Delete(const std::string& provider_id, const Caller& caller) {
  auto t0 = clock_.Now();
  Status s = TimedStore("delete", SecretName(provider_id), [&] { return store_.Delete(SecretName(provider_id)); });
  Changed(provider_id, Change::Kind::kDeleted);
  RevokeLeases(provider_id, caller, "credentials deleted");
  AuditDelete(provider_id, s, t0, caller);
  return s.ok() || s.code() == ErrorCode::kNotFound ? OkStatus() : s;
}

void SecretsService::AuditDelete(const std::string& provider_id, const Status& s, Clock::Instant t0,
                                 const Caller& caller) {
  AuditEvent e;
  e.action = "secret.delete";
  e.resource = provider_id;
  e.source = "store";
  e.duration_ms = Seconds(clock_.Now() - t0).count() * 1000;
  if (!s.ok() && s.code() != ErrorCode::kNotFound) {
    SetFailure(e, s.error());
  }
  Audit(std::move(e), caller);
}

Result<std::optional<StoredSecret>> SecretsService::ReadRaw(const std::string& provider_id) {
  auto r = TimedStore("get", SecretName(provider_id), [&] { return store_.Get(SecretName(provider_id)); });
  if (r.ok()) return std::optional<StoredSecret>(std::move(r).value());
  if (r.code() == ErrorCode::kNotFound) return std::optional<StoredSecret>();
  return r.error();
}

Status SecretsService::RestoreRaw(const std::string& provider_id, const std::optional<std::string>& written,
                                  const std::optional<std::string>& raw, ProviderLocks::Held& held) {
  const std::string name = SecretName(provider_id);
  Status s = WithRetries(kSettle, clock_, random_, held.deadline(),
                         [&] { return RestoreOnce(name, written, raw, held); });
  // The write ended the leases of what it replaced (RevokeLeases). Put
  // back, those credentials are the provider's again: read to tell them
  // from another writer's, which may stand instead.
  if (s.ok() && raw && leased_) {
    auto now = store_.Get(name);
    if (now.ok() && now->value == *raw) leased_->Reopen(provider_id, SealedVersion(*now));
  }
  Changed(provider_id, Change::Kind::kCredentials);
  return s;
}

Status SecretsService::RestoreOnce(const std::string& name, const std::optional<std::string>& written,
                                   const std::optional<std::string>& raw, ProviderLocks::Held& held) {
  Status s;
  if (written && raw) {
    auto replaced = ReplaceHeld(name, *raw, *written, held);
    // A version conflict: another writer's document stands. A lost lease
    // is not one: nothing was put back, and the caller must say so.
    if (!replaced.ok() && (replaced.code() != ErrorCode::kConflict || held.lost())) s = replaced.error();
  } else if (written) {
    auto current = store_.Get(name);
    if (current.ok() && current->version == *written) {
      s = held.Confirm();
      if (s.ok()) s = store_.DeleteNow(name);
    }
    else if (!current.ok() && current.code() != ErrorCode::kNotFound) s = current.error();
  } else if (raw) {
    auto created = store_.Create(name, *raw);
    if (!created.ok() && created.code() != ErrorCode::kAlreadyExists) s = created.error();  // another writer's stands
  }
  if (!s.ok() && s.code() != ErrorCode::kNotFound) return s;
  return OkStatus();
}

void SecretsService::NoteListingRefused(const Error& e) {
  if (!listing_refused_.exchange(true)) {
    spdlog::warn("{}; the provider registry alone names the stored secrets (re-encryption, verify), and orphans "
                 "are not counted", e.message);
  }
}

Result<std::vector<std::string>> SecretsService::StoredSecretNames(bool* listed_store) {
  std::set<std::string> names;
  auto listed = store_.List();
  if (listed_store) *listed_store = listed.ok();
  if (listed.ok()) {
    for (auto& l : *listed) names.insert(std::move(l.name));
  } else if (listed.code() != ErrorCode::kPermissionDenied) {
    return listed.error();
  } else {
    NoteListingRefused(listed.error());
  }
  DYAD_RETURN_IF_ERROR(ForEachProvider(providers_, [&](const Provider& p) {
    if (!p.credential_fields.empty()) names.insert(SecretName(p.id));
    return true;
  }, /*page_size=*/1000));
  return std::vector<std::string>(names.begin(), names.end());
}

size_t SecretsService::ClearCache(const Caller& caller) {
  auto t0 = clock_.Now();
  size_t n = cache_.Clear();
  AuditEvent e;
  e.action = "cache.clear";
  e.duration_ms = Seconds(clock_.Now() - t0).count() * 1000;
  e.detail = std::to_string(n) + " entries";
  Audit(std::move(e), caller);
  return n;
}

Status SecretsService::Warm(const std::string& provider_id) {
  if (!options_.cache_enabled) {
    return MakeError(ErrorCode::kFailedPrecondition, "SECRETS_CACHE_ENABLED=false: there is no cache to warm");
  }
  auto t0 = clock_.Now();
  auto r = cache_.Get(provider_id, load_);
  const auto elapsed = clock_.Now() - t0;
  if (spdlog::should_log(spdlog::level::debug)) {
    spdlog::debug("cache warm: provider={} status={} duration_ms={:.3f}", provider_id,
                  r.ok() ? std::string_view("OK") : ErrorCodeName(r.code()), Seconds(elapsed).count() * 1000);
  }
  if (r.ok() && r->source == CacheSource::kHit) return OkStatus();  // already warm: nothing read
  AuditEvent e;
  e.action = "cache.warm";
  e.resource = provider_id;
  e.duration_ms = Seconds(elapsed).count() * 1000;
  if (r.ok()) {
    e.source = r->source == CacheSource::kStale ? "stale" : r->value->origin;
    e.fields = FieldNames(r->value->fields);
  } else {
    SetFailure(e, r.error());
  }
  Audit(std::move(e), Caller{});
  return r.ok() ? OkStatus() : Status(r.error());
}

namespace {

// Replicas still being made (InProgress) are not a fault; a failed,
// missing or unchecked one is.
bool ReplicasInSync(const std::optional<SecretsHealth::Replication>& r) {
  if (!r) return true;
  if (!r->error.empty()) return false;
  for (const auto& replica : r->report.replicas) {
    if (replica.status != "InSync" && replica.status != "InProgress") return false;
  }
  return true;
}

}  // namespace

// Health() only reads what the probe thread last found, and asks for a new
// probe when that is older than probe_interval; a probe running longer than
// probe_stuck_after is reported as hanging, in the part it waits for.
SecretsHealth SecretsService::Health() {
  SecretsHealth h;
  h.provider = store_.Name();
  h.cache_enabled = options_.cache_enabled;
  h.cache_size = cache_.Size();
  {
    MutexLock lock(&probe_mu_);
    auto now = clock_.Now();
    bool fresh = last_probe_ && now - last_probe_->at < options_.probe_interval;
    if (!fresh && !probe_started_ && !probe_wanted_ && !probe_stopping_) {
      if (!probe_thread_.joinable()) {
        auto started = StartThread(options_.start_thread, [this] { ProbeLoop(); });
        if (started.ok()) {
          probe_thread_ = std::move(started).value();
          probe_start_error_.clear();
        } else {
          if (probe_start_error_.empty()) spdlog::warn("cannot start the health probe's thread (tried again at the "
                                                       "next health check): {}", started.error().message);
          probe_start_error_ = "cannot start a thread for the health probe: " + started.error().message;
        }
      }
      probe_wanted_ = probe_thread_.joinable();  // else asked again by the next Health()
      probe_cv_.Signal();
    }
    h.replication = replication_;
    if (last_probe_) {
      h.last_checked = last_probe_->checked_at;
      h.store_error = last_probe_->store_error;
      h.key_error = last_probe_->key_error;
    } else {
      h.last_checked = FormatIso8601(clock_.WallNow());
      h.store_error = h.key_error = "no health probe has answered yet";
      if (!probe_start_error_.empty()) h.store_error = h.key_error = probe_start_error_;
    }
    if (probe_started_ && now - *probe_started_ >= options_.probe_stuck_after) {
      auto secs = std::chrono::duration_cast<std::chrono::seconds>(now - *probe_started_).count();
      std::string hung = "has not answered the health probe for " + std::to_string(secs) + " s";
      const std::string_view phase = probe_phase_;
      if (phase == "store") {
        h.store_error = "the secret store " + hung;
      } else if (phase == "keyManager") {
        h.key_error = "the key manager " + hung;
      } else if (phase == "replication") {  // the store answered its own probe: degraded, not unhealthy
        if (!h.replication) h.replication = SecretsHealth::Replication{};
        h.replication->error = "the replica check (" + h.provider + ") " + hung;
      }
    }
    if (h.replication) h.replication->status = ReplicasInSync(h.replication) ? "healthy" : "degraded";
  }
  // The key versions as they are now (a rotation shows at once), from the
  // registry: asking them waits on no KMS.
  if (auto ks = keys_.KnownState(); ks.ok()) h.key_state = std::move(ks).value();
  else if (h.key_error.empty()) h.key_error = ks.error().message;
  h.audit_ok = audit_.Healthy();
  h.stale_serves = stale_serves_.load();
  h.fallback_reads = fallback_reads_.load();
  h.orphaned_secrets = orphans_at_start_.load();
  bool recently_degraded =
      clock_.Now().time_since_epoch().count() - last_degraded_ns_.load() < std::chrono::nanoseconds(std::chrono::minutes(5)).count();
  if (!h.store_error.empty() || !h.key_error.empty()) h.status = "unhealthy";
  else if (!h.audit_ok || recently_degraded || !ReplicasInSync(h.replication)) h.status = "degraded";
  else h.status = "healthy";
  return h;
}

void SecretsService::ProbeLoop() {
  probe_mu_.Lock();
  while (true) {
    while (!probe_stopping_ && !probe_wanted_) probe_cv_.Wait(&probe_mu_);
    if (probe_stopping_) break;
    probe_wanted_ = false;
    probe_started_ = clock_.Now();
    probe_phase_ = "store";
    probe_mu_.Unlock();
    BackendProbe p;
    auto probe = TimedStore("get", store_.ProbeName("health-check"), [&] { return store_.Get(store_.ProbeName("health-check")); });
    if (!probe.ok() && probe.code() != ErrorCode::kNotFound) p.store_error = probe.error().message;
    {
      MutexLock phase(&probe_mu_);
      probe_phase_ = "keyManager";
    }
    auto t0 = clock_.Now();
    Status reached = keys_.Probe();
    metrics_.ObserveKeyManager("probe", Seconds(clock_.Now() - t0).count(), reached.ok());
    auto ks = keys_.Describe();  // also lets a KMS report rotations it made on its own
    if (!reached.ok()) p.key_error = reached.error().message;
    else if (!ks.ok()) p.key_error = ks.error().message;
    p.at = clock_.Now();
    p.checked_at = FormatIso8601(clock_.WallNow());
    bool replicas_due = false;
    if (store_.KeepsReplicas()) {
      MutexLock due(&probe_mu_);
      replicas_due = !replication_at_ || p.at - *replication_at_ >= options_.replication_interval;
      if (replicas_due) replication_at_ = p.at;
    }
    std::optional<SecretsHealth::Replication> replication;
    if (replicas_due) {
      {
        MutexLock phase(&probe_mu_);
        probe_phase_ = "replication";
      }
      auto r0 = clock_.Now();
      auto checked = store_.CheckReplication();
      replication = SecretsHealth::Replication{};
      replication->checked_at = p.checked_at;
      replication->duration_ms = Seconds(clock_.Now() - r0).count() * 1000;
      if (checked.ok()) replication->report = std::move(checked).value();
      else replication->error = checked.error().message;
    }
    probe_mu_.Lock();
    if (replication && replication->error.empty() && replication->report.sample.empty()) {
      // No secret to look at yet: look again soon, not a minute later.
      replication_at_ = p.at - options_.replication_interval + std::min<Clock::Duration>(options_.replication_interval, std::chrono::seconds(5));
    }
    if (replication) replication_ = std::move(replication);
    last_probe_ = std::move(p);
    probe_started_.reset();
    probe_phase_ = "";
    probe_done_cv_.SignalAll();
  }
  probe_mu_.Unlock();
}

bool SecretsService::AwaitProbe(std::chrono::milliseconds timeout) {
  MutexLock lock(&probe_mu_);
  // probe_done_cv_.wait_for(lock, timeout, answered), spelled out for the analysis.
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto answered = [&]() DYAD_EXCLUSIVE_LOCKS_REQUIRED(probe_mu_) {
    return probe_stopping_ || (last_probe_ && !probe_wanted_ && !probe_started_);
  };
  while (!answered()) {
    const auto left = deadline - std::chrono::steady_clock::now();
    if (left <= left.zero() || !probe_done_cv_.WaitFor(&probe_mu_, left)) return answered();
  }
  return true;
}

Status SecretsService::CheckStoredKeys(size_t sample) {
  if (sealer_.mode() == SealMode::kProvider || sample == 0) return OkStatus();
  auto names = StoredSecretNames();
  if (!names.ok()) {
    return MakeError(ErrorCode::kUnavailable, "cannot list the stored secrets: " + names.error().message);
  }
  const size_t n = std::min(sample, names->size());
  size_t unwrapped = 0, refused = 0;
  std::string first_refusal, unreachable;
  for (size_t k = 0; k < n; ++k) {
    const std::string& name = (*names)[n == 1 ? 0 : k * (names->size() - 1) / (n - 1)];
    auto blob = store_.Get(name);
    if (!blob.ok()) {
      if (blob.code() == ErrorCode::kNotFound) continue;  // deleted meanwhile
      return MakeError(ErrorCode::kUnavailable, "cannot read " + name + ": " + blob.error().message);
    }
    auto e = ParseEnvelope(blob->value);
    if (!e.ok()) continue;  // a damaged one says nothing about the key; reads report it
    if (e->kms != keys_.Kind() || e->key_id != keys_.KeyId()) {
      return MakeError(ErrorCode::kFailedPrecondition,
                       "the stored credentials (" + name + ") are sealed by " + e->kms + " key '" + e->key_id +
                           "', but the configured key is " + keys_.Kind() + " key '" + keys_.KeyId() +
                           "': every read would fail; set ENCRYPTION_KEY_ID (and the backend) back to the key "
                           "that sealed them");
    }
    // The same key id, but does the key behind it unwrap what it sealed (a
    // keyring recreated, an alias moved to another KMS key)? Only the data
    // key is tried: a damaged payload is one secret's problem, not the key's.
    auto dek = keys_.Decrypt(e->key_version, e->wrapped_dek, e->context_bound ? std::string_view(name) : "");
    if (dek.ok()) {
      ++unwrapped;
    } else if (dek.code() == ErrorCode::kUnavailable) {
      unreachable = dek.error().message;
      break;  // no use waiting for it again
    } else if (++refused == 1) {
      first_refusal = name + ": " + dek.error().message;
    }
  }
  if (refused > 0 && unwrapped == 0 && unreachable.empty()) {
    return MakeError(ErrorCode::kFailedPrecondition,
                     "the configured " + keys_.Kind() + " key '" + keys_.KeyId() + "' does not unwrap the data keys " +
                         "of the stored credentials (" + std::to_string(refused) + " of " + std::to_string(refused) +
                         " tried; " + first_refusal + "): every read would fail; was the keyring recreated, or " +
                         "the key id moved to another key?");
  }
  if (unwrapped == 0 && !unreachable.empty()) {
    return MakeError(ErrorCode::kUnavailable, "cannot reach the key manager: " + unreachable);
  }
  return OkStatus();
}

std::string SecretsService::Fingerprint(const CredentialFields& fields) const {
  if (options_.fingerprint_key.empty()) return "";
  return dyad::Fingerprint(options_.fingerprint_key, fields);
}

std::vector<ProbeStep> SecretsService::TestConnection(const Caller& caller) {
  const auto started = clock_.Now();
  std::vector<ProbeStep> steps;
  auto step = [&](std::string name, auto&& fn) {
    auto t0 = clock_.Now();
    Status s = fn();
    steps.push_back({std::move(name), s.ok(), Seconds(clock_.Now() - t0).count() * 1000,
                     s.ok() ? "" : s.error().message});
    return s.ok();
  };
  std::string name = store_.ProbeName(NewUuid(DefaultRandom()));
  CredentialFields probe;
  probe.emplace("probe", SecretBytes(NewUuid(DefaultRandom())));
  std::string sealed;
  bool ok = step("key.wrap", [&]() -> Status {
    DYAD_ASSIGN_OR_RETURN(sealed, sealer_.Seal(name, 0, CredentialsToJson(probe)));
    return OkStatus();
  });
  ok = ok && step("store.write", [&]() -> Status {
    auto created = store_.Create(name, sealed);
    return created.ok() ? OkStatus() : Status(created.error());
  });
  ok = ok && step("store.read", [&]() -> Status {
    DYAD_ASSIGN_OR_RETURN(StoredSecret back, store_.Get(name));
    if (!SameProbe(sealed, back.value)) return MakeError(ErrorCode::kDataLoss, "the probe read back differs from what was written");
    return OkStatus();
  });
  ok = ok && step("key.unwrap", [&]() -> Status {
    DYAD_ASSIGN_OR_RETURN(OpenedSecret opened, sealer_.Open(name, sealed));
    if (!(opened.payload == CredentialsToJson(probe))) return MakeError(ErrorCode::kDataLoss, "probe payload differs");
    return OkStatus();
  });
  if (steps.size() >= 2 && steps[1].ok) step("store.delete", [&] { return store_.DeleteNow(name); });
  AuditEvent e;
  e.action = "secrets.test_connection";
  e.resource = name;
  e.duration_ms = Seconds(clock_.Now() - started).count() * 1000;
  bool all = std::all_of(steps.begin(), steps.end(), [](const ProbeStep& s) { return s.ok; }) && steps.size() == 5;
  e.outcome = all ? "success" : "failure";
  Audit(std::move(e), caller);
  return steps;
}

Result<SecretsService::VerifyReport> SecretsService::VerifyAll() {
  DYAD_ASSIGN_OR_RETURN(std::vector<std::string> names, StoredSecretNames());
  VerifyReport report;
  for (const auto& name : names) {
    ++report.total;
    auto blob = store_.Get(name);
    auto opened = blob.ok() ? sealer_.Open(name, blob->value) : Result<OpenedSecret>(blob.error());
    if (opened.ok() && CredentialsFromJson(opened->payload.view()).ok()) {
      ++report.ok;
    } else if (!blob.ok() && blob.code() == ErrorCode::kNotFound) {
      --report.total;  // deleted meanwhile
    } else {
      ++report.failed;
      if (report.first_error.empty()) {
        report.first_error = name + ": " + (opened.ok() ? "payload is not a credentials object" : opened.error().message);
      }
    }
  }
  return report;
}

Result<std::vector<SecretsService::Orphan>> SecretsService::FindOrphans() {
  DYAD_ASSIGN_OR_RETURN(std::vector<SecretStore::Listed> listed, store_.List());
  std::vector<Orphan> orphans;
  for (auto& l : listed) {
    std::optional<std::string> maybe_id = store_.ProviderIdOf(l.name);
    if (!maybe_id) continue;
    std::string id = std::move(*maybe_id);
    auto row = providers_.Get(id);
    if (row.ok()) continue;
    if (row.code() != ErrorCode::kNotFound) return row.error();
    orphans.push_back({std::move(l.name), std::move(id), l.changed_at});
  }
  return orphans;
}

Result<size_t> SecretsService::ReportOrphans() {
  auto found = FindOrphans();
  if (!found.ok() && found.code() == ErrorCode::kPermissionDenied) NoteListingRefused(found.error());
  DYAD_ASSIGN_OR_RETURN(std::vector<Orphan> orphans, std::move(found));
  orphans_at_start_ = static_cast<int64_t>(orphans.size());
  return orphans.size();
}

// Why a create running meanwhile keeps its secret. A create writes its secret
// and then its provider row, holding the provider's lock and its lease in the
// registry database (ProviderLocks) throughout. gc deletes a secret only if it
// is at least `grace` old and, under that same lock and lease, the row is still
// missing right before Delete(): a create in any instance sharing the database
// has then either inserted its row or given up (and removed its secret). What
// is left: a create whose lease ran out while it stalled between its secret and
// its row (longer than the lease TTL and the grace), or instances on separate
// registry databases; grace is never below min_orphan_age, which App sets above
// the longest store write. Such a create answers after its row is written; a
// later read of it finds no secret (kNotFound), never another's.
Result<SecretsService::GcReport> SecretsService::CollectOrphans(std::chrono::seconds older_than, bool dry_run,
                                                                const Caller& caller) {
  GcReport report;
  report.grace = std::max(older_than, options_.min_orphan_age);
  DYAD_ASSIGN_OR_RETURN(std::vector<Orphan> orphans, FindOrphans());
  const Clock::WallTime now = clock_.WallNow();  // before every re-check below
  for (const auto& o : orphans) {
    GcItem item{o.name, ""};
    if (!o.changed_at) {
      item.outcome = "age unknown";
    } else if (now - *o.changed_at < report.grace) {
      item.outcome = "too young";
    } else if (dry_run) {
      item.outcome = "would delete";
    } else {
      // The provider's lock and lease: a create in any instance holds them
      // from its secret write to its row insert, so the row checked here is
      // the one it will have.
      auto held = locks_.Hold(o.provider_id);
      auto row = held.ok() ? providers_.Get(o.provider_id) : Result<Provider>(held.error());
      if (!held.ok()) {
        item.outcome = "failed: " + held.error().message;
      } else if (row.ok()) {
        item.outcome = "has a row";
      } else if (row.code() != ErrorCode::kNotFound) {
        item.outcome = "failed: " + row.error().message;
      } else {
        auto t0 = clock_.Now();
        Status s = TimedStore("delete", o.name, [&] { return store_.Delete(o.name); });
        Changed(o.provider_id, Change::Kind::kDeleted);
        AuditEvent e;
        e.action = "secret.delete";
        e.resource = o.provider_id;
        e.source = "store";
        e.detail = "orphaned secret removed by secrets gc (no provider row, unchanged for " +
                   std::to_string(std::chrono::duration_cast<std::chrono::seconds>(now - *o.changed_at).count()) +
                   " s)";
        e.duration_ms = Seconds(clock_.Now() - t0).count() * 1000;
        if (!s.ok() && s.code() != ErrorCode::kNotFound) SetFailure(e, s.error());
        Audit(std::move(e), caller);
        item.outcome = s.ok() || s.code() == ErrorCode::kNotFound ? "deleted" : "failed: " + s.error().message;
      }
    }
    if (item.outcome == "deleted") ++report.deleted;
    else if (item.outcome.starts_with("failed")) ++report.failed;
    else ++report.kept;
    report.items.push_back(std::move(item));
  }
  return report;
}

}  // namespace dyad
