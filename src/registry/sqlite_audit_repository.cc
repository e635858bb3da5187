#include "registry/sqlite_audit_repository.h"

#include "core/time_format.h"

namespace dyad {
namespace {

class SqliteAuditKeyRepository final : public AuditKeyRepository {
 public:
  explicit SqliteAuditKeyRepository(std::shared_ptr<SqliteDb> db) : db_(std::move(db)) {}

  Result<std::optional<AuditKeyRecord>> Get(const AuditKeyHolder& holder) override {
    return db_->With<std::optional<AuditKeyRecord>>([&](SqliteConnection& c) { return Read(c, holder); });
  }

  Result<std::vector<AuditKeyRecord>> List() override {
    return db_->With<std::vector<AuditKeyRecord>>([](SqliteConnection& c) -> Result<std::vector<AuditKeyRecord>> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
          "SELECT kind, key_id, key_version, wrapped, created_at FROM audit_key ORDER BY kind, key_id"));
      std::vector<AuditKeyRecord> all;
      while (true) {
        DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
        if (!row) return all;
        all.push_back(Record(st));
      }
    });
  }

  Result<std::optional<AuditKeyRecord>> InsertFirst(const AuditKeyRecord& key) override {
    return Insert(key, "INSERT INTO audit_key(kind, key_id, key_version, wrapped, created_at) "
                       "SELECT ?,?,?,?,? WHERE NOT EXISTS (SELECT 1 FROM audit_key)");
  }

  Result<AuditKeyRecord> InsertIfAbsent(const AuditKeyRecord& key) override {
    DYAD_ASSIGN_OR_RETURN(auto stored, Insert(key, "INSERT OR IGNORE INTO audit_key(kind, key_id, key_version, "
                                                   "wrapped, created_at) VALUES(?,?,?,?,?)"));
    if (!stored) return MakeError(ErrorCode::kInternal, "the audit key was stored but cannot be read back");
    return std::move(*stored);
  }

  Result<bool> ReplaceWrapping(const AuditKeyRecord& from, uint32_t to_version, const std::string& to_wrapped) override {
    return db_->With<bool>([&](SqliteConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
          "UPDATE audit_key SET key_version=?, wrapped=? WHERE kind=? AND key_id=? AND key_version=? AND wrapped=?"));
      DYAD_RETURN_IF_ERROR(st.Bind(1, static_cast<int64_t>(to_version)).BindBlob(2, to_wrapped).Bind(3, from.kind)
                               .Bind(4, from.key_id).Bind(5, static_cast<int64_t>(from.key_version))
                               .BindBlob(6, from.wrapped).Run());
      return c.Changes() > 0;
    });
  }

  Result<bool> RemoveBeside(const AuditKeyHolder& drop, const AuditKeyHolder& keep) override {
    if (drop.kind == keep.kind && drop.key_id == keep.key_id) return false;
    return db_->With<bool>([&](SqliteConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
          "DELETE FROM audit_key WHERE kind=? AND key_id=? "
          "AND EXISTS (SELECT 1 FROM audit_key WHERE kind=? AND key_id=?)"));
      DYAD_RETURN_IF_ERROR(st.Bind(1, drop.kind).Bind(2, drop.key_id).Bind(3, keep.kind).Bind(4, keep.key_id).Run());
      return c.Changes() > 0;
    });
  }

 private:
  // Runs `sql` (binding the record's five columns) and reads back its
  // holder's row, in one transaction.
  Result<std::optional<AuditKeyRecord>> Insert(const AuditKeyRecord& key, const std::string& sql) {
    std::optional<AuditKeyRecord> stored;
    DYAD_RETURN_IF_ERROR(db_->Transaction([&](SqliteConnection& c) -> Status {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(sql));
      DYAD_RETURN_IF_ERROR(st.Bind(1, key.kind).Bind(2, key.key_id).Bind(3, static_cast<int64_t>(key.key_version))
                               .BindBlob(4, key.wrapped).Bind(5, key.created_at).Run());
      DYAD_ASSIGN_OR_RETURN(stored, Read(c, key.holder()));
      return OkStatus();
    }));
    return stored;
  }

  static AuditKeyRecord Record(Statement& st) {
    return AuditKeyRecord{st.Text(0), st.Text(1), static_cast<uint32_t>(st.Int(2)), st.Blob(3), st.Text(4)};
  }

  static Result<std::optional<AuditKeyRecord>> Read(SqliteConnection& c, const AuditKeyHolder& holder) {
    DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
        "SELECT kind, key_id, key_version, wrapped, created_at FROM audit_key WHERE kind=? AND key_id=?"));
    st.Bind(1, holder.kind).Bind(2, holder.key_id);
    DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return std::optional<AuditKeyRecord>();
    return std::optional<AuditKeyRecord>(Record(st));
  }

  std::shared_ptr<SqliteDb> db_;
};

