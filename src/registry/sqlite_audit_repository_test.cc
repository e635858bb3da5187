#include "registry/sqlite_audit_repository.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "registry/migrations.h"
#include "testing/fakes.h"

namespace dyad {
namespace {

AuditKeyRecord Key(uint32_t version, const std::string& wrapped, const std::string& kind = "local",
                   const std::string& key_id = "k") {
  return AuditKeyRecord{kind, key_id, version, wrapped, "2026-01-01T00:00:00.000Z"};
}

// Two processes on one database: each runs `call(i)` on its own connection
// at once.
struct TwoProcesses {
  testing::TempDir dir;
  std::shared_ptr<SqliteDb> dbs[2] = {*SqliteDb::Open(dir.File("a.db")), *SqliteDb::Open(dir.File("a.db"))};
  std::unique_ptr<AuditKeyRepository> repos[2] = {NewSqliteAuditKeyRepository(dbs[0]),
                                                  NewSqliteAuditKeyRepository(dbs[1])};
  template <typename F>
  void AtOnce(F call) {
    std::atomic<int> ready{0};
    auto start = [&](int i) {
      ready.fetch_add(1);
      while (ready.load() < 2) std::this_thread::yield();
      call(i);
    };
    std::thread t0(start, 0), t1(start, 1);
    t0.join();
    t1.join();
  }
};

TEST(SqliteAuditKeys, FirstStoredKeyWinsAndMovesOnlyFromWhatWasRead) {
  TwoProcesses p;
  auto& repos = p.repos;
  EXPECT_FALSE(repos[0]->Get({"local", "k"})->has_value());
  Result<std::optional<AuditKeyRecord>> got[2] = {std::optional<AuditKeyRecord>(), std::optional<AuditKeyRecord>()};
  p.AtOnce([&](int i) { got[i] = repos[i]->InsertFirst(Key(1, std::string("wrapped-\0", 9) + std::to_string(i))); });
  ASSERT_TRUE(got[0].ok() && got[1].ok());
  ASSERT_TRUE(got[0]->has_value() && got[1]->has_value());
  EXPECT_EQ((*got[0])->wrapped, (*got[1])->wrapped);  // both use the one stored
  auto stored = repos[1]->Get({"local", "k"})->value();
  EXPECT_EQ(stored.wrapped, (*got[0])->wrapped);
  EXPECT_EQ(stored.kind, "local");
  EXPECT_EQ(stored.key_version, 1u);

  // Compare-and-set: only from the wrapping read.
  EXPECT_FALSE(*repos[0]->ReplaceWrapping(Key(1, "not-it"), 2, "w2"));
  EXPECT_TRUE(*repos[0]->ReplaceWrapping(stored, 2, "w2"));
  EXPECT_FALSE(*repos[1]->ReplaceWrapping(stored, 3, "w3"));  // moved meanwhile: theirs stands
  EXPECT_EQ(repos[1]->Get({"local", "k"})->value().key_version, 2u);
  EXPECT_EQ(repos[1]->Get({"local", "k"})->value().wrapped, "w2");
}

TEST(SqliteAuditKeys, FirstMakersOfTwoKeyManagersMakeOneKey) {
  TwoProcesses p;
  Result<std::optional<AuditKeyRecord>> got[2] = {std::optional<AuditKeyRecord>(), std::optional<AuditKeyRecord>()};
  p.AtOnce([&](int i) { got[i] = p.repos[i]->InsertFirst(Key(1, "w" + std::to_string(i), "kind" + std::to_string(i))); });
  ASSERT_TRUE(got[0].ok() && got[1].ok());
  EXPECT_NE(got[0]->has_value(), got[1]->has_value());  // the loser's KeyManager holds none
  EXPECT_EQ(p.repos[0]->List()->size(), 1u);
}

TEST(SqliteAuditKeys, TwoProcessesAddingOneWrappingStoreOneRow) {
  TwoProcesses p;
  ASSERT_TRUE(p.repos[0]->InsertFirst(Key(1, "source")).ok());
  Result<AuditKeyRecord> got[2] = {AuditKeyRecord{}, AuditKeyRecord{}};
  p.AtOnce([&](int i) { got[i] = p.repos[i]->InsertIfAbsent(Key(4, "target-" + std::to_string(i), "aws-kms", "t")); });
  ASSERT_TRUE(got[0].ok() && got[1].ok());
  EXPECT_EQ(got[0]->wrapped, got[1]->wrapped);
  auto all = p.repos[1]->List();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].kind, "aws-kms");
  EXPECT_EQ((*all)[0].wrapped, got[0]->wrapped);
  EXPECT_EQ((*all)[1].kind, "local");
  EXPECT_EQ((*all)[1].wrapped, "source");  // the source's kept
}

