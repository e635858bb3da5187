// What `dyad-gateway migrate --to-env-file TARGET.env` needs around
// BackendMigration: the target's configuration, its backend opened on the
// source's registry database, the one-run-at-a-time lock, and the
// configuration to switch to.
//
// The target is configured by TARGET.env alone (the process environment
// and --env-file configure the source), except that GATEWAY_DATA_DIR and
// GATEWAY_DATABASE_URL are the source's when TARGET.env sets neither: the
// target lives on the same registry database, where the provider rows and
// the target key's versions are kept. Errors name the variable and the file
// (kInvalidArgument); nothing here repeats a secret value.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "app/backend.h"
#include "core/config.h"
#include "core/environment.h"
#include "core/result.h"
#include "registry/pg_db.h"

namespace dyad {

struct TargetConfig {
  Config config;
  // The file's variables in order of name: NAME=value for the known
  // non-secret settings, NAME=<secret: …> for a secret variable and
  // NAME=<not shown: …> for any other (the value is never kept).
  std::vector<std::string> switch_lines;
  // "<source location> -> <target location>" (StoreLocation of each).
  std::string route;
};

// Reads TARGET.env, fills in the source's database, checks the backend's
// settings (as `serve` would), that the database is the source's, that the
// target's store, KMS and replicas lie in the source's
// SECRETS_ALLOWED_REGIONS too (when the source has the list), and that the
// target does not store credentials where the source does (its
// StoreLocation: backend, region or address, prefix). Opens nothing.
Result<TargetConfig> LoadTargetConfig(const std::string& path, const Config& source,
                                      const BackendRegistry& backends = BuiltinBackends());

// One `migrate` at a time on a registry. SQLite: an exclusive lock on
// `<data_dir>/migrate.lock` (flock: released by the kernel when the process
// dies, kill -9 included), opened 0600, never through a symbolic link
// (kFailedPrecondition naming the file, as for anything but a regular
// file); `create` false (a dry run, which writes nothing): a missing file is
// no lock to take, and none is made. PostgreSQL (AcquireOnPostgresql): a
// session advisory lock (MigrationAdvisoryLockKey) on a connection of its
// own, so migrates on any host exclude each other; released when the lock
// is destroyed or the process dies (the server ends the session).
// kFailedPrecondition when another migrate holds it.
class MigrationLock {
 public:
  static Result<std::unique_ptr<MigrationLock>> Acquire(const std::string& data_dir, bool create = true);
  // `url`: GATEWAY_DATABASE_URL (postgresql://…); `options` picks the database in tests.
  static Result<std::unique_ptr<MigrationLock>> AcquireOnPostgresql(const std::string& url,
                                                                    PgDb::Options options = {});
  ~MigrationLock();

 private:
  explicit MigrationLock(int fd) : fd_(fd) {}
  int fd_;
  std::shared_ptr<PgDb> session_;  // PostgreSQL: the one connection holding the lock
};

// The advisory lock key `migrate` runs under on PostgreSQL ("dyad", then 2;
// the schema migrations' is 1).
int64_t MigrationAdvisoryLockKey();

}  // namespace dyad
