#include "backends/environment/sqlite_secret_store.h"

#include "core/parse_int.h"
#include "core/time_format.h"

namespace dyad {
namespace {

Error NotFound(const std::string& name) { return MakeError(ErrorCode::kNotFound, "secret '" + name + "' not found"); }

class SqliteSecretStore final : public SecretStore {
 public:
  SqliteSecretStore(std::shared_ptr<SqliteDb> db, const Clock& clock, std::string prefix)
      : naming_(std::move(prefix), "/"), db_(std::move(db)), clock_(clock) {}

  const std::string& Name() const override { return name_; }
  std::string SecretName(std::string_view provider_id) const override { return naming_.Name(provider_id); }
  std::optional<std::string> ProviderIdOf(std::string_view name) const override { return naming_.IdOf(name); }
  std::string ProbeName(std::string_view tag) const override { return naming_.Probe(tag); }
  bool HasConditionalWrites() const override { return true; }

  Result<StoredSecret> Get(const std::string& name) override {
    return db_->With<StoredSecret>([&](SqliteConnection& c) -> Result<StoredSecret> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare("SELECT value, revision FROM secrets WHERE name=?"));
      st.Bind(1, name);
      DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) return NotFound(name);
      return StoredSecret{st.Text(0), std::to_string(st.Int(1))};
    });
  }

  Result<std::string> Create(const std::string& name, std::string_view value) override {
    const int64_t revision = FirstRevision();
    DYAD_RETURN_IF_ERROR(
        Write("INSERT INTO secrets(name, value, updated_at, revision) VALUES(?,?,?,?)", name, value, revision));
    return std::to_string(revision);
  }

  Status Put(const std::string& name, std::string_view value) override {
    return Write("INSERT INTO secrets(name, value, updated_at, revision) VALUES(?,?,?,?) "
                 "ON CONFLICT(name) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at, "
                 "revision=revision+1",
                 name, value, FirstRevision());
  }

  Result<std::string> Replace(const std::string& name, std::string_view value, const std::string& version) override {
    std::string written;
    Status s = db_->Transaction([&](SqliteConnection& c) -> Status {
      DYAD_ASSIGN_OR_RETURN(written, ReplaceIn(c, name, value, version, FormatIso8601(clock_.WallNow())));
      return OkStatus();
    });
    if (!s.ok()) return s.error();
    return written;
  }

  Result<std::string> Overwrite(const std::string& name, std::string_view value) override {
    return db_->With<std::string>([&](SqliteConnection& c) -> Result<std::string> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
          "UPDATE secrets SET value=?, updated_at=?, revision=revision+1 WHERE name=? RETURNING revision"));
      st.Bind(1, value).Bind(2, FormatIso8601(clock_.WallNow())).Bind(3, name);
      DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) return NotFound(name);
      return std::to_string(st.Int(0));
    });
  }

  Status Delete(const std::string& name) override {
    auto r = db_->With<bool>([&](SqliteConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare("DELETE FROM secrets WHERE name=?"));
      DYAD_RETURN_IF_ERROR(st.Bind(1, name).Run());
      if (c.Changes() == 0) return NotFound(name);
      return true;
    });
    if (!r.ok()) return r.error();
    return OkStatus();
  }

  Status DeleteIfVersion(const std::string& name, const std::string& version) override {
    auto revision = ParseInt<int64_t>(version);
    if (!revision) return MakeError(ErrorCode::kConflict, "secret '" + name + "': not a version of this store");
    auto r = db_->With<bool>([&](SqliteConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare("DELETE FROM secrets WHERE name=? AND revision=?"));
      DYAD_RETURN_IF_ERROR(st.Bind(1, name).Bind(2, *revision).Run());
      return c.Changes() == 1;
    });
    if (!r.ok()) return r.error();
    if (!*r) return MakeError(ErrorCode::kConflict, "secret '" + name + "' was changed by another writer");
    return OkStatus();
  }

  Result<std::vector<Listed>> List() override {
    const std::string& prefix = naming_.providers_prefix();
    return db_->With<std::vector<Listed>>([&](SqliteConnection& c) -> Result<std::vector<Listed>> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
          "SELECT name, updated_at FROM secrets WHERE substr(name, 1, length(?1)) = ?1 ORDER BY name"));
      st.Bind(1, prefix);
      std::vector<Listed> out;
      while (true) {
        DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
        if (!row) return out;
        out.push_back({st.Text(0), ParseIso8601(st.Text(1))});
      }
    });
  }

  // One read transaction for the batch: SQLite takes its file locks once.
  Result<std::vector<Result<StoredSecret>>> GetMany(const std::vector<std::string>& names) override {
    std::vector<Result<StoredSecret>> out;
    Status s = db_->Transaction([&](SqliteConnection& c) -> Status {
      out.clear();
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare("SELECT value, revision FROM secrets WHERE name=?"));
      for (const auto& name : names) {
        st.Bind(1, name);
        DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
        if (row) out.emplace_back(StoredSecret{st.Text(0), std::to_string(st.Int(1))});
        else out.emplace_back(NotFound(name));
        DYAD_RETURN_IF_ERROR(st.Run());  // finish and reset for the next name
      }
      return OkStatus();
    }, /*write=*/false);
    if (!s.ok()) return s.error();
    return out;
  }

  // One transaction for the whole batch: one commit instead of one per item.
  Result<std::vector<bool>> ReplaceMany(const std::vector<Swap>& items) override {
    std::vector<bool> replaced;
    const std::string now = FormatIso8601(clock_.WallNow());
    Status s = db_->Transaction([&](SqliteConnection& c) -> Status {
      replaced.clear();
      for (const auto& item : items) {
        auto r = ReplaceIn(c, item.name, item.value, item.version, now);
        if (!r.ok() && r.code() != ErrorCode::kConflict && r.code() != ErrorCode::kNotFound) return r.error();
        replaced.push_back(r.ok());
      }
      return OkStatus();
    });
    if (!s.ok()) return s.error();
    return replaced;
  }

 private:
  // The new revision; kConflict when `version` is no longer the row's.
  static Result<std::string> ReplaceIn(SqliteConnection& c, const std::string& name, std::string_view value,
                                       const std::string& version, const std::string& now) {
    auto revision = ParseInt<int64_t>(version);
    if (!revision) return MakeError(ErrorCode::kConflict, "secret '" + name + "': not a version of this store");
    DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
        "UPDATE secrets SET value=?, updated_at=?, revision=revision+1 WHERE name=? AND revision=?"));
    DYAD_RETURN_IF_ERROR(st.Bind(1, value).Bind(2, now).Bind(3, name).Bind(4, *revision).Run());
    if (c.Changes() == 1) return std::to_string(*revision + 1);
    DYAD_ASSIGN_OR_RETURN(Statement exists, c.Prepare("SELECT 1 FROM secrets WHERE name=?"));
    DYAD_ASSIGN_OR_RETURN(bool row, exists.Bind(1, name).Step());
    if (!row) return NotFound(name);
    return MakeError(ErrorCode::kConflict, "secret '" + name + "' was changed by another writer");
  }

  // A secret's first revision: the creation time in microseconds, so that a
  // name deleted and created again never repeats a revision (a token read
  // before the delete cannot fence a write of the new secret).
  int64_t FirstRevision() const {
    return std::chrono::duration_cast<std::chrono::microseconds>(clock_.WallNow().time_since_epoch()).count();
  }

  Status Write(const char* sql, const std::string& name, std::string_view value, int64_t revision) {
    auto r = db_->With<bool>([&](SqliteConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(sql));
      DYAD_RETURN_IF_ERROR(
          st.Bind(1, name).Bind(2, value).Bind(3, FormatIso8601(clock_.WallNow())).Bind(4, revision).Run());
      return true;
    });
    if (!r.ok()) {
      if (r.code() == ErrorCode::kAlreadyExists) return MakeError(ErrorCode::kAlreadyExists, "secret '" + name + "' already exists");
      return r.error();
    }
    return OkStatus();
  }

  const std::string name_ = "environment";
  PrefixNaming naming_;
  std::shared_ptr<SqliteDb> db_;
  const Clock& clock_;
};

}  // namespace

std::unique_ptr<SecretStore> NewSqliteSecretStore(std::shared_ptr<SqliteDb> db, const Clock& clock,
                                                  std::string prefix) {
  return std::make_unique<SqliteSecretStore>(std::move(db), clock, std::move(prefix));
}

}  // namespace dyad
