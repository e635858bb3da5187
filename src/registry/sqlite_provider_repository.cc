#include "registry/sqlite_provider_repository.h"

namespace dyad {
namespace {

constexpr char kColumns[] =
    "id, slug, name, type, description, enabled, models, adapter_config, credential_fields, "
    "credentials_version, created_at, updated_at, revision";

Provider ReadRow(const Statement& st) {
  Provider p;
  p.id = st.Text(0);
  p.slug = st.Text(1);
  p.name = st.Text(2);
  p.type = st.Text(3);
  p.description = st.Text(4);
  p.enabled = st.Int(5) != 0;
  p.models_json = st.Text(6);
  p.adapter_config_json = st.Text(7);
  p.credential_fields = SplitCredentialFields(st.Text(8));
  p.credentials_version = st.Int(9);
  p.created_at = st.Text(10);
  p.updated_at = st.Text(11);
  p.revision = st.Int(12);
  return p;
}

// Binds every column but id (at index 12 for UPDATE, 1 for INSERT).
void BindBody(Statement& st, const Provider& p, int first) {
  st.Bind(first, p.slug)
      .Bind(first + 1, p.name)
      .Bind(first + 2, p.type)
      .Bind(first + 3, p.description)
      .Bind(first + 4, static_cast<int64_t>(p.enabled))
      .Bind(first + 5, p.models_json)
      .Bind(first + 6, p.adapter_config_json)
      .Bind(first + 7, JoinCredentialFields(p.credential_fields))
      .Bind(first + 8, p.credentials_version)
      .Bind(first + 9, p.created_at)
      .Bind(first + 10, p.updated_at);
}

Error SlugTaken(const Provider& p) {
  return MakeError(ErrorCode::kAlreadyExists, "a provider with slug '" + p.slug + "' already exists");
}

class SqliteProviderRepository final : public ProviderRepository {
 public:
  explicit SqliteProviderRepository(std::shared_ptr<SqliteDb> db) : db_(std::move(db)) {}

  Status Insert(const Provider& p) override {
    auto r = db_->With<bool>([&](SqliteConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(std::string("INSERT INTO providers(") + kColumns +
                                                     ") VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)"));
      st.Bind(1, p.id);
      BindBody(st, p, 2);
      st.Bind(13, p.revision);
      DYAD_RETURN_IF_ERROR(st.Run());
      return true;
    });
    if (!r.ok()) return r.code() == ErrorCode::kAlreadyExists ? SlugTaken(p) : r.error();
    return OkStatus();
  }

  Result<Provider> Get(const std::string& id) override {
    return db_->With<Provider>([&](SqliteConnection& c) -> Result<Provider> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(std::string("SELECT ") + kColumns +
                                                     " FROM providers WHERE id = ?"));
      st.Bind(1, id);
      DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) return MakeError(ErrorCode::kNotFound, "provider '" + id + "' not found");
      return ReadRow(st);
    });
  }

  Status Update(const Provider& p) override {
    auto r = db_->With<bool>([&](SqliteConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
          "UPDATE providers SET slug=?, name=?, type=?, description=?, enabled=?, models=?, "
          "adapter_config=?, credential_fields=?, credentials_version=?, created_at=?, updated_at=?, "
          "revision=revision+1 WHERE id=? AND revision=?"));
      BindBody(st, p, 1);
      st.Bind(12, p.id).Bind(13, p.revision);
      DYAD_RETURN_IF_ERROR(st.Run());
      if (c.Changes() == 1) return true;
      DYAD_ASSIGN_OR_RETURN(Statement q, c.Prepare("SELECT 1 FROM providers WHERE id = ?"));
      DYAD_ASSIGN_OR_RETURN(bool exists, q.Bind(1, p.id).Step());
      if (!exists) return MakeError(ErrorCode::kNotFound, "provider '" + p.id + "' not found");
      return MakeError(ErrorCode::kConflict,
                       "provider '" + p.id + "' was changed by another writer meanwhile; read it again and retry");
    });
    if (!r.ok()) return r.code() == ErrorCode::kAlreadyExists ? SlugTaken(p) : r.error();
    return OkStatus();
  }

  Status Delete(const std::string& id) override {
    auto r = db_->With<bool>([&](SqliteConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare("DELETE FROM providers WHERE id = ?"));
      DYAD_RETURN_IF_ERROR(st.Bind(1, id).Run());
      if (c.Changes() == 0) return MakeError(ErrorCode::kNotFound, "provider '" + id + "' not found");
      return true;
    });
    if (!r.ok()) return r.error();
    return OkStatus();
  }

  Result<ProviderPage> List(int64_t offset, int64_t limit) override {
    return db_->With<ProviderPage>([&](SqliteConnection& c) -> Result<ProviderPage> {
      ProviderPage page;
      {
        DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare("SELECT COUNT(*) FROM providers"));
        DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
        if (row) page.total = st.Int(0);
      }
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(std::string("SELECT ") + kColumns +
                                                     " FROM providers ORDER BY rowid LIMIT ? OFFSET ?"));
      st.Bind(1, limit).Bind(2, offset);
      while (true) {
        DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
        if (!row) break;
        page.items.push_back(ReadRow(st));
      }
      return page;
    });
  }

  bool ReadsAreLocal() const override { return true; }

  Status Ping() override {
    auto r = db_->With<bool>([](SqliteConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare("SELECT 1"));
      return st.Step();
    });
    if (!r.ok()) return r.error();
    return OkStatus();
  }

 private:
  std::shared_ptr<SqliteDb> db_;
};

