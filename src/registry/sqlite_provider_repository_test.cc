// SQLite-only registry tests: its migration history and its per-provider leases. The ProviderRepository
// contract, on SQLite and PostgreSQL, is in provider_repository_contract_test.cc.
#include "registry/sqlite_provider_repository.h"

#include <gtest/gtest.h>

#include "registry/migrations.h"
#include "testing/fakes.h"

namespace dyad {
namespace {

TEST(SqliteMigrations, SecretsSurviveTheMoveToANameClusteredTable) {
  testing::TempDir dir;
  const std::string path = dir.File("old.db");
  {
    // A database as schema version 4 left it, with one secret.
    auto db = SqliteDb::Open(path);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->Transaction([](SqliteConnection& c) -> Status {
                       DYAD_RETURN_IF_ERROR(c.Exec("DROP TABLE secrets; DELETE FROM schema_migrations WHERE version = 5"));
                       return c.Exec("CREATE TABLE secrets(name TEXT PRIMARY KEY, value TEXT NOT NULL, "
                                     "updated_at TEXT NOT NULL); INSERT INTO secrets VALUES('a/b','blob','t')");
                     }).ok());
  }
  auto db = SqliteDb::Open(path);
  ASSERT_TRUE(db.ok()) << db.error().message;
  EXPECT_EQ((*db)->SchemaVersion(), static_cast<int>(Migrations().size()));
  auto value = (*db)->With<std::string>([](SqliteConnection& c) -> Result<std::string> {
    DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare("SELECT value FROM secrets WHERE name='a/b'"));
    DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return MakeError(ErrorCode::kNotFound, "lost");
    return st.Text(0);
  });
  ASSERT_TRUE(value.ok()) << value.error().message;
  EXPECT_EQ(*value, "blob");
}

// Issue 9 item 3: a lease has one owner until it expires, then anyone may
// take it over; only its owner releases it.
TEST(SqliteProviderLeases, OneOwnerUntilExpiryThenTakeover) {
  testing::TempDir dir;
  auto db = *SqliteDb::Open(dir.File("l.db"));
  FakeClock clock;
  auto leases = NewSqliteProviderLeases(db, clock);
  EXPECT_TRUE(*leases->TryAcquire("p", "a", std::chrono::seconds(30)));
  EXPECT_FALSE(*leases->TryAcquire("p", "b", std::chrono::seconds(30)));
  EXPECT_TRUE(*leases->TryAcquire("q", "b", std::chrono::seconds(30)));  // per provider
  ASSERT_TRUE(leases->Release("p", "b").ok());  // not b's to release
  EXPECT_FALSE(*leases->TryAcquire("p", "b", std::chrono::seconds(30)));
  clock.Advance(std::chrono::seconds(30));
  EXPECT_TRUE(*leases->TryAcquire("p", "b", std::chrono::seconds(30)));  // a's expired: taken over
  ASSERT_TRUE(leases->Release("p", "a").ok());  // a, late, cannot free b's lease
  EXPECT_FALSE(*leases->TryAcquire("p", "c", std::chrono::seconds(30)));
  ASSERT_TRUE(leases->Release("p", "b").ok());
  EXPECT_TRUE(*leases->TryAcquire("p", "c", std::chrono::seconds(30)));
}

}  // namespace
}  // namespace dyad
