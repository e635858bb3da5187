#include "registry/sqlite_audit_repository.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "testing/fakes.h"

namespace dyad {
namespace {

AuditKeyRecord Key(uint32_t version, const std::string& wrapped) {
  return AuditKeyRecord{"local", "k", version, wrapped, "2026-01-01T00:00:00.000Z"};
}

TEST(SqliteAuditKeys, FirstStoredKeyWinsAndMovesOnlyFromWhatWasRead) {
  testing::TempDir dir;
  std::shared_ptr<SqliteDb> dbs[2] = {*SqliteDb::Open(dir.File("a.db")), *SqliteDb::Open(dir.File("a.db"))};
  std::unique_ptr<AuditKeyRepository> repos[2] = {NewSqliteAuditKeyRepository(dbs[0]),
                                                  NewSqliteAuditKeyRepository(dbs[1])};
  EXPECT_FALSE(repos[0]->Get()->has_value());
  std::atomic<int> ready{0};
  Result<AuditKeyRecord> got[2] = {AuditKeyRecord{}, AuditKeyRecord{}};
  auto start = [&](int i) {
    ready.fetch_add(1);
    while (ready.load() < 2) std::this_thread::yield();
    got[i] = repos[i]->InsertIfAbsent(Key(1, std::string("wrapped-\0", 9) + std::to_string(i)));
  };
  std::thread t0(start, 0), t1(start, 1);
  t0.join();
  t1.join();
  ASSERT_TRUE(got[0].ok() && got[1].ok());
  EXPECT_EQ(got[0]->wrapped, got[1]->wrapped);  // both use the one stored
  auto stored = repos[1]->Get()->value();
  EXPECT_EQ(stored.wrapped, got[0]->wrapped);
  EXPECT_EQ(stored.kind, "local");
  EXPECT_EQ(stored.key_version, 1u);

  // Compare-and-set: only from the wrapping read.
  EXPECT_FALSE(*repos[0]->ReplaceWrapping(1, "not-it", 2, "w2"));
  EXPECT_TRUE(*repos[0]->ReplaceWrapping(1, stored.wrapped, 2, "w2"));
  EXPECT_FALSE(*repos[1]->ReplaceWrapping(1, stored.wrapped, 3, "w3"));  // moved meanwhile: theirs stands
  EXPECT_EQ(repos[1]->Get()->value().key_version, 2u);
  EXPECT_EQ(repos[1]->Get()->value().wrapped, "w2");
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
