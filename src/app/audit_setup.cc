#include "app/audit_setup.h"

#include <spdlog/spdlog.h>

#include <filesystem>

#include "app/backend.h"
#include "core/time_format.h"

namespace dyad {
namespace {

struct StoredAuditKey {
  uint32_t version = 0;
  std::string wrapped;
};

Result<std::optional<StoredAuditKey>> ReadAuditKey(SqliteDb& db) {
  return db.With<std::optional<StoredAuditKey>>([](SqliteConnection& c) -> Result<std::optional<StoredAuditKey>> {
    DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare("SELECT key_version, wrapped FROM audit_key WHERE id=1"));
    DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return std::optional<StoredAuditKey>();
    return std::optional<StoredAuditKey>(StoredAuditKey{static_cast<uint32_t>(st.Int(0)), st.Blob(1)});
  });
}

// Replaces the stored wrapping only if it is still `from` (another process
// may have moved it meanwhile: then theirs stands).
Status ReplaceWrapping(SqliteDb& db, const StoredAuditKey& from, const WrappedKey& to) {
  auto r = db.With<bool>([&](SqliteConnection& c) -> Result<bool> {
    DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
        "UPDATE audit_key SET key_version=?, wrapped=? WHERE id=1 AND key_version=? AND wrapped=?"));
    DYAD_RETURN_IF_ERROR(st.Bind(1, static_cast<int64_t>(to.version)).BindBlob(2, to.wrapped)
                             .Bind(3, static_cast<int64_t>(from.version)).BindBlob(4, from.wrapped).Run());
    return true;
  });
  if (!r.ok()) return r.error();
  return OkStatus();
}

// Moves the audit key off `version` (every version older than the primary
// when `version` is 0) onto the primary.
Status MoveAuditKey(SqliteDb& db, KeyManager& keys, uint32_t version) {
  DYAD_ASSIGN_OR_RETURN(auto stored, ReadAuditKey(db));
  if (!stored) return OkStatus();
  if (version != 0 && stored->version != version) return OkStatus();
  if (version == 0) {
    DYAD_ASSIGN_OR_RETURN(KeyState state, keys.Describe());
    if (stored->version >= state.primary_version) return OkStatus();
  }
  auto moved = keys.ReEncrypt(stored->version, stored->wrapped);
  if (!moved.ok()) {
    return MakeError(moved.code(), "cannot move the audit key off key version " + std::to_string(stored->version) +
                                       ": " + moved.error().message);
  }
  return ReplaceWrapping(db, *stored, *moved);
}

class AuditKeyGuard final : public KeyManager {
 public:
  AuditKeyGuard(std::unique_ptr<KeyManager> inner, std::shared_ptr<SqliteDb> db)
      : inner_(std::move(inner)), db_(std::move(db)) {}
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
  Result<uint32_t> Rotate() override { return inner_->Rotate(); }
  // Moved before the version stops sealing: a 'retiring' version still
  // decrypts, so the move cannot fail for want of the old key.
  Status BeginRetire(uint32_t version) override {
    DYAD_RETURN_IF_ERROR(MoveAuditKey(*db_, *inner_, version));
    return inner_->BeginRetire(version);
  }
  Status Retire(uint32_t version) override {
    DYAD_RETURN_IF_ERROR(MoveAuditKey(*db_, *inner_, version));
    return inner_->Retire(version);
  }
  Result<KeyState> Describe() override { return inner_->Describe(); }
  Result<KeyState> KnownState() override { return inner_->KnownState(); }
  Status Probe() override { return inner_->Probe(); }
  Result<std::string> CurrentState(uint32_t version) override { return inner_->CurrentState(version); }

 private:
  std::unique_ptr<KeyManager> inner_;
  std::shared_ptr<SqliteDb> db_;
};

class SqliteAuditHeadStore final : public AuditHeadStore {
 public:
  SqliteAuditHeadStore(std::shared_ptr<SqliteDb> db, const Clock& clock) : db_(std::move(db)), clock_(clock) {}

