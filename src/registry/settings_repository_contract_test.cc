// The SettingsRepository contract, on every registry engine (SQLite always,
// PostgreSQL when DYAD_TEST_PG_URL is set: testing/registry_engines.h).
#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include "testing/registry_engines.h"

namespace dyad {
namespace {

class SettingsRepositoryContract : public testing::RegistryContractTest {};

TEST_P(SettingsRepositoryContract, GetPutAndOverwrite) {
  auto inst = NewInstance();
  ASSERT_TRUE(inst.ok()) << inst.error().message;
  SettingsRepository& settings = *inst->settings;
  auto missing = settings.Get("key_rotation.enabled");
  ASSERT_TRUE(missing.ok()) << missing.error().message;
  EXPECT_FALSE(missing->has_value());
  ASSERT_TRUE(settings.Put("key_rotation.enabled", "true").ok());
  ASSERT_TRUE(settings.Put("key_rotation.enabled", "false").ok());  // last writer wins
  EXPECT_EQ(settings.Get("key_rotation.enabled")->value(), "false");
  // PutIfAbsent leaves a value that is there.
  EXPECT_EQ(*settings.PutIfAbsent("key_rotation.enabled", "true"), "false");
  EXPECT_EQ(*settings.PutIfAbsent("fresh", "one"), "one");
  // Values are kept byte for byte (a fingerprint key is base64, but nothing is assumed).
  const std::string odd = "quote ' backslash \\ percent % unicode \xc3\xa9 newline \n end";
  ASSERT_TRUE(settings.Put("odd", odd).ok());
  EXPECT_EQ(settings.Get("odd")->value(), odd);
}

TEST_P(SettingsRepositoryContract, ValuesOutliveTheInstanceThatWroteThem) {
  {
    auto first = NewInstance();
    ASSERT_TRUE(first.ok()) << first.error().message;
    ASSERT_TRUE(first->settings->Put("k", "v").ok());
  }
  auto second = NewInstance();
  ASSERT_TRUE(second.ok()) << second.error().message;
  auto got = second->settings->Get("k");
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->value_or("<unset>"), "v");
}

TEST_P(SettingsRepositoryContract, PutIfAbsentRaceStoresOneValue) {
  // Two instances on one database: they share nothing but it.
  auto a = NewInstance();
  auto b = NewInstance();
  ASSERT_TRUE(a.ok()) << a.error().message;
  ASSERT_TRUE(b.ok()) << b.error().message;
  SettingsRepository* repos[2] = {a->settings.get(), b->settings.get()};
  for (int round = 0; round < 10; ++round) {
    const std::string key = "fingerprint." + std::to_string(round);
    constexpr int kThreads = 8;
    std::atomic<int> ready{0};
    std::vector<Result<std::string>> got(kThreads, Result<std::string>(std::string()));
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        ready.fetch_add(1);
        while (ready.load() < kThreads) std::this_thread::yield();
        got[t] = repos[t % 2]->PutIfAbsent(key, "value-" + std::to_string(t));
      });
    }
    for (auto& t : threads) t.join();
    std::set<std::string> seen;
    for (auto& g : got) {
      ASSERT_TRUE(g.ok()) << g.error().message;
      seen.insert(*g);
    }
    ASSERT_EQ(seen.size(), 1u) << "every caller gets the one stored value";
    EXPECT_EQ(seen.begin()->rfind("value-", 0), 0u);
    EXPECT_EQ(repos[0]->Get(key)->value(), *seen.begin());
    EXPECT_EQ(repos[1]->Get(key)->value(), *seen.begin());
  }
}

DYAD_INSTANTIATE_ON_REGISTRY_ENGINES(SettingsRepositoryContract);

}  // namespace
}  // namespace dyad
