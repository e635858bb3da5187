#include "registry/sqlite_provider_repository.h"

#include <gtest/gtest.h>

#include "registry/migrations.h"
#include "testing/fakes.h"

namespace dyad {
namespace {

Provider Make(const std::string& id, const std::string& slug) {
  Provider p;
  p.id = id;
  p.slug = slug;
  p.name = "Name " + slug;
  p.type = "proxy";
  p.credential_fields = {"api_key", "org"};
  p.credentials_version = 2;
  p.created_at = p.updated_at = "2026-01-01T00:00:00.000Z";
  return p;
}

TEST(SqliteRepository, CrudAndPersistenceAcrossReopen) {
  testing::TempDir dir;
  {
    auto db = SqliteDb::Open(dir.File("r.db"));
    ASSERT_TRUE(db.ok());
    auto repo = NewSqliteProviderRepository(*db);
    ASSERT_TRUE(repo->Insert(Make("1", "a")).ok());
    ASSERT_TRUE(repo->Insert(Make("2", "b")).ok());
    EXPECT_EQ(repo->Insert(Make("3", "a")).code(), ErrorCode::kAlreadyExists);
    Provider p = *repo->Get("2");
    Provider stale = p;
    p.description = "changed";
    ASSERT_TRUE(repo->Update(p).ok());
    stale.name = "lost";  // read before that update: fenced by the revision (issue 9 item 3)
    EXPECT_EQ(repo->Update(stale).code(), ErrorCode::kConflict);
    p = *repo->Get("2");
    EXPECT_EQ(p.description, "changed");
    EXPECT_EQ(p.name, Make("2", "b").name);
    EXPECT_EQ(p.revision, 1);
    p.slug = "a";
    EXPECT_EQ(repo->Update(p).code(), ErrorCode::kAlreadyExists);
    EXPECT_EQ(repo->Get("nope").code(), ErrorCode::kNotFound);
    EXPECT_EQ(repo->Delete("nope").code(), ErrorCode::kNotFound);
  }
  auto db = SqliteDb::Open(dir.File("r.db"));
  ASSERT_TRUE(db.ok());
  EXPECT_EQ((*db)->SchemaVersion(), static_cast<int>(Migrations().size()));
  auto repo = NewSqliteProviderRepository(*db);
  auto page = repo->List(0, 10);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->total, 2);
  EXPECT_EQ(page->items[1].description, "changed");
  EXPECT_EQ(page->items[0].credential_fields, (std::vector<std::string>{"api_key", "org"}));
  EXPECT_EQ(repo->List(1, 10)->items.size(), 1u);
  ASSERT_TRUE(repo->Delete("1").ok());
  EXPECT_EQ(repo->List(0, 10)->total, 1);
}

}  // namespace
}  // namespace dyad

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
