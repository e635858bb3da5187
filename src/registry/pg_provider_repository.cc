#include "registry/pg_provider_repository.h"

namespace dyad {
namespace {

constexpr char kColumns[] =
    "id, slug, name, type, description, enabled, models, adapter_config, credential_fields, "
    "credentials_version, created_at, updated_at, revision";

Provider ReadRow(const PgRows& rows, int r) {
  Provider p;
  p.id = rows.Text(r, 0);
  p.slug = rows.Text(r, 1);
  p.name = rows.Text(r, 2);
  p.type = rows.Text(r, 3);
  p.description = rows.Text(r, 4);
  p.enabled = rows.Bool(r, 5);
  p.models_json = rows.Text(r, 6);
  p.adapter_config_json = rows.Text(r, 7);
  p.credential_fields = SplitCredentialFields(rows.Text(r, 8));
  p.credentials_version = rows.Int(r, 9);
  p.created_at = rows.Text(r, 10);
  p.updated_at = rows.Text(r, 11);
  p.revision = rows.Int(r, 12);
  return p;
}

// Every column but id and revision, in kColumns' order.
std::vector<PgParam> Body(const Provider& p) {
  return {p.slug, p.name, p.type, p.description, p.enabled, p.models_json, p.adapter_config_json,
          JoinCredentialFields(p.credential_fields), p.credentials_version, p.created_at, p.updated_at};
}

Error SlugTaken(const Provider& p) {
  return MakeError(ErrorCode::kAlreadyExists, "a provider with slug '" + p.slug + "' already exists");
}

Error NotFound(const std::string& id) { return MakeError(ErrorCode::kNotFound, "provider '" + id + "' not found"); }

class PgProviderRepository final : public ProviderRepository {
 public:
  explicit PgProviderRepository(std::shared_ptr<PgDb> db) : db_(std::move(db)) {}

  Status Insert(const Provider& p) override {
    auto r = db_->With<bool>([&](PgConnection& c) -> Result<bool> {
      DYAD_RETURN_IF_ERROR(InsertOn(c, p));
      return true;
    });
    if (!r.ok()) return r.code() == ErrorCode::kAlreadyExists ? SlugTaken(p) : r.error();
    return OkStatus();
  }

  // The unique index makes the INSERT wait for an uncommitted one of the
  // same id; the settled transaction bounds the wait (kUnavailable).
  Status InsertSettled(const Provider& p) override {
    Status s = db_->SettledTransaction([&](PgConnection& c) { return InsertOn(c, p); });
    if (!s.ok()) return s.code() == ErrorCode::kAlreadyExists ? SlugTaken(p) : s.error();
    return OkStatus();
  }

  static Status InsertOn(PgConnection& c, const Provider& p) {
    std::vector<PgParam> params = {p.id};
    for (auto& b : Body(p)) params.push_back(std::move(b));
    params.push_back(p.revision);
    DYAD_RETURN_IF_ERROR(c.Query(std::string("INSERT INTO providers(") + kColumns +
                                     ") VALUES($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)",
                                 params));
    return OkStatus();
  }

  Result<Provider> Get(const std::string& id) override {
    return db_->With<Provider>([&](PgConnection& c) -> Result<Provider> {
      DYAD_ASSIGN_OR_RETURN(PgRows rows,
                            c.Query(std::string("SELECT ") + kColumns + " FROM providers WHERE id = $1", {id}));
      if (rows.size() == 0) return NotFound(id);
      return ReadRow(rows, 0);
    });
  }

  // FOR SHARE waits for a transaction that changed the row; the settled
  // transaction bounds the wait (kUnavailable: the caller retries).
  Result<Provider> GetSettled(const std::string& id) override {
    Provider out;
    Status s = db_->SettledTransaction([&](PgConnection& c) -> Status {
      DYAD_ASSIGN_OR_RETURN(PgRows rows, c.Query(std::string("SELECT ") + kColumns +
                                                     " FROM providers WHERE id = $1 FOR SHARE", {id}));
      if (rows.size() == 0) return NotFound(id);
      out = ReadRow(rows, 0);
      return OkStatus();
    });
    if (!s.ok()) return s.error();
    return out;
  }

