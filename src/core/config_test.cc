#include "core/config.h"

#include <gtest/gtest.h>

#include <stdlib.h>

#include <cstring>
#include <string_view>


namespace dyad {
namespace {

const std::string kKey(64, 'a');

EnvMap Base() { return {{"ENCRYPTION_KEY", kKey}, {"GATEWAY_ADMIN_API_KEY", "0123456789abcdef-admin"}}; }

std::string ErrorFor(EnvMap env, bool dev = false) {
  auto c = LoadConfig(env, dev);
  EXPECT_FALSE(c.ok());
  return c.ok() ? "" : c.error().message;
}

TEST(Config, DefaultsMatchTheSeed) {
  auto c = LoadConfig(Base(), false);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->secrets_provider, "environment");
  EXPECT_EQ(c->encryption_key_id, "dyad-gateway-encryption-key");
  EXPECT_FALSE(c->key_rotation_enabled);
  EXPECT_EQ(c->key_rotation_interval_hours, 168);
  EXPECT_TRUE(c->cache_enabled);
  EXPECT_EQ(c->cache_ttl_seconds, 300);
  EXPECT_EQ(c->cache_max_size, 100);
  EXPECT_EQ(c->cache_stale_if_error_seconds, 3600);
  EXPECT_TRUE(c->fallback_enabled);
  EXPECT_TRUE(c->fallback_to_env);
  EXPECT_EQ(c->host, "127.0.0.1");
  EXPECT_EQ(c->port, 3001);
  EXPECT_EQ(c->database_path, "./data/gateway.db");
  EXPECT_EQ(c->audit_log_path, "./data/audit.log");
  EXPECT_EQ(c->secrets_prefix, "dyad-gateway");
  EXPECT_EQ(c->encryption_mode, "envelope");
  EXPECT_EQ(c->max_body_bytes, 1u << 20);
  ASSERT_TRUE(c->encryption_key.has_value());
  EXPECT_EQ(c->encryption_key->size(), 32u);
}

// Issue 9, item 8 (and 6): the connection cap and the blocking pool.
TEST(Config, ConnectionCapAndBlockingThreads) {
  auto c = LoadConfig(Base(), false);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->max_connections, 4096);
  EXPECT_EQ(c->blocking_threads, 16);
  auto env = Base();
  env["GATEWAY_MAX_CONNECTIONS"] = "2";
  env["GATEWAY_BLOCKING_THREADS"] = "4";
  c = LoadConfig(env, false);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->max_connections, 2);
  EXPECT_EQ(c->blocking_threads, 4);
  env["GATEWAY_MAX_CONNECTIONS"] = "0";
  EXPECT_NE(ErrorFor(env).find("GATEWAY_MAX_CONNECTIONS: '0' is not valid; use an integer from 1"), std::string::npos);
  env["GATEWAY_MAX_CONNECTIONS"] = "10";
  env["GATEWAY_BLOCKING_THREADS"] = "many";
  EXPECT_NE(ErrorFor(env).find("GATEWAY_BLOCKING_THREADS"), std::string::npos);
}

