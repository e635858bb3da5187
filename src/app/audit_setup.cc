#include "app/audit_setup.h"

#include <spdlog/spdlog.h>

#include <filesystem>

#include "app/backend.h"
#include "core/time_format.h"
#include "registry/database.h"

namespace dyad {
namespace {

AuditKeyHolder HolderOf(const KeyManager& keys) { return {keys.Kind(), keys.KeyId()}; }

std::string Named(const AuditKeyHolder& holder) { return holder.kind + " key '" + holder.key_id + "'"; }

// `keys`' wrapping of the audit key. kNotFound when no key was ever made;
// kFailedPrecondition, naming the KeyManagers that hold it (never what they
// hold) and how to add one, when only others do.
Result<AuditKeyRecord> OwnWrapping(AuditKeyRepository& audit_keys, const KeyManager& keys) {
  DYAD_ASSIGN_OR_RETURN(auto own, audit_keys.Get(HolderOf(keys)));
  if (own) return std::move(*own);
  DYAD_ASSIGN_OR_RETURN(auto all, audit_keys.List());
  if (all.empty()) return MakeError(ErrorCode::kNotFound, "the registry holds no audit key: no gateway wrote this log");
  std::string holders;
  for (auto& r : all) {
    // Made by another instance between the two reads (two starting at once).
    if (r.holder() == HolderOf(keys)) return std::move(r);
    holders += (holders.empty() ? "" : ", ") + Named(r.holder());
  }
  return MakeError(ErrorCode::kFailedPrecondition,
                   "the audit key is not wrapped for this configuration's " + Named(HolderOf(keys)) +
                       ", only for: " + holders + "; run `dyad-gateway migrate --to-env-file` with this "
                       "configuration as the target, under one of those, to add its wrapping");
}

Result<SecretBytes> Open(KeyManager& keys, const AuditKeyRecord& wrapping) {
  auto key = keys.Decrypt(wrapping.key_version, wrapping.wrapped);
  if (!key.ok()) {
    return MakeError(key.code(), "cannot open the audit key (" + Named(wrapping.holder()) + ", key version " +
                                     std::to_string(wrapping.key_version) + "): " + key.error().message);
  }
  return key;
}

// Moves `keys`' wrapping of the audit key off `version` (every version
// older than the primary when `version` is 0) onto the primary; other
// KeyManagers' wrappings are theirs. Replaced only if it is still the one
// read (another process may have moved it meanwhile: then theirs stands).
Status MoveAuditKey(AuditKeyRepository& audit_keys, KeyManager& keys, uint32_t version) {
  DYAD_ASSIGN_OR_RETURN(auto stored, audit_keys.Get(HolderOf(keys)));
  if (!stored) return OkStatus();
  if (version != 0 && stored->key_version != version) return OkStatus();
  if (version == 0) {
    DYAD_ASSIGN_OR_RETURN(KeyState state, keys.Describe());
    if (stored->key_version >= state.primary_version) return OkStatus();
  }
  auto moved = keys.ReEncrypt(stored->key_version, stored->wrapped);
  if (!moved.ok()) {
    return MakeError(moved.code(), "cannot move the audit key off key version " +
                                       std::to_string(stored->key_version) + ": " + moved.error().message);
  }
  auto replaced = audit_keys.ReplaceWrapping(*stored, moved->version, moved->wrapped);
  if (!replaced.ok()) return replaced.error();
  return OkStatus();
}

class AuditKeyGuard final : public KeyManager {
 public:
  AuditKeyGuard(std::unique_ptr<KeyManager> inner, std::shared_ptr<AuditKeyRepository> audit_keys)
      : inner_(std::move(inner)), audit_keys_(std::move(audit_keys)) {}
  const std::string& Kind() const override { return inner_->Kind(); }
  const std::string& KeyId() const override { return inner_->KeyId(); }
  Result<DataKey> GenerateDataKey(std::string_view context) override { return inner_->GenerateDataKey(context); }
  Result<SecretBytes> Decrypt(uint32_t version, std::string_view wrapped, std::string_view context) override {
    return inner_->Decrypt(version, wrapped, context);
  }
  Result<WrappedKey> ReEncrypt(uint32_t version, std::string_view wrapped, std::string_view from_context,
                               std::string_view to_context) override {
    return inner_->ReEncrypt(version, wrapped, from_context, to_context);
  }
  std::vector<Result<WrappedKey>> ReEncryptMany(const std::vector<ReEncryptItem>& items, size_t parallelism) override {
    return inner_->ReEncryptMany(items, parallelism);
  }
  std::vector<Result<SecretBytes>> DecryptMany(const std::vector<DecryptItem>& items, size_t parallelism) override {
    return inner_->DecryptMany(items, parallelism);
  }
  Result<WrappedKey> WrapKey(const SecretBytes& key, std::string_view context) override {
    return inner_->WrapKey(key, context);
  }
  Result<uint32_t> Rotate() override { return inner_->Rotate(); }
  // Moved before the version stops sealing: a 'retiring' version still
  // decrypts, so the move cannot fail for want of the old key.
  Status BeginRetire(uint32_t version) override {
    DYAD_RETURN_IF_ERROR(MoveAuditKey(*audit_keys_, *inner_, version));
    return inner_->BeginRetire(version);
  }
  Status Retire(uint32_t version) override {
    DYAD_RETURN_IF_ERROR(MoveAuditKey(*audit_keys_, *inner_, version));
    return inner_->Retire(version);
  }
  Status RetireEverywhere(uint32_t version) override {
    DYAD_RETURN_IF_ERROR(MoveAuditKey(*audit_keys_, *inner_, version));
    return inner_->RetireEverywhere(version);
  }
  Result<KeyState> Describe() override { return inner_->Describe(); }
  Result<KeyState> KnownState() override { return inner_->KnownState(); }
  Status Probe() override { return inner_->Probe(); }
  void MarkStale() override { inner_->MarkStale(); }
  Result<std::string> CurrentState(uint32_t version) override { return inner_->CurrentState(version); }

