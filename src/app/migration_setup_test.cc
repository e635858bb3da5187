#include "app/migration_setup.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "testing/fakes.h"
#include "testing/pg_test_database.h"

namespace dyad {
namespace {

// The source: the environment backend in `dir`, with SECRETS_ALLOWED_REGIONS
// when `allowed` is not empty; or any other backend's variables.
class TargetConfigTest : public ::testing::Test {
 protected:
  EnvMap EnvironmentSource(const std::string& allowed = "") {
    EnvMap env{{"SECRETS_PROVIDER", "environment"}, {"ENCRYPTION_KEY", std::string(64, 'a')},
               {"GATEWAY_ADMIN_API_KEY", "0123456789abcdef-admin"}, {"GATEWAY_DATA_DIR", dir_.File("data")}};
    if (!allowed.empty()) env["SECRETS_ALLOWED_REGIONS"] = allowed;
    return env;
  }
  static EnvMap Aws(const std::string& region, const std::string& prefix) {
    return {{"SECRETS_PROVIDER", "aws"}, {"AWS_REGION", region}, {"ENCRYPTION_KEY_ID", "alias/k"},
            {"SECRETS_PREFIX", prefix}, {"AWS_ACCESS_KEY_ID", "AKIAEXAMPLEID"},
            {"AWS_SECRET_ACCESS_KEY", "aws-secret-canary"}};
  }
  static EnvMap Vault(const std::string& addr, const std::string& mount, const std::string& prefix) {
    return {{"SECRETS_PROVIDER", "vault"}, {"VAULT_ADDR", addr}, {"VAULT_MOUNT_PATH", mount},
            {"VAULT_TOKEN", "vault-token-canary"}, {"ENCRYPTION_KEY_ID", "k"}, {"SECRETS_PREFIX", prefix}};
  }
  static EnvMap Azure(const std::string& url, const std::string& prefix) {
    return {{"SECRETS_PROVIDER", "azure"}, {"AZURE_KEY_VAULT_URL", url}, {"ENCRYPTION_KEY_ID", "wrap-key"},
            {"AZURE_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47"},
            {"AZURE_CLIENT_ID", "c0ffee00-0000-4000-8000-000000000001"},
            {"AZURE_CLIENT_SECRET", "az-secret-canary"}, {"SECRETS_PREFIX", prefix}};
  }
  Config Source(EnvMap env) {
    env.emplace("GATEWAY_ADMIN_API_KEY", "0123456789abcdef-admin");
    env.emplace("GATEWAY_DATA_DIR", dir_.File("data"));
    auto config = LoadConfig(env, false, [](const Config& c) { return BuiltinBackends().Check(c); });
    EXPECT_TRUE(config.ok()) << config.error().message;
    return std::move(config).value();
  }
  std::string Write(const EnvMap& env) {
    const std::string path = dir_.File("target-" + std::to_string(++files_) + ".env");
    std::ofstream out(path);
    for (const auto& [name, value] : env) out << name << "=" << value << "\n";
    return path;
  }
  // The error of loading `target` against `source`; "" when it loads.
  std::string ErrorOf(const Config& source, const EnvMap& target) {
    auto t = LoadTargetConfig(Write(target), source);
    return t.ok() ? "" : t.error().message;
  }