// Issue 13, TLS listener: cert and key both or neither, the client CA only
// with them, and no plain-text listener off loopback unless asked for.
TEST(Config, TlsFilesBothOrNeither) {
  auto env = Base();
  env["GATEWAY_TLS_CERT_FILE"] = "/etc/gw/cert.pem";
  EXPECT_NE(ErrorFor(env).find("GATEWAY_TLS_KEY_FILE: is required with GATEWAY_TLS_CERT_FILE"), std::string::npos);
  env.erase("GATEWAY_TLS_CERT_FILE");
  env["GATEWAY_TLS_KEY_FILE"] = "/etc/gw/key.pem";
  EXPECT_NE(ErrorFor(env).find("GATEWAY_TLS_CERT_FILE: is required with GATEWAY_TLS_KEY_FILE"), std::string::npos);
  env.erase("GATEWAY_TLS_KEY_FILE");
  env["GATEWAY_TLS_CLIENT_CA_FILE"] = "/etc/gw/ca.pem";
  EXPECT_NE(ErrorFor(env).find("GATEWAY_TLS_CLIENT_CA_FILE: needs GATEWAY_TLS_CERT_FILE"), std::string::npos);
  env["GATEWAY_TLS_CERT_FILE"] = "/etc/gw/cert.pem";
  env["GATEWAY_TLS_KEY_FILE"] = "/etc/gw/key.pem";
  auto c = LoadConfig(env, false);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_TRUE(c->tls.enabled());
  EXPECT_EQ(c->tls.cert_file, "/etc/gw/cert.pem");
  EXPECT_EQ(c->tls.key_file, "/etc/gw/key.pem");
  EXPECT_EQ(c->tls.client_ca_file, "/etc/gw/ca.pem");
  EXPECT_FALSE(LoadConfig(Base(), false)->tls.enabled());
}

// Present but empty is an error naming the variable, never "unset": an empty
// client CA would otherwise turn mTLS off, empty cert and key plain HTTP on.
TEST(Config, EmptyTlsVariableIsRefused) {
  for (const char* name : {"GATEWAY_TLS_CERT_FILE", "GATEWAY_TLS_KEY_FILE", "GATEWAY_TLS_CLIENT_CA_FILE"}) {
    auto env = Base();
    env["GATEWAY_TLS_CERT_FILE"] = "/etc/gw/cert.pem";
    env["GATEWAY_TLS_KEY_FILE"] = "/etc/gw/key.pem";
    env[name] = "";
    EXPECT_NE(ErrorFor(env).find(std::string(name) + ": is set but empty"), std::string::npos) << name;
  }
  auto env = Base();
  env["GATEWAY_TLS_CERT_FILE"] = "";
  env["GATEWAY_TLS_KEY_FILE"] = "";
  EXPECT_NE(ErrorFor(env).find("GATEWAY_TLS_CERT_FILE: is set but empty"), std::string::npos);
}

TEST(Config, AllowPlaintextUpstream) {
  EXPECT_FALSE(LoadConfig(Base(), false).value().allow_plaintext_upstream);
  auto env = Base();
  env["GATEWAY_ALLOW_PLAINTEXT_UPSTREAM"] = "true";
  EXPECT_TRUE(LoadConfig(env, false).value().allow_plaintext_upstream);
  env["GATEWAY_ALLOW_PLAINTEXT_UPSTREAM"] = "yes please";
  EXPECT_NE(ErrorFor(env).find("GATEWAY_ALLOW_PLAINTEXT_UPSTREAM"), std::string::npos);
}

TEST(Config, NonLoopbackHostNeedsTlsOrAllowPlaintext) {
  auto env = Base();
  for (const char* host : {"0.0.0.0", "10.1.2.3", "::", "fe80::1", "::ffff:10.0.0.1"}) {
    env["GATEWAY_HOST"] = host;
    std::string e = ErrorFor(env);
    EXPECT_NE(e.find("GATEWAY_HOST: '" + std::string(host) + "' is not a loopback address"), std::string::npos) << e;
    EXPECT_NE(e.find("GATEWAY_ALLOW_PLAINTEXT=true"), std::string::npos) << e;
    EXPECT_NE(e.find("GATEWAY_TLS_CERT_FILE"), std::string::npos) << e;
  }
  env["GATEWAY_ALLOW_PLAINTEXT"] = "true";
  EXPECT_TRUE(LoadConfig(env, false).ok());
  env["GATEWAY_ALLOW_PLAINTEXT"] = "perhaps";
  EXPECT_NE(ErrorFor(env).find("GATEWAY_ALLOW_PLAINTEXT"), std::string::npos);
  env.erase("GATEWAY_ALLOW_PLAINTEXT");
  env["GATEWAY_ALLOW_PLAINTEXT_UPSTREAM"] = "true";  // the upstreams' switch is not the listener's
  EXPECT_NE(ErrorFor(env).find("is not a loopback address"), std::string::npos);
  env.erase("GATEWAY_ALLOW_PLAINTEXT_UPSTREAM");
  env["GATEWAY_TLS_CERT_FILE"] = "c.pem";
  env["GATEWAY_TLS_KEY_FILE"] = "k.pem";
  EXPECT_TRUE(LoadConfig(env, false).ok());
  env = Base();
  for (const char* host : {"127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"}) {
    env["GATEWAY_HOST"] = host;
    EXPECT_TRUE(LoadConfig(env, false).ok()) << host;
  }
  env["GATEWAY_HOST"] = "localhost";
  EXPECT_NE(ErrorFor(env).find("GATEWAY_HOST: 'localhost' is not an IP address"), std::string::npos);
}

