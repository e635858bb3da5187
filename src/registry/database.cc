#include "registry/database.h"

#include "registry/sqlite_audit_repository.h"
#include "registry/sqlite_key_version_repository.h"
#include "registry/sqlite_migration_progress_repository.h"
#include "registry/sqlite_provider_repository.h"
#include "registry/sqlite_rotation_repository.h"
#include "registry/sqlite_settings_repository.h"

namespace dyad {
namespace {

class SqliteRegistry final : public Database {
 public:
  SqliteRegistry(std::shared_ptr<SqliteDb> db, std::string display) : db_(std::move(db)), display_(std::move(display)) {}

  std::string_view engine() const override { return "sqlite"; }
  int SchemaVersion() const override { return db_->SchemaVersion(); }
  const std::string& display_name() const override { return display_; }

  std::unique_ptr<ProviderRepository> NewProviderRepository() override { return NewSqliteProviderRepository(db_); }
  std::unique_ptr<ProviderLeases> NewProviderLeases(const Clock& clock) override {
    return NewSqliteProviderLeases(db_, clock);
  }
  std::unique_ptr<SettingsRepository> NewSettingsRepository() override { return NewSqliteSettingsRepository(db_); }
  std::unique_ptr<KeyVersionRepository> NewKeyVersionRepository() override {
    return NewSqliteKeyVersionRepository(db_);
  }
  std::unique_ptr<RotationRepository> NewRotationRepository(const Clock& clock) override {
    return NewSqliteRotationRepository(db_, clock);
  }
  std::unique_ptr<AuditKeyRepository> NewAuditKeyRepository() override { return NewSqliteAuditKeyRepository(db_); }
  std::unique_ptr<AuditHeadStore> NewAuditHeadStore(const Clock& clock) override {
    return NewSqliteAuditHeadStore(db_, clock);
  }
  std::unique_ptr<MigrationProgressRepository> NewMigrationProgressRepository(const Clock& clock) override {
    return NewSqliteMigrationProgressRepository(db_, clock);
  }

  std::shared_ptr<SqliteDb> sqlite() const override { return db_; }

 private:
  const std::shared_ptr<SqliteDb> db_;
  const std::string display_;
};

constexpr std::string_view kSqliteScheme = "sqlite://";

}  // namespace

std::shared_ptr<Database> SqliteDatabase(std::shared_ptr<SqliteDb> db, std::string display_name) {
  if (display_name.empty()) display_name = "an SQLite database";
  return std::make_shared<SqliteRegistry>(std::move(db), std::move(display_name));
}

std::string DatabaseDisplayName(std::string_view url) {
  if (url.starts_with(kSqliteScheme)) return std::string(url.substr(kSqliteScheme.size()));
  size_t scheme = url.find("://");
  if (!IsPostgresqlUrl(url) || scheme == std::string_view::npos) return "the GATEWAY_DATABASE_URL database";
  std::string out(url.substr(0, scheme + 3));
  std::string_view rest = url.substr(scheme + 3);
  const size_t query = rest.find_first_of("?#");
  const size_t at = rest.rfind('@');
  if (at != std::string_view::npos && query != std::string_view::npos && query < at) {
    // A raw '?' or '#' in the password, or an '@' in the query: which, only
    // libpq knows; nothing past the user name is shown.
    std::string_view user = rest.substr(0, rest.find_first_of(":@/?#"));
    return out.append(user).append(user.empty() ? "…" : "@…");
  }
  if (at != std::string_view::npos) {
    std::string_view user = rest.substr(0, at);
    user = user.substr(0, user.find_first_of(":/"));
    if (!user.empty()) out.append(user).append("@");
    rest.remove_prefix(at + 1);
  }
  rest = rest.substr(0, rest.find_first_of("?#"));
  return out.append(rest);
}

bool IsPostgresqlUrl(std::string_view url) {
  return url.starts_with("postgresql://") || url.starts_with("postgres://");
}

// Defined by the PostgreSQL half (pg_database.cc), or refusing while the
// engine's repositories are not all in this build.
Result<std::shared_ptr<Database>> OpenPostgresqlDatabase(const std::string& url, const PgDb::Options& options);

Result<std::shared_ptr<Database>> OpenDatabase(const std::string& url, const DatabaseOptions& options) {
  if (url.starts_with(kSqliteScheme)) {
    std::string path = url.substr(kSqliteScheme.size());
    if (path.empty()) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "GATEWAY_DATABASE_URL: the sqlite:// URL needs a file path, e.g. sqlite://./data/gateway.db");
    }
    DYAD_ASSIGN_OR_RETURN(std::shared_ptr<SqliteDb> db, SqliteDb::Open(path));
    return SqliteDatabase(std::move(db), path);
  }
  if (IsPostgresqlUrl(url)) return OpenPostgresqlDatabase(url, options.postgresql);
  // Nothing of the URL is repeated: it may carry a password.
  return MakeError(ErrorCode::kInvalidArgument,
                   "GATEWAY_DATABASE_URL: unsupported scheme; use sqlite://PATH or postgresql://USER@HOST:PORT/DB");
}

}  // namespace dyad
