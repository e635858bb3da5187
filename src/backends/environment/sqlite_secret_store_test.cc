#include "backends/environment/sqlite_secret_store.h"

#include <gtest/gtest.h>

#include "testing/fakes.h"

namespace dyad {
namespace {

// A binary from before migration 8, still running on the migrated database,
// writes values without moving the revision and inserts every secret at 1:
// the triggers move it for them, so an old token never fences a newer value.
TEST(SqliteSecretStore, WritesOfAnOlderBinaryStillMoveTheRevision) {
  testing::TempDir dir;
  FakeClock clock;
  auto db = SqliteDb::Open(dir.File("s.db")).value();
  auto store = NewSqliteSecretStore(db, clock, "dyad-gateway");
  const std::string name = store->SecretName("p1");
  auto token = store->Create(name, "v1");
  ASSERT_TRUE(token.ok()) << token.error().message;
  ASSERT_TRUE(db->Transaction([&](SqliteConnection& c) -> Status {
                  DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare("UPDATE secrets SET value=? WHERE name=? AND value=?"));
                  return st.Bind(1, "v2-by-an-old-binary").Bind(2, name).Bind(3, "v1").Run();
                }).ok());
  EXPECT_EQ(store->Replace(name, "stale rewrap of v1", *token).code(), ErrorCode::kConflict);
  EXPECT_EQ(store->Get(name)->value, "v2-by-an-old-binary");

  ASSERT_TRUE(store->DeleteNow(name).ok());
  ASSERT_TRUE(db->Transaction([&](SqliteConnection& c) -> Status {
                  DYAD_ASSIGN_OR_RETURN(Statement st,
                                        c.Prepare("INSERT INTO secrets(name, value, updated_at) VALUES(?,?,'x')"));
                  return st.Bind(1, name).Bind(2, "v3-by-an-old-binary").Run();
                }).ok());
  auto now = store->Get(name);
  ASSERT_TRUE(now.ok());
  EXPECT_NE(now->version, "1");
  EXPECT_EQ(store->Replace(name, "stale", "1").code(), ErrorCode::kConflict);
}

}  // namespace
}  // namespace dyad