TEST(Config, BadBooleanNamesTheVariableAndTheForm) {
  auto env = Base();
  env["SECRETS_CACHE_ENABLED"] = "maybe";
  std::string m = ErrorFor(env);
  EXPECT_NE(m.find("SECRETS_CACHE_ENABLED"), std::string::npos);
  EXPECT_NE(m.find("true or false"), std::string::npos);
}

TEST(Config, BadIntegerNamesRange) {
  for (auto [var, value] : std::vector<std::pair<std::string, std::string>>{
           {"GATEWAY_PORT", "70000"}, {"GATEWAY_PORT", "abc"}, {"SECRETS_CACHE_TTL_SECONDS", "0"},
           {"SECRETS_CACHE_MAX_SIZE", "-5"}, {"KEY_ROTATION_INTERVAL_HOURS", "1.5"}, {"GATEWAY_PORT", ""}}) {
    auto env = Base();
    env[var] = value;
    std::string m = ErrorFor(env);
    EXPECT_EQ(m.rfind(var + ":", 0), 0u) << m;
    EXPECT_NE(m.find("integer from"), std::string::npos) << m;
  }
}

TEST(Config, BadEnumListsAcceptedValues) {
  auto env = Base();
  env["GATEWAY_LOG_LEVEL"] = "loud";
  std::string m = ErrorFor(env);
  EXPECT_NE(m.find("GATEWAY_LOG_LEVEL"), std::string::npos);
  EXPECT_NE(m.find("trace, debug, info"), std::string::npos);
  env = Base();
  env["SECRETS_ENCRYPTION_MODE"] = "both";
  EXPECT_NE(ErrorFor(env).find("SECRETS_ENCRYPTION_MODE: 'both' is not one of: envelope, provider"), std::string::npos);
  env = Base();
  env["GATEWAY_LOG_FORMAT"] = "xml";
  EXPECT_NE(ErrorFor(env).find("GATEWAY_LOG_FORMAT: 'xml' is not one of: text, json"), std::string::npos);
}

TEST(Config, LogFormatAndCacheWarmingDefaultOffAndAreRead) {
  auto c = LoadConfig(Base(), false);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->log_format, "text");
  EXPECT_FALSE(c->cache_warm);
  EXPECT_FALSE(c->cache_warm_blocks_ready);
  auto env = Base();
  env["GATEWAY_LOG_FORMAT"] = "json";
  env["SECRETS_CACHE_WARM"] = "true";
  env["SECRETS_CACHE_WARM_BLOCKS_READY"] = "true";
  c = LoadConfig(env, false);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->log_format, "json");
  EXPECT_TRUE(c->cache_warm);
  EXPECT_TRUE(c->cache_warm_blocks_ready);
  env["SECRETS_CACHE_WARM"] = "sometimes";
  EXPECT_EQ(ErrorFor(env).rfind("SECRETS_CACHE_WARM:", 0), 0u) << ErrorFor(env);
}

