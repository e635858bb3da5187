#include "registry/pg_audit_repository.h"

#include "core/time_format.h"

namespace dyad {
namespace {

constexpr char kColumns[] = "kind, key_id, key_version, wrapped, created_at";

// Serialises the writers whose condition spans rows (InsertFirst,
// RemoveBeside) with every other writer of the table; readers go on.
constexpr char kLockTable[] = "LOCK TABLE audit_key IN SHARE ROW EXCLUSIVE MODE";

AuditKeyRecord ReadRecord(const PgRows& rows, int r) {
  return AuditKeyRecord{rows.Text(r, 0), rows.Text(r, 1), static_cast<uint32_t>(rows.Int(r, 2)), rows.Bytes(r, 3),
                        rows.Text(r, 4)};
}

std::vector<PgParam> RecordParams(const AuditKeyRecord& key) {
  return {key.kind, key.key_id, static_cast<int64_t>(key.key_version), PgParam::Bytes(key.wrapped), key.created_at};
}

Result<std::optional<AuditKeyRecord>> Read(PgConnection& c, const AuditKeyHolder& holder) {
  DYAD_ASSIGN_OR_RETURN(PgRows rows, c.Query(std::string("SELECT ") + kColumns +
                                                 " FROM audit_key WHERE kind = $1 AND key_id = $2",
                                             {holder.kind, holder.key_id}));
  if (rows.size() == 0) return std::optional<AuditKeyRecord>();
  return std::optional<AuditKeyRecord>(ReadRecord(rows, 0));
}

class PgAuditKeyRepository final : public AuditKeyRepository {
 public:
  explicit PgAuditKeyRepository(std::shared_ptr<PgDb> db) : db_(std::move(db)) {}

  Result<std::optional<AuditKeyRecord>> Get(const AuditKeyHolder& holder) override {
    return db_->With<std::optional<AuditKeyRecord>>([&](PgConnection& c) { return Read(c, holder); });
  }

  Result<std::vector<AuditKeyRecord>> List() override {
    return db_->With<std::vector<AuditKeyRecord>>([](PgConnection& c) -> Result<std::vector<AuditKeyRecord>> {
      // Byte order, as SQLite's BINARY collation sorts.
      DYAD_ASSIGN_OR_RETURN(PgRows rows, c.Query(std::string("SELECT ") + kColumns +
                                                     " FROM audit_key ORDER BY kind COLLATE \"C\", key_id COLLATE \"C\""));
      std::vector<AuditKeyRecord> all;
      for (int r = 0; r < rows.size(); ++r) all.push_back(ReadRecord(rows, r));
      return all;
    });
  }

  Result<std::optional<AuditKeyRecord>> InsertFirst(const AuditKeyRecord& key) override {
    std::optional<AuditKeyRecord> stored;
    DYAD_RETURN_IF_ERROR(db_->Transaction([&](PgConnection& c) -> Status {
      DYAD_RETURN_IF_ERROR(c.Exec(kLockTable));
      // A new statement after the lock: its snapshot holds whatever the
      // previous holder of the lock committed.
      DYAD_RETURN_IF_ERROR(c.Query(std::string("INSERT INTO audit_key(") + kColumns +
                                       ") SELECT $1::text, $2::text, $3::bigint, $4::bytea, $5::text WHERE NOT EXISTS (SELECT 1 FROM audit_key)",
                                   RecordParams(key)));
      DYAD_ASSIGN_OR_RETURN(stored, Read(c, key.holder()));
      return OkStatus();
    }));
    return stored;
  }

  Result<AuditKeyRecord> InsertIfAbsent(const AuditKeyRecord& key) override {
    auto stored = db_->With<std::optional<AuditKeyRecord>>([&](PgConnection& c) -> Result<std::optional<AuditKeyRecord>> {
      // ON CONFLICT waits for a concurrent inserter of the holder's row to
      // commit; the read that follows, a new statement, sees that row.
      DYAD_RETURN_IF_ERROR(c.Query(std::string("INSERT INTO audit_key(") + kColumns +
                                       ") VALUES($1, $2, $3, $4, $5) ON CONFLICT(kind, key_id) DO NOTHING",
                                   RecordParams(key)));
      return Read(c, key.holder());
    });
    if (!stored.ok()) return stored.error();
    if (!stored->has_value()) return MakeError(ErrorCode::kInternal, "the audit key was stored but cannot be read back");
    return std::move(**stored);
  }

  Result<bool> ReplaceWrapping(const AuditKeyRecord& from, uint32_t to_version, const std::string& to_wrapped) override {
    return db_->With<bool>([&](PgConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(PgRows rows, c.Query(
          "UPDATE audit_key SET key_version = $1, wrapped = $2 "
          "WHERE kind = $3 AND key_id = $4 AND key_version = $5 AND wrapped = $6",
          {static_cast<int64_t>(to_version), PgParam::Bytes(to_wrapped), from.kind, from.key_id,
           static_cast<int64_t>(from.key_version), PgParam::Bytes(from.wrapped)}));
      return rows.Affected() > 0;
    });
  }