  Status Save(const AuditHead& head) override {
    auto r = db_->With<bool>([&](SqliteConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
          "INSERT INTO audit_head(id, seq, mac, seal, updated_at) VALUES(1,?,?,?,?) ON CONFLICT(id) DO UPDATE SET "
          "seq=excluded.seq, mac=excluded.mac, seal=excluded.seal, updated_at=excluded.updated_at "
          "WHERE excluded.seq > audit_head.seq"));
      DYAD_RETURN_IF_ERROR(st.Bind(1, static_cast<int64_t>(head.seq)).Bind(2, head.mac).Bind(3, head.seal)
                               .Bind(4, FormatIso8601(clock_.WallNow())).Run());
      return true;
    });
    if (!r.ok()) return r.error();
    return OkStatus();
  }

  Result<std::optional<AuditHead>> Load() override {
    return db_->With<std::optional<AuditHead>>([](SqliteConnection& c) -> Result<std::optional<AuditHead>> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare("SELECT seq, mac, seal FROM audit_head WHERE id=1"));
      DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) return std::optional<AuditHead>();
      return std::optional<AuditHead>(AuditHead{static_cast<uint64_t>(st.Int(0)), st.Text(1), st.Text(2)});
    });
  }

 private:
  std::shared_ptr<SqliteDb> db_;
  const Clock& clock_;
};

}  // namespace

Result<SecretBytes> LoadAuditKey(SqliteDb& db, KeyManager& keys, const Clock& clock, bool create) {
  DYAD_ASSIGN_OR_RETURN(auto stored, ReadAuditKey(db));
  if (!stored) {
    if (!create) return MakeError(ErrorCode::kNotFound, "the registry holds no audit key: no gateway wrote this log");
    DYAD_ASSIGN_OR_RETURN(DataKey dk, keys.GenerateDataKey());
    auto made = db.With<bool>([&](SqliteConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
          "INSERT OR IGNORE INTO audit_key(id, kind, key_id, key_version, wrapped, created_at) VALUES(1,?,?,?,?,?)"));
      DYAD_RETURN_IF_ERROR(st.Bind(1, keys.Kind()).Bind(2, keys.KeyId()).Bind(3, static_cast<int64_t>(dk.version))
                               .BindBlob(4, dk.wrapped).Bind(5, FormatIso8601(clock.WallNow())).Run());
      return true;
    });
    if (!made.ok()) return made.error();
    DYAD_ASSIGN_OR_RETURN(stored, ReadAuditKey(db));  // another process may have stored its own first
    if (!stored) return MakeError(ErrorCode::kInternal, "the audit key was stored but cannot be read back");
  }
  auto key = keys.Decrypt(stored->version, stored->wrapped);
  if (!key.ok()) {
    return MakeError(key.code(), "cannot open the audit key (key version " + std::to_string(stored->version) +
                                     "): " + key.error().message);
  }
  if (create) {
    // A writer keeps it on the primary version, so it is never last on one.
    if (Status s = MoveAuditKey(db, keys, 0); !s.ok()) spdlog::warn("{}", s.error().message);
  }
  return key;
}

std::unique_ptr<KeyManager> GuardAuditKey(std::unique_ptr<KeyManager> inner, std::shared_ptr<SqliteDb> db) {
  return std::make_unique<AuditKeyGuard>(std::move(inner), std::move(db));
}

std::unique_ptr<AuditHeadStore> NewSqliteAuditHeadStore(std::shared_ptr<SqliteDb> db, const Clock& clock) {
  return std::make_unique<SqliteAuditHeadStore>(std::move(db), clock);
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
  DYAD_ASSIGN_OR_RETURN(SecretBytes key, LoadAuditKey(*db, *backend.keys, clock, false));
  DYAD_ASSIGN_OR_RETURN(auto head, NewSqliteAuditHeadStore(db, clock)->Load());
  return VerifyAuditLog(path, key, head);
}

}  // namespace dyad