// Which names SECRETS_PROVIDER takes, and each backend's own settings
// (SECRETS_PREFIX, ENCRYPTION_KEY for the keyring, AWS_*), are the backend
// registry's to check (src/backends/registry_test.cc and each factory's test).
TEST(Config, BackendSettingsAreLeftToTheBackend) {
  EnvMap env = {{"GATEWAY_ADMIN_API_KEY", "0123456789abcdef-admin"}, {"SECRETS_PROVIDER", "gcp"},
                {"SECRETS_PREFIX", "has space"}};
  auto c = LoadConfig(env, false);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->secrets_provider, "gcp");
  EXPECT_EQ(c->secrets_prefix, "has space");
  EXPECT_FALSE(c->encryption_key.has_value());
}

TEST(Config, EncryptionKeyMustBe64HexAndIsNeverEchoed) {
  auto env = Base();
  env["ENCRYPTION_KEY"] = "s3cr3t-value-123";
  std::string m = ErrorFor(env);
  EXPECT_NE(m.find("ENCRYPTION_KEY"), std::string::npos);
  EXPECT_NE(m.find("64 hexadecimal"), std::string::npos);
  EXPECT_EQ(m.find("s3cr3t"), std::string::npos);
  env["ENCRYPTION_KEY"] = std::string(63, 'a') + "z";
  m = ErrorFor(env);
  EXPECT_NE(m.find("0-9, a-f"), std::string::npos);
  EXPECT_EQ(m.find("aaaa"), std::string::npos);
}

TEST(Config, AdminTokenRequiredOutsideDev) {
  EnvMap env = {{"ENCRYPTION_KEY", kKey}};
  EXPECT_NE(ErrorFor(env).find("GATEWAY_ADMIN_API_KEY"), std::string::npos);
  env["GATEWAY_ADMIN_API_KEY"] = "short";
  EXPECT_NE(ErrorFor(env).find("at least 16"), std::string::npos);
}

// A command that serves nothing (secrets verify, audit verify, backup, …)
// needs no admin token; a bad one is still refused.
TEST(Config, ACommandOtherThanServeNeedsNoAdminToken) {
  EnvMap env = {{"ENCRYPTION_KEY", kKey}};
  auto c = LoadConfig(env, false, nullptr, ConfigUse::kCommand);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_FALSE(c->admin_api_key.has_value());
  env["GATEWAY_ADMIN_API_KEY"] = "short";
  c = LoadConfig(env, false, nullptr, ConfigUse::kCommand);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message.find("at least 16"), std::string::npos);
  // Nor does it read a tokens file (a missing one is `serve`'s error).
  env.erase("GATEWAY_ADMIN_API_KEY");
  env["GATEWAY_ADMIN_TOKENS_FILE"] = "/nonexistent/tokens.json";
  env["GATEWAY_CLIENT_API_KEYS_FILE"] = "/nonexistent/clients.json";
  c = LoadConfig(env, false, nullptr, ConfigUse::kCommand);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->admin_tokens_file, "");
  EXPECT_EQ(c->client_api_keys_file, "");
  EXPECT_EQ(LoadConfig(env, false)->admin_tokens_file, "/nonexistent/tokens.json");
}

TEST(Config, PreviousKeysAreParsedAndNamedByEntry) {
  auto env = Base();
  env["ENCRYPTION_KEY_PREVIOUS"] = std::string(64, 'b') + "," + std::string(64, 'c');
  auto c = LoadConfig(env, false);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->encryption_key_previous.size(), 2u);
  env["ENCRYPTION_KEY_PREVIOUS"] = std::string(64, 'b') + ",xyz";
  EXPECT_NE(ErrorFor(env).find("entry 2"), std::string::npos);
}

