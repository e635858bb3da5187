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

// Processes that open one new registry file at the same moment (instances
// started together, a restart overlapping the old process) all open it:
// switching a new file to WAL takes an exclusive lock SQLite does not wait
// for, and the one that lost the race got "database is locked" at start.
TEST(SqliteOpen, ConnectionsOpeningOneNewFileTogetherAllOpenIt) {
  testing::TempDir dir;
  for (int round = 0; round < 25; ++round) {
    const std::string path = dir.File("registry-" + std::to_string(round) + ".db");
    std::vector<Result<std::shared_ptr<SqliteDb>>> opened(3, MakeError(ErrorCode::kInternal, "not run"));
    std::vector<std::thread> threads;
    for (size_t i = 0; i < opened.size(); ++i) threads.emplace_back([&, i] { opened[i] = SqliteDb::Open(path); });
    for (auto& t : threads) t.join();
    for (const auto& o : opened) ASSERT_TRUE(o.ok()) << "round " << round << ": " << o.error().message;
  }
}

// A failed statement's error names it by its first 60 characters on one line
// (never a value: Exec takes constant SQL), and says when it is cut.
TEST(SqliteExec, ErrorQuotesTheStatementsStartOnOneLine) {
  testing::TempDir dir;
  auto db = SqliteDb::Open(dir.File("registry.db"));
  ASSERT_TRUE(db.ok()) << db.error().message;
  auto message = [&](const std::string& sql) {
    auto r = (*db)->With<int>([&](SqliteConnection& c) -> Result<int> {
      Status s = c.Exec(sql);
      if (s.ok()) return 0;
      return s.error();
    });
    return r.ok() ? std::string("ok") : r.error().message;
  };
  std::string short_sql = message("\n  SELEC 1");
  EXPECT_NE(short_sql.find("(in: SELEC 1)"), std::string::npos) << short_sql;
  std::string long_sql = message("SELECT nothing FROM\nno_such_table WHERE " + std::string(80, 'x') + " = 1");
  EXPECT_NE(long_sql.find("(in: SELECT nothing FROM no_such_table WHERE xxx"), std::string::npos) << long_sql;
  EXPECT_NE(long_sql.find("…)"), std::string::npos) << long_sql;
  EXPECT_EQ(message(" \n "), "ok");  // nothing to run is not an error
}

}  // namespace
}  // namespace dyad