 private:
  std::unique_ptr<KeyManager> inner_;
  std::shared_ptr<AuditKeyRepository> audit_keys_;
};

}  // namespace

Result<SecretBytes> LoadAuditKey(AuditKeyRepository& audit_keys, KeyManager& keys, const Clock& clock, bool create) {
  auto own = OwnWrapping(audit_keys, keys);
  if (!own.ok() && own.code() == ErrorCode::kNotFound && create) {
    DYAD_ASSIGN_OR_RETURN(DataKey dk, keys.GenerateDataKey());
    // Another process may have made one first: then that one is used (or,
    // when its KeyManager is another, this one has none).
    AuditKeyRecord made{keys.Kind(), keys.KeyId(), dk.version, dk.wrapped, FormatIso8601(clock.WallNow())};
    DYAD_ASSIGN_OR_RETURN(auto stored, audit_keys.InsertFirst(made));
    own = stored ? Result<AuditKeyRecord>(std::move(*stored)) : OwnWrapping(audit_keys, keys);
  }
  if (!own.ok()) return own.error();
  DYAD_ASSIGN_OR_RETURN(SecretBytes key, Open(keys, *own));
  if (create) {
    // A writer keeps it on the primary version, so it is never last on one.
    if (Status s = MoveAuditKey(audit_keys, keys, 0); !s.ok()) spdlog::warn("{}", s.error().message);
  }
  return key;
}

namespace {

// AddAuditKeyWrapping; with `store` false the target's new wrapping is made
// and opened in memory only.
Status WrapAuditKeyUnder(AuditKeyRepository& audit_keys, KeyManager& from, KeyManager& to, bool store) {
  auto held = OwnWrapping(audit_keys, to);
  if (!held.ok() && held.code() == ErrorCode::kNotFound) return OkStatus();  // no audit key was made
  auto source = OwnWrapping(audit_keys, from);
  if (!source.ok() && !held.ok()) return MakeError(source.code(), "under the source: " + source.error().message);
  Result<SecretBytes> source_key = source.ok() ? Open(from, *source) : Result<SecretBytes>(source.error());
  if (!held.ok()) {
    // The target has none yet: the source's key, wrapped by the target.
    if (!source_key.ok()) return MakeError(source_key.code(), "under the source: " + source_key.error().message);
    auto wrapped = to.WrapKey(*source_key, {});
    if (!wrapped.ok()) {
      return MakeError(wrapped.code(), "cannot wrap the audit key under the target: " + wrapped.error().message);
    }
    AuditKeyRecord made{to.Kind(), to.KeyId(), wrapped->version, wrapped->wrapped, source->created_at};
    // Of concurrent adders, one row stands; it is checked like any other.
    held = store ? audit_keys.InsertIfAbsent(made) : Result<AuditKeyRecord>(std::move(made));
    if (!held.ok()) return held.error();
  }
  // Already there (a resumed run, a migration back): it must open under the
  // target to the source's key, or the chain would fork.
  auto target_key = Open(to, *held);
  if (!target_key.ok()) return MakeError(target_key.code(), "under the target: " + target_key.error().message);
  if (source_key.ok() && !(*source_key == *target_key)) {
    return MakeError(ErrorCode::kConflict, "the target's wrapping of the audit key (" + Named(held->holder()) +
                                               ") holds another key than the source's: one audit log cannot be "
                                               "written under both");
  }
  return OkStatus();
}

}  // namespace

Status AddAuditKeyWrapping(AuditKeyRepository& audit_keys, KeyManager& from, KeyManager& to) {
  return WrapAuditKeyUnder(audit_keys, from, to, /*store=*/true);
}

Status CheckAuditKeyWrapping(AuditKeyRepository& audit_keys, KeyManager& from, KeyManager& to) {
  return WrapAuditKeyUnder(audit_keys, from, to, /*store=*/false);
}

Result<bool> DropAuditKeyWrapping(AuditKeyRepository& audit_keys, const KeyManager& from, const KeyManager& to) {
  return audit_keys.RemoveBeside(HolderOf(from), HolderOf(to));
}

std::unique_ptr<KeyManager> GuardAuditKey(std::unique_ptr<KeyManager> inner,
                                          std::shared_ptr<AuditKeyRepository> audit_keys) {
  return std::make_unique<AuditKeyGuard>(std::move(inner), std::move(audit_keys));
}

std::string ConfiguredAuditLogOrigin(const Config& config, const std::string& path, bool shared_registry) {
  if (!config.audit_log_origin.empty() && path == config.audit_log_path) return config.audit_log_origin;
  return AuditLogOrigin(path, shared_registry);
}

Result<AuditVerifyReport> VerifyConfiguredAuditLog(const Config& config, std::string& path, const Clock& clock,
                                                   const BackendRegistry& backends) {
  if (path.empty()) path = config.audit_log_path;
  std::error_code ec;
  // An SQLite file that is not there is not made here (PostgreSQL's database
  // is the server's: a missing one fails to open).
  if (!config.database_path.empty() && !std::filesystem::exists(config.database_path, ec)) {
    return MakeError(ErrorCode::kNotFound, "no registry database at '" + config.database_path +
                                               "': the audit key and head live there");
  }
  DYAD_ASSIGN_OR_RETURN(std::shared_ptr<Database> db, OpenDatabase(config.database_url));
  DYAD_ASSIGN_OR_RETURN(Backend backend, backends.Open(BackendContext{config, db, clock, DefaultRandom()}));
  DYAD_ASSIGN_OR_RETURN(SecretBytes key, LoadAuditKey(*db->NewAuditKeyRepository(), *backend.keys, clock, false));
  // Against this log's own head: other hosts' logs have theirs.
  return VerifyAuditLog(path, key, *db->NewAuditHeadStore(clock), ConfiguredAuditLogOrigin(config, path, db->engine() != "sqlite"));
}

}  // namespace dyad