TEST(Config, ScheduleIsParsedOrTheIntervalIsUsed) {
  auto env = Base();
  env["KEY_ROTATION_SCHEDULE"] = "0 3 * *";
  std::string m = ErrorFor(env);
  EXPECT_NE(m.find("KEY_ROTATION_SCHEDULE"), std::string::npos);
  EXPECT_NE(m.find("expected 5 fields"), std::string::npos);
  env["KEY_ROTATION_SCHEDULE"] = "0 25 * * *";
  EXPECT_NE(ErrorFor(env).find("hour field '25'"), std::string::npos);
  env["KEY_ROTATION_SCHEDULE"] = "0 3 * * 0";
  EXPECT_EQ(LoadConfig(env, false)->key_rotation_schedule, "0 3 * * 0");
  env.erase("KEY_ROTATION_SCHEDULE");
  env["KEY_ROTATION_INTERVAL_HOURS"] = "24";
  auto c = LoadConfig(env, false);
  EXPECT_EQ(c->key_rotation_schedule, "");  // no cron approximation of the interval
  EXPECT_EQ(c->key_rotation_interval_hours, 24);
  env["KEY_ROTATION_INTERVAL_HOURS"] = "0";
  EXPECT_NE(ErrorFor(env).find("KEY_ROTATION_INTERVAL_HOURS"), std::string::npos);
  env["KEY_ROTATION_INTERVAL_HOURS"] = "720";
  EXPECT_EQ(LoadConfig(env, false)->key_rotation_interval_hours, 720);
}

// Issue 14 review: the audit log's origin, set explicitly (a recreated
// container's new host name would otherwise change it); checked, and named
// in the error.
TEST(Config, AuditLogOriginIsOptionalAndChecked) {
  EnvMap env{{"GATEWAY_DATA_DIR", "/srv/gw"}};
  EXPECT_EQ(LoadStorageConfig(env)->audit_log_origin, "");  // the default: AuditLogOrigin()
  env["AUDIT_LOG_ORIGIN"] = "gateway-a:/var/lib/dyad/audit.log";
  EXPECT_EQ(LoadStorageConfig(env)->audit_log_origin, "gateway-a:/var/lib/dyad/audit.log");
  for (const std::string bad : {std::string(), std::string("a\nb"), std::string("tab\there"), std::string(" lead"),
                                std::string("trail "), std::string(257, 'x'), std::string("caf\xc3\xa9")}) {
    env["AUDIT_LOG_ORIGIN"] = bad;
    auto c = LoadStorageConfig(env);
    ASSERT_FALSE(c.ok()) << "accepted: " << bad;
    EXPECT_NE(c.error().message.find("AUDIT_LOG_ORIGIN"), std::string::npos) << c.error().message;
  }
  env["AUDIT_LOG_ORIGIN"] = std::string(256, 'x');
  EXPECT_TRUE(LoadStorageConfig(env).ok());
}

TEST(Config, StorageAloneNeedsNoKeyOrToken) {
  EnvMap env{{"GATEWAY_DATA_DIR", "/srv/gw"}};
  auto c = LoadStorageConfig(env);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->database_path, "/srv/gw/gateway.db");
  EXPECT_EQ(c->audit_log_path, "/srv/gw/audit.log");
  env["GATEWAY_DATABASE_URL"] = "mysql://x";
  auto bad = LoadStorageConfig(env);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("GATEWAY_DATABASE_URL"), std::string::npos);
}

TEST(Config, DatabaseUrl) {
  auto env = Base();
  env["GATEWAY_DATA_DIR"] = "/tmp/x";
  auto c = LoadConfig(env, false);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->database_path, "/tmp/x/gateway.db");
  EXPECT_EQ(c->audit_log_path, "/tmp/x/audit.log");
  env["GATEWAY_DATABASE_URL"] = "mysql://x";
  EXPECT_NE(ErrorFor(env).find("GATEWAY_DATABASE_URL"), std::string::npos);
  env["GATEWAY_DATABASE_URL"] = "sqlite://";
  EXPECT_NE(ErrorFor(env).find("file path"), std::string::npos);
}