  Status Update(const Provider& p) override {
    auto r = db_->With<bool>([&](PgConnection& c) -> Result<bool> {
      std::vector<PgParam> params = Body(p);
      params.push_back(p.id);
      params.push_back(p.revision);
      DYAD_ASSIGN_OR_RETURN(PgRows updated, c.Query(
          "UPDATE providers SET slug=$1, name=$2, type=$3, description=$4, enabled=$5, models=$6, "
          "adapter_config=$7, credential_fields=$8, credentials_version=$9, created_at=$10, updated_at=$11, "
          "revision=revision+1 WHERE id=$12 AND revision=$13", params));
      if (updated.Affected() == 1) return true;
      DYAD_ASSIGN_OR_RETURN(PgRows exists, c.Query("SELECT 1 FROM providers WHERE id = $1", {p.id}));
      if (exists.size() == 0) return NotFound(p.id);
      return MakeError(ErrorCode::kConflict,
                       "provider '" + p.id + "' was changed by another writer meanwhile; read it again and retry");
    });
    if (!r.ok()) return r.code() == ErrorCode::kAlreadyExists ? SlugTaken(p) : r.error();
    return OkStatus();
  }

  Status Delete(const std::string& id) override {
    auto r = db_->With<bool>([&](PgConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(PgRows rows, c.Query("DELETE FROM providers WHERE id = $1", {id}));
      if (rows.Affected() == 0) return NotFound(id);
      return true;
    });
    if (!r.ok()) return r.error();
    return OkStatus();
  }

  Result<ProviderPage> List(int64_t offset, int64_t limit) override {
    return db_->With<ProviderPage>([&](PgConnection& c) -> Result<ProviderPage> {
      ProviderPage page;
      DYAD_ASSIGN_OR_RETURN(PgRows count, c.Query("SELECT COUNT(*) FROM providers"));
      page.total = count.Int(0, 0);
      DYAD_ASSIGN_OR_RETURN(PgRows rows, c.Query(std::string("SELECT ") + kColumns +
                                                     " FROM providers ORDER BY seq LIMIT $1 OFFSET $2",
                                                 {limit, offset}));
      for (int r = 0; r < rows.size(); ++r) page.items.push_back(ReadRow(rows, r));
      return page;
    });
  }

  Status Ping() override {
    auto r = db_->With<bool>([](PgConnection& c) -> Result<bool> {
      DYAD_RETURN_IF_ERROR(c.Query("SELECT 1"));
      return true;
    });
    if (!r.ok()) return r.error();
    return OkStatus();
  }

 private:
  std::shared_ptr<PgDb> db_;
};

class PgProviderLeases final : public ProviderLeases {
 public:
  PgProviderLeases(std::shared_ptr<PgDb> db, const Clock& clock) : db_(std::move(db)), clock_(clock) {}

  // One statement: insert, or take over a lease whose expiry has passed. Of
  // two racing for one provider, the second waits for the first's row and
  // then finds it unexpired.
  Result<bool> TryAcquire(const std::string& provider_id, const std::string& owner, Clock::Duration ttl) override {
    const int64_t now = NowMs();
    const int64_t until = now + std::chrono::duration_cast<std::chrono::milliseconds>(ttl).count();
    return db_->With<bool>([&](PgConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(PgRows rows, c.Query(
          "INSERT INTO provider_leases(provider_id, owner, expires_at_ms) VALUES($1,$2,$3) "
          "ON CONFLICT(provider_id) DO UPDATE SET owner=EXCLUDED.owner, expires_at_ms=EXCLUDED.expires_at_ms "
          "WHERE provider_leases.expires_at_ms <= $4",
          {provider_id, owner, until, now}));
      return rows.Affected() > 0;
    });
  }

  Result<bool> Renew(const std::string& provider_id, const std::string& owner, Clock::Duration ttl) override {
    const int64_t until = NowMs() + std::chrono::duration_cast<std::chrono::milliseconds>(ttl).count();
    return db_->With<bool>([&](PgConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(PgRows rows, c.Query(
          "UPDATE provider_leases SET expires_at_ms=$1 WHERE provider_id=$2 AND owner=$3", {until, provider_id, owner}));
      return rows.Affected() > 0;
    });
  }

  Status Release(const std::string& provider_id, const std::string& owner) override {
    auto r = db_->With<bool>([&](PgConnection& c) -> Result<bool> {
      DYAD_RETURN_IF_ERROR(c.Query("DELETE FROM provider_leases WHERE provider_id=$1 AND owner=$2",
                                   {provider_id, owner}));
      return true;
    });
    if (!r.ok()) return r.error();
    return OkStatus();
  }

 private:
  int64_t NowMs() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(clock_.WallNow().time_since_epoch()).count();
  }

  std::shared_ptr<PgDb> db_;
  const Clock& clock_;
};

}  // namespace

std::unique_ptr<ProviderLeases> NewPgProviderLeases(std::shared_ptr<PgDb> db, const Clock& clock) {
  return std::make_unique<PgProviderLeases>(std::move(db), clock);
}

std::unique_ptr<ProviderRepository> NewPgProviderRepository(std::shared_ptr<PgDb> db) {
  return std::make_unique<PgProviderRepository>(std::move(db));
}

}  // namespace dyad
