// Database: the registry database, whichever engine holds it — SQLite (one
// file, one machine; the default) or PostgreSQL (cluster mode: every
// instance on one database). It makes each repository the service uses, on
// its engine, so that nothing above the registry names an engine. The few
// engine-specific users (the environment backend's secret store, `backup`,
// `restore`, `migrate --dry-run`) ask sqlite() / postgresql(): exactly one
// of them is non-null.
//
// OpenDatabase() opens GATEWAY_DATABASE_URL's database and applies the
// schema migrations: `sqlite://PATH` (the file is created if needed) or
// `postgresql://…` / `postgres://…` (instances starting together migrate
// once, under an advisory lock). Errors name GATEWAY_DATABASE_URL and the
// database's display name, never a password: kInvalidArgument for a URL
// that cannot be used, kUnavailable for a server that cannot be reached,
// kFailedPrecondition for a schema newer than this build.
//
// Thread-safe: the repositories it makes share its connection pool, and may
// outlive the Database (each holds the pool).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "audit/audit_log.h"
#include "core/clock.h"
#include "core/result.h"
#include "registry/audit_key_repository.h"
#include "registry/key_version_repository.h"
#include "registry/migration_progress_repository.h"
#include "registry/pg_db.h"
#include "registry/provider_lease.h"
#include "registry/provider_repository.h"
#include "registry/rotation_repository.h"
#include "registry/settings_repository.h"
#include "registry/sqlite_db.h"

namespace dyad {

class Database {
 public:
  virtual ~Database() = default;

  // "sqlite" or "postgresql".
  virtual std::string_view engine() const = 0;
  virtual int SchemaVersion() const = 0;
  // For messages and logs: the SQLite file, or postgresql://user@host:port/db
  // (never a password).
  virtual const std::string& display_name() const = 0;

  virtual std::unique_ptr<ProviderRepository> NewProviderRepository() = 0;
  virtual std::unique_ptr<ProviderLeases> NewProviderLeases(const Clock& clock) = 0;
  virtual std::unique_ptr<SettingsRepository> NewSettingsRepository() = 0;
  virtual std::unique_ptr<KeyVersionRepository> NewKeyVersionRepository() = 0;
  virtual std::unique_ptr<RotationRepository> NewRotationRepository(const Clock& clock) = 0;
  virtual std::unique_ptr<AuditKeyRepository> NewAuditKeyRepository() = 0;
  virtual std::unique_ptr<AuditHeadStore> NewAuditHeadStore(const Clock& clock) = 0;
  virtual std::unique_ptr<MigrationProgressRepository> NewMigrationProgressRepository(const Clock& clock) = 0;

  // The engine's handle: one of them is null.
  virtual std::shared_ptr<SqliteDb> sqlite() const { return nullptr; }
  virtual std::shared_ptr<PgDb> postgresql() const { return nullptr; }
};

// An SQLite database already open (a test's file, migrate's in-memory copy).
std::shared_ptr<Database> SqliteDatabase(std::shared_ptr<SqliteDb> db, std::string display_name = "");
// A PostgreSQL pool already open (a test's database).
std::shared_ptr<Database> PostgresqlDatabase(std::shared_ptr<PgDb> db);

struct DatabaseOptions {
  // The PostgreSQL pool's settings (size, a database override for tests).
  PgDb::Options postgresql;
};

// Opens `url` (GATEWAY_DATABASE_URL: sqlite://PATH, postgresql://…, postgres://…) and migrates it.
Result<std::shared_ptr<Database>> OpenDatabase(const std::string& url, const DatabaseOptions& options = {});

// Whether `url` names a PostgreSQL database (postgresql:// or postgres://).
bool IsPostgresqlUrl(std::string_view url);

// GATEWAY_DATABASE_URL for messages, opening nothing: an SQLite URL's path;
// a PostgreSQL URL as scheme://USER@HOST:PORT/DB, without its password
// (whatever it holds: everything before the last '@' but the user name is
// dropped), query (which may hold password=…) or fragment.
std::string DatabaseDisplayName(std::string_view url);

}  // namespace dyad