// Accepted as it is: libpq reads it when the database is opened (its errors:
// registry/database_test.cc).
TEST(Config, PostgresqlUrlIsAccepted) {
  auto env = Base();
  env["GATEWAY_DATA_DIR"] = "/tmp/x";
  for (const std::string url : {"postgresql://gw:hunter2@db.internal:5433/registry?sslmode=verify-full",
                                "postgres://gw@db.internal/registry?password=hunter2", "postgresql://"}) {
    env["GATEWAY_DATABASE_URL"] = url;
    auto c = LoadConfig(env, false);
    ASSERT_TRUE(c.ok()) << url << ": " << c.error().message;
    EXPECT_EQ(c->database_url, url);
    EXPECT_EQ(c->database_path, "") << "no SQLite file on PostgreSQL";
    EXPECT_EQ(c->audit_log_path, "/tmp/x/audit.log") << "the audit log stays in the data dir";
    EXPECT_TRUE(LoadStorageConfig(env).ok()) << url;
  }
  // Other spellings are refused, naming the variable, never the URL.
  for (const std::string url : {"postgresq://gw:hunter2@db/registry", "pgsql://gw:hunter2@db/registry",
                                "gw:hunter2@db/registry"}) {
    env["GATEWAY_DATABASE_URL"] = url;
    std::string why = ErrorFor(env);
    EXPECT_NE(why.find("GATEWAY_DATABASE_URL"), std::string::npos) << url;
    EXPECT_NE(why.find("postgresql://"), std::string::npos) << why;
    EXPECT_EQ(why.find("hunter2"), std::string::npos) << why;
  }
  env["GATEWAY_DATABASE_URL"] = "sqlite:///srv/gw/registry.db";
  auto sqlite = LoadConfig(env, false);
  ASSERT_TRUE(sqlite.ok());
  EXPECT_EQ(sqlite->database_path, "/srv/gw/registry.db");
}

TEST(Config, SecretVariablesAreKeptOnlyAsSecretBytes) {
  EnvMap env = Base();
  env["ENCRYPTION_KEY_PREVIOUS"] = std::string(64, 'b');
  env["AWS_SECRET_ACCESS_KEY"] = "aws-secret-canary";
  env["AWS_SESSION_TOKEN"] = "aws-token-canary";
  env["DYAD_PROVIDER_OPENAI_API_KEY"] = "sk-fallback-canary";
  env["GATEWAY_PORT"] = "4000";
  auto c = LoadConfig(env, false);
  ASSERT_TRUE(c.ok()) << c.error().message;
  for (const char* name : {"ENCRYPTION_KEY", "ENCRYPTION_KEY_PREVIOUS", "GATEWAY_ADMIN_API_KEY", "AWS_SECRET_ACCESS_KEY",
                           "AWS_SESSION_TOKEN", "DYAD_PROVIDER_OPENAI_API_KEY"}) {
    EXPECT_EQ(c->env.count(name), 0u) << name << " is kept in the plain copy of the environment";
  }
  EXPECT_EQ(c->env.at("GATEWAY_PORT"), "4000");
  ASSERT_EQ(c->provider_env.count("DYAD_PROVIDER_OPENAI_API_KEY"), 1u);
  EXPECT_EQ(c->provider_env.at("DYAD_PROVIDER_OPENAI_API_KEY").view(), "sk-fallback-canary");
  // The secret variables a backend parses itself reach it as SecretBytes.
  ASSERT_EQ(c->secret_env.count("AWS_SECRET_ACCESS_KEY"), 1u);
  EXPECT_EQ(c->secret_env.at("AWS_SECRET_ACCESS_KEY").view(), "aws-secret-canary");
  EXPECT_EQ(c->secret_env.at("AWS_SESSION_TOKEN").view(), "aws-token-canary");
  EXPECT_EQ(c->secret_env.count("ENCRYPTION_KEY"), 0u);
  EXPECT_EQ(c->secret_env.count("DYAD_PROVIDER_OPENAI_API_KEY"), 0u);
}

