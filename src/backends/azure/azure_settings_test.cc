#include "backends/azure/azure_settings.h"

#include <gtest/gtest.h>

namespace dyad {
namespace {

EnvMap Base() { return {{"AZURE_KEY_VAULT_URL", "https://kv1.vault.azure.net/"}, {"ENCRYPTION_KEY_ID", "wrap-key"}}; }

std::string ErrorFor(const EnvMap& env, const SecretEnv& secrets = {}) {
  auto s = ReadAzureSettings(env, secrets);
  EXPECT_FALSE(s.ok());
  return s.ok() ? "" : s.error().message;
}

TEST(AzureSettings, DefaultsWithAVaultAndAKeyName) {
  auto s = ReadAzureSettings(Base(), {});
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->vault_url, "https://kv1.vault.azure.net");
  EXPECT_EQ(s->vault_host, "kv1.vault.azure.net");
  EXPECT_EQ(s->key_vault_url, "https://kv1.vault.azure.net");
  EXPECT_EQ(s->key_name, "wrap-key");
  EXPECT_EQ(s->key_version, "");
  EXPECT_EQ(s->authority_host, "https://login.microsoftonline.com");
  EXPECT_EQ(s->imds_endpoint, "http://169.254.169.254");
  EXPECT_EQ(s->auth_method, "chain");
  EXPECT_TRUE(s->verify_challenge_resource);
  EXPECT_FALSE(s->purge_on_delete);
  EXPECT_EQ(s->max_retries, 3);
  EXPECT_EQ(s->timeout_ms, 10000);
  EXPECT_EQ(s->concurrency, 8);
}

TEST(AzureSettings, TheVaultUrlIsRequiredAndHttpsOnly) {
  EnvMap env = Base();
  env.erase("AZURE_KEY_VAULT_URL");
  EXPECT_NE(ErrorFor(env).find("AZURE_KEY_VAULT_URL: is required"), std::string::npos);
  env["AZURE_KEY_VAULT_URL"] = "http://kv1.vault.azure.net";
  EXPECT_NE(ErrorFor(env).find("AZURE_KEY_VAULT_URL: 'http://kv1.vault.azure.net' is not https"), std::string::npos);
  env["AZURE_KEY_VAULT_URL"] = "https://kv1.vault.azure.net/secrets";
  EXPECT_NE(ErrorFor(env).find("AZURE_KEY_VAULT_URL: 'https://kv1.vault.azure.net/secrets' is not a URL"),
            std::string::npos);
  env["AZURE_KEY_VAULT_URL"] = "https://user:pw-canary@kv1.vault.azure.net";
  std::string e = ErrorFor(env);
  EXPECT_NE(e.find("AZURE_KEY_VAULT_URL"), std::string::npos);
  EXPECT_EQ(e.find("pw-canary"), std::string::npos) << e;
  env["AZURE_KEY_VAULT_URL"] = "https://127.0.0.1:8443";
  auto s = ReadAzureSettings(env, {});
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->vault_host, "127.0.0.1:8443");
}

