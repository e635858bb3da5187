#include "registry/pg_key_version_repository.h"

namespace dyad {
namespace {

constexpr char kColumns[] = "version, state, created_at, sealed, encryptions";

KeyVersionRecord ReadRow(const PgRows& rows, int r) {
  return KeyVersionRecord{static_cast<uint32_t>(rows.Int(r, 0)), rows.Text(r, 1), rows.Text(r, 2), rows.Bytes(r, 3),
                          static_cast<uint64_t>(rows.Int(r, 4))};
}

// Serialises the writers of one key id until the transaction ends, across
// every connection on the database. A READ COMMITTED statement run after it
// sees what the previous holder committed; a row lock would not do (a
// SELECT … FOR UPDATE that waited returns the row it locked, not a version
// inserted meanwhile, and a key without versions has no row to lock).
Status LockKey(PgConnection& c, const std::string& key_id) {
  DYAD_RETURN_IF_ERROR(c.Query("SELECT pg_advisory_xact_lock(hashtext('dyad.key_versions'), hashtext($1))", {key_id}));
  return OkStatus();
}

Result<std::optional<KeyVersionRecord>> Latest(PgConnection& c, const std::string& key_id) {
  DYAD_ASSIGN_OR_RETURN(PgRows rows, c.Query(std::string("SELECT ") + kColumns +
                                                 " FROM key_versions WHERE key_id=$1 ORDER BY version DESC LIMIT 1",
                                             {key_id}));
  if (rows.size() == 0) return std::optional<KeyVersionRecord>();
  return std::optional<KeyVersionRecord>(ReadRow(rows, 0));
}

Status Insert(PgConnection& c, const std::string& key_id, uint32_t version, const KeyVersionRecord& r) {
  DYAD_RETURN_IF_ERROR(
      c.Query("INSERT INTO key_versions(key_id, version, sealed, state, created_at) VALUES($1,$2,$3,$4,$5)",
              {key_id, static_cast<int64_t>(version), PgParam::Bytes(r.material), r.state, r.created_at}));
  return OkStatus();
}

Status StatusOf(const Result<bool>& r) { return r.ok() ? OkStatus() : Status(r.error()); }

class PgKeyVersionRepository final : public KeyVersionRepository {
 public:
  explicit PgKeyVersionRepository(std::shared_ptr<PgDb> db) : db_(std::move(db)) {}

  Result<std::vector<KeyVersionRecord>> List(const std::string& key_id) override {
    return db_->With<std::vector<KeyVersionRecord>>([&](PgConnection& c) -> Result<std::vector<KeyVersionRecord>> {
      DYAD_ASSIGN_OR_RETURN(PgRows rows, c.Query(std::string("SELECT ") + kColumns +
                                                     " FROM key_versions WHERE key_id=$1 ORDER BY version",
                                                 {key_id}));
      std::vector<KeyVersionRecord> out;
      for (int r = 0; r < rows.size(); ++r) out.push_back(ReadRow(rows, r));
      return out;
    });
  }

  Result<bool> CreateFirst(const std::string& key_id, const KeyVersionRecord& first) override {
    bool inserted = false;
    DYAD_RETURN_IF_ERROR(db_->Transaction([&](PgConnection& c) -> Status {
      DYAD_RETURN_IF_ERROR(LockKey(c, key_id));
      DYAD_ASSIGN_OR_RETURN(std::optional<KeyVersionRecord> latest, Latest(c, key_id));
      if (latest) return OkStatus();
      DYAD_RETURN_IF_ERROR(Insert(c, key_id, 1, first));
      inserted = true;
      return OkStatus();
    }));
    return inserted;
  }

  Result<uint32_t> Advance(const std::string& key_id, const Decide& decide) override {
    uint32_t inserted = 0;
    DYAD_RETURN_IF_ERROR(db_->Transaction([&](PgConnection& c) -> Status {
      DYAD_RETURN_IF_ERROR(LockKey(c, key_id));
      DYAD_ASSIGN_OR_RETURN(std::optional<KeyVersionRecord> latest, Latest(c, key_id));
      DYAD_ASSIGN_OR_RETURN(KeyVersionChange change, decide(latest));
      if (change.latest_material && latest) {
        DYAD_RETURN_IF_ERROR(c.Query("UPDATE key_versions SET sealed=$1 WHERE key_id=$2 AND version=$3",
                                     {PgParam::Bytes(*change.latest_material), key_id,
                                      static_cast<int64_t>(latest->version)}));
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

  // Forward only, in the statement (a late BeginRetire leaves "retired" as
  // it is); the row lock makes two changes at once apply one after the other.
  Status SetState(const std::string& key_id, uint32_t version, const std::string& state) override {
    return Update("UPDATE key_versions SET state=$1::text WHERE key_id=$2 AND version=$3 AND "
                  "(CASE state WHEN 'retired' THEN 2 WHEN 'retiring' THEN 1 ELSE 0 END) < "
                  "(CASE $1::text WHEN 'retired' THEN 2 WHEN 'retiring' THEN 1 ELSE 0 END)",
                  key_id, version, state);
  }

  Status SetMaterial(const std::string& key_id, uint32_t version, const std::string& material) override {
    return Update("UPDATE key_versions SET sealed=$1 WHERE key_id=$2 AND version=$3", key_id, version,
                  PgParam::Bytes(material));
  }

  // One statement: under READ COMMITTED, a reserver that waited for another's
  // row lock recomputes from the counter that one committed.
  Status ReserveEncryptions(const std::string& key_id, uint32_t version, uint64_t floor, uint64_t block) override {
    return StatusOf(db_->With<bool>([&](PgConnection& c) -> Result<bool> {
      DYAD_RETURN_IF_ERROR(c.Query("UPDATE key_versions SET encryptions = GREATEST(encryptions, $1) + $2 "
                                   "WHERE key_id=$3 AND version=$4",
                                   {static_cast<int64_t>(floor), static_cast<int64_t>(block), key_id,
                                    static_cast<int64_t>(version)}));
      return true;
    }));
  }

 private:
  // `sql` sets one column ($1) of one version ($2, $3).
  Status Update(const std::string& sql, const std::string& key_id, uint32_t version, PgParam value) {
    return StatusOf(db_->With<bool>([&](PgConnection& c) -> Result<bool> {
      DYAD_RETURN_IF_ERROR(c.Query(sql, {std::move(value), key_id, static_cast<int64_t>(version)}));
      return true;
    }));
  }

  std::shared_ptr<PgDb> db_;
};

}  // namespace

std::unique_ptr<KeyVersionRepository> NewPgKeyVersionRepository(std::shared_ptr<PgDb> db) {
  return std::make_unique<PgKeyVersionRepository>(std::move(db));
}

}  // namespace dyad
