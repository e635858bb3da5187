// What only the PostgreSQL audit key store has to show: migration 10 there
// keeps the schema-9 single row as its KeyManager's wrapping. The contract
// (races included) is audit_repository_contract_test.cc.
#include "registry/pg_audit_repository.h"

#include <gtest/gtest.h>

#include "registry/pg_migrations.h"
#include "testing/pg_test_database.h"

namespace dyad {
namespace {

TEST(PgAuditKeys, TheSingleRowOfSchemaNineIsKeptAsItsKeyManagersWrapping) {
  DYAD_SKIP_WITHOUT_TEST_PG();
  testing::PgTestDatabase pg;
  ASSERT_TRUE(pg.status().ok()) << pg.status().error().message;
  {
    auto db = pg.Open();
    ASSERT_TRUE(db.ok()) << db.error().message;
    ASSERT_TRUE((*db)->Transaction([](PgConnection& c) -> Status {
                       return c.Exec(
                           "DROP TABLE audit_key; DROP TABLE IF EXISTS registry_changes; DELETE FROM schema_migrations WHERE version >= 10; "
                           "CREATE TABLE audit_key(id INTEGER PRIMARY KEY CHECK (id = 1), kind TEXT NOT NULL, "
                           "key_id TEXT NOT NULL, key_version BIGINT NOT NULL, wrapped BYTEA NOT NULL, "
                           "created_at TEXT NOT NULL); INSERT INTO audit_key VALUES(1, 'aws-kms', 'alias/k', 3, "
                           "'\\x00ff01'::bytea, '2026-01-01T00:00:00.000Z')");
                     }).ok());
  }
  auto db = pg.Open();
  ASSERT_TRUE(db.ok()) << db.error().message;
  EXPECT_EQ((*db)->SchemaVersion(), static_cast<int>(PgMigrations().size()));
  auto repo = NewPgAuditKeyRepository(*db);
  auto kept = repo->Get({"aws-kms", "alias/k"});
  ASSERT_TRUE(kept.ok()) << kept.error().message;
  ASSERT_TRUE(kept->has_value());
  EXPECT_EQ((*kept)->key_version, 3u);
  EXPECT_EQ((*kept)->wrapped, std::string("\x00\xff\x01", 3));
  EXPECT_EQ((*kept)->created_at, "2026-01-01T00:00:00.000Z");
  ASSERT_TRUE(repo->InsertIfAbsent({"local", "k", 1, "beside", "2026-01-02T00:00:00.000Z"}).ok());
  EXPECT_EQ(repo->List()->size(), 2u);
}

}  // namespace
}  // namespace dyad
