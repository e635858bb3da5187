// VaultSettings: the settings of SECRETS_PROVIDER=vault, read from the
// environment with the Vault CLI's meaning for each variable.
//
// ReadVaultSettings() parses and validates them; an error is
// kInvalidArgument naming the variable and the accepted form, never a secret
// value. The auth method follows from the variables set: AppRole
// (VAULT_ROLE_ID with VAULT_SECRET_ID or VAULT_SECRET_ID_FILE), Kubernetes
// (VAULT_K8S_ROLE), JWT (VAULT_JWT_ROLE with VAULT_JWT_FILE), TLS
// certificate (VAULT_AUTH_METHOD=cert with VAULT_CLIENT_CERT and
// VAULT_CLIENT_KEY); two of them at once is an error naming both. With none,
// a token: VAULT_TOKEN, else VAULT_TOKEN_FILE, else ~/.vault-token (HOME)
// when it exists; no token at all is an error naming VAULT_TOKEN and the
// other ways. VAULT_AUTH_METHOD, when set, must name the method the other
// variables configure. Mount paths and namespaces are checked to be safe in
// a URL path ([A-Za-z0-9._-] segments separated by '/', no '..'). Pure but
// for reading ~/.vault-token or VAULT_TOKEN_FILE (to fail at start-up on a
// missing or empty one); login files are read at each login (ReadSecretFile).
#pragma once

#include <string>
#include <vector>

#include "core/config.h"
#include "core/environment.h"
#include "core/result.h"
#include "core/secret_bytes.h"

namespace dyad {

enum class VaultAuthMethod { kToken, kAppRole, kKubernetes, kJwt, kCert };

// "token", "approle", "kubernetes", "jwt", "cert".
const char* VaultAuthMethodName(VaultAuthMethod method);

struct VaultSettings {
  std::string address;          // VAULT_ADDR (required): scheme://host[:port], no trailing '/'
  std::string name_space;       // VAULT_NAMESPACE ("" the root namespace; a trailing '/' is dropped)
  std::string kv_mount = "secret";        // VAULT_MOUNT_PATH
  std::string transit_mount = "transit";  // VAULT_TRANSIT_MOUNT
  bool transit_retire = false;            // VAULT_TRANSIT_RETIRE
  // TLS (the Vault CLI's variables). VAULT_SKIP_VERIFY=true is refused.
  std::string ca_cert;          // VAULT_CACERT: PEM file of CAs
  std::string ca_path;          // VAULT_CAPATH: directory of PEM CAs
  std::string client_cert;      // VAULT_CLIENT_CERT
  std::string client_key;       // VAULT_CLIENT_KEY
  std::string tls_server_name;  // VAULT_TLS_SERVER_NAME: SNI and the name verified
  // VAULT_REDIRECT_HOSTS: hosts besides VAULT_ADDR's a standby's 307/308 may
  // send a call to, "host" or "host:port", comma-separated ("[v6]" in
  // brackets). Kept as "host:port" the way VAULT_ADDR is read: a port left
  // out is VAULT_ADDR's scheme's default (443 for https, 80 for http); the
  // host lower-cased, without a trailing dot; the port a plain number.
  std::vector<std::string> redirect_hosts;
  int max_attempts = 3;         // VAULT_MAX_RETRIES + 1 (the CLI's VAULT_MAX_RETRIES, default 2, 0–10)
  int timeout_ms = 10000;       // VAULT_CLIENT_TIMEOUT (seconds, 1–300; default 10, not the CLI's 60) in ms
  int concurrency = 8;          // VAULT_CONCURRENCY: calls at once of a batch (key rotation), 1–64
  // VAULT_DYNAMIC_PATHS: the path prefixes a credential reference may read
  // (comma-separated, e.g. "database/creds/,aws/creds/"), each stored ending
  // in '/' so it matches whole segments only ("database/creds" is
  // "database/creds/"). Empty (unset or ""): references are refused.
  std::vector<std::string> dynamic_paths;

  // Auth.
  VaultAuthMethod auth = VaultAuthMethod::kToken;
  SecretBytes token{};          // VAULT_TOKEN
  std::string token_file;       // VAULT_TOKEN_FILE, else ~/.vault-token when it exists (and no VAULT_TOKEN)
  std::string role_id;          // VAULT_ROLE_ID (AppRole)
  SecretBytes secret_id{};      // VAULT_SECRET_ID
  std::string secret_id_file;   // VAULT_SECRET_ID_FILE (read at each login)
  std::string approle_mount = "approle";  // VAULT_APPROLE_MOUNT
  std::string k8s_role;         // VAULT_K8S_ROLE
  std::string k8s_token_file = "/var/run/secrets/kubernetes.io/serviceaccount/token";  // VAULT_K8S_TOKEN_FILE
  std::string k8s_mount = "kubernetes";  // VAULT_K8S_MOUNT
  std::string jwt_role;         // VAULT_JWT_ROLE
  std::string jwt_file;         // VAULT_JWT_FILE (required with VAULT_JWT_ROLE; read at each login)
  std::string jwt_mount = "jwt";  // VAULT_JWT_MOUNT
  std::string cert_role;        // VAULT_CERT_ROLE (optional name of the cert auth role)
  std::string cert_mount = "cert";  // VAULT_CERT_MOUNT
  // Namespace of the auth mount when it differs (VAULT_AUTH_NAMESPACE); "": VAULT_NAMESPACE.
  std::string auth_namespace;
};

// `env`: the plain variables; `secrets`: the secret ones (Config::secret_env).
Result<VaultSettings> ReadVaultSettings(const EnvMap& env, const SecretEnv& secrets);

// SECRETS_PREFIX as the start of KV paths (`<prefix>/providers/<id>`):
// segments of letters, digits and ._-, separated by '/' (no empty, '.' or
// '..' segment), at most 200 characters.
Status CheckVaultSecretsPrefix(const std::string& prefix);

// A secret held in a small file (a token, a secret id, a service-account
// JWT), without surrounding whitespace. `what` names it in errors
// ("VAULT_TOKEN_FILE"); errors name the path, never the content: kNotFound
// for a missing or unreadable file, kInvalidArgument for an empty one.
Result<SecretBytes> ReadSecretFile(const std::string& path, const std::string& what);

}  // namespace dyad
