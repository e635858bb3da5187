#include "registry/sqlite_provider_repository.h"

#include <gtest/gtest.h>

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
    p.description = "changed";
    ASSERT_TRUE(repo->Update(p).ok());
    p.slug = "a";
    EXPECT_EQ(repo->Update(p).code(), ErrorCode::kAlreadyExists);
    EXPECT_EQ(repo->Get("nope").code(), ErrorCode::kNotFound);
    EXPECT_EQ(repo->Delete("nope").code(), ErrorCode::kNotFound);
  }
  auto db = SqliteDb::Open(dir.File("r.db"));
  ASSERT_TRUE(db.ok());
  EXPECT_EQ((*db)->SchemaVersion(), 4);
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