class SqliteAuditHeadStore final : public AuditHeadStore {
 public:
  SqliteAuditHeadStore(std::shared_ptr<SqliteDb> db, const Clock& clock) : db_(std::move(db)), clock_(clock) {}

  Status Save(const std::string& log, const AuditHead& head) override {
    if (log.empty()) return MakeError(ErrorCode::kInvalidArgument, "an audit head is saved under its log's id");
    auto r = db_->With<bool>([&](SqliteConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
          "INSERT INTO audit_head(log_id, seq, mac, seal, origin, updated_at) VALUES(?,?,?,?,?,?) "
          "ON CONFLICT(log_id) DO UPDATE SET seq=excluded.seq, mac=excluded.mac, seal=excluded.seal, "
          "origin=excluded.origin, updated_at=excluded.updated_at WHERE excluded.seq > audit_head.seq"));
      DYAD_RETURN_IF_ERROR(st.Bind(1, log).Bind(2, static_cast<int64_t>(head.seq)).Bind(3, head.mac)
                               .Bind(4, head.seal).Bind(5, head.origin).Bind(6, FormatIso8601(clock_.WallNow()))
                               .Run());
      return true;
    });
    if (!r.ok()) return r.error();
    return OkStatus();
  }

  Result<std::optional<AuditHead>> Load(const std::string& log) override {
    return db_->With<std::optional<AuditHead>>([&](SqliteConnection& c) -> Result<std::optional<AuditHead>> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare("SELECT seq, mac, seal, origin FROM audit_head WHERE log_id=?"));
      st.Bind(1, log);
      DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) return std::optional<AuditHead>();
      return std::optional<AuditHead>(AuditHead{static_cast<uint64_t>(st.Int(0)), st.Text(1), st.Text(2), st.Text(3)});
    });
  }

  Result<std::vector<std::pair<std::string, AuditHead>>> AtOrigin(const std::string& origin) override {
    using Heads = std::vector<std::pair<std::string, AuditHead>>;
    return db_->With<Heads>([&](SqliteConnection& c) -> Result<Heads> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
          "SELECT log_id, seq, mac, seal, origin FROM audit_head WHERE origin=? AND log_id<>'' ORDER BY log_id"));
      st.Bind(1, origin);
      Heads all;
      while (true) {
        DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
        if (!row) return all;
        all.emplace_back(st.Text(0), AuditHead{static_cast<uint64_t>(st.Int(1)), st.Text(2), st.Text(3), st.Text(4)});
      }
    });
  }

  Result<bool> Claim(const std::string& log) override {
    if (log.empty()) return MakeError(ErrorCode::kInvalidArgument, "an audit head is claimed for its log's id");
    return db_->With<bool>([&](SqliteConnection& c) -> Result<bool> {
      // One statement: SQLite runs one writer at a time.
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
          "UPDATE audit_head SET log_id=? WHERE log_id=? AND NOT EXISTS (SELECT 1 FROM audit_head WHERE log_id=?)"));
      DYAD_RETURN_IF_ERROR(st.Bind(1, log).Bind(2, kLegacyAuditLogId).Bind(3, log).Run());
      return c.Changes() > 0;
    });
  }

 private:
  std::shared_ptr<SqliteDb> db_;
  const Clock& clock_;
};

}  // namespace

std::unique_ptr<AuditKeyRepository> NewSqliteAuditKeyRepository(std::shared_ptr<SqliteDb> db) {
  return std::make_unique<SqliteAuditKeyRepository>(std::move(db));
}

std::unique_ptr<AuditHeadStore> NewSqliteAuditHeadStore(std::shared_ptr<SqliteDb> db, const Clock& clock) {
  return std::make_unique<SqliteAuditHeadStore>(std::move(db), clock);
}

}  // namespace dyad
