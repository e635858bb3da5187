#include "registry/sqlite_audit_repository.h"

#include <gtest/gtest.h>


#include "registry/migrations.h"
#include "testing/fakes.h"

namespace dyad {
namespace {

AuditKeyRecord Key(uint32_t version, const std::string& wrapped, const std::string& kind = "local",
                   const std::string& key_id = "k") {
  return AuditKeyRecord{kind, key_id, version, wrapped, "2026-01-01T00:00:00.000Z"};
}

// The engine-neutral cases (races between instances included) are in
// audit_repository_contract_test.cc, on SQLite and PostgreSQL.

// Migration 10: the one audit-key row of schema 9 is kept, as its
// KeyManager's wrapping.
TEST(SqliteAuditKeys, TheSingleRowOfSchemaNineIsKeptAsItsKeyManagersWrapping) {
  testing::TempDir dir;
  const std::string path = dir.File("old.db");
  {
    auto db = SqliteDb::Open(path);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->Transaction([](SqliteConnection& c) -> Status {
                       DYAD_RETURN_IF_ERROR(c.Exec("DROP TABLE audit_key; DROP TABLE IF EXISTS registry_changes; "
                                                   "DELETE FROM schema_migrations WHERE version >= 10"));
                       return c.Exec("CREATE TABLE audit_key(id INTEGER PRIMARY KEY CHECK (id = 1), kind TEXT NOT NULL, "
                                     "key_id TEXT NOT NULL, key_version INTEGER NOT NULL, wrapped BLOB NOT NULL, "
                                     "created_at TEXT NOT NULL); INSERT INTO audit_key VALUES(1, 'aws-kms', "
                                     "'alias/k', 3, x'00ff01', '2026-01-01T00:00:00.000Z')");
                     }).ok());
  }
  auto db = SqliteDb::Open(path);
  ASSERT_TRUE(db.ok()) << db.error().message;
  EXPECT_EQ((*db)->SchemaVersion(), static_cast<int>(Migrations().size()));
  auto repo = NewSqliteAuditKeyRepository(*db);
  auto kept = repo->Get({"aws-kms", "alias/k"});
  ASSERT_TRUE(kept.ok() && kept->has_value());
  EXPECT_EQ((*kept)->key_version, 3u);
  EXPECT_EQ((*kept)->wrapped, std::string("\x00\xff\x01", 3));
  EXPECT_EQ((*kept)->created_at, "2026-01-01T00:00:00.000Z");
  ASSERT_TRUE(repo->InsertIfAbsent(Key(1, "beside", "local", "k")).ok());  // no longer one row only
  EXPECT_EQ(repo->List()->size(), 2u);
}

}  // namespace
}  // namespace dyad