TEST(AzureSettings, KeyIdIsANameOrAKeyIdentifier) {
  EnvMap env = Base();
  env["ENCRYPTION_KEY_ID"] = "https://keys1.vault.azure.net/keys/wrap/0123456789abcdef0123456789abcdef";
  auto s = ReadAzureSettings(env, {});
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->key_vault_url, "https://keys1.vault.azure.net");
  EXPECT_EQ(s->key_name, "wrap");
  EXPECT_EQ(s->key_version, "0123456789abcdef0123456789abcdef");
  env["ENCRYPTION_KEY_ID"] = "https://keys1.vault.azure.net/keys/wrap/";
  s = ReadAzureSettings(env, {});
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->key_name, "wrap");
  EXPECT_EQ(s->key_version, "");
  // The key's vault from AZURE_KEY_VAULT_KEY_URL; it must agree with an identifier's.
  env["AZURE_KEY_VAULT_KEY_URL"] = "https://other.vault.azure.net";
  EXPECT_NE(ErrorFor(env).find("AZURE_KEY_VAULT_KEY_URL: 'https://other.vault.azure.net' is not the vault of "
                               "ENCRYPTION_KEY_ID"),
            std::string::npos);
  env["ENCRYPTION_KEY_ID"] = "wrap";
  s = ReadAzureSettings(env, {});
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->key_vault_url, "https://other.vault.azure.net");
  EXPECT_EQ(s->vault_url, "https://kv1.vault.azure.net");
  for (const char* bad : {"has space", "under_score", "http://keys1.vault.azure.net/keys/wrap",
                          "https://keys1.vault.azure.net/secrets/wrap", "https://keys1.vault.azure.net/keys/",
                          "https://keys1.vault.azure.net/keys/a/b/c", "https://keys1.vault.azure.net"}) {
    env["ENCRYPTION_KEY_ID"] = bad;
    EXPECT_NE(ErrorFor(env).find("ENCRYPTION_KEY_ID: '"), std::string::npos) << bad;
  }
  env["ENCRYPTION_KEY_ID"] = std::string(128, 'k');
  EXPECT_NE(ErrorFor(env).find("ENCRYPTION_KEY_ID"), std::string::npos);
  env.erase("ENCRYPTION_KEY_ID");
  EXPECT_NE(ErrorFor(env).find("ENCRYPTION_KEY_ID: is required"), std::string::npos);
}

TEST(AzureSettings, SecretsComeFromTheSecretVariablesAndForcedMethodsNeedTheirs) {
  EnvMap env = Base();
  env["AZURE_TENANT_ID"] = "72f988bf-86f1-41af-91ab-2d7cd011db47";
  env["AZURE_CLIENT_ID"] = "c0ffee00-0000-4000-8000-000000000001";
  env["AZURE_AUTH_METHOD"] = "secret";
  EXPECT_NE(ErrorFor(env).find("AZURE_AUTH_METHOD: 'secret' needs"), std::string::npos);
  SecretEnv secrets;
  secrets.emplace("AZURE_CLIENT_SECRET", SecretBytes(std::string_view("az-secret-canary")));
  secrets.emplace("IDENTITY_HEADER", SecretBytes(std::string_view("az-header-canary")));
  auto s = ReadAzureSettings(env, secrets);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->client_secret.view(), "az-secret-canary");
  EXPECT_EQ(s->identity_header.view(), "az-header-canary");
  env["AZURE_AUTH_METHOD"] = "certificate";
  EXPECT_NE(ErrorFor(env, secrets).find("AZURE_AUTH_METHOD: 'certificate' needs"), std::string::npos);
  env["AZURE_AUTH_METHOD"] = "workload";
  EXPECT_NE(ErrorFor(env, secrets).find("AZURE_AUTH_METHOD: 'workload' needs"), std::string::npos);
  env["AZURE_FEDERATED_TOKEN_FILE"] = "/var/run/secrets/azure/tokens/azure-identity-token";
  EXPECT_TRUE(ReadAzureSettings(env, secrets).ok());
  env["AZURE_AUTH_METHOD"] = "password";
  EXPECT_NE(ErrorFor(env, secrets).find("AZURE_AUTH_METHOD"), std::string::npos);
  env["AZURE_AUTH_METHOD"] = "managed";
  env["AZURE_TENANT_ID"] = "a/../b";
  EXPECT_NE(ErrorFor(env, secrets).find("AZURE_TENANT_ID: 'a/../b' is not valid"), std::string::npos);
  env.erase("AZURE_TENANT_ID");
  env["IDENTITY_ENDPOINT"] = "http://127.0.0.1:41741/MSI/token/";
  s = ReadAzureSettings(env, secrets);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->identity_endpoint, "http://127.0.0.1:41741/MSI/token/");
  EXPECT_NE(ErrorFor(env, {}).find("IDENTITY_HEADER: is required with IDENTITY_ENDPOINT"), std::string::npos);
  env["IDENTITY_ENDPOINT"] = "not a url";
  EXPECT_NE(ErrorFor(env, secrets).find("IDENTITY_ENDPOINT: 'not a url'"), std::string::npos);
}

