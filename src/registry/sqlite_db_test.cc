#include "registry/sqlite_db.h"

#include <gtest/gtest.h>

#include <fstream>
#include <thread>

#include "registry/sqlite_settings_repository.h"
#include "testing/fakes.h"

namespace dyad {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(SqliteMemoryCopy, HoldsTheFileRowsAndWritesNothingBack) {
  testing::TempDir dir;
  const std::string path = dir.File("g.db");
  {
    auto settings = NewSqliteSettingsRepository(*SqliteDb::Open(path));
    ASSERT_TRUE(settings->Put("kept", "1").ok());
  }  // closed: checkpointed into the file
  const std::string before = ReadAll(path);
  ASSERT_FALSE(before.empty());
  {
    auto copy = SqliteDb::OpenMemoryCopy(path);
    ASSERT_TRUE(copy.ok()) << copy.error().message;
    auto settings = NewSqliteSettingsRepository(*copy);
    EXPECT_EQ(settings->Get("kept")->value_or(""), "1");
    ASSERT_TRUE(settings->Put("written", "2").ok());
    // Another thread, another connection: the same copy.
    std::thread other([&] { EXPECT_EQ(settings->Get("written")->value_or(""), "2"); });
    other.join();
    // Two copies are apart.
    auto second = NewSqliteSettingsRepository(*SqliteDb::OpenMemoryCopy(path));
    EXPECT_FALSE(second->Get("written")->has_value());
  }
  EXPECT_EQ(ReadAll(path), before);
  auto settings = NewSqliteSettingsRepository(*SqliteDb::Open(path));
  EXPECT_FALSE(settings->Get("written")->has_value());
}

TEST(SqliteMemoryCopy, MissingFileIsAnErrorNamingIt) {
  testing::TempDir dir;
  auto copy = SqliteDb::OpenMemoryCopy(dir.File("none.db"));
  ASSERT_FALSE(copy.ok());
  EXPECT_NE(copy.error().message.find("none.db"), std::string::npos) << copy.error().message;
  EXPECT_FALSE(std::ifstream(dir.File("none.db")).good());  // not created
}

}  // namespace
}  // namespace dyad