  testing::TempDir dir_;
  int files_ = 0;
};

TEST_F(TargetConfigTest, TheSourcesAllowedRegionsHoldTheTargetToo) {
  Config source = Source(EnvironmentSource("eu-central-1,https://vault.example.eu"));
  std::string e = ErrorOf(source, Aws("us-east-1", "t"));  // no list of its own
  EXPECT_NE(e.find("target-1.env"), std::string::npos) << e;
  EXPECT_NE(e.find("SECRETS_ALLOWED_REGIONS"), std::string::npos) << e;
  EXPECT_NE(e.find("AWS_REGION"), std::string::npos) << e;
  EXPECT_NE(e.find("us-east-1"), std::string::npos) << e;
  EXPECT_EQ(e.find("aws-secret-canary"), std::string::npos) << e;
  EXPECT_EQ(ErrorOf(source, Aws("eu-central-1", "t")), "");
  // A KMS key in another region, a replica outside the list: the backend's
  // own checks, with the source's list.
  EnvMap arn = Aws("eu-central-1", "t");
  arn["ENCRYPTION_KEY_ID"] = "arn:aws:kms:us-west-2:123456789012:key/abcd";
  e = ErrorOf(source, arn);
  EXPECT_NE(e.find("ENCRYPTION_KEY_ID"), std::string::npos) << e;
  EXPECT_NE(e.find("us-west-2"), std::string::npos) << e;
  EnvMap replica = Aws("eu-central-1", "t");
  replica["AWS_SECRETS_REPLICA_REGIONS"] = "ap-south-1";
  EXPECT_NE(ErrorOf(source, replica).find("AWS_SECRETS_REPLICA_REGIONS"), std::string::npos);
  e = ErrorOf(source, Vault("http://127.0.0.1:8200", "secret", "t"));
  EXPECT_NE(e.find("VAULT_ADDR"), std::string::npos) << e;
  EXPECT_NE(e.find("127.0.0.1"), std::string::npos) << e;
  EXPECT_EQ(ErrorOf(source, Vault("https://vault.example.eu", "secret", "t")), "");
  e = ErrorOf(source, Azure("https://other.vault.azure.net", "t"));
  EXPECT_NE(e.find("AZURE_KEY_VAULT_URL"), std::string::npos) << e;
  // A target with a wider list of its own is still held to the source's.
  EnvMap wider = Aws("us-east-1", "t");
  wider["SECRETS_ALLOWED_REGIONS"] = "us-east-1,eu-central-1";
  EXPECT_NE(ErrorOf(source, wider).find("AWS_REGION"), std::string::npos);
  // Without a list at the source, only the target's own applies.
  EXPECT_EQ(ErrorOf(Source(EnvironmentSource()), Aws("us-east-1", "t")), "");
}

TEST_F(TargetConfigTest, SameLocationIsRegionAndAddressAware) {
  Config aws = Source(Aws("us-east-1", "p"));
  EXPECT_EQ(ErrorOf(aws, Aws("eu-west-1", "p")), "");  // another region: another place
  EXPECT_EQ(ErrorOf(aws, Aws("us-east-1", "q")), "");  // another prefix
  std::string e = ErrorOf(aws, Aws("us-east-1", "p"));
  EXPECT_NE(e.find("the target stores credentials where the source does"), std::string::npos) << e;
  EXPECT_NE(e.find("target-"), std::string::npos) << e;
  EnvMap endpoint = Aws("us-east-1", "p");
  endpoint["AWS_ENDPOINT_URL"] = "http://127.0.0.1:5000";
  Config moto = Source(endpoint);
  EnvMap other_endpoint = endpoint;
  other_endpoint["AWS_ENDPOINT_URL"] = "http://127.0.0.1:5001";
  EXPECT_EQ(ErrorOf(moto, other_endpoint), "");
  endpoint["AWS_ENDPOINT_URL"] = "HTTP://127.0.0.1:5000/";  // the same endpoint, written otherwise
  EXPECT_NE(ErrorOf(moto, endpoint), "");

  Config vault = Source(Vault("http://127.0.0.1:8200", "secret", "p"));
  EXPECT_EQ(ErrorOf(vault, Vault("http://127.0.0.1:8201", "secret", "p")), "");
  EXPECT_EQ(ErrorOf(vault, Vault("http://127.0.0.1:8200", "kv2", "p")), "");
  EXPECT_NE(ErrorOf(vault, Vault("http://127.0.0.1:8200", "secret", "p")), "");

  Config azure = Source(Azure("https://one.vault.azure.net", "p"));
  EXPECT_EQ(ErrorOf(azure, Azure("https://two.vault.azure.net", "p")), "");
  EXPECT_NE(ErrorOf(azure, Azure("https://ONE.vault.azure.net:443", "p")), "");
  EXPECT_NE(ErrorOf(azure, Azure("https://one.vault.azure.net", "P")), "");  // Key Vault names ignore case

  Config env = Source(EnvironmentSource());
  EXPECT_NE(ErrorOf(env, {{"SECRETS_PROVIDER", "environment"}, {"ENCRYPTION_KEY", std::string(64, 'b')}}), "");
  EXPECT_EQ(ErrorOf(env, {{"SECRETS_PROVIDER", "environment"}, {"ENCRYPTION_KEY", std::string(64, 'b')},
                          {"SECRETS_PREFIX", "other"}}), "");
  EXPECT_EQ(ErrorOf(env, Aws("us-east-1", "dyad-gateway")), "");  // another backend
}

TEST_F(TargetConfigTest, TheSwitchBlockShowsOnlyKnownNonSecretValues) {
  EnvMap target = Aws("eu-west-1", "t");
  target["GATEWAY_DATABASE_URL"] = "sqlite://" + dir_.File("data/gateway.db");
  target["DB_PASS"] = "not-a-listed-name-canary";
  target["GATEWAY_LOG_LEVEL"] = "debug";
  const std::string path = Write(target);
  Config source = Source(EnvironmentSource());
  auto t = LoadTargetConfig(path, source);
  ASSERT_TRUE(t.ok()) << t.error().message;
  std::string lines;
  for (const auto& line : t->switch_lines) lines += line + "\n";
  EXPECT_NE(lines.find("AWS_REGION=eu-west-1\n"), std::string::npos) << lines;
  EXPECT_NE(lines.find("GATEWAY_LOG_LEVEL=debug\n"), std::string::npos) << lines;
  EXPECT_NE(lines.find("SECRETS_PROVIDER=aws\n"), std::string::npos) << lines;
  EXPECT_NE(lines.find("AWS_SECRET_ACCESS_KEY=<secret: the value in " + path + ">"), std::string::npos) << lines;
  EXPECT_NE(lines.find("DB_PASS=<not shown: the value in " + path + ">"), std::string::npos) << lines;
  EXPECT_NE(lines.find("AWS_ACCESS_KEY_ID=<not shown"), std::string::npos) << lines;
  EXPECT_NE(lines.find("GATEWAY_DATABASE_URL=<not shown"), std::string::npos) << lines;
  for (const char* canary : {"aws-secret-canary", "not-a-listed-name-canary", "AKIAEXAMPLEID", "sqlite://"}) {
    EXPECT_EQ(lines.find(canary), std::string::npos) << canary;
  }
}

TEST(MigrationLockTest, RefusesASymlinkAndMakesAnOwnerOnlyFile) {
  testing::TempDir dir;
  ASSERT_EQ(::symlink(dir.File("elsewhere").c_str(), dir.File("migrate.lock").c_str()), 0);
  auto refused = MigrationLock::Acquire(dir.File(""));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(refused.error().message.find("symbolic link"), std::string::npos) << refused.error().message;
  EXPECT_FALSE(std::filesystem::exists(dir.File("elsewhere")));  // nothing made through it
  ASSERT_EQ(::unlink(dir.File("migrate.lock").c_str()), 0);

  // A dry run takes no lock where none exists, and makes none.
  auto dry = MigrationLock::Acquire(dir.File(""), /*create=*/false);
  ASSERT_TRUE(dry.ok()) << dry.error().message;
  EXPECT_FALSE(std::filesystem::exists(dir.File("migrate.lock")));

  auto held = MigrationLock::Acquire(dir.File(""));
  ASSERT_TRUE(held.ok()) << held.error().message;
  struct stat st {};
  ASSERT_EQ(::lstat(dir.File("migrate.lock").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(MigrationLock::Acquire(dir.File("")).code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(MigrationLock::Acquire(dir.File(""), /*create=*/false).code(), ErrorCode::kFailedPrecondition);
}

// On PostgreSQL the lock is the registry's, not a data dir's: a second
// migrate (any host, any data dir) is refused while the first holds it, and
// takes it once the first is gone.
TEST(MigrationLockTest, PostgresqlAdvisoryLockExcludesASecondMigrate) {
  DYAD_SKIP_WITHOUT_TEST_PG();
  testing::PgTestDatabase pg;
  ASSERT_TRUE(pg.status().ok()) << pg.status().error().message;
  {
    auto held = MigrationLock::AcquireOnPostgresql(pg.url(), pg.Options());
    ASSERT_TRUE(held.ok()) << held.error().message;
    auto second = MigrationLock::AcquireOnPostgresql(pg.url(), pg.Options());
    ASSERT_FALSE(second.ok());
    EXPECT_EQ(second.code(), ErrorCode::kFailedPrecondition);
    EXPECT_NE(second.error().message.find("another `dyad-gateway migrate`"), std::string::npos)
        << second.error().message;
  }
  auto after = MigrationLock::AcquireOnPostgresql(pg.url(), pg.Options());
  EXPECT_TRUE(after.ok()) << after.error().message;
}

TEST(MigrationLockTest, PostgresqlServerDownIsUnavailableWithoutThePassword) {
  auto down = MigrationLock::AcquireOnPostgresql("postgresql://gw:hunter2-pw@127.0.0.1:1/registry?sslmode=disable");
  ASSERT_FALSE(down.ok());
  EXPECT_EQ(down.code(), ErrorCode::kUnavailable);
  EXPECT_EQ(down.error().message.find("hunter2"), std::string::npos) << down.error().message;
}

TEST_F(TargetConfigTest, OnPostgresqlTheTargetKeepsTheSourcesRegistry) {
  EnvMap env = EnvironmentSource();
  env["GATEWAY_DATABASE_URL"] = "postgresql://gw:hunter2-pw@db.internal/registry";
  Config source = Source(env);
  // Unset in TARGET.env: the source's, kept (and printed by name only).
  auto kept = LoadTargetConfig(Write({{"SECRETS_PROVIDER", "environment"}, {"ENCRYPTION_KEY", std::string(64, 'b')},
                                      {"SECRETS_PREFIX", "elsewhere"}}), source);
  ASSERT_TRUE(kept.ok()) << kept.error().message;
  EXPECT_EQ(kept->config.database_url, source.database_url);
  for (const auto& line : kept->switch_lines) EXPECT_EQ(line.find("hunter2"), std::string::npos) << line;
  EXPECT_EQ(kept->route.find("hunter2"), std::string::npos) << kept->route;
  EXPECT_NE(kept->route.find("postgresql://gw@db.internal/registry"), std::string::npos) << kept->route;
  // Another database (or an SQLite file) is refused, naming both without a password.
  std::string other = ErrorOf(source, {{"SECRETS_PROVIDER", "environment"}, {"ENCRYPTION_KEY", std::string(64, 'b')},
                                       {"SECRETS_PREFIX", "elsewhere"},
                                       {"GATEWAY_DATABASE_URL", "postgresql://gw:hunter2-pw@db.internal/other"}});
  EXPECT_NE(other.find("postgresql://gw@db.internal/other"), std::string::npos) << other;
  EXPECT_EQ(other.find("hunter2"), std::string::npos) << other;
  std::string file = ErrorOf(source, {{"SECRETS_PROVIDER", "environment"}, {"ENCRYPTION_KEY", std::string(64, 'b')},
                                      {"SECRETS_PREFIX", "elsewhere"}, {"GATEWAY_DATA_DIR", dir_.File("data")}});
  EXPECT_NE(file.find("registry database"), std::string::npos) << file;
  EXPECT_EQ(file.find("hunter2"), std::string::npos) << file;
}

}  // namespace
}  // namespace dyad