TEST(Config, AzureSecretVariablesAreKeptOnlyAsSecretBytes) {
  EXPECT_TRUE(IsSecretVariable("AZURE_CLIENT_SECRET"));
  EXPECT_TRUE(IsSecretVariable("IDENTITY_HEADER"));  // App Service's managed identity header
  EXPECT_FALSE(IsSecretVariable("IDENTITY_ENDPOINT"));
  EnvMap env = Base();
  env["AZURE_CLIENT_SECRET"] = "az-secret-canary";
  env["IDENTITY_HEADER"] = "az-header-canary";
  env["IDENTITY_ENDPOINT"] = "http://127.0.0.1:41741/msi/token";
  auto c = LoadConfig(env, false);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->env.count("AZURE_CLIENT_SECRET"), 0u);
  EXPECT_EQ(c->env.count("IDENTITY_HEADER"), 0u);
  EXPECT_EQ(c->env.at("IDENTITY_ENDPOINT"), "http://127.0.0.1:41741/msi/token");
  EXPECT_EQ(c->secret_env.at("AZURE_CLIENT_SECRET").view(), "az-secret-canary");
  EXPECT_EQ(c->secret_env.at("IDENTITY_HEADER").view(), "az-header-canary");
}

TEST(Config, VaultTokenAndSecretIdAreSecretVariables) {
  EXPECT_TRUE(IsSecretVariable("VAULT_TOKEN"));
  EXPECT_TRUE(IsSecretVariable("VAULT_SECRET_ID"));
  EXPECT_FALSE(IsSecretVariable("VAULT_SECRET_ID_FILE"));  // a path, not a secret
  EXPECT_FALSE(IsSecretVariable("VAULT_ROLE_ID"));
  EnvMap env = Base();
  env["VAULT_TOKEN"] = "hvs.token-canary";
  env["VAULT_SECRET_ID"] = "secret-id-canary";
  env["VAULT_SECRET_ID_FILE"] = "/run/secret-id";
  auto c = LoadConfig(env, false);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->env.count("VAULT_TOKEN"), 0u);
  EXPECT_EQ(c->env.count("VAULT_SECRET_ID"), 0u);
  EXPECT_EQ(c->env.at("VAULT_SECRET_ID_FILE"), "/run/secret-id");
  EXPECT_EQ(c->secret_env.at("VAULT_TOKEN").view(), "hvs.token-canary");
  EXPECT_EQ(c->secret_env.at("VAULT_SECRET_ID").view(), "secret-id-canary");
}

TEST(Config, ClearSecretVariablesZeroesAndRemovesThem) {
  ASSERT_EQ(::setenv("DYAD_PROVIDER_T_API_KEY", "sk-process-canary", 1), 0);
  ASSERT_EQ(::setenv("DYAD_TEST_PLAIN", "kept", 1), 0);
  const char* value = ::getenv("DYAD_PROVIDER_T_API_KEY");
  ASSERT_NE(value, nullptr);
  ClearSecretVariables();
  EXPECT_EQ(::getenv("DYAD_PROVIDER_T_API_KEY"), nullptr);
  EXPECT_NE(std::string_view(value, 17), "sk-process-canary") << "the old bytes are still in memory";
  ASSERT_NE(::getenv("DYAD_TEST_PLAIN"), nullptr);
  ::unsetenv("DYAD_TEST_PLAIN");
}

