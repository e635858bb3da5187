#include "registry/sqlite_key_version_repository.h"

#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include "testing/fakes.h"

namespace dyad {
namespace {

KeyVersionRecord Record(const std::string& material) {
  return KeyVersionRecord{0, "active", "2026-01-01T00:00:00.000Z", material, 0};
}

// Two SqliteDb pools on one file: two connections that share nothing in
// process, as two instances on one database would.
class KeyVersionRepoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_a_ = *SqliteDb::Open(dir_.File("k.db"));
    db_b_ = *SqliteDb::Open(dir_.File("k.db"));
    a_ = NewSqliteKeyVersionRepository(db_a_);
    b_ = NewSqliteKeyVersionRepository(db_b_);
  }
  testing::TempDir dir_;
  std::shared_ptr<SqliteDb> db_a_, db_b_;
  std::unique_ptr<KeyVersionRepository> a_, b_;
};

TEST_F(KeyVersionRepoTest, ConcurrentFirstVersionHasOneWinner) {
  for (int round = 0; round < 20; ++round) {
    const std::string key_id = "key-" + std::to_string(round);
    std::atomic<int> ready{0};
    Result<bool> created[2] = {false, false};
    auto start = [&](int i) {
      ready.fetch_add(1);
      while (ready.load() < 2) std::this_thread::yield();
      created[i] = (i == 0 ? a_ : b_)->CreateFirst(key_id, Record(i == 0 ? "from-a" : "from-b"));
    };
    std::thread t0(start, 0), t1(start, 1);
    t0.join();
    t1.join();
    ASSERT_TRUE(created[0].ok() && created[1].ok()) << round;
    EXPECT_NE(*created[0], *created[1]) << "exactly one caller inserts, round " << round;
    auto versions = a_->List(key_id);
    ASSERT_TRUE(versions.ok());
    ASSERT_EQ(versions->size(), 1u);
    EXPECT_EQ(versions->front().version, 1u);
    EXPECT_EQ(versions->front().material, *created[0] ? "from-a" : "from-b");
    EXPECT_EQ(versions->front().state, "active");
    EXPECT_EQ(versions->front().encryptions, 0u);
  }
  // A key with versions never gets another first one.
  EXPECT_FALSE(*a_->CreateFirst("key-0", Record("late")));
  EXPECT_EQ(a_->List("key-0")->size(), 1u);
  EXPECT_TRUE(a_->List("unknown")->empty());
}

TEST_F(KeyVersionRepoTest, ConcurrentAdvanceMakesEachVersionOnce) {
  constexpr int kThreads = 4, kEach = 10;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      KeyVersionRepository& repo = t % 2 ? *b_ : *a_;
      for (int i = 0; i < kEach; ++i) {
        // The material names the version it was made for: decide sees the
        // latest as it stands inside the transaction.
        auto v = repo.Advance("k", [](const std::optional<KeyVersionRecord>& latest) -> Result<KeyVersionChange> {
          const uint32_t next = (latest ? latest->version : 0) + 1;
          std::string material = "v";
          material += std::to_string(next);  // not "v" + to_string(): GCC 12 warns falsely (-Wrestrict)
          return KeyVersionChange{std::nullopt, Record(material)};
        });
        if (!v.ok() || *v == 0) failures++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  auto versions = *a_->List("k");
  ASSERT_EQ(versions.size(), static_cast<size_t>(kThreads * kEach));
  for (size_t i = 0; i < versions.size(); ++i) {
    EXPECT_EQ(versions[i].version, i + 1);
    EXPECT_EQ(versions[i].material, std::string("v").append(std::to_string(i + 1)));
  }
}

TEST_F(KeyVersionRepoTest, AdvanceUpdatesTheLatestOrNothing) {
  ASSERT_TRUE(*a_->CreateFirst("k", Record("")));
  // Replaces the latest's material, inserts nothing.
  auto none = a_->Advance("k", [](const std::optional<KeyVersionRecord>& latest) -> Result<KeyVersionChange> {
    EXPECT_TRUE(latest && latest->version == 1 && latest->material.empty());
    return KeyVersionChange{std::string("3"), std::nullopt};
  });
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, 0u);
  EXPECT_EQ(a_->List("k")->back().material, "3");
  // An error from decide writes nothing and comes back as it is.
  auto failed = a_->Advance("k", [](const std::optional<KeyVersionRecord>&) -> Result<KeyVersionChange> {
    return MakeError(ErrorCode::kUnavailable, "no");
  });
  EXPECT_EQ(failed.code(), ErrorCode::kUnavailable);
  EXPECT_EQ(a_->List("k")->size(), 1u);
  // A latest material for a key without versions is ignored.
  auto empty = a_->Advance("other", [](const std::optional<KeyVersionRecord>& latest) -> Result<KeyVersionChange> {
    EXPECT_FALSE(latest.has_value());
    return KeyVersionChange{std::string("x"), std::nullopt};
  });
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(a_->List("other")->empty());
}

TEST_F(KeyVersionRepoTest, StateMaterialAndWear) {
  ASSERT_TRUE(*a_->CreateFirst("k", Record("sealed-1")));
  ASSERT_EQ(*a_->Advance("k", [](const std::optional<KeyVersionRecord>&) -> Result<KeyVersionChange> {
    return KeyVersionChange{std::nullopt, Record("sealed-2")};
  }), 2u);
  ASSERT_TRUE(a_->SetState("k", 1, "retiring").ok());
  ASSERT_TRUE(b_->SetMaterial("k", 1, std::string("re\0sealed", 9)).ok());
  EXPECT_TRUE(a_->SetState("k", 9, "retired").ok());  // no such version: nothing changes
  auto versions = *b_->List("k");
  EXPECT_EQ(versions[0].state, "retiring");
  EXPECT_EQ(versions[0].material, std::string("re\0sealed", 9));  // bytes, not text
  EXPECT_EQ(versions[1].state, "active");

  // max(counter, floor) + block: never lowered, and reservers add up.
  ASSERT_TRUE(a_->ReserveEncryptions("k", 2, 0, 4096).ok());
  ASSERT_TRUE(b_->ReserveEncryptions("k", 2, 0, 4096).ok());  // another instance, from its own floor
  EXPECT_EQ(a_->List("k")->back().encryptions, 8192u);
  ASSERT_TRUE(a_->ReserveEncryptions("k", 2, 10000, 4096).ok());
  EXPECT_EQ(a_->List("k")->back().encryptions, 14096u);
  EXPECT_EQ(a_->List("k")->front().encryptions, 0u);
}

}  // namespace
}  // namespace dyad
