// The registry engines the repository contract suites run on, as a gtest
// parameter: "sqlite" always, "postgresql" when DYAD_TEST_PG_URL is set
// (scripts/test.sh, and so the CI, always sets it). A suite derives from
// RegistryContractTest (or TwoInstanceContractTest) and is instantiated with
// DYAD_INSTANTIATE_ON_REGISTRY_ENGINES.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

// h-pgrepos-b: audit key and head, migration progress, the environment backend's secret store.
#include "backends/environment/pg_secret_store.h"
#include "backends/environment/sqlite_secret_store.h"
#include "registry/pg_audit_repository.h"
#include "registry/pg_migration_progress_repository.h"
#include "registry/sqlite_audit_repository.h"
#include "registry/sqlite_migration_progress_repository.h"
// (end h-pgrepos-b)
#include "registry/pg_provider_repository.h"
#include "registry/pg_settings_repository.h"
#include "registry/sqlite_provider_repository.h"
#include "registry/sqlite_settings_repository.h"
// h-pgrepos-a: key versions, rotations, leases.
#include "registry/pg_key_version_repository.h"
#include "registry/pg_rotation_repository.h"
#include "registry/sqlite_key_version_repository.h"
#include "registry/sqlite_rotation_repository.h"
#include "testing/fakes.h"
#include "testing/pg_test_database.h"

