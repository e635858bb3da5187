#include "registry/sqlite_backup.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "registry/migrations.h"
#include "registry/sqlite_db.h"
#include "registry/sqlite_settings_repository.h"
#include "testing/fakes.h"

namespace dyad {
namespace {

int Mode(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<int>(st.st_mode & 0777) : -1;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

size_t EntriesIn(const std::string& dir) {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++n;
  return n;
}

TEST(SqliteBackup, SnapshotsBesideAWriterAndRestoresEveryRowCommittedBefore) {
  testing::TempDir dir;
  auto db = *SqliteDb::Open(dir.File("live.db"));
  auto settings = NewSqliteSettingsRepository(db);
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(settings->Put("before." + std::to_string(i), "v").ok());
  // Another pool on the same file keeps writing during the backup (WAL).
  std::atomic<bool> stop{false};
  std::atomic<int> written{0};
  std::thread writer([&] {
    auto other = NewSqliteSettingsRepository(*SqliteDb::Open(dir.File("live.db")));
    while (!stop) {
      if (other->Put("during." + std::to_string(written), "v").ok()) ++written;
    }
  });
  while (written < 20) std::this_thread::yield();
  auto info = BackupDatabase(dir.File("live.db"), dir.File("backup.db"));
  stop = true;
  writer.join();
  ASSERT_TRUE(info.ok()) << info.error().message;
  EXPECT_EQ(info->schema_version, static_cast<int>(Migrations().size()));
  EXPECT_GT(info->bytes, 0);
  EXPECT_EQ(Mode(dir.File("backup.db")), 0600);
  EXPECT_FALSE(std::filesystem::exists(dir.File("backup.db-wal")));  // one self-contained file
  EXPECT_EQ(ReadAll(dir.File("backup.db")).substr(18, 2), std::string("\x01\x01"));  // rollback journal, not WAL
  EXPECT_EQ(EntriesIn(dir.File("")), 4u);  // live.db, -wal, -shm, backup.db: no temporary left

  ASSERT_TRUE(std::filesystem::create_directory(dir.File("fresh")));
  auto restored = RestoreDatabase(dir.File("backup.db"), dir.File("fresh/gateway.db"));
  ASSERT_TRUE(restored.ok()) << restored.error().message;
  EXPECT_EQ(Mode(dir.File("fresh/gateway.db")), 0600);
  auto back = NewSqliteSettingsRepository(*SqliteDb::Open(dir.File("fresh/gateway.db")));
  for (int i = 0; i < 200; ++i) EXPECT_TRUE(back->Get("before." + std::to_string(i))->has_value()) << i;
  // The snapshot is a prefix of the writer's sequence: no gap.
  int during = 0;
  while (back->Get("during." + std::to_string(during))->has_value()) ++during;
  EXPECT_GE(during, 20);
  EXPECT_FALSE(back->Get("during." + std::to_string(during + 1))->has_value());
}

TEST(SqliteBackup, NeverReplacesAnExistingFile) {
  testing::TempDir dir;
  ASSERT_TRUE(SqliteDb::Open(dir.File("live.db")).ok());
  std::ofstream(dir.File("taken")) << "keep me";
  auto info = BackupDatabase(dir.File("live.db"), dir.File("taken"));
  ASSERT_FALSE(info.ok());
  EXPECT_EQ(info.code(), ErrorCode::kAlreadyExists);
  EXPECT_NE(info.error().message.find(dir.File("taken")), std::string::npos);
  EXPECT_EQ(ReadAll(dir.File("taken")), "keep me");

  ASSERT_TRUE(BackupDatabase(dir.File("live.db"), dir.File("b.db")).ok());
  auto restored = RestoreDatabase(dir.File("b.db"), dir.File("taken"));
  ASSERT_FALSE(restored.ok());
  EXPECT_EQ(restored.code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(ReadAll(dir.File("taken")), "keep me");
}

TEST(SqliteBackup, MissingSourceIsNotFound) {
  testing::TempDir dir;
  auto info = BackupDatabase(dir.File("none.db"), dir.File("b.db"));
  ASSERT_FALSE(info.ok());
  EXPECT_EQ(info.code(), ErrorCode::kNotFound);
  EXPECT_FALSE(std::filesystem::exists(dir.File("none.db")));  // not created by looking
  EXPECT_FALSE(RestoreDatabase(dir.File("none.db"), dir.File("g.db")).ok());
  EXPECT_EQ(EntriesIn(dir.File("")), 0u);
}

class DamagedBackup : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = *SqliteDb::Open(dir_.File("live.db"));
    auto settings = NewSqliteSettingsRepository(db);
    for (int i = 0; i < 2000; ++i) ASSERT_TRUE(settings->Put("key." + std::to_string(i), std::string(100, 'x')).ok());
    ASSERT_TRUE(BackupDatabase(dir_.File("live.db"), dir_.File("backup.db")).ok());
    ASSERT_TRUE(std::filesystem::create_directory(dir_.File("fresh")));
  }
  // The restore is refused with `code`, names the backup and leaves nothing.
  void ExpectRefused(ErrorCode code) {
    auto restored = RestoreDatabase(dir_.File("backup.db"), dir_.File("fresh/gateway.db"));
    ASSERT_FALSE(restored.ok());
    EXPECT_EQ(restored.code(), code) << restored.error().message;
    EXPECT_NE(restored.error().message.find(dir_.File("backup.db")), std::string::npos) << restored.error().message;
    EXPECT_EQ(EntriesIn(dir_.File("fresh")), 0u);
  }
  void Overwrite(std::streamoff at, const std::string& bytes) {
    std::fstream f(dir_.File("backup.db"), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(at);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  testing::TempDir dir_;
};

TEST_F(DamagedBackup, TruncatedIsRefused) {
  std::filesystem::resize_file(dir_.File("backup.db"), std::filesystem::file_size(dir_.File("backup.db")) / 2);
  ExpectRefused(ErrorCode::kDataLoss);
}

TEST_F(DamagedBackup, GarbageHeaderIsRefused) {
  Overwrite(0, std::string(100, '\x5a'));
  ExpectRefused(ErrorCode::kDataLoss);
}

TEST_F(DamagedBackup, DamagedPageIsRefused) {
  // Page 3's b-tree header (4096-byte pages): a page type no b-tree has.
  Overwrite(2 * 4096, std::string(8, '\x07'));
  ExpectRefused(ErrorCode::kDataLoss);
}

TEST_F(DamagedBackup, ANonGatewayDatabaseIsRefused) {
  std::filesystem::remove(dir_.File("backup.db"));
  {
    auto other = *SqliteDb::Open(dir_.File("x.db"));
    ASSERT_TRUE(other->Transaction([](SqliteConnection& c) { return c.Exec("DROP TABLE schema_migrations"); }).ok());
  }
  EXPECT_EQ(BackupDatabase(dir_.File("x.db"), dir_.File("backup.db")).code(), ErrorCode::kDataLoss);  // at backup too
  std::filesystem::copy_file(dir_.File("x.db"), dir_.File("backup.db"));
  ExpectRefused(ErrorCode::kDataLoss);
}

TEST_F(DamagedBackup, ANewerSchemaIsRefused) {
  {
    auto db = *SqliteDb::Open(dir_.File("backup.db"));
    ASSERT_TRUE(db->Transaction([](SqliteConnection& c) {
                    return c.Exec("INSERT INTO schema_migrations VALUES(999, 'future')");
                  }).ok());
  }
  // Back to one file, as a backup is.
  for (const char* suffix : {"-wal", "-shm"}) std::filesystem::remove(dir_.File("backup.db") + suffix);
  ExpectRefused(ErrorCode::kFailedPrecondition);
}


// What the file's schema holds runs in the gateway that opens it: a trigger
// on every later write, a view on every read of its name. A restore takes
// only the objects this build's migrations create, as they create them.
class CraftedBackup : public DamagedBackup {
 protected:
  void Alter(const std::string& sql) {
    {
      auto db = *SqliteDb::Open(dir_.File("backup.db"));
      ASSERT_TRUE(db->Transaction([&](SqliteConnection& c) { return c.Exec(sql); }).ok()) << sql;
    }
    for (const char* suffix : {"-wal", "-shm"}) std::filesystem::remove(dir_.File("backup.db") + suffix);
  }
  void ExpectRefusedNaming(const std::string& object) {
    auto restored = RestoreDatabase(dir_.File("backup.db"), dir_.File("fresh/gateway.db"));
    ASSERT_FALSE(restored.ok()) << "a backup holding " << object << " was restored";
    EXPECT_EQ(restored.code(), ErrorCode::kDataLoss) << restored.error().message;
    EXPECT_NE(restored.error().message.find("'" + object + "'"), std::string::npos) << restored.error().message;
    EXPECT_EQ(EntriesIn(dir_.File("fresh")), 0u);
  }
};

TEST_F(CraftedBackup, AnAddedTriggerIsRefused) {
  Alter("CREATE TRIGGER settings_sink AFTER INSERT ON settings BEGIN DELETE FROM settings; END");
  ExpectRefusedNaming("settings_sink");
}

TEST_F(CraftedBackup, AChangedTriggerIsRefused) {
  Alter("DROP TRIGGER secrets_revision_on_update; "
        "CREATE TRIGGER secrets_revision_on_update AFTER UPDATE OF value ON secrets BEGIN SELECT 1; END");
  ExpectRefusedNaming("secrets_revision_on_update");
}

TEST_F(CraftedBackup, AViewInPlaceOfTheMigrationsTableIsRefused) {
  // Read at every start to decide which migrations to run.
  Alter("DROP TABLE schema_migrations; CREATE VIEW schema_migrations AS SELECT " +
        std::to_string(Migrations().size()) + " AS version, '' AS applied_at");
  ExpectRefusedNaming("schema_migrations");
}

TEST_F(CraftedBackup, AMigrationsTableThatComputesItsVersionIsRefusedBeforeItIsRead) {
  // The version is read to pick the expected schema: a generated column (or
  // a virtual table's module, e.g. FTS over crafted shadow tables) would run
  // the file's code in that read. Here it raises "integer overflow".
  // Crafted as an attacker would: the stored DDL rewritten in place (an
  // INSERT would evaluate the column, and the gateway's connections refuse
  // writable_schema).
  sqlite3* raw = nullptr;
  ASSERT_EQ(sqlite3_open(dir_.File("backup.db").c_str(), &raw), SQLITE_OK);
  const char* sql =
      "PRAGMA writable_schema=ON; UPDATE sqlite_schema SET sql='CREATE TABLE schema_migrations(v INTEGER PRIMARY "
      "KEY, applied_at TEXT NOT NULL, version AS (abs(-9223372036854775807 - v)))' WHERE name='schema_migrations'";
  char* err = nullptr;
  EXPECT_EQ(sqlite3_exec(raw, sql, nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
  sqlite3_free(err);
  sqlite3_close(raw);
  ExpectRefusedNaming("schema_migrations");
  auto restored = RestoreDatabase(dir_.File("backup.db"), dir_.File("fresh/gateway.db"));
  ASSERT_FALSE(restored.ok());
  EXPECT_EQ(restored.error().message.find("overflow"), std::string::npos) << restored.error().message;
}

TEST_F(CraftedBackup, AHeaderClaimingHugeSizeIsRefusedWithoutCopyingIt) {
  // In-header size 2^31-1 pages (8 TiB), made "valid" by copying the change
  // counter (offset 24) into version-valid-for (offset 92).
  std::string header = ReadAll(dir_.File("backup.db")).substr(0, 100);
  Overwrite(28, std::string("\x7f\xff\xff\xff", 4));
  Overwrite(92, header.substr(24, 4));
  ExpectRefused(ErrorCode::kDataLoss);
  EXPECT_FALSE(std::filesystem::exists(dir_.File("fresh/gateway.db")));
}

TEST_F(CraftedBackup, AnAddedTableIsRefused) {
  Alter("CREATE TABLE attacker(x)");
  ExpectRefusedNaming("attacker");
}

// GATEWAY_DATABASE_URL may put the database outside the (empty) data dir:
// a -wal, -shm or -journal left there by a database that was deleted after
// a crash would be paired with the restored file at the next open (SQLite
// replays a WAL into whatever file carries its name).
TEST(SqliteBackup, RestoreRefusesATargetWithALeftoverJournalBesideIt) {
  testing::TempDir dir;
  {
    auto db = *SqliteDb::Open(dir.File("backup-source.db"));
    ASSERT_TRUE(NewSqliteSettingsRepository(db)->Put("restored", "yes").ok());
  }
  ASSERT_TRUE(BackupDatabase(dir.File("backup-source.db"), dir.File("backup.db")).ok());
  ASSERT_TRUE(std::filesystem::create_directory(dir.File("db")));
  {
    // The old database's WAL, as a crash leaves it; then the database is deleted.
    auto old = *SqliteDb::Open(dir.File("db/gateway.db"));
    auto settings = NewSqliteSettingsRepository(old);
    for (int i = 0; i < 50; ++i) ASSERT_TRUE(settings->Put("stale." + std::to_string(i), std::string(200, 's')).ok());
    std::filesystem::copy_file(dir.File("db/gateway.db-wal"), dir.File("stale-wal"));
  }
  std::filesystem::remove(dir.File("db/gateway.db"));
  for (const char* suffix : {"-wal", "-shm", "-journal"}) {
    SCOPED_TRACE(suffix);
    std::filesystem::copy_file(dir.File("stale-wal"), dir.File("db/gateway.db") + suffix);
    auto restored = RestoreDatabase(dir.File("backup.db"), dir.File("db/gateway.db"));
    if (restored.ok()) {
      auto db = SqliteDb::Open(dir.File("db/gateway.db"));
      auto value = db.ok() ? NewSqliteSettingsRepository(*db)->Get("restored") : Result<std::optional<std::string>>(db.error());
      ADD_FAILURE() << "restored beside a leftover gateway.db" << suffix << "; the restored database then reads "
                    << (value.ok() ? (*value ? "restored=" + **value : std::string("no 'restored' setting"))
                                   : "an error: " + value.error().message);
    } else {
      EXPECT_EQ(restored.code(), ErrorCode::kAlreadyExists) << restored.error().message;
      EXPECT_NE(restored.error().message.find(dir.File("db/gateway.db") + suffix), std::string::npos)
          << restored.error().message;
    }
    EXPECT_FALSE(std::filesystem::exists(dir.File("db/gateway.db")));
    for (const char* s : {"", "-wal", "-shm", "-journal"}) std::filesystem::remove(dir.File("db/gateway.db") + s);
  }
}

// This SQLite reads a name that starts with "file:" as a URI (Debian builds
// it with SQLITE_USE_URI): `restore file:b.db?x` would check one file and
// copy another (here "b.db", an unrelated database).
TEST(SqliteBackup, RestoreReadsTheFileItIsNamedEvenIfItLooksLikeAUri) {
  testing::TempDir dir;
  {
    auto db = *SqliteDb::Open(dir.File("src.db"));
    ASSERT_TRUE(NewSqliteSettingsRepository(db)->Put("which", "the named file").ok());
  }
  ASSERT_TRUE(BackupDatabase(dir.File("src.db"), dir.File("file:b.db?mode=ro")).ok());
  {
    auto other = *SqliteDb::Open(dir.File("b.db"));
    ASSERT_TRUE(NewSqliteSettingsRepository(other)->Put("which", "another file").ok());
  }
  const auto cwd = std::filesystem::current_path();
  std::filesystem::current_path(dir.File(""));
  auto restored = RestoreDatabase("file:b.db?mode=ro", dir.File("fresh.db"));
  std::filesystem::current_path(cwd);
  ASSERT_TRUE(restored.ok()) << restored.error().message;
  auto value = NewSqliteSettingsRepository(*SqliteDb::Open(dir.File("fresh.db")))->Get("which");
  ASSERT_TRUE(value.ok() && value->has_value());
  EXPECT_EQ(**value, "the named file");
}

TEST(SqliteBackup, AnOlderSchemaIsRestoredAndMigratedAtOpen) {
  testing::TempDir dir;
  {
    sqlite3* raw = nullptr;
    ASSERT_EQ(sqlite3_open_v2(dir.File("old.db").c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr),
              SQLITE_OK);
    SqliteConnection old(raw);
    ASSERT_TRUE(old.Exec(SchemaMigrationsTable()).ok());
    for (int v = 0; v < 3; ++v) {
      ASSERT_TRUE(old.Exec(Migrations()[v]).ok());
      ASSERT_TRUE(old.Exec("INSERT INTO schema_migrations VALUES(" + std::to_string(v + 1) + ", 'then')").ok());
    }
  }
  ASSERT_TRUE(std::filesystem::create_directory(dir.File("fresh")));
  auto restored = RestoreDatabase(dir.File("old.db"), dir.File("fresh/gateway.db"));
  ASSERT_TRUE(restored.ok()) << restored.error().message;
  EXPECT_EQ(restored->schema_version, 3);
  auto db = SqliteDb::Open(dir.File("fresh/gateway.db"));
  ASSERT_TRUE(db.ok()) << db.error().message;
}

}  // namespace
}  // namespace dyad
