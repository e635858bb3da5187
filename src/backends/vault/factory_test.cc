#include "backends/vault/factory.h"

#include <gtest/gtest.h>

#include "registry/sqlite_db.h"
#include "testing/fakes.h"

namespace dyad {
namespace {

Config VaultConfig(EnvMap env) {
  env.emplace("SECRETS_PROVIDER", "vault");
  env.emplace("GATEWAY_ADMIN_API_KEY", "0123456789abcdef-admin");
  env.emplace("HOME", "/nonexistent");
  auto c = LoadConfig(env, false);
  EXPECT_TRUE(c.ok()) << c.error().message;
  return c.ok() ? *c : Config{};
}

std::string CheckError(EnvMap env) {
  BackendRegistry registry;
  EXPECT_TRUE(RegisterVaultBackend(registry).ok());
  Status s = registry.Check(VaultConfig(std::move(env)));
  EXPECT_FALSE(s.ok());
  if (s.ok()) return "";
  EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(s.error().message.find("canary"), std::string::npos) << s.error().message;
  return s.error().message;
}

TEST(VaultFactory, IsRegisteredOnceUnderVault) {
  BackendRegistry registry;
  ASSERT_TRUE(RegisterVaultBackend(registry).ok());
  EXPECT_EQ(registry.Names(), (std::vector<std::string>{"vault"}));
  EXPECT_EQ(RegisterVaultBackend(registry).code(), ErrorCode::kAlreadyExists);
}

TEST(VaultFactory, CheckNamesTheBadVariable) {
  const EnvMap ok = {{"VAULT_ADDR", "http://127.0.0.1:8200"}, {"VAULT_TOKEN", "hvs.check-canary"}};
  BackendRegistry registry;
  ASSERT_TRUE(RegisterVaultBackend(registry).ok());
  EXPECT_TRUE(registry.Check(VaultConfig(ok)).ok());
  EnvMap provider = ok;
  provider["SECRETS_ENCRYPTION_MODE"] = "provider";
  EXPECT_TRUE(registry.Check(VaultConfig(provider)).ok());

  EXPECT_EQ(CheckError({{"VAULT_TOKEN", "hvs.check-canary"}}).rfind("VAULT_ADDR: is required", 0), 0u);
  EXPECT_EQ(CheckError({{"VAULT_ADDR", "http://127.0.0.1:8200"}}).rfind("VAULT_TOKEN: is required", 0), 0u);
  const std::pair<const char*, const char*> bad[] = {
      {"VAULT_MOUNT_PATH", "../sys"},   {"VAULT_TRANSIT_MOUNT", "/transit"}, {"VAULT_NAMESPACE", "a b"},
      {"VAULT_MAX_RETRIES", "11"},      {"VAULT_CLIENT_TIMEOUT", "0"},       {"VAULT_CONCURRENCY", "65"},
      {"SECRETS_PREFIX", "a//b"},       {"ENCRYPTION_KEY_ID", "keys/x"},     {"ENCRYPTION_KEY_ID", ".."},
      {"VAULT_CLIENT_CERT", "/c.pem"}};
  for (const auto& [name, value] : bad) {
    EnvMap env = ok;
    env[name] = value;
    std::string e = CheckError(env);
    std::string expected = std::string(name) == "VAULT_CLIENT_CERT" ? "VAULT_CLIENT_KEY:" : std::string(name) + ":";
    EXPECT_EQ(e.rfind(expected, 0), 0u) << name << "=" << value << " → " << e;
  }
  EnvMap two = ok;
  two["VAULT_ROLE_ID"] = "r";
  two["VAULT_JWT_ROLE"] = "j";
  EXPECT_NE(CheckError(two).find("VAULT_ROLE_ID: and VAULT_JWT_ROLE"), std::string::npos);
}

// Open succeeds while Vault is down (nothing listens on port 1): that is
// the services' concern (cache, stale, fallback), not a start-up failure.
// The traits follow the settings.
TEST(VaultFactory, OpensWhileVaultIsDownAndSizesItsTraits) {
  testing::TempDir dir;
  BackendRegistry registry;
  ASSERT_TRUE(RegisterVaultBackend(registry).ok());
  Config config = VaultConfig({{"VAULT_ADDR", "http://127.0.0.1:1"},
                               {"VAULT_TOKEN", "hvs.open-canary"},
                               {"VAULT_CONCURRENCY", "5"},
                               {"VAULT_MAX_RETRIES", "3"},
                               {"VAULT_CLIENT_TIMEOUT", "20"},
                               {"VAULT_DYNAMIC_PATHS", "database/creds/"},
                               {"VAULT_MOUNT_PATH", "kv"}});
  auto db = SqliteDb::Open(dir.File("t.db"));
  ASSERT_TRUE(db.ok()) << db.error().message;
  FakeClock clock;
  auto backend = registry.Open(BackendContext{config, SqliteDatabase(*db), clock, DefaultRandom()});
  ASSERT_TRUE(backend.ok()) << backend.error().message;
  ASSERT_NE(backend->store, nullptr);
  ASSERT_NE(backend->keys, nullptr);
  ASSERT_NE(backend->dynamic, nullptr);  // credential fields may refer to Vault secrets
  // … under VAULT_DYNAMIC_PATHS only, never under the KV mount it was given.
  EXPECT_TRUE(backend->dynamic->CheckPath("database/creds/readonly").ok());
  EXPECT_EQ(backend->dynamic->CheckPath("aws/creds/r").code(), ErrorCode::kInvalidArgument);
  config.env["VAULT_DYNAMIC_PATHS"] = "database/creds/,kv/";
  auto wide = registry.Open(BackendContext{config, SqliteDatabase(*db), clock, DefaultRandom()});
  ASSERT_TRUE(wide.ok()) << wide.error().message;
  EXPECT_NE(wide->dynamic->CheckPath("kv/data/dyad-gateway/providers/x").error().message.find("own KV mount kv/"),
            std::string::npos);
  EXPECT_TRUE(backend->store->HasConditionalWrites());
  EXPECT_EQ(backend->traits.rotation_parallelism, 5u);
  EXPECT_EQ(backend->traits.longest_write, std::chrono::seconds(4 * (20 + 5)));
  EXPECT_FALSE(backend->traits.env_is_source);
  EXPECT_EQ(backend->store->SecretName("abc"), "dyad-gateway/providers/abc");

  config.env["VAULT_MOUNT_PATH"] = "..";
  auto bad = registry.Open(BackendContext{config, SqliteDatabase(*db), clock, DefaultRandom()});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message.rfind("VAULT_MOUNT_PATH:", 0), 0u);
}

TEST(VaultFactory, ResidencyHoldsTheAddressAndTheRedirectHostsToTheList) {
  BackendRegistry registry;
  ASSERT_TRUE(RegisterVaultBackend(registry).ok());
  EnvMap env = {{"VAULT_ADDR", "https://vault.eu.example:8200"},
                {"VAULT_TOKEN", "hvs.check-canary"},
                {"SECRETS_ALLOWED_REGIONS", "https://VAULT.eu.example.:8200"}};
  EXPECT_TRUE(registry.Check(VaultConfig(env)).ok());
  auto refused = [&](const EnvMap& e) {
    Status s = registry.Check(VaultConfig(e));
    EXPECT_FALSE(s.ok());
    return s.ok() ? std::string() : s.error().message;
  };
  for (const char* listed : {"https://vault.eu.example", "http://vault.eu.example:8200",
                             "https://vault.eu.example.evil.com:8200", "https://eu.example:8200", "eu-west-1"}) {
    env["SECRETS_ALLOWED_REGIONS"] = listed;
    std::string e = refused(env);
    EXPECT_EQ(e.rfind("SECRETS_ALLOWED_REGIONS: ", 0), 0u) << listed << ": " << e;
    EXPECT_NE(e.find("VAULT_ADDR"), std::string::npos) << listed << ": " << e;
    EXPECT_EQ(e.find("canary"), std::string::npos);
  }
  // A host name alone allows the server on any port; a standby's redirect host must be listed too.
  env["SECRETS_ALLOWED_REGIONS"] = "vault.eu.example";
  EXPECT_TRUE(registry.Check(VaultConfig(env)).ok());
  env["VAULT_REDIRECT_HOSTS"] = "vault-b.us.example:8200";
  std::string e = refused(env);
  EXPECT_NE(e.find("VAULT_REDIRECT_HOSTS"), std::string::npos) << e;
  EXPECT_NE(e.find("vault-b.us.example"), std::string::npos) << e;
  env["SECRETS_ALLOWED_REGIONS"] = "vault.eu.example,vault-b.us.example";
  EXPECT_TRUE(registry.Check(VaultConfig(env)).ok());
  // A URL entry holds a redirect host to its port, which is VAULT_ADDR's
  // scheme's default when the entry names none (as at run time).
  env["SECRETS_ALLOWED_REGIONS"] = "vault.eu.example,https://vault-b.us.example:8200";
  EXPECT_TRUE(registry.Check(VaultConfig(env)).ok());
  env["VAULT_REDIRECT_HOSTS"] = "vault-b.us.example";  // https: 443
  e = refused(env);
  EXPECT_NE(e.find("VAULT_REDIRECT_HOSTS"), std::string::npos) << e;
  EXPECT_NE(e.find("vault-b.us.example:443"), std::string::npos) << e;
  env["SECRETS_ALLOWED_REGIONS"] = "vault.eu.example,https://vault-b.us.example";
  EXPECT_TRUE(registry.Check(VaultConfig(env)).ok());
  env["VAULT_REDIRECT_HOSTS"] = "VAULT-B.us.example.:0443";
  EXPECT_TRUE(registry.Check(VaultConfig(env)).ok());
}

}  // namespace
}  // namespace dyad
