#include "app/audit_setup.h"

#include <spdlog/spdlog.h>

#include <filesystem>

#include "app/backend.h"
#include "core/time_format.h"
#include "registry/sqlite_audit_repository.h"

namespace dyad {
namespace {

// Moves the audit key off `version` (every version older than the primary
// when `version` is 0) onto the primary. The stored wrapping is replaced
// only if it is still the one read (another process may have moved it
// meanwhile: then theirs stands).
Status MoveAuditKey(AuditKeyRepository& audit_keys, KeyManager& keys, uint32_t version) {
  DYAD_ASSIGN_OR_RETURN(auto stored, audit_keys.Get());
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
  auto replaced = audit_keys.ReplaceWrapping(stored->key_version, stored->wrapped, moved->version, moved->wrapped);
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
  Result<std::string> CurrentState(uint32_t version) override { return inner_->CurrentState(version); }

 private:
  std::unique_ptr<KeyManager> inner_;
  std::shared_ptr<AuditKeyRepository> audit_keys_;
};

}  // namespace

Result<SecretBytes> LoadAuditKey(AuditKeyRepository& audit_keys, KeyManager& keys, const Clock& clock, bool create) {
  DYAD_ASSIGN_OR_RETURN(auto stored, audit_keys.Get());
  if (!stored) {
    if (!create) return MakeError(ErrorCode::kNotFound, "the registry holds no audit key: no gateway wrote this log");
    DYAD_ASSIGN_OR_RETURN(DataKey dk, keys.GenerateDataKey());
    // Another process may have stored its own first: then that one is used.
    AuditKeyRecord made{keys.Kind(), keys.KeyId(), dk.version, dk.wrapped, FormatIso8601(clock.WallNow())};
    DYAD_ASSIGN_OR_RETURN(stored, audit_keys.InsertIfAbsent(made));
  }
  auto key = keys.Decrypt(stored->key_version, stored->wrapped);
  if (!key.ok()) {
    return MakeError(key.code(), "cannot open the audit key (key version " + std::to_string(stored->key_version) +
                                     "): " + key.error().message);
  }
  if (create) {
    // A writer keeps it on the primary version, so it is never last on one.
    if (Status s = MoveAuditKey(audit_keys, keys, 0); !s.ok()) spdlog::warn("{}", s.error().message);
  }
  return key;
}

Status MoveAuditKeyTo(AuditKeyRepository& audit_keys, KeyManager& from, KeyManager& to) {
  DYAD_ASSIGN_OR_RETURN(auto stored, audit_keys.Get());
  if (!stored) return OkStatus();
  if (to.Decrypt(stored->key_version, stored->wrapped).ok()) return OkStatus();
  auto key = from.Decrypt(stored->key_version, stored->wrapped);
  if (!key.ok()) return MakeError(key.code(), "cannot open the audit key under the source: " + key.error().message);
  auto wrapped = to.WrapKey(*key, {});
  if (!wrapped.ok()) {
    return MakeError(wrapped.code(), "cannot wrap the audit key under the target: " + wrapped.error().message);
  }
  AuditKeyRecord moved{to.Kind(), to.KeyId(), wrapped->version, wrapped->wrapped, stored->created_at};
  DYAD_ASSIGN_OR_RETURN(bool replaced, audit_keys.ReplaceKey(stored->key_version, stored->wrapped, moved));
  if (!replaced) return MakeError(ErrorCode::kConflict, "the audit key was moved by another process meanwhile");
  return OkStatus();
}

std::unique_ptr<KeyManager> GuardAuditKey(std::unique_ptr<KeyManager> inner,
                                          std::shared_ptr<AuditKeyRepository> audit_keys) {
  return std::make_unique<AuditKeyGuard>(std::move(inner), std::move(audit_keys));
}

Result<AuditVerifyReport> VerifyConfiguredAuditLog(const Config& config, std::string& path, const Clock& clock,
                                                   const BackendRegistry& backends) {
  if (path.empty()) path = config.audit_log_path;
  std::error_code ec;
  if (!std::filesystem::exists(config.database_path, ec)) {
    return MakeError(ErrorCode::kNotFound, "no registry database at '" + config.database_path +
                                               "': the audit key and head live there");
  }
  DYAD_ASSIGN_OR_RETURN(std::shared_ptr<SqliteDb> db, SqliteDb::Open(config.database_path));
  DYAD_ASSIGN_OR_RETURN(Backend backend, backends.Open(BackendContext{config, db, clock, DefaultRandom()}));
  DYAD_ASSIGN_OR_RETURN(SecretBytes key, LoadAuditKey(*NewSqliteAuditKeyRepository(db), *backend.keys, clock, false));
  DYAD_ASSIGN_OR_RETURN(auto head, NewSqliteAuditHeadStore(db, clock)->Load());
  return VerifyAuditLog(path, key, head);
}

}  // namespace dyad