  Result<bool> RemoveBeside(const AuditKeyHolder& drop, const AuditKeyHolder& keep) override {
    if (drop.kind == keep.kind && drop.key_id == keep.key_id) return false;
    bool removed = false;
    DYAD_RETURN_IF_ERROR(db_->Transaction([&](PgConnection& c) -> Status {
      // Without the lock, RemoveBeside(a, b) and RemoveBeside(b, a) on two
      // instances would each see the other's row and drop both.
      DYAD_RETURN_IF_ERROR(c.Exec(kLockTable));
      DYAD_ASSIGN_OR_RETURN(PgRows rows, c.Query(
          "DELETE FROM audit_key WHERE kind = $1 AND key_id = $2 "
          "AND EXISTS (SELECT 1 FROM audit_key WHERE kind = $3 AND key_id = $4)",
          {drop.kind, drop.key_id, keep.kind, keep.key_id}));
      removed = rows.Affected() > 0;
      return OkStatus();
    }));
    return removed;
  }

 private:
  std::shared_ptr<PgDb> db_;
};

class PgAuditHeadStore final : public AuditHeadStore {
 public:
  PgAuditHeadStore(std::shared_ptr<PgDb> db, const Clock& clock) : db_(std::move(db)), clock_(clock) {}

  Status Save(const std::string& log, const AuditHead& head) override {
    if (log.empty()) return MakeError(ErrorCode::kInvalidArgument, "an audit head is saved under its log's id");
    auto r = db_->With<bool>([&](PgConnection& c) -> Result<bool> {
      DYAD_RETURN_IF_ERROR(c.Query(
          "INSERT INTO audit_head(log_id, seq, mac, seal, origin, updated_at) VALUES($1, $2, $3, $4, $5, $6) "
          "ON CONFLICT(log_id) DO UPDATE SET seq = excluded.seq, mac = excluded.mac, seal = excluded.seal, "
          "origin = excluded.origin, updated_at = excluded.updated_at WHERE excluded.seq > audit_head.seq",
          {log, static_cast<int64_t>(head.seq), head.mac, head.seal, head.origin, FormatIso8601(clock_.WallNow())}));
      return true;
    });
    if (!r.ok()) return r.error();
    return OkStatus();
  }

  Result<std::optional<AuditHead>> Load(const std::string& log) override {
    return db_->With<std::optional<AuditHead>>([&](PgConnection& c) -> Result<std::optional<AuditHead>> {
      DYAD_ASSIGN_OR_RETURN(PgRows rows,
                            c.Query("SELECT seq, mac, seal, origin FROM audit_head WHERE log_id = $1", {log}));
      if (rows.size() == 0) return std::optional<AuditHead>();
      return std::optional<AuditHead>(
          AuditHead{static_cast<uint64_t>(rows.Int(0, 0)), rows.Text(0, 1), rows.Text(0, 2), rows.Text(0, 3)});
    });
  }

  Result<std::vector<std::pair<std::string, AuditHead>>> AtOrigin(const std::string& origin) override {
    using Heads = std::vector<std::pair<std::string, AuditHead>>;
    return db_->With<Heads>([&](PgConnection& c) -> Result<Heads> {
      DYAD_ASSIGN_OR_RETURN(PgRows rows, c.Query(
          "SELECT log_id, seq, mac, seal, origin FROM audit_head WHERE origin = $1 AND log_id <> '' "
          "ORDER BY log_id COLLATE \"C\"", {origin}));
      Heads all;
      for (int r = 0; r < rows.size(); ++r) {
        all.emplace_back(rows.Text(r, 0), AuditHead{static_cast<uint64_t>(rows.Int(r, 1)), rows.Text(r, 2),
                                                    rows.Text(r, 3), rows.Text(r, 4)});
      }
      return all;
    });
  }

  Result<bool> Claim(const std::string& log) override {
    if (log.empty()) return MakeError(ErrorCode::kInvalidArgument, "an audit head is claimed for its log's id");
    auto claimed = db_->With<bool>([&](PgConnection& c) -> Result<bool> {
      // A second claimer waits for the legacy row and re-checks
      // `log_id = ''` on what the first left: it no longer matches.
      DYAD_ASSIGN_OR_RETURN(PgRows rows, c.Query(
          "UPDATE audit_head SET log_id = $1 WHERE log_id = $2 "
          "AND NOT EXISTS (SELECT 1 FROM audit_head WHERE log_id = $1)",
          {log, kLegacyAuditLogId}));
      return rows.Affected() > 0;
    });
    // The log's own row was inserted meanwhile (its first save): it has a head.
    if (!claimed.ok() && claimed.code() == ErrorCode::kAlreadyExists) return false;
    return claimed;
  }

 private:
  std::shared_ptr<PgDb> db_;
  const Clock& clock_;
};

}  // namespace

std::unique_ptr<AuditKeyRepository> NewPgAuditKeyRepository(std::shared_ptr<PgDb> db) {
  return std::make_unique<PgAuditKeyRepository>(std::move(db));
}

std::unique_ptr<AuditHeadStore> NewPgAuditHeadStore(std::shared_ptr<PgDb> db, const Clock& clock) {
  return std::make_unique<PgAuditHeadStore>(std::move(db), clock);
}

}  // namespace dyad
