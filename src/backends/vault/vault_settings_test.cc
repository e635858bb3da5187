#include "backends/vault/vault_settings.h"

#include <gtest/gtest.h>

#include <fstream>

#include "testing/fakes.h"

namespace dyad {
namespace {

SecretEnv Token(std::string_view t = "hvs.token-canary") {
  SecretEnv s;
  s.emplace("VAULT_TOKEN", SecretBytes(t));
  return s;
}

EnvMap Base() { return {{"VAULT_ADDR", "https://vault.example.com:8200"}, {"HOME", "/nonexistent"}}; }

std::string ErrorFor(const EnvMap& env, const SecretEnv& secrets = Token()) {
  auto s = ReadVaultSettings(env, secrets);
  EXPECT_FALSE(s.ok());
  if (s.ok()) return "";
  EXPECT_EQ(s.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(s.error().message.find("canary"), std::string::npos) << s.error().message;
  return s.error().message;
}

bool Has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(VaultSettings, DefaultsWithAnAddressAndAToken) {
  auto s = ReadVaultSettings({{"VAULT_ADDR", "http://127.0.0.1:8200/"}}, Token());
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->address, "http://127.0.0.1:8200");
  EXPECT_EQ(s->name_space, "");
  EXPECT_EQ(s->kv_mount, "secret");
  EXPECT_EQ(s->transit_mount, "transit");
  EXPECT_FALSE(s->transit_retire);
  EXPECT_EQ(s->max_attempts, 3);
  EXPECT_EQ(s->timeout_ms, 10000);
  EXPECT_EQ(s->concurrency, 8);
  EXPECT_EQ(s->auth, VaultAuthMethod::kToken);
  EXPECT_EQ(s->token.view(), "hvs.token-canary");
  EXPECT_EQ(s->token_file, "");
}

TEST(VaultSettings, DynamicPathsArePrefixesEndingAtASegment) {
  EnvMap env = Base();
  EXPECT_TRUE(ReadVaultSettings(env, Token())->dynamic_paths.empty());  // unset: references are off
  env["VAULT_DYNAMIC_PATHS"] = " ";
  EXPECT_TRUE(ReadVaultSettings(env, Token())->dynamic_paths.empty());
  env["VAULT_DYNAMIC_PATHS"] = "database/creds/, aws/creds ,ns1/db/creds/readonly";
  auto s = ReadVaultSettings(env, Token());
  ASSERT_TRUE(s.ok()) << s.error().message;
  std::vector<std::string> want{"database/creds/", "aws/creds/", "ns1/db/creds/readonly/"};
  EXPECT_EQ(s->dynamic_paths, want);
  for (const char* bad : {"database/creds/,", ",database/creds/", "a,,b", "/", "/database/creds/", "database//x/",
                          "database/../sys/", "database/creds//", "data base/", "database/creds/?x", "./",
                          "database/\u00e9/"}) {
    env["VAULT_DYNAMIC_PATHS"] = bad;
    std::string e = ErrorFor(env);
    EXPECT_TRUE(Has(e, "VAULT_DYNAMIC_PATHS: '")) << bad << ": " << e;
  }
  env["VAULT_DYNAMIC_PATHS"] = std::string(201, 'p') + "/";
  EXPECT_TRUE(Has(ErrorFor(env), "VAULT_DYNAMIC_PATHS"));
}

TEST(VaultSettings, AddressIsRequiredAndMustBeAServerUrl) {
  EXPECT_TRUE(Has(ErrorFor({}), "VAULT_ADDR: is required"));
  EXPECT_TRUE(Has(ErrorFor({{"VAULT_ADDR", ""}}), "VAULT_ADDR: is required"));
  for (const char* bad : {"vault:8200", "ftp://vault", "https://vault/v1", "https://", "https://a b"}) {
    EXPECT_TRUE(Has(ErrorFor({{"VAULT_ADDR", bad}}), "VAULT_ADDR: '")) << bad;
  }
  // A password in the URL is not repeated.
  std::string e = ErrorFor({{"VAULT_ADDR", "https://user:pw-canary@vault"}});
  EXPECT_TRUE(Has(e, "VAULT_ADDR")) << e;
}

TEST(VaultSettings, MountsAndNamespacesMustBeSafeInAPath) {
  EnvMap env = Base();
  env["VAULT_MOUNT_PATH"] = "kv/team-a";
  env["VAULT_TRANSIT_MOUNT"] = "transit_2";
  env["VAULT_NAMESPACE"] = "admin/team/";
  env["VAULT_AUTH_NAMESPACE"] = "admin";
  auto s = ReadVaultSettings(env, Token());
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->kv_mount, "kv/team-a");
  EXPECT_EQ(s->transit_mount, "transit_2");
  EXPECT_EQ(s->name_space, "admin/team");
  EXPECT_EQ(s->auth_namespace, "admin");
  for (const char* name : {"VAULT_MOUNT_PATH", "VAULT_TRANSIT_MOUNT"}) {
    for (const char* bad : {"", "/secret", "secret/", "a/../b", "..", "a//b", "se cret", "a?b", "a%2e", "ä"}) {
      EnvMap e = Base();
      e[name] = bad;
      EXPECT_TRUE(Has(ErrorFor(e), std::string(name) + ": '")) << name << "=" << bad;
    }
  }
  for (const char* bad : {"/admin", "a/../b", "a b", "a\nb", "x#y"}) {
    EnvMap e = Base();
    e["VAULT_NAMESPACE"] = bad;
    EXPECT_TRUE(Has(ErrorFor(e), "VAULT_NAMESPACE: '")) << bad;
  }
  EnvMap e = Base();
  e["VAULT_MOUNT_PATH"] = std::string(201, 'm');
  EXPECT_TRUE(Has(ErrorFor(e), "VAULT_MOUNT_PATH"));
}

TEST(VaultSettings, NumbersAndFlagsInTheirRanges) {
  EnvMap env = Base();
  env["VAULT_MAX_RETRIES"] = "0";
  env["VAULT_CLIENT_TIMEOUT"] = "30s";
  env["VAULT_CONCURRENCY"] = "64";
  env["VAULT_TRANSIT_RETIRE"] = "true";
  auto s = ReadVaultSettings(env, Token());
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->max_attempts, 1);
  EXPECT_EQ(s->timeout_ms, 30000);
  EXPECT_EQ(s->concurrency, 64);
  EXPECT_TRUE(s->transit_retire);
  env["VAULT_CLIENT_TIMEOUT"] = "300";
  EXPECT_EQ(ReadVaultSettings(env, Token())->timeout_ms, 300000);
  const std::pair<const char*, const char*> bad[] = {
      {"VAULT_MAX_RETRIES", "11"},      {"VAULT_MAX_RETRIES", "-1"},        {"VAULT_CLIENT_TIMEOUT", "0"},
      {"VAULT_CLIENT_TIMEOUT", "301"},  {"VAULT_CLIENT_TIMEOUT", "1m"},     {"VAULT_CLIENT_TIMEOUT", "s"},
      {"VAULT_CLIENT_TIMEOUT", "99999999999999999999"}, {"VAULT_CONCURRENCY", "0"}, {"VAULT_CONCURRENCY", "65"},
      {"VAULT_TRANSIT_RETIRE", "maybe"}, {"VAULT_SKIP_VERIFY", "true"},     {"VAULT_SKIP_VERIFY", "x"}};
  for (const auto& [name, value] : bad) {
    EnvMap e = Base();
    e[name] = value;
    EXPECT_TRUE(Has(ErrorFor(e), std::string(name) + ":")) << name << "=" << value;
  }
  EnvMap e = Base();
  e["VAULT_SKIP_VERIFY"] = "false";
  EXPECT_TRUE(ReadVaultSettings(e, Token()).ok());
}

