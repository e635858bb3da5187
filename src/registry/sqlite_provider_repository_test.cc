// SQLite-only registry tests: its migration history. The ProviderRepository contract, on SQLite and
// PostgreSQL, is in provider_repository_contract_test.cc; the ProviderLeases one in
// provider_lease_contract_test.cc.
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

}  // namespace
}  // namespace dyad
