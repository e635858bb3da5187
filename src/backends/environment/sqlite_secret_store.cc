#include "backends/environment/sqlite_secret_store.h"

#include "core/time_format.h"

namespace dyad {
namespace {

class SqliteSecretStore final : public SecretStore {
 public:
  SqliteSecretStore(std::shared_ptr<SqliteDb> db, const Clock& clock) : db_(std::move(db)), clock_(clock) {}

  const std::string& Name() const override { return name_; }

  Result<std::string> Get(const std::string& name) override {
    return db_->With<std::string>([&](SqliteConnection& c) -> Result<std::string> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare("SELECT value FROM secrets WHERE name=?"));
      st.Bind(1, name);
      DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) return MakeError(ErrorCode::kNotFound, "secret '" + name + "' not found");
      return st.Text(0);
    });
  }

  Status Create(const std::string& name, std::string_view value) override {
    return Write("INSERT INTO secrets(name, value, updated_at) VALUES(?,?,?)", name, value);
  }

  Status Put(const std::string& name, std::string_view value) override {
    return Write("INSERT INTO secrets(name, value, updated_at) VALUES(?,?,?) "
                 "ON CONFLICT(name) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
                 name, value);
  }

  Status Delete(const std::string& name) override {
    auto r = db_->With<bool>([&](SqliteConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare("DELETE FROM secrets WHERE name=?"));
      DYAD_RETURN_IF_ERROR(st.Bind(1, name).Run());
      if (c.Changes() == 0) return MakeError(ErrorCode::kNotFound, "secret '" + name + "' not found");
      return true;
    });
    if (!r.ok()) return r.error();
    return OkStatus();
  }

  Result<std::vector<Listed>> ListWithTimes(std::string_view prefix) override {
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

  Result<std::vector<std::string>> List(std::string_view prefix) override {
    return db_->With<std::vector<std::string>>([&](SqliteConnection& c) -> Result<std::vector<std::string>> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
          "SELECT name FROM secrets WHERE substr(name, 1, length(?1)) = ?1 ORDER BY name"));
      st.Bind(1, prefix);
      std::vector<std::string> names;
      while (true) {
        DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
        if (!row) return names;
        names.push_back(st.Text(0));
      }
    });
  }

 // One read transaction for the batch: SQLite takes its file locks once.
  Result<std::vector<Result<std::string>>> GetMany(const std::vector<std::string>& names) override {
    std::vector<Result<std::string>> out;
    Status s = db_->Transaction([&](SqliteConnection& c) -> Status {
      out.clear();
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare("SELECT value FROM secrets WHERE name=?"));
      for (const auto& name : names) {
        st.Bind(1, name);
        DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
        if (row) out.emplace_back(st.Text(0));
        else out.emplace_back(MakeError(ErrorCode::kNotFound, "secret '" + name + "' not found"));
        DYAD_RETURN_IF_ERROR(st.Run());  // finish and reset for the next name
      }
      return OkStatus();
    }, /*write=*/false);
    if (!s.ok()) return s.error();
    return out;
  }

  // Atomic: one conditional UPDATE.
  Result<bool> PutIfUnchanged(const std::string& name, std::string_view expected, std::string_view value) override {
    DYAD_ASSIGN_OR_RETURN(std::vector<bool> replaced,
                          ReplaceIfUnchanged({{name, std::string(expected), std::string(value)}}));
    return static_cast<bool>(replaced.at(0));
  }

  // One transaction for the whole batch: one commit instead of one per item.
  Result<std::vector<bool>> ReplaceIfUnchanged(const std::vector<Swap>& items) override {
    std::vector<bool> replaced;
    const std::string now = FormatIso8601(clock_.WallNow());
    Status s = db_->Transaction([&](SqliteConnection& c) -> Status {
      replaced.clear();
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare("UPDATE secrets SET value=?, updated_at=? WHERE name=? AND value=?"));
      for (const auto& item : items) {
        DYAD_RETURN_IF_ERROR(st.Bind(1, item.replacement).Bind(2, now).Bind(3, item.name).Bind(4, item.expected).Run());
        replaced.push_back(c.Changes() == 1);
      }
      return OkStatus();
    });
    if (!s.ok()) return s.error();
    return replaced;
  }

 private:
  Status Write(const char* sql, const std::string& name, std::string_view value) {
    auto r = db_->With<bool>([&](SqliteConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(sql));
      DYAD_RETURN_IF_ERROR(st.Bind(1, name).Bind(2, value).Bind(3, FormatIso8601(clock_.WallNow())).Run());
      return true;
    });
    if (!r.ok()) {
      if (r.code() == ErrorCode::kAlreadyExists) return MakeError(ErrorCode::kAlreadyExists, "secret '" + name + "' already exists");
      return r.error();
    }
    return OkStatus();
  }

  const std::string name_ = "environment";
  std::shared_ptr<SqliteDb> db_;
  const Clock& clock_;
};

}  // namespace

std::unique_ptr<SecretStore> NewSqliteSecretStore(std::shared_ptr<SqliteDb> db, const Clock& clock) {
  return std::make_unique<SqliteSecretStore>(std::move(db), clock);
}

}  // namespace dyad