TEST(VaultSettings, TlsFiles) {
  EnvMap env = Base();
  env["VAULT_CACERT"] = "/etc/ca.pem";
  env["VAULT_CAPATH"] = "/etc/cas";
  env["VAULT_TLS_SERVER_NAME"] = "vault.internal";
  env["VAULT_CLIENT_CERT"] = "/etc/c.pem";
  env["VAULT_CLIENT_KEY"] = "/etc/k.pem";
  auto s = ReadVaultSettings(env, Token());
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->ca_cert, "/etc/ca.pem");
  EXPECT_EQ(s->ca_path, "/etc/cas");
  EXPECT_EQ(s->tls_server_name, "vault.internal");
  EXPECT_EQ(s->client_cert, "/etc/c.pem");
  EXPECT_EQ(s->client_key, "/etc/k.pem");
  EXPECT_EQ(s->auth, VaultAuthMethod::kToken);  // a client certificate alone is TLS, not a login
  env.erase("VAULT_CLIENT_KEY");
  EXPECT_TRUE(Has(ErrorFor(env), "VAULT_CLIENT_KEY: is required with VAULT_CLIENT_CERT"));
  env.erase("VAULT_CLIENT_CERT");
  env["VAULT_CLIENT_KEY"] = "/etc/k.pem";
  EXPECT_TRUE(Has(ErrorFor(env), "VAULT_CLIENT_CERT: is required with VAULT_CLIENT_KEY"));
  env.erase("VAULT_CLIENT_KEY");
  env["VAULT_TLS_SERVER_NAME"] = "vault.internal:8200";
  EXPECT_TRUE(Has(ErrorFor(env), "VAULT_TLS_SERVER_NAME: 'vault.internal:8200' is not a host name"));
}

