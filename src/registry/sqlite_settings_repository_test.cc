#include "registry/sqlite_settings_repository.h"

#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include "testing/fakes.h"

namespace dyad {
namespace {

TEST(SqliteSettings, GetPutAndOverwrite) {
  testing::TempDir dir;
  auto settings = NewSqliteSettingsRepository(*SqliteDb::Open(dir.File("s.db")));
  auto missing = settings->Get("key_rotation.enabled");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
  ASSERT_TRUE(settings->Put("key_rotation.enabled", "true").ok());
  ASSERT_TRUE(settings->Put("key_rotation.enabled", "false").ok());  // last writer wins
  EXPECT_EQ(settings->Get("key_rotation.enabled")->value(), "false");
  // PutIfAbsent leaves a value that is there.
  EXPECT_EQ(*settings->PutIfAbsent("key_rotation.enabled", "true"), "false");
  EXPECT_EQ(*settings->PutIfAbsent("fresh", "one"), "one");
}

TEST(SqliteSettings, PutIfAbsentRaceStoresOneValue) {
  testing::TempDir dir;
  // Two pools on one file: instances that share nothing but the database.
  std::shared_ptr<SqliteDb> dbs[2] = {*SqliteDb::Open(dir.File("s.db")), *SqliteDb::Open(dir.File("s.db"))};
  std::unique_ptr<SettingsRepository> repos[2] = {NewSqliteSettingsRepository(dbs[0]),
                                                  NewSqliteSettingsRepository(dbs[1])};
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
  }
}

}  // namespace
}  // namespace dyad
