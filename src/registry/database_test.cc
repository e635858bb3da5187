// OpenDatabase: either engine from GATEWAY_DATABASE_URL, every repository
// made on it, and URLs refused naming the variable and never the password.
#include "registry/database.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "registry/migrations.h"
#include "registry/pg_migrations.h"
#include "testing/fakes.h"
#include "testing/pg_test_database.h"

namespace dyad {
namespace {

using testing::PgTestDatabase;
using testing::TempDir;

// Every repository, made and used once: what the service does at start.
void UseEveryRepository(Database& db) {
  FakeClock clock;
  auto providers = db.NewProviderRepository();
  auto listed = providers->List(0, 10);
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  EXPECT_EQ(listed->total, 0);
  auto settings = db.NewSettingsRepository();
  ASSERT_TRUE(settings->Put("database-test", "1").ok());
  auto got = settings->Get("database-test");
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->value_or(""), "1");
  EXPECT_NE(db.NewProviderLeases(clock), nullptr);
  EXPECT_NE(db.NewKeyVersionRepository(), nullptr);
  EXPECT_NE(db.NewRotationRepository(clock), nullptr);
  EXPECT_NE(db.NewAuditKeyRepository(), nullptr);
  EXPECT_NE(db.NewAuditHeadStore(clock), nullptr);
  EXPECT_NE(db.NewMigrationProgressRepository(clock), nullptr);
}

TEST(OpenDatabase, SqliteUrlOpensAndMigratesTheFile) {
  TempDir dir;
  auto db = OpenDatabase("sqlite://" + dir.File("gateway.db"));
  ASSERT_TRUE(db.ok()) << db.error().message;
  EXPECT_EQ((*db)->engine(), "sqlite");
  EXPECT_EQ((*db)->SchemaVersion(), static_cast<int>(Migrations().size()));
  EXPECT_EQ((*db)->display_name(), dir.File("gateway.db"));
  EXPECT_NE((*db)->sqlite(), nullptr);
  EXPECT_EQ((*db)->postgresql(), nullptr);
  UseEveryRepository(**db);
  // A second open of the same file sees what the first wrote.
  auto again = OpenDatabase("sqlite://" + dir.File("gateway.db"));
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ((*again)->NewSettingsRepository()->Get("database-test")->value_or(""), "1");
}

TEST(OpenDatabase, RefusesOtherSchemesNamingTheVariableNotTheUrl) {
  for (const std::string url : {"mysql://gw:hunter2-pw@db/registry", "sqlite:/x.db", "hunter2-pw", "",
                                "POSTGRESQL://gw:hunter2-pw@db/registry", "sqlite://"}) {
    auto db = OpenDatabase(url);
    ASSERT_FALSE(db.ok()) << url;
    EXPECT_EQ(db.code(), ErrorCode::kInvalidArgument) << url;
    EXPECT_NE(db.error().message.find("GATEWAY_DATABASE_URL"), std::string::npos) << db.error().message;
    EXPECT_EQ(db.error().message.find("hunter2"), std::string::npos) << db.error().message;
  }
}

TEST(OpenDatabase, TellsPostgresqlUrlsApart) {
  EXPECT_TRUE(IsPostgresqlUrl("postgresql://gw@db/registry"));
  EXPECT_TRUE(IsPostgresqlUrl("postgres://gw@db/registry"));
  EXPECT_FALSE(IsPostgresqlUrl("postgresq://gw@db/registry"));
  EXPECT_FALSE(IsPostgresqlUrl("sqlite://postgresql://x"));
  EXPECT_FALSE(IsPostgresqlUrl("host=db dbname=registry"));
}

TEST(DatabaseDisplayName, ShowsNoPassword) {
  const std::vector<std::pair<std::string, std::string>> urls = {
      {"postgresql://gw:hunter2@db.internal:5433/registry?sslmode=verify-full",
       "postgresql://gw@db.internal:5433/registry"},
      {"postgres://gw@db.internal/registry?password=hunter2", "postgres://gw@db.internal/registry"},
      // An unencoded '/', ':' or '@' in the password: still nothing of it shown.
      {"postgresql://gw:hun/ter2@db.internal/registry", "postgresql://gw@db.internal/registry"},
      {"postgresql://gw:hun@ter2@db.internal/registry", "postgresql://gw@db.internal/registry"},
      {"postgresql://gw:hun:ter2@db.internal/registry", "postgresql://gw@db.internal/registry"},
      {"postgresql://:hunter2@db.internal/registry", "postgresql://db.internal/registry"},
      {"postgresql://db.internal/registry#hunter2", "postgresql://db.internal/registry"},
      // A raw '#' or '?' in the password, an '@' in a query parameter.
      {"postgresql://gw:hun#ter2@db.internal/registry", "postgresql://gw@…"},
      {"postgresql://gw:hun?ter2@db.internal/registry", "postgresql://gw@…"},
      {"postgres://gw@db.internal/registry?password=hun@ter2", "postgres://gw@…"},
      {"sqlite:///srv/gw/gateway.db", "/srv/gw/gateway.db"},
      {"mysql://gw:hunter2@db/registry", "the GATEWAY_DATABASE_URL database"},
  };
  for (const auto& [url, shown] : urls) {
    EXPECT_EQ(DatabaseDisplayName(url), shown) << url;
    EXPECT_EQ(DatabaseDisplayName(url).find("ter2"), std::string::npos) << url;
  }
}

TEST(OpenDatabase, PostgresqlUrlOpensAndMigratesTheDatabase) {
  DYAD_SKIP_WITHOUT_TEST_PG();
  PgTestDatabase pg;
  ASSERT_TRUE(pg.status().ok()) << pg.status().error().message;
  DatabaseOptions options;
  options.postgresql = pg.Options();
  auto db = OpenDatabase(pg.url(), options);
  ASSERT_TRUE(db.ok()) << db.error().message;
  EXPECT_EQ((*db)->engine(), "postgresql");
  EXPECT_EQ((*db)->SchemaVersion(), static_cast<int>(PgMigrations().size()));
  EXPECT_EQ((*db)->SchemaVersion(), static_cast<int>(Migrations().size())) << "one schema, version for version";
  EXPECT_EQ((*db)->sqlite(), nullptr);
  EXPECT_NE((*db)->postgresql(), nullptr);
  EXPECT_EQ((*db)->display_name().rfind("postgresql://", 0), 0u) << (*db)->display_name();
  UseEveryRepository(**db);
  // A second instance on the same database sees what the first wrote.
  auto again = OpenDatabase(pg.url(), options);
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ((*again)->NewSettingsRepository()->Get("database-test")->value_or(""), "1");
}

TEST(OpenDatabase, PostgresqlErrorsNameTheVariableAndNeverThePassword) {
  // No server there: kUnavailable, naming the server from the parsed URL.
  for (const std::string url : {"postgresql://gw:hunter2-pw@127.0.0.1:1/registry?sslmode=disable",
                                "postgres://gw@127.0.0.1:1/registry?sslmode=disable&password=hunter2-pw"}) {
    auto down = OpenDatabase(url);
    ASSERT_FALSE(down.ok()) << url;
    EXPECT_EQ(down.code(), ErrorCode::kUnavailable) << down.error().message;
    EXPECT_EQ(down.error().message.rfind("GATEWAY_DATABASE_URL", 0), 0u) << down.error().message;
    EXPECT_NE(down.error().message.find("gw@127.0.0.1:1/registry"), std::string::npos) << down.error().message;
    EXPECT_EQ(down.error().message.find("hunter2"), std::string::npos) << down.error().message;
  }
  // A URL libpq cannot read: kInvalidArgument, nothing of it repeated.
  for (const std::string url : {"postgresql://gw:hunter2-pw@127.0.0.1/registry?nosuchoption=1",
                                "postgresql://gw:hunter2@pw@127.0.0.1/registry"}) {
    auto bad = OpenDatabase(url);
    ASSERT_FALSE(bad.ok()) << url;
    EXPECT_EQ(bad.code(), ErrorCode::kInvalidArgument) << bad.error().message;
    EXPECT_EQ(bad.error().message.rfind("GATEWAY_DATABASE_URL", 0), 0u) << bad.error().message;
    EXPECT_EQ(bad.error().message.find("hunter2"), std::string::npos) << bad.error().message;
    EXPECT_EQ(bad.error().message.find("pw@"), std::string::npos) << bad.error().message;
  }
}

}  // namespace
}  // namespace dyad