TEST(VaultSettings, RedirectHostsAreHostsOrHostPortsAndNoneByDefault) {
  EnvMap env = Base();
  auto s = ReadVaultSettings(env, Token());
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_TRUE(s->redirect_hosts.empty());
  // Found by review: "host" matched the host on any port, though VAULT_ADDR
  // (and SECRETS_ALLOWED_REGIONS's URL entries) mean the scheme's default
  // port when none is given. Entries are now kept as the host:port they mean.
  env["VAULT_REDIRECT_HOSTS"] = "Vault-B.internal, 10.0.0.7:8200,[::1]:8201,[FD00::2],vault-c.internal.:08200";
  s = ReadVaultSettings(env, Token());
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->redirect_hosts, (std::vector<std::string>{"vault-b.internal:443", "10.0.0.7:8200", "[::1]:8201",
                                                         "[fd00::2]:443", "vault-c.internal:8200"}));
  env["VAULT_ADDR"] = "http://vault.example.com:8200";  // the default port is the address's scheme's
  env["SECRETS_ALLOW_PLAINTEXT_BACKEND"] = "true";       // plain http off loopback
  s = ReadVaultSettings(env, Token());
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->redirect_hosts.at(0), "vault-b.internal:80");
  env["VAULT_ADDR"] = Base()["VAULT_ADDR"];
  env.erase("SECRETS_ALLOW_PLAINTEXT_BACKEND");
  for (const std::string& bad : std::vector<std::string>{"a,,b", "a,", "user@host", "host:0", "host:65536", "host:", "host:80x",
                                "http://host", "host/path", "[::1", "[zz::1]", "-host", "host:8200:1",
                                std::string(300, 'h'), "a..b", "host-.example", "host.-x", "host:+80",
                                "host:-80", "host: 80", "%68ost", "host%2eexample", "host\\@evil", "host#x",
                                "host?x", "[::1]x", "[::1]:", "h\xC3\xA9st"}) {
    env["VAULT_REDIRECT_HOSTS"] = bad;
    EXPECT_TRUE(Has(ErrorFor(env), "VAULT_REDIRECT_HOSTS: '")) << bad;
    EXPECT_TRUE(Has(ErrorFor(env), "is not a host or host:port")) << bad;
  }
}

TEST(VaultSettings, TokenFromTheVariableThenTheFileThenHome) {
  testing::TempDir dir;
  EnvMap env = Base();
  EXPECT_TRUE(Has(ErrorFor(env, {}), "VAULT_TOKEN: is required"));
  EXPECT_TRUE(Has(ErrorFor(env, {}), "VAULT_TOKEN_FILE"));
  EXPECT_TRUE(Has(ErrorFor(env, {}), "VAULT_ROLE_ID"));
  EXPECT_TRUE(Has(ErrorFor(env, Token("")), "VAULT_TOKEN: is required"));  // set but empty

  env["HOME"] = dir.File("");
  std::ofstream(dir.File(".vault-token")) << "hvs.home-canary\n";
  auto s = ReadVaultSettings(env, {});
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->token_file, dir.File("") + "/.vault-token");
  EXPECT_TRUE(s->token.empty());

  std::ofstream(dir.File("token")) << "  hvs.file-canary \n";
  env["VAULT_TOKEN_FILE"] = dir.File("token");
  s = ReadVaultSettings(env, {});
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->token_file, dir.File("token"));

  s = ReadVaultSettings(env, Token());  // the variable wins over both files
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->token.view(), "hvs.token-canary");
  EXPECT_EQ(s->token_file, "");

  env["VAULT_TOKEN_FILE"] = dir.File("missing");
  EXPECT_TRUE(Has(ErrorFor(env, {}), "VAULT_TOKEN_FILE: cannot read '" + dir.File("missing") + "'"));
  std::ofstream(dir.File("empty")) << "\n \n";
  env["VAULT_TOKEN_FILE"] = dir.File("empty");
  EXPECT_TRUE(Has(ErrorFor(env, {}), "VAULT_TOKEN_FILE: '" + dir.File("empty") + "' is empty"));
}

