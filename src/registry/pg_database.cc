// The PostgreSQL half of OpenDatabase (registry/database.h): every
// repository on one PgDb pool.
#include "registry/database.h"
#include "registry/pg_audit_repository.h"
#include "registry/pg_key_version_repository.h"
#include "registry/pg_migration_progress_repository.h"
#include "registry/pg_provider_repository.h"
#include "registry/pg_rotation_repository.h"
#include "registry/pg_settings_repository.h"

namespace dyad {
namespace {

class PgRegistry final : public Database {
 public:
  explicit PgRegistry(std::shared_ptr<PgDb> db) : db_(std::move(db)) {}

  std::string_view engine() const override { return "postgresql"; }
  int SchemaVersion() const override { return db_->SchemaVersion(); }
  const std::string& display_name() const override { return db_->display_name(); }

  std::unique_ptr<ProviderRepository> NewProviderRepository() override { return NewPgProviderRepository(db_); }
  std::unique_ptr<ProviderLeases> NewProviderLeases(const Clock& clock) override {
    return NewPgProviderLeases(db_, clock);
  }
  std::unique_ptr<SettingsRepository> NewSettingsRepository() override { return NewPgSettingsRepository(db_); }
  std::unique_ptr<KeyVersionRepository> NewKeyVersionRepository() override { return NewPgKeyVersionRepository(db_); }
  std::unique_ptr<RotationRepository> NewRotationRepository(const Clock& clock) override {
    return NewPgRotationRepository(db_, clock);
  }
  std::unique_ptr<AuditKeyRepository> NewAuditKeyRepository() override { return NewPgAuditKeyRepository(db_); }
  std::unique_ptr<AuditHeadStore> NewAuditHeadStore(const Clock& clock) override {
    return NewPgAuditHeadStore(db_, clock);
  }
  std::unique_ptr<MigrationProgressRepository> NewMigrationProgressRepository(const Clock& clock) override {
    return NewPgMigrationProgressRepository(db_, clock);
  }

  std::shared_ptr<PgDb> postgresql() const override { return db_; }

 private:
  const std::shared_ptr<PgDb> db_;
};

}  // namespace

std::shared_ptr<Database> PostgresqlDatabase(std::shared_ptr<PgDb> db) {
  return std::make_shared<PgRegistry>(std::move(db));
}

Result<std::shared_ptr<Database>> OpenPostgresqlDatabase(const std::string& url, const PgDb::Options& options) {
  auto db = PgDb::Open(url, options);
  if (!db.ok()) {
    // PgDb's messages carry no password; each names the variable it came from.
    Error error = db.error();
    if (!error.message.starts_with("GATEWAY_DATABASE_URL")) error.message = "GATEWAY_DATABASE_URL: " + error.message;
    return error;
  }
  return PostgresqlDatabase(std::move(db).value());
}

}  // namespace dyad