class SqliteProviderLeases final : public ProviderLeases {
 public:
  SqliteProviderLeases(std::shared_ptr<SqliteDb> db, const Clock& clock) : db_(std::move(db)), clock_(clock) {}

  // One statement: insert, or take over a lease whose expiry has passed.
  Result<bool> TryAcquire(const std::string& provider_id, const std::string& owner, Clock::Duration ttl) override {
    const int64_t now = NowMs();
    const int64_t until = now + std::chrono::duration_cast<std::chrono::milliseconds>(ttl).count();
    return db_->With<bool>([&](SqliteConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
          "INSERT INTO provider_leases(provider_id, owner, expires_at_ms) VALUES(?,?,?) "
          "ON CONFLICT(provider_id) DO UPDATE SET owner=excluded.owner, expires_at_ms=excluded.expires_at_ms "
          "WHERE provider_leases.expires_at_ms <= ?"));
      DYAD_RETURN_IF_ERROR(st.Bind(1, provider_id).Bind(2, owner).Bind(3, until).Bind(4, now).Run());
      return c.Changes() > 0;
    });
  }

  Result<bool> Renew(const std::string& provider_id, const std::string& owner, Clock::Duration ttl) override {
    const int64_t until = NowMs() + std::chrono::duration_cast<std::chrono::milliseconds>(ttl).count();
    return db_->With<bool>([&](SqliteConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(Statement st,
                            c.Prepare("UPDATE provider_leases SET expires_at_ms=? WHERE provider_id=? AND owner=?"));
      DYAD_RETURN_IF_ERROR(st.Bind(1, until).Bind(2, provider_id).Bind(3, owner).Run());
      return c.Changes() > 0;
    });
  }

  Status Release(const std::string& provider_id, const std::string& owner) override {
    auto r = db_->With<bool>([&](SqliteConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare("DELETE FROM provider_leases WHERE provider_id=? AND owner=?"));
      DYAD_RETURN_IF_ERROR(st.Bind(1, provider_id).Bind(2, owner).Run());
      return true;
    });
    if (!r.ok()) return r.error();
    return OkStatus();
  }

 private:
  int64_t NowMs() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(clock_.WallNow().time_since_epoch()).count();
  }

  std::shared_ptr<SqliteDb> db_;
  const Clock& clock_;
};

}  // namespace

std::unique_ptr<ProviderLeases> NewSqliteProviderLeases(std::shared_ptr<SqliteDb> db, const Clock& clock) {
  return std::make_unique<SqliteProviderLeases>(std::move(db), clock);
}

std::unique_ptr<ProviderRepository> NewSqliteProviderRepository(std::shared_ptr<SqliteDb> db) {
  return std::make_unique<SqliteProviderRepository>(std::move(db));
}

}  // namespace dyad