TEST(VaultSettings, ReadSecretFileTrimsAndNeverShowsTheContent) {
  testing::TempDir dir;
  std::ofstream(dir.File("s")) << "\n\tsecret-canary\r\n";
  auto s = ReadSecretFile(dir.File("s"), "X");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->view(), "secret-canary");
  std::ofstream(dir.File("big")) << std::string(70 * 1024, 'c');
  auto big = ReadSecretFile(dir.File("big"), "X");
  ASSERT_FALSE(big.ok());
  EXPECT_TRUE(Has(big.error().message, "larger than 64 KiB"));
  EXPECT_EQ(big.error().message.find("ccc"), std::string::npos);
  EXPECT_EQ(ReadSecretFile(dir.File("none"), "X").error().code, ErrorCode::kNotFound);
}

TEST(VaultSettings, AppRoleNeedsASecretIdOrItsFile) {
  EnvMap env = Base();
  env["VAULT_ROLE_ID"] = "role-1";
  EXPECT_TRUE(Has(ErrorFor(env, {}), "VAULT_SECRET_ID: is required with VAULT_ROLE_ID"));
  SecretEnv secrets;
  secrets.emplace("VAULT_SECRET_ID", SecretBytes(std::string_view("sid-canary")));
  auto s = ReadVaultSettings(env, secrets);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->auth, VaultAuthMethod::kAppRole);
  EXPECT_EQ(s->role_id, "role-1");
  EXPECT_EQ(s->secret_id.view(), "sid-canary");
  EXPECT_EQ(s->approle_mount, "approle");
  env["VAULT_SECRET_ID_FILE"] = "/run/sid";
  EXPECT_TRUE(Has(ErrorFor(env, secrets), "VAULT_SECRET_ID: and VAULT_SECRET_ID_FILE are both set"));
  env["VAULT_APPROLE_MOUNT"] = "ar/../x";
  EXPECT_TRUE(Has(ErrorFor(env, {}), "VAULT_APPROLE_MOUNT"));
  env["VAULT_APPROLE_MOUNT"] = "my-approle";
  s = ReadVaultSettings(env, Token());  // a token beside a login method is not used
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->secret_id_file, "/run/sid");
  EXPECT_EQ(s->approle_mount, "my-approle");
  EXPECT_TRUE(s->token.empty());
}

TEST(VaultSettings, KubernetesJwtAndCertLogins) {
  EnvMap env = Base();
  env["VAULT_K8S_ROLE"] = "gateway";
  auto s = ReadVaultSettings(env, {});
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->auth, VaultAuthMethod::kKubernetes);
  EXPECT_EQ(s->k8s_role, "gateway");
  EXPECT_EQ(s->k8s_token_file, "/var/run/secrets/kubernetes.io/serviceaccount/token");
  EXPECT_EQ(s->k8s_mount, "kubernetes");
  env["VAULT_K8S_TOKEN_FILE"] = "/tmp/sa";
  env["VAULT_K8S_MOUNT"] = "k8s-east";
  s = ReadVaultSettings(env, {});
  EXPECT_EQ(s->k8s_token_file, "/tmp/sa");
  EXPECT_EQ(s->k8s_mount, "k8s-east");

  env = Base();
  env["VAULT_JWT_ROLE"] = "ci";
  EXPECT_TRUE(Has(ErrorFor(env, {}), "VAULT_JWT_FILE: is required with VAULT_JWT_ROLE"));
  env["VAULT_JWT_FILE"] = "/run/jwt";
  s = ReadVaultSettings(env, {});
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->auth, VaultAuthMethod::kJwt);
  EXPECT_EQ(s->jwt_mount, "jwt");

  env = Base();
  env["VAULT_AUTH_METHOD"] = "cert";
  EXPECT_TRUE(Has(ErrorFor(env, {}), "VAULT_CLIENT_CERT: is required with VAULT_AUTH_METHOD=cert"));
  env["VAULT_CLIENT_CERT"] = "/c.pem";
  env["VAULT_CLIENT_KEY"] = "/k.pem";
  env["VAULT_CERT_ROLE"] = "web";
  s = ReadVaultSettings(env, {});
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->auth, VaultAuthMethod::kCert);
  EXPECT_EQ(s->cert_role, "web");
  EXPECT_EQ(s->cert_mount, "cert");
}