TEST(AzureSettings, EndpointsBoolsAndNumbersNameTheirVariable) {
  struct Case {
    const char* name;
    const char* value;
  };
  for (Case c : {Case{"AZURE_AUTHORITY_HOST", "http://login.microsoftonline.com"},
                 Case{"AZURE_AUTHORITY_HOST", "login.microsoftonline.com"},
                 Case{"AZURE_POD_IDENTITY_AUTHORITY_HOST", "169.254.169.254"},
                 Case{"AZURE_KEY_VAULT_KEY_URL", "http://kv2.vault.azure.net"},
                 Case{"AZURE_VERIFY_CHALLENGE_RESOURCE", "maybe"}, Case{"AZURE_PURGE_ON_DELETE", "2"},
                 Case{"AZURE_MAX_RETRIES", "11"}, Case{"AZURE_MAX_RETRIES", "-1"},
                 Case{"AZURE_REQUEST_TIMEOUT_MS", "99"}, Case{"AZURE_CONCURRENCY", "0"},
                 Case{"AZURE_CONCURRENCY", "99999999999999999999"}}) {
    EnvMap env = Base();
    env[c.name] = c.value;
    EXPECT_NE(ErrorFor(env).find(std::string(c.name) + ": "), std::string::npos) << c.name << "=" << c.value;
  }
  EnvMap env = Base();
  env["AZURE_AUTHORITY_HOST"] = "https://login.microsoftonline.us/";
  env["AZURE_POD_IDENTITY_AUTHORITY_HOST"] = "http://127.0.0.1:8081";
  env["AZURE_VERIFY_CHALLENGE_RESOURCE"] = "false";
  env["AZURE_PURGE_ON_DELETE"] = "true";
  env["AZURE_MAX_RETRIES"] = "0";
  env["AZURE_CONCURRENCY"] = "64";
  env["AZURE_CA_BUNDLE"] = "/etc/ca.pem";
  auto s = ReadAzureSettings(env, {});
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->authority_host, "https://login.microsoftonline.us");
  EXPECT_EQ(s->imds_endpoint, "http://127.0.0.1:8081");
  EXPECT_FALSE(s->verify_challenge_resource);
  EXPECT_TRUE(s->purge_on_delete);
  EXPECT_EQ(s->max_retries, 0);
  EXPECT_EQ(s->concurrency, 64);
  EXPECT_EQ(s->ca_bundle, "/etc/ca.pem");
}

TEST(AzureSettings, SecretsPrefixTakesKeyVaultNameCharactersUpTo127InAll) {
  EXPECT_TRUE(CheckAzureSecretsPrefix("dyad-gateway-2").ok());
  for (const char* bad : {"", "a/b", "a_b", "a.b", "a b", "é"}) {
    auto s = CheckAzureSecretsPrefix(bad);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_NE(s.error().message.find("SECRETS_PREFIX: use letters, digits and '-'"), std::string::npos);
  }
  // Key Vault names are case-insensitive: upper case is refused, not folded.
  for (const char* upper : {"Dyad", "DYAD-GW", "dyad-gW"}) {
    auto s = CheckAzureSecretsPrefix(upper);
    ASSERT_FALSE(s.ok()) << upper;
    EXPECT_NE(s.error().message.find("SECRETS_PREFIX: use lower case"), std::string::npos);
  }
  // 78 + "--providers--" + a 36-character id = 127.
  EXPECT_TRUE(CheckAzureSecretsPrefix(std::string(78, 'p')).ok());
  auto s = CheckAzureSecretsPrefix(std::string(79, 'p'));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("SECRETS_PREFIX: use at most 78 characters"), std::string::npos);
}

}  // namespace
}  // namespace dyad
