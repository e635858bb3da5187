#include "registry/pg_settings_repository.h"

namespace dyad {
namespace {

class PgSettingsRepository final : public SettingsRepository {
 public:
  explicit PgSettingsRepository(std::shared_ptr<PgDb> db) : db_(std::move(db)) {}

  Result<std::optional<std::string>> Get(const std::string& key) override {
    return db_->With<std::optional<std::string>>(
        [&](PgConnection& c) -> Result<std::optional<std::string>> { return Read(c, key); });
  }

  Status Put(const std::string& key, const std::string& value) override {
    auto r = db_->With<bool>([&](PgConnection& c) -> Result<bool> {
      DYAD_RETURN_IF_ERROR(c.Query(
          "INSERT INTO settings(key, value) VALUES($1, $2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
          {key, value}));
      return true;
    });
    if (!r.ok()) return r.error();
    return OkStatus();
  }

  Result<std::string> PutIfAbsent(const std::string& key, const std::string& value) override {
    auto stored = db_->With<std::optional<std::string>>([&](PgConnection& c) -> Result<std::optional<std::string>> {
      // ON CONFLICT waits for a concurrent inserter to commit; the read that
      // follows, a new statement, sees that row.
      DYAD_RETURN_IF_ERROR(
          c.Query("INSERT INTO settings(key, value) VALUES($1, $2) ON CONFLICT(key) DO NOTHING", {key, value}));
      return Read(c, key);
    });
    if (!stored.ok()) return stored.error();
    if (!stored->has_value()) {
      return MakeError(ErrorCode::kInternal, "settings: '" + key + "' was stored but cannot be read back");
    }
    return std::move(**stored);
  }

 private:
  static Result<std::optional<std::string>> Read(PgConnection& c, const std::string& key) {
    DYAD_ASSIGN_OR_RETURN(PgRows rows, c.Query("SELECT value FROM settings WHERE key = $1", {key}));
    if (rows.size() == 0) return std::optional<std::string>();
    return std::optional<std::string>(rows.Text(0, 0));
  }

  std::shared_ptr<PgDb> db_;
};

}  // namespace

std::unique_ptr<SettingsRepository> NewPgSettingsRepository(std::shared_ptr<PgDb> db) {
  return std::make_unique<PgSettingsRepository>(std::move(db));
}

}  // namespace dyad
