// The MigrationProgressRepository contract, on every registry engine (SQLite
// always, PostgreSQL when DYAD_TEST_PG_URL is set: testing/registry_engines.h).
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "testing/registry_engines.h"

namespace dyad {
namespace {

class MigrationProgressContract : public testing::RegistryContractTest {};

MigrationRecord Record(const std::string& id, const std::string& state, const std::string& fingerprint = "fp") {
  return MigrationRecord{id, state, "src-v1", "dst-v1", fingerprint, 3};
}

TEST_P(MigrationProgressContract, PutReplacesTheProvidersRecordAndLoadGivesOneMigrationsRecords) {
  auto inst = NewInstance();
  ASSERT_TRUE(inst.ok()) << inst.error().message;
  MigrationProgressRepository& records = *inst->migration_progress;
  auto none = records.Load("environment->aws");
  ASSERT_TRUE(none.ok()) << none.error().message;
  EXPECT_TRUE(none->empty());

  ASSERT_TRUE(records.Put("environment->aws", Record("p1", "copying")).ok());
  ASSERT_TRUE(records.Put("environment->aws", Record("p2", "copied")).ok());
  ASSERT_TRUE(records.Put("environment->vault", Record("p1", "copied", "other")).ok());
  MigrationRecord moved{"p1", "copied", "src-v2", "dst-v7", "fp2", 9};
  ASSERT_TRUE(records.Put("environment->aws", moved).ok());

  auto aws = records.Load("environment->aws");
  ASSERT_TRUE(aws.ok()) << aws.error().message;
  ASSERT_EQ(aws->size(), 2u);
  const MigrationRecord& p1 = aws->at("p1");
  EXPECT_EQ(p1.provider_id, "p1");
  EXPECT_EQ(p1.state, "copied");
  EXPECT_EQ(p1.source_version, "src-v2");
  EXPECT_EQ(p1.target_version, "dst-v7");
  EXPECT_EQ(p1.fingerprint, "fp2");
  EXPECT_EQ(p1.credentials_version, 9);
  EXPECT_EQ(aws->at("p2").state, "copied");
  auto vault = records.Load("environment->vault");
  ASSERT_TRUE(vault.ok());
  ASSERT_EQ(vault->size(), 1u);
  EXPECT_EQ(vault->at("p1").fingerprint, "other");  // another migration's record is its own
}

TEST_P(MigrationProgressContract, ClearFingerprintsKeepsStatesAndVersionsOfThatMigrationOnly) {
  auto inst = NewInstance();
  ASSERT_TRUE(inst.ok()) << inst.error().message;
  MigrationProgressRepository& records = *inst->migration_progress;
  ASSERT_TRUE(records.Put("a->b", Record("p1", "copied")).ok());
  ASSERT_TRUE(records.Put("a->b", Record("p2", "copying", "")).ok());
  ASSERT_TRUE(records.Put("a->c", Record("p1", "copied")).ok());
  ASSERT_TRUE(records.ClearFingerprints("a->b").ok());
  ASSERT_TRUE(records.ClearFingerprints("nothing->here").ok());
  auto ab = records.Load("a->b");
  ASSERT_TRUE(ab.ok());
  for (const auto& [id, r] : *ab) {
    EXPECT_EQ(r.fingerprint, "") << id;
    EXPECT_EQ(r.source_version, "src-v1") << id;
    EXPECT_EQ(r.target_version, "dst-v1") << id;
    EXPECT_EQ(r.credentials_version, 3) << id;
  }
  EXPECT_EQ(ab->at("p1").state, "copied");
  EXPECT_EQ(ab->at("p2").state, "copying");
  EXPECT_EQ(records.Load("a->c")->at("p1").fingerprint, "fp");
}

TEST_P(MigrationProgressContract, ARunKilledMidwayResumesFromAnotherInstance) {
  {
    auto killed = NewInstance();
    ASSERT_TRUE(killed.ok()) << killed.error().message;
    ASSERT_TRUE(killed->migration_progress->Put("a->b", Record("p1", "copied")).ok());
    ASSERT_TRUE(killed->migration_progress->Put("a->b", Record("p2", "copying")).ok());
  }
  auto next = NewInstance();
  ASSERT_TRUE(next.ok()) << next.error().message;
  auto loaded = next->migration_progress->Load("a->b");
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  ASSERT_EQ(loaded->size(), 2u);
  EXPECT_EQ(loaded->at("p2").state, "copying");
}

// Two instances recording the same providers at once: one row per
// provider, holding one writer's whole record (never a mix).
TEST_P(MigrationProgressContract, ConcurrentPutsFromTwoInstancesLeaveOneWholeRecordEach) {
  auto a = NewInstance();
  auto b = NewInstance();
  ASSERT_TRUE(a.ok()) << a.error().message;
  ASSERT_TRUE(b.ok()) << b.error().message;
  MigrationProgressRepository* repos[2] = {a->migration_progress.get(), b->migration_progress.get()};
  constexpr int kThreads = 8, kProviders = 20;
  std::atomic<int> ready{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      ready.fetch_add(1);
      while (ready.load() < kThreads) std::this_thread::yield();
      const std::string w = std::to_string(t);
      for (int p = 0; p < kProviders; ++p) {
        MigrationRecord r{"p" + std::to_string(p), "copied", "s" + w, "t" + w, "f" + w, t};
        if (!repos[t % 2]->Put("a->b", r).ok()) ++failed;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failed.load(), 0);
  auto loaded = repos[0]->Load("a->b");
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  ASSERT_EQ(loaded->size(), static_cast<size_t>(kProviders));
  for (const auto& [id, r] : *loaded) {
    const std::string w = std::to_string(r.credentials_version);
    EXPECT_EQ(r.source_version, "s" + w) << id;
    EXPECT_EQ(r.target_version, "t" + w) << id;
    EXPECT_EQ(r.fingerprint, "f" + w) << id;
  }
}

TEST_P(MigrationProgressContract, HostileTextIsKeptByteForByteOrRefusedNeverCut) {
  auto inst = NewInstance();
  ASSERT_TRUE(inst.ok()) << inst.error().message;
  MigrationProgressRepository& records = *inst->migration_progress;
  // Version tokens are the stores' own (AWS VersionIds, Vault numbers, ARNs).
  const std::string odd = "quote ' backslash \\ percent % underscore _ \xc3\xa9 " + std::string(4096, 'v');
  ASSERT_TRUE(records.Put("aws->vault 'x'", MigrationRecord{"p'1", "copied", odd, odd, "", 1}).ok());
  auto loaded = records.Load("aws->vault 'x'");
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  ASSERT_EQ(loaded->count("p'1"), 1u);
  EXPECT_EQ(loaded->at("p'1").source_version, odd);
  EXPECT_TRUE(records.Load("aws->vault %")->empty());  // no wildcard matching

  const std::string nul("p2\0hidden", 9);
  Status put = records.Put("a->b", Record(nul, "copied"));
  auto back = records.Load("a->b");
  ASSERT_TRUE(back.ok()) << back.error().message;
  if (put.ok()) {
    EXPECT_EQ(back->count(nul), 1u);
  } else {
    EXPECT_EQ(put.code(), ErrorCode::kInvalidArgument) << put.error().message;
    EXPECT_NE(put.error().message.find("NUL"), std::string::npos) << put.error().message;
    EXPECT_TRUE(back->empty());
  }
  EXPECT_EQ(back->count("p2"), 0u) << "a NUL cut the provider id short";
}

DYAD_INSTANTIATE_ON_REGISTRY_ENGINES(MigrationProgressContract);

}  // namespace
}  // namespace dyad