namespace dyad::testing {

// One instance of the gateway's registry: its own connection pool on the
// test's database, migrated at open.
struct RegistryInstance {
  int schema_version = 0;
  std::unique_ptr<ProviderRepository> providers;
  std::unique_ptr<SettingsRepository> settings;
  // h-pgrepos-a: rotations and leases on the clock NewInstance was given;
  // the engine's handle (one of them null) for what is not a repository yet.
  std::unique_ptr<KeyVersionRepository> key_versions;
  std::unique_ptr<RotationRepository> rotations;
  std::unique_ptr<ProviderLeases> leases;
  std::shared_ptr<SqliteDb> sqlite;
  std::shared_ptr<PgDb> postgresql;
  // h-pgrepos-b: the audit chain's key and head, `migrate`'s progress, and
  // the environment backend's secret store under a SECRETS_PREFIX (each call
  // a new store on this instance's pool). Times from the fixture's clock().
  std::unique_ptr<AuditKeyRepository> audit_keys;
  std::unique_ptr<AuditHeadStore> audit_heads;
  std::unique_ptr<MigrationProgressRepository> migration_progress;
  std::function<std::unique_ptr<SecretStore>(const std::string& prefix)> secret_store;
  // (end h-pgrepos-b)
};

class RegistryContractTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "postgresql") {
      DYAD_SKIP_WITHOUT_TEST_PG();
      pg_.emplace();
      ASSERT_TRUE(pg_->status().ok()) << pg_->status().error().message;
    }
  }

  // A new instance on the same database: what a second gateway process, or
  // the same one after a restart, sees.
  Result<RegistryInstance> NewInstance() { return NewInstance(fake_clock_); }
  // … whose settled reads and writes (PgDb::SettledTransaction) wait up to
  // `wait` for another transaction's write of the same row: long where the
  // test ends that write itself once it saw the wait (a slow machine must
  // not end the wait first), short where the test is that the wait ends.
  Result<RegistryInstance> NewInstanceSettlingWithin(std::chrono::milliseconds wait) {
    settle_wait_ = wait;
    auto inst = NewInstance();
    settle_wait_.reset();
    return inst;
  }
  // … whose repositories that keep time read `clock` (which must outlive them).
  Result<RegistryInstance> NewInstance(const Clock& clock) {
    RegistryInstance inst;
    if (pg_) {
      PgDb::Options options = pg_->Options();
      if (settle_wait_) options.settle_wait = *settle_wait_;
      DYAD_ASSIGN_OR_RETURN(std::shared_ptr<PgDb> db, pg_->Open(options));
      inst.schema_version = db->SchemaVersion();
      inst.providers = NewPgProviderRepository(db);
      inst.settings = NewPgSettingsRepository(db);
      // h-pgrepos-a
      inst.key_versions = NewPgKeyVersionRepository(db);
      inst.rotations = NewPgRotationRepository(db, clock);
      inst.leases = NewPgProviderLeases(db, clock);
      inst.postgresql = db;
      // h-pgrepos-b
      inst.audit_keys = NewPgAuditKeyRepository(db);
      inst.audit_heads = NewPgAuditHeadStore(db, clock_);
      inst.migration_progress = NewPgMigrationProgressRepository(db, clock_);
      inst.secret_store = [db, this](const std::string& prefix) { return NewPgSecretStore(db, clock_, prefix); };
    } else {
      DYAD_ASSIGN_OR_RETURN(std::shared_ptr<SqliteDb> db, SqliteDb::Open(dir_.File("registry.db")));
      inst.schema_version = db->SchemaVersion();
      inst.providers = NewSqliteProviderRepository(db);
      inst.settings = NewSqliteSettingsRepository(db);
      // h-pgrepos-a
      inst.key_versions = NewSqliteKeyVersionRepository(db);
      inst.rotations = NewSqliteRotationRepository(db, clock);
      inst.leases = NewSqliteProviderLeases(db, clock);
      inst.sqlite = db;
      // h-pgrepos-b
      inst.audit_keys = NewSqliteAuditKeyRepository(db);
      inst.audit_heads = NewSqliteAuditHeadStore(db, clock_);
      inst.migration_progress = NewSqliteMigrationProgressRepository(db, clock_);
      inst.secret_store = [db, this](const std::string& prefix) { return NewSqliteSecretStore(db, clock_, prefix); };
    }
    return inst;
  }

  // h-pgrepos-a: SQL both engines read alike, run on the test's database
  // through `inst`'s pool (what an operator or a killed process left there).
  static Status ExecSql(const RegistryInstance& inst, const std::string& sql) {
    if (inst.postgresql) {
      auto r = inst.postgresql->With<bool>([&](PgConnection& c) -> Result<bool> {
        DYAD_RETURN_IF_ERROR(c.Exec(sql));
        return true;
      });
      if (!r.ok()) return r.error();
      return OkStatus();
    }
    return inst.sqlite->Transaction([&](SqliteConnection& c) { return c.Exec(sql); });
  }
  // The first column of the first row as an integer; nullopt without a row.
  static Result<std::optional<int64_t>> QueryInt(const RegistryInstance& inst, const std::string& sql) {
    if (inst.postgresql) {
      return inst.postgresql->With<std::optional<int64_t>>([&](PgConnection& c) -> Result<std::optional<int64_t>> {
        DYAD_ASSIGN_OR_RETURN(PgRows rows, c.Query(sql));
        if (rows.size() == 0) return std::optional<int64_t>();
        return std::optional<int64_t>(rows.Int(0, 0));
      });
    }
    return inst.sqlite->With<std::optional<int64_t>>([&](SqliteConnection& c) -> Result<std::optional<int64_t>> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(sql));
      DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) return std::optional<int64_t>();
      return std::optional<int64_t>(st.Int(0));
    });
  }

  // PostgreSQL: polls (bounded, no sleeping for time) until `count`
  // backends on the test's database wait on a lock; false after 30 s.
  static bool BackendsWaitOnLocks(const RegistryInstance& inst, int count) {
    return Polled(inst, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND cardinality(pg_blocking_pids(pid)) > 0", count);
  }
  // Polls `sql` (a count) until it reaches `at_least`; false after 30 s.
  static bool Polled(const RegistryInstance& inst, const std::string& sql, int64_t at_least) {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < give_up) {
      auto waiting = QueryInt(inst, sql);
      if (!waiting.ok()) {
        ADD_FAILURE() << waiting.error().message;
        return false;
      }
      if (waiting->value_or(0) >= at_least) return true;
      std::this_thread::yield();
    }
    return false;
  }

  FakeClock fake_clock_;  // what NewInstance() gives its repositories
  // h-pgrepos-b: the clock every instance's repositories stamp times with.
  FakeClock& clock() { return clock_; }

 private:
  FakeClock clock_;  // h-pgrepos-b
  std::optional<PgTestDatabase> pg_;  // declared first: dropped after the pools below are gone
  TempDir dir_;
  std::optional<std::chrono::milliseconds> settle_wait_;  // NewInstanceSettlingWithin's, else PgDb's default
};

// A suite on two instances, opened in SetUp: two gateways sharing nothing
// but the database.
class TwoInstanceContractTest : public RegistryContractTest {
 protected:
  void SetUp() override {
    RegistryContractTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    for (auto* inst : {&inst_a_, &inst_b_}) {
      auto made = NewInstance();
      ASSERT_TRUE(made.ok()) << made.error().message;
      *inst = std::move(*made);
    }
  }
  RegistryInstance inst_a_, inst_b_;
};

}  // namespace dyad::testing

#define DYAD_INSTANTIATE_ON_REGISTRY_ENGINES(suite)                                              \
  INSTANTIATE_TEST_SUITE_P(Engines, suite, ::testing::Values("sqlite", "postgresql"),           \
                           [](const ::testing::TestParamInfo<std::string>& info) { return info.param; })
