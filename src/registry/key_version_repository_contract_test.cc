// The KeyVersionRepository contract, on every registry engine (SQLite always,
// PostgreSQL when DYAD_TEST_PG_URL is set: testing/registry_engines.h). Two
// instances are two pools on one database: they share nothing in process.
#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <thread>
#include <vector>

#include "testing/registry_engines.h"

namespace dyad {
namespace {

KeyVersionRecord Record(const std::string& material) {
  return KeyVersionRecord{0, "active", "2026-01-01T00:00:00.000Z", material, 0};
}

class KeyVersionRepositoryContract : public testing::TwoInstanceContractTest {
 protected:
  void SetUp() override {
    TwoInstanceContractTest::SetUp();
    a_ = inst_a_.key_versions.get();
    b_ = inst_b_.key_versions.get();
  }
  KeyVersionRepository* a_ = nullptr;
  KeyVersionRepository* b_ = nullptr;
};

TEST_P(KeyVersionRepositoryContract, ConcurrentFirstVersionHasOneWinner) {
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

TEST_P(KeyVersionRepositoryContract, ConcurrentAdvanceMakesEachVersionOnce) {
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

TEST_P(KeyVersionRepositoryContract, AdvanceUpdatesTheLatestOrNothing) {
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

TEST_P(KeyVersionRepositoryContract, StateMaterialAndWear) {
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

// A state change that would go back (a BeginRetire that lands after
// another instance's Retire) changes nothing: states only go forward, in the
// database, whatever the writer's view was.
TEST_P(KeyVersionRepositoryContract, StatesOnlyGoForward) {
  ASSERT_TRUE(*a_->CreateFirst("k", Record("sealed-1")));
  ASSERT_TRUE(a_->SetState("k", 1, "retiring").ok());
  EXPECT_TRUE(b_->SetState("k", 1, "active").ok());  // back: nothing changes, no error
  EXPECT_EQ(a_->List("k")->front().state, "retiring");
  ASSERT_TRUE(b_->SetState("k", 1, "retired").ok());
  EXPECT_TRUE(a_->SetState("k", 1, "retiring").ok());  // the late BeginRetire
  EXPECT_EQ(b_->List("k")->front().state, "retired");
  EXPECT_TRUE(a_->SetState("k", 1, "active").ok());
  EXPECT_EQ(b_->List("k")->front().state, "retired");
  // Straight from active to retired, and a repeat of the same state, are fine.
  ASSERT_EQ(*a_->Advance("k", [](const std::optional<KeyVersionRecord>&) -> Result<KeyVersionChange> {
    return KeyVersionChange{std::nullopt, Record("sealed-2")};
  }), 2u);
  ASSERT_TRUE(a_->SetState("k", 2, "retired").ok());
  ASSERT_TRUE(b_->SetState("k", 2, "retired").ok());
  EXPECT_EQ(a_->List("k")->back().state, "retired");
  EXPECT_EQ(a_->List("k")->back().material, "sealed-2");  // only the state column is touched
}

// What two instances rotating the same key at once do: each decides from
// the latest version it finds ("rotate if the primary is still v1"). Exactly
// one makes version 2; the other, deciding after it, sees version 2 and
// makes nothing — it is neither refused nor given a duplicate.
TEST_P(KeyVersionRepositoryContract, TwoInstancesAdvancingAtOnceMakeOneNewVersion) {
  for (int round = 0; round < 20; ++round) {
    const std::string key_id = "race-" + std::to_string(round);
    ASSERT_TRUE(*a_->CreateFirst(key_id, Record("v1")));
    std::latch start(2);
    Result<uint32_t> made[2] = {0u, 0u};
    std::optional<uint32_t> seen[2];
    auto advance = [&](int i) {
      start.arrive_and_wait();
      made[i] = (i ? b_ : a_)->Advance(key_id, [&, i](const std::optional<KeyVersionRecord>& latest)
                                                   -> Result<KeyVersionChange> {
        seen[i] = latest ? latest->version : 0;
        if (!latest || latest->version != 1) return KeyVersionChange{};
        return KeyVersionChange{std::nullopt, Record(i ? "from-b" : "from-a")};
      });
    };
    std::thread t0(advance, 0), t1(advance, 1);
    t0.join();
    t1.join();
    ASSERT_TRUE(made[0].ok()) << made[0].error().message;
    ASSERT_TRUE(made[1].ok()) << made[1].error().message;
    EXPECT_EQ(*made[0] + *made[1], 2u) << "one 2 and one 0, round " << round;
    EXPECT_TRUE(*made[0] == 0 || *made[1] == 0) << round;
    const int loser = *made[0] == 0 ? 0 : 1;
    EXPECT_EQ(seen[loser], 2u) << "the loser decided on the winner's version, round " << round;
    auto versions = *b_->List(key_id);
    ASSERT_EQ(versions.size(), 2u) << round;
    EXPECT_EQ(versions[1].material, loser ? "from-a" : "from-b");
  }
}

// Reservations from two instances, many at once, all from floor 0: each
// adds its block to the counter as committed, none is lost.
TEST_P(KeyVersionRepositoryContract, ConcurrentReservationsFromTwoInstancesAddUp) {
  ASSERT_TRUE(*a_->CreateFirst("k", Record("sealed-1")));
  constexpr int kThreads = 4, kEach = 25;
  std::latch start(kThreads);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      KeyVersionRepository& repo = t % 2 ? *b_ : *a_;
      start.arrive_and_wait();
      for (int i = 0; i < kEach; ++i) {
        if (!repo.ReserveEncryptions("k", 1, 0, 7).ok()) failures++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(b_->List("k")->front().encryptions, uint64_t{kThreads * kEach * 7});
}

// A first version made by CreateFirst on one instance while another's
// Advance makes one for the same empty key: one version 1, no error.
TEST_P(KeyVersionRepositoryContract, CreateFirstRacingAdvanceOnAnEmptyKey) {
  for (int round = 0; round < 10; ++round) {
    const std::string key_id = "empty-" + std::to_string(round);
    std::latch start(2);
    Result<bool> created = false;
    Result<uint32_t> advanced = 0u;
    std::thread t0([&] {
      start.arrive_and_wait();
      created = a_->CreateFirst(key_id, Record("created"));
    });
    std::thread t1([&] {
      start.arrive_and_wait();
      advanced = b_->Advance(key_id, [](const std::optional<KeyVersionRecord>& latest) -> Result<KeyVersionChange> {
        if (latest) return KeyVersionChange{};
        return KeyVersionChange{std::nullopt, Record("advanced")};
      });
    });
    t0.join();
    t1.join();
    ASSERT_TRUE(created.ok()) << created.error().message;
    ASSERT_TRUE(advanced.ok()) << advanced.error().message;
    EXPECT_NE(*created, *advanced == 1u) << "exactly one of them made version 1, round " << round;
    auto versions = *a_->List(key_id);
    ASSERT_EQ(versions.size(), 1u) << round;
    EXPECT_EQ(versions[0].material, *created ? "created" : "advanced");
  }
}

DYAD_INSTANTIATE_ON_REGISTRY_ENGINES(KeyVersionRepositoryContract);

}  // namespace
}  // namespace dyad