// GATEWAY_DATABASE_URL is no secret variable (its value is shown without
// the password), but a PostgreSQL URL may carry one: all after its scheme
// is zeroed in place once read.
TEST(Config, ClearSecretVariablesZeroesADatabaseUrlsPassword) {
  ASSERT_EQ(::setenv("GATEWAY_DATABASE_URL",
                     "postgresql://gw:pw-canary-1@db.example:5432/gw?sslmode=require&password=pw-canary-2&apassword=x",
                     1), 0);
  const char* value = ::getenv("GATEWAY_DATABASE_URL");
  ASSERT_NE(value, nullptr);
  const std::string before(value);
  ClearSecretVariables();
  const std::string_view after(value, before.size());  // the same bytes, in place
  EXPECT_EQ(after.find("pw-canary"), std::string_view::npos);
  EXPECT_EQ(after, std::string("postgresql://") + std::string(before.size() - 13, '\0'));
  ::unsetenv("GATEWAY_DATABASE_URL");
  // Forms libpq reads whose password a parser of URLs would miss.
  for (const char* url : {"postgres://gw:ab#pw-canary@db/gw", "postgresql://gw:ab?pw-canary@db/gw",
                          "postgresql://db/gw?pass%77ord=pw-canary"}) {
    ASSERT_EQ(::setenv("GATEWAY_DATABASE_URL", url, 1), 0);
    const char* v = ::getenv("GATEWAY_DATABASE_URL");
    const size_t n = std::strlen(v);
    ClearSecretVariables();
    EXPECT_EQ(std::string_view(v, n).find("pw-canary"), std::string_view::npos) << url;
    ::unsetenv("GATEWAY_DATABASE_URL");
  }
  ASSERT_EQ(::setenv("GATEWAY_DATABASE_URL", "sqlite://./data/gateway.db", 1), 0);
  ClearSecretVariables();
  EXPECT_STREQ(::getenv("GATEWAY_DATABASE_URL"), "sqlite://./data/gateway.db");
  ::unsetenv("GATEWAY_DATABASE_URL");
}

TEST(Dotenv, ParsesQuotesCommentsAndExport) {
  auto env = ParseDotenv("# comment\nexport A=1\nB = \"two words\"\nC='x#y'\nD=plain # trailing\n\n");
  ASSERT_TRUE(env.ok());
  EXPECT_EQ((*env)["A"], "1");
  EXPECT_EQ((*env)["B"], "two words");
  EXPECT_EQ((*env)["C"], "x#y");
  EXPECT_EQ((*env)["D"], "plain");
}

// Issue 9, item 13: a quoted value followed by a comment.
TEST(Dotenv, QuotedValueFollowedByAComment) {
  auto env = ParseDotenv("A=\"quoted value\" # the comment\nB='single'   #c\nC=\"has # inside\" # and a comment\n"
                         "D=\"x\"#tight\n");
  ASSERT_TRUE(env.ok()) << env.error().message;
  EXPECT_EQ((*env)["A"], "quoted value");
  EXPECT_EQ((*env)["B"], "single");
  EXPECT_EQ((*env)["C"], "has # inside");
  EXPECT_EQ((*env)["D"], "x");
  EXPECT_FALSE(ParseDotenv("E=\"x\" trailing words\n").ok());
}

TEST(Dotenv, ErrorsNameTheLineNotTheValue) {
  auto env = ParseDotenv("A=1\nthis is wrong\n");
  ASSERT_FALSE(env.ok());
  EXPECT_NE(env.error().message.find("line 2"), std::string::npos);
  env = ParseDotenv("SECRET=\"hunter2\n");
  ASSERT_FALSE(env.ok());
  EXPECT_EQ(env.error().message.find("hunter2"), std::string::npos);
}

TEST(Config, AllowedRegionsAreReadForEveryBackend) {
  auto c = LoadConfig(Base(), false);
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_FALSE(c->allowed_regions);  // unset: anywhere
  EnvMap env = Base();
  env["SECRETS_ALLOWED_REGIONS"] = "eu-west-1, myvault.vault.azure.net";
  c = LoadConfig(env, false);
  ASSERT_TRUE(c.ok()) << c.error().message;
  ASSERT_TRUE(c->allowed_regions);
  EXPECT_TRUE(c->allowed_regions->AllowsRegion("eu-west-1"));
  EXPECT_TRUE(c->allowed_regions->AllowsUrl("https://myvault.vault.azure.net"));
  env["SECRETS_ALLOWED_REGIONS"] = " ";
  EXPECT_EQ(ErrorFor(env).rfind("SECRETS_ALLOWED_REGIONS: ", 0), 0u);
}

}  // namespace
}  // namespace dyad
