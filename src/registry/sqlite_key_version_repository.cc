#include "registry/sqlite_key_version_repository.h"

namespace dyad {
namespace {

constexpr char kColumns[] = "version, state, created_at, sealed, encryptions";

KeyVersionRecord ReadRow(const Statement& st) {
  return KeyVersionRecord{static_cast<uint32_t>(st.Int(0)), st.Text(1), st.Text(2), st.Blob(3),
                          static_cast<uint64_t>(st.Int(4))};
}

Status Insert(SqliteConnection& c, const std::string& key_id, uint32_t version, const KeyVersionRecord& r) {
  DYAD_ASSIGN_OR_RETURN(Statement ins, c.Prepare(
      "INSERT INTO key_versions(key_id, version, sealed, state, created_at) VALUES(?,?,?,?,?)"));
  return ins.Bind(1, key_id).Bind(2, static_cast<int64_t>(version)).BindBlob(3, r.material).Bind(4, r.state)
      .Bind(5, r.created_at).Run();
}

class SqliteKeyVersionRepository final : public KeyVersionRepository {
 public:
  explicit SqliteKeyVersionRepository(std::shared_ptr<SqliteDb> db) : db_(std::move(db)) {}

  Result<std::vector<KeyVersionRecord>> List(const std::string& key_id) override {
    return db_->With<std::vector<KeyVersionRecord>>([&](SqliteConnection& c) -> Result<std::vector<KeyVersionRecord>> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(std::string("SELECT ") + kColumns +
                                                     " FROM key_versions WHERE key_id=? ORDER BY version"));
      st.Bind(1, key_id);
      std::vector<KeyVersionRecord> rows;
      while (true) {
        DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
        if (!row) return rows;
        rows.push_back(ReadRow(st));
      }
    });
  }

  // One statement within a write transaction: insert unless any version exists.
  Result<bool> CreateFirst(const std::string& key_id, const KeyVersionRecord& first) override {
    bool inserted = false;
    DYAD_RETURN_IF_ERROR(db_->Transaction([&](SqliteConnection& c) -> Status {
      DYAD_ASSIGN_OR_RETURN(Statement ins, c.Prepare(
          "INSERT INTO key_versions(key_id, version, sealed, state, created_at) SELECT ?,1,?,?,? "
          "WHERE NOT EXISTS (SELECT 1 FROM key_versions WHERE key_id=?)"));
      DYAD_RETURN_IF_ERROR(ins.Bind(1, key_id).BindBlob(2, first.material).Bind(3, first.state)
                               .Bind(4, first.created_at).Bind(5, key_id).Run());
      inserted = c.Changes() > 0;
      return OkStatus();
    }));
    return inserted;
  }

  Result<uint32_t> Advance(const std::string& key_id, const Decide& decide) override {
    uint32_t inserted = 0;
    DYAD_RETURN_IF_ERROR(db_->Transaction([&](SqliteConnection& c) -> Status {
      std::optional<KeyVersionRecord> latest;
      {
        DYAD_ASSIGN_OR_RETURN(Statement q, c.Prepare(std::string("SELECT ") + kColumns +
                                                      " FROM key_versions WHERE key_id=? ORDER BY version DESC LIMIT 1"));
        q.Bind(1, key_id);
        DYAD_ASSIGN_OR_RETURN(bool row, q.Step());
        if (row) latest = ReadRow(q);
      }
      DYAD_ASSIGN_OR_RETURN(KeyVersionChange change, decide(latest));
      if (change.latest_material && latest) {
        DYAD_ASSIGN_OR_RETURN(Statement up, c.Prepare("UPDATE key_versions SET sealed=? WHERE key_id=? AND version=?"));
        DYAD_RETURN_IF_ERROR(up.BindBlob(1, *change.latest_material).Bind(2, key_id)
                                 .Bind(3, static_cast<int64_t>(latest->version)).Run());
      }
      if (change.next) {
        const uint32_t version = (latest ? latest->version : 0) + 1;
        DYAD_RETURN_IF_ERROR(Insert(c, key_id, version, *change.next));
        inserted = version;
      }
      return OkStatus();
    }));
    return inserted;
  }

  // Forward only, in the statement (a late BeginRetire leaves "retired" as it is).
  Status SetState(const std::string& key_id, uint32_t version, const std::string& state) override {
    return Update("UPDATE key_versions SET state=?1 WHERE key_id=?2 AND version=?3 AND "
                  "(CASE state WHEN 'retired' THEN 2 WHEN 'retiring' THEN 1 ELSE 0 END) < "
                  "(CASE ?1 WHEN 'retired' THEN 2 WHEN 'retiring' THEN 1 ELSE 0 END)",
                  key_id, version, state, false);
  }

  Status SetMaterial(const std::string& key_id, uint32_t version, const std::string& material) override {
    return Update("UPDATE key_versions SET sealed=? WHERE key_id=? AND version=?", key_id, version, material, true);
  }

  Status ReserveEncryptions(const std::string& key_id, uint32_t version, uint64_t floor, uint64_t block) override {
    auto r = db_->With<bool>([&](SqliteConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
          "UPDATE key_versions SET encryptions = MAX(encryptions, ?) + ? WHERE key_id=? AND version=?"));
      DYAD_RETURN_IF_ERROR(st.Bind(1, static_cast<int64_t>(floor)).Bind(2, static_cast<int64_t>(block)).Bind(3, key_id)
                               .Bind(4, static_cast<int64_t>(version)).Run());
      return true;
    });
    if (!r.ok()) return r.error();
    return OkStatus();
  }

 private:
  // `sql` sets one column (bound first, as text or as a blob) of one version.
  Status Update(const std::string& sql, const std::string& key_id, uint32_t version, const std::string& value,
                bool blob) {
    auto r = db_->With<bool>([&](SqliteConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(sql));
      if (blob) st.BindBlob(1, value);
      else st.Bind(1, value);
      DYAD_RETURN_IF_ERROR(st.Bind(2, key_id).Bind(3, static_cast<int64_t>(version)).Run());
      return true;
    });
    if (!r.ok()) return r.error();
    return OkStatus();
  }

  std::shared_ptr<SqliteDb> db_;
};

}  // namespace

std::unique_ptr<KeyVersionRepository> NewSqliteKeyVersionRepository(std::shared_ptr<SqliteDb> db) {
  return std::make_unique<SqliteKeyVersionRepository>(std::move(db));
}

}  // namespace dyad