TEST(SqliteAuditKeys, ARewrapTouchesOnlyItsKeyManagersRow) {
  TwoProcesses p;
  auto& repo = *p.repos[0];
  ASSERT_TRUE(repo.InsertFirst(Key(1, "same")).ok());
  ASSERT_TRUE(repo.InsertIfAbsent(Key(1, "same", "local", "other")).ok());  // same version and bytes, other key id
  EXPECT_TRUE(*repo.ReplaceWrapping(Key(1, "same"), 2, "moved"));
  EXPECT_EQ(repo.Get({"local", "k"})->value().wrapped, "moved");
  EXPECT_EQ(repo.Get({"local", "other"})->value().wrapped, "same");
  EXPECT_EQ(repo.Get({"local", "other"})->value().key_version, 1u);
}

TEST(SqliteAuditKeys, TheLastWrappingIsNeverRemoved) {
  TwoProcesses p;
  auto& repo = *p.repos[0];
  ASSERT_TRUE(repo.InsertFirst(Key(1, "source")).ok());
  EXPECT_FALSE(*repo.RemoveBeside({"local", "k"}, {"aws-kms", "t"}));  // no target wrapping yet
  EXPECT_FALSE(*repo.RemoveBeside({"local", "k"}, {"local", "k"}));
  ASSERT_TRUE(repo.InsertIfAbsent(Key(1, "target", "aws-kms", "t")).ok());
  EXPECT_TRUE(*repo.RemoveBeside({"local", "k"}, {"aws-kms", "t"}));
  EXPECT_FALSE(repo.Get({"local", "k"})->has_value());
  EXPECT_FALSE(*repo.RemoveBeside({"aws-kms", "t"}, {"local", "k"}));
  EXPECT_EQ(repo.List()->size(), 1u);
}

// Migration 10: the one audit-key row of schema 9 is kept, as its
// KeyManager's wrapping.
TEST(SqliteAuditKeys, TheSingleRowOfSchemaNineIsKeptAsItsKeyManagersWrapping) {
  testing::TempDir dir;
  const std::string path = dir.File("old.db");
  {
    auto db = SqliteDb::Open(path);
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->Transaction([](SqliteConnection& c) -> Status {
                       DYAD_RETURN_IF_ERROR(c.Exec("DROP TABLE audit_key; DELETE FROM schema_migrations WHERE version >= 10"));
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

TEST(SqliteAuditHeads, NeverMoveBack) {
  testing::TempDir dir;
  FakeClock clock;
  auto heads = NewSqliteAuditHeadStore(*SqliteDb::Open(dir.File("h.db")), clock);
  EXPECT_FALSE(heads->Load()->has_value());
  ASSERT_TRUE(heads->Save({5, "mac5", "seal5"}).ok());
  ASSERT_TRUE(heads->Save({3, "mac3", "seal3"}).ok());
  EXPECT_EQ(heads->Load()->value().seq, 5u);
  ASSERT_TRUE(heads->Save({6, "mac6", "seal6"}).ok());
  EXPECT_EQ(heads->Load()->value().mac, "mac6");
}

}  // namespace
}  // namespace dyad
