#include "backends/azure/factory.h"

#include <gtest/gtest.h>

#include "testing/fakes.h"

namespace dyad {
namespace {

EnvMap Base() {
  return {{"SECRETS_PROVIDER", "azure"},
          {"GATEWAY_ADMIN_API_KEY", "0123456789abcdef-admin"},
          {"AZURE_KEY_VAULT_URL", "https://127.0.0.1:1"},  // nothing listens there
          {"ENCRYPTION_KEY_ID", "wrap-key"},
          {"AZURE_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47"},
          {"AZURE_CLIENT_ID", "c0ffee00-0000-4000-8000-000000000001"},
          {"AZURE_CLIENT_SECRET", "az-secret-canary"},
          {"AZURE_MAX_RETRIES", "0"}};
}

struct Fixture {
  Fixture() { EXPECT_TRUE(RegisterAzureBackend(registry).ok()); }
  std::string ErrorFor(const EnvMap& env) {
    auto c = LoadConfig(env, false);
    if (!c.ok()) return "config: " + c.error().message;
    Status s = registry.Check(*c);
    return s.ok() ? "" : s.error().message;
  }
  BackendRegistry registry;
};

TEST(AzureFactory, ChecksItsSettingsAndPrefixBeforeOpeningAnything) {
  Fixture f;
  EXPECT_EQ(f.ErrorFor(Base()), "");
  EXPECT_FALSE(RegisterAzureBackend(f.registry).ok());  // twice: kAlreadyExists
  struct Case {
    const char* name;
    const char* value;  // nullptr: unset
    const char* error;  // the start of the message
  };
  for (Case c : {Case{"AZURE_KEY_VAULT_URL", nullptr, "AZURE_KEY_VAULT_URL: is required"},
                 Case{"AZURE_KEY_VAULT_URL", "http://127.0.0.1:1", "AZURE_KEY_VAULT_URL: "},
                 Case{"ENCRYPTION_KEY_ID", "a/b", "ENCRYPTION_KEY_ID: "},
                 Case{"AZURE_AUTH_METHOD", "kerberos", "AZURE_AUTH_METHOD: "},
                 Case{"AZURE_CONCURRENCY", "65", "AZURE_CONCURRENCY: "},
                 Case{"SECRETS_PREFIX", "dyad/gateway", "SECRETS_PREFIX: "},
                 Case{"SECRETS_PREFIX", "a234567890123456789012345678901234567890123456789012345678901234567890123456789",
                      "SECRETS_PREFIX: use at most 78"}}) {
    EnvMap env = Base();
    if (c.value) {
      env[c.name] = c.value;
    } else {
      env.erase(c.name);
    }
    std::string e = f.ErrorFor(env);
    EXPECT_EQ(e.rfind(c.error, 0), 0u) << c.name << ": " << e;
    EXPECT_EQ(e.find("canary"), std::string::npos);
  }
  // Provider mode: Key Vault encrypts what it stores.
  EnvMap env = Base();
  env["SECRETS_ENCRYPTION_MODE"] = "provider";
  EXPECT_EQ(f.ErrorFor(env), "");
}

TEST(AzureFactory, OpensWhileTheVaultIsDown) {
  Fixture f;
  testing::TempDir dir;
  auto config = LoadConfig(Base(), false);
  ASSERT_TRUE(config.ok()) << config.error().message;
  auto db = SqliteDb::Open(dir.File("t.db"));
  ASSERT_TRUE(db.ok());
  FakeClock clock;
  auto backend = f.registry.Open(BackendContext{*config, SqliteDatabase(*db), clock, DefaultRandom()});
  ASSERT_TRUE(backend.ok()) << backend.error().message;
  ASSERT_NE(backend->store, nullptr);
  ASSERT_NE(backend->keys, nullptr);
  EXPECT_FALSE(backend->store->HasConditionalWrites());  // the provider's lease covers writes
  EXPECT_EQ(backend->traits.rotation_parallelism, 8u);
  EXPECT_EQ(backend->traits.longest_write, std::chrono::seconds(30));
  EXPECT_FALSE(backend->traits.env_is_source);
  EXPECT_EQ(backend->store->SecretName("p1"), "dyad-gateway--providers--p1");
  // The first call finds the vault down: unavailable, not a crash or a hang.
  auto got = backend->store->Get("dyad-gateway--providers--p1");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code, ErrorCode::kUnavailable) << got.error().message;
  EXPECT_EQ(got.error().message.find("canary"), std::string::npos);
}

TEST(AzureFactory, ABrokenCertificateFailsTheOpenNamingTheVariable) {
  Fixture f;
  testing::TempDir dir;
  EnvMap env = Base();
  env.erase("AZURE_CLIENT_SECRET");
  env["AZURE_CLIENT_CERTIFICATE_PATH"] = dir.File("missing.pem");
  auto config = LoadConfig(env, false);
  ASSERT_TRUE(config.ok()) << config.error().message;
  auto db = SqliteDb::Open(dir.File("t.db"));
  ASSERT_TRUE(db.ok());
  FakeClock clock;
  auto backend = f.registry.Open(BackendContext{*config, SqliteDatabase(*db), clock, DefaultRandom()});
  ASSERT_FALSE(backend.ok());
  EXPECT_EQ(backend.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(backend.error().message.find("AZURE_CLIENT_CERTIFICATE_PATH"), std::string::npos);
}

TEST(AzureFactory, ResidencyHoldsTheSecretsVaultAndTheKeyVaultToTheList) {
  Fixture f;
  EnvMap env = Base();
  env["AZURE_KEY_VAULT_URL"] = "https://eu-secrets.vault.azure.net";
  env["ENCRYPTION_KEY_ID"] = "https://eu-keys.vault.azure.net/keys/wrap-key";
  env["SECRETS_ALLOWED_REGIONS"] = "EU-SECRETS.vault.azure.net., eu-keys.vault.azure.net";
  EXPECT_EQ(f.ErrorFor(env), "");
  // The key in another vault, or a look-alike host: refused, naming the variable and the host.
  env["SECRETS_ALLOWED_REGIONS"] = "eu-secrets.vault.azure.net";
  std::string e = f.ErrorFor(env);
  EXPECT_EQ(e.rfind("SECRETS_ALLOWED_REGIONS: ", 0), 0u) << e;
  EXPECT_NE(e.find("ENCRYPTION_KEY_ID"), std::string::npos) << e;
  EXPECT_NE(e.find("eu-keys.vault.azure.net"), std::string::npos) << e;
  env["AZURE_KEY_VAULT_URL"] = "https://eu-secrets.vault.azure.net.evil.com";
  env["ENCRYPTION_KEY_ID"] = "wrap-key";
  e = f.ErrorFor(env);
  EXPECT_NE(e.find("AZURE_KEY_VAULT_URL"), std::string::npos) << e;
  EXPECT_NE(e.find("eu-secrets.vault.azure.net.evil.com"), std::string::npos) << e;
  // An AWS region alone allows no vault.
  env["AZURE_KEY_VAULT_URL"] = "https://eu-secrets.vault.azure.net";
  env["SECRETS_ALLOWED_REGIONS"] = "eu-west-1";
  EXPECT_NE(f.ErrorFor(env).find("AZURE_KEY_VAULT_URL"), std::string::npos);
}

}  // namespace
}  // namespace dyad