// The token and the data keys would cross in clear: plain http only to a
// loopback Vault, unless SECRETS_ALLOW_PLAINTEXT_BACKEND says the network
// between is trusted.
TEST(VaultSettings, PlainHttpOnlyToALoopbackVaultUnlessAllowed) {
  for (const char* local : {"http://127.0.0.1:8200", "http://localhost:8200", "http://[::1]:8200", "http://127.9.9.9"}) {
    auto s = ReadVaultSettings({{"VAULT_ADDR", local}}, Token());
    EXPECT_TRUE(s.ok()) << local << ": " << s.error().message;
  }
  for (const char* remote : {"http://vault.example.com:8200", "http://10.0.0.7:8200", "http://[fd00::2]:8200",
                             "http://localhost.example.com", "http://127.0.0.1.example.com",
                             "http://localhost.:8200", "http://127.0.0.1.:8200"}) {  // a resolver's names
    std::string e = ErrorFor({{"VAULT_ADDR", remote}});
    EXPECT_TRUE(Has(e, "VAULT_ADDR: '")) << remote << ": " << e;
    EXPECT_TRUE(Has(e, "would cross the network in clear")) << e;
    EXPECT_TRUE(Has(e, "SECRETS_ALLOW_PLAINTEXT_BACKEND=true")) << e;
    auto s = ReadVaultSettings({{"VAULT_ADDR", remote}, {"SECRETS_ALLOW_PLAINTEXT_BACKEND", "true"}}, Token());
    EXPECT_TRUE(s.ok()) << remote << ": " << s.error().message;
  }
  EXPECT_TRUE(Has(ErrorFor({{"VAULT_ADDR", "http://vault:8200"}, {"SECRETS_ALLOW_PLAINTEXT_BACKEND", "maybe"}}),
                  "SECRETS_ALLOW_PLAINTEXT_BACKEND"));
}

TEST(VaultSettings, TwoLoginMethodsOrAMismatchedMethodAreErrorsNamingBoth) {
  EnvMap env = Base();
  env["VAULT_ROLE_ID"] = "r";
  env["VAULT_K8S_ROLE"] = "k";
  std::string e = ErrorFor(env);
  EXPECT_TRUE(Has(e, "VAULT_ROLE_ID: and VAULT_K8S_ROLE configure two login methods")) << e;
  env.erase("VAULT_ROLE_ID");
  env["VAULT_AUTH_METHOD"] = "cert";
  e = ErrorFor(env);
  EXPECT_TRUE(Has(e, "VAULT_K8S_ROLE: and VAULT_AUTH_METHOD=cert")) << e;
  env["VAULT_AUTH_METHOD"] = "approle";
  e = ErrorFor(env);
  EXPECT_TRUE(Has(e, "VAULT_AUTH_METHOD: is 'approle' but the variables set configure 'kubernetes'")) << e;
  env["VAULT_AUTH_METHOD"] = "ldap";
  EXPECT_TRUE(Has(ErrorFor(env), "VAULT_AUTH_METHOD: 'ldap' is not one of"));
  env["VAULT_AUTH_METHOD"] = "kubernetes";
  EXPECT_TRUE(ReadVaultSettings(env, {}).ok());
  env = Base();
  env["VAULT_AUTH_METHOD"] = "jwt";
  EXPECT_TRUE(Has(ErrorFor(env), "configure 'token' (no login variable)"));
  env["VAULT_AUTH_METHOD"] = "token";
  EXPECT_TRUE(ReadVaultSettings(env, Token()).ok());
}

TEST(VaultSettings, SecretsPrefixIsAKvPath) {
  EXPECT_TRUE(CheckVaultSecretsPrefix("dyad-gateway").ok());
  EXPECT_TRUE(CheckVaultSecretsPrefix("team_a/dyad.gw-1").ok());
  for (const char* bad : {"", "/x", "x/", "a//b", "a/../b", "..", "a b", "a+b", "a@b", "ü"}) {
    auto s = CheckVaultSecretsPrefix(bad);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_TRUE(Has(s.error().message, "SECRETS_PREFIX: use letters, digits and ._-")) << bad;
  }
  EXPECT_FALSE(CheckVaultSecretsPrefix(std::string(201, 'p')).ok());
  EXPECT_TRUE(CheckVaultSecretsPrefix(std::string(200, 'p')).ok());
}

}  // namespace
}  // namespace dyad
