#include "registry/sqlite_settings_repository.h"

namespace dyad {
namespace {

class SqliteSettingsRepository final : public SettingsRepository {
 public:
  explicit SqliteSettingsRepository(std::shared_ptr<SqliteDb> db) : db_(std::move(db)) {}

  Result<std::optional<std::string>> Get(const std::string& key) override {
    return db_->With<std::optional<std::string>>([&](SqliteConnection& c) -> Result<std::optional<std::string>> {
      return Read(c, key);
    });
  }

  Status Put(const std::string& key, const std::string& value) override {
    auto r = db_->With<bool>([&](SqliteConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
          "INSERT INTO settings(key, value) VALUES(?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value"));
      DYAD_RETURN_IF_ERROR(st.Bind(1, key).Bind(2, value).Run());
      return true;
    });
    if (!r.ok()) return r.error();
    return OkStatus();
  }

  Result<std::string> PutIfAbsent(const std::string& key, const std::string& value) override {
    std::optional<std::string> stored;
    DYAD_RETURN_IF_ERROR(db_->Transaction([&](SqliteConnection& c) -> Status {
      DYAD_ASSIGN_OR_RETURN(Statement ins, c.Prepare("INSERT OR IGNORE INTO settings(key, value) VALUES(?, ?)"));
      DYAD_RETURN_IF_ERROR(ins.Bind(1, key).Bind(2, value).Run());
      DYAD_ASSIGN_OR_RETURN(stored, Read(c, key));
      return OkStatus();
    }));
    if (!stored) return MakeError(ErrorCode::kInternal, "settings: '" + key + "' was stored but cannot be read back");
    return std::move(*stored);
  }

 private:
  static Result<std::optional<std::string>> Read(SqliteConnection& c, const std::string& key) {
    DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare("SELECT value FROM settings WHERE key=?"));
    st.Bind(1, key);
    DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return std::optional<std::string>();
    return std::optional<std::string>(st.Text(0));
  }

  std::shared_ptr<SqliteDb> db_;
};

}  // namespace

std::unique_ptr<SettingsRepository> NewSqliteSettingsRepository(std::shared_ptr<SqliteDb> db) {
  return std::make_unique<SqliteSettingsRepository>(std::move(db));
}

}  // namespace dyad
