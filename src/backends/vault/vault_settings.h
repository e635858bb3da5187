// VaultSettings: the settings of SECRETS_PROVIDER=vault, read from the
// environment with the Vault CLI's meaning for each variable.
//
// ReadVaultSettings() parses and validates them; an error is
// kInvalidArgument naming the variable and the accepted form, never a secret
// value. Token sources in order: VAULT_TOKEN, VAULT_TOKEN_FILE,
// ~/.vault-token (HOME), unless a login method is configured: AppRole
// (VAULT_ROLE_ID), Kubernetes (VAULT_K8S_ROLE), JWT (VAULT_JWT_ROLE) or TLS
// certificate (VAULT_AUTH_METHOD=cert with VAULT_CLIENT_CERT). Pure but for
// reading the files it names when asked to (ReadSecretFile).
#pragma once

#include <string>

#include "core/config.h"
#include "core/environment.h"
#include "core/result.h"
#include "core/secret_bytes.h"

namespace dyad {

enum class VaultAuthMethod { kToken, kAppRole, kKubernetes, kJwt, kCert };

struct VaultSettings {
  std::string address;          // VAULT_ADDR (required)
  std::string name_space;       // VAULT_NAMESPACE
  std::string kv_mount = "secret";        // VAULT_MOUNT_PATH
  std::string transit_mount = "transit";  // VAULT_TRANSIT_MOUNT
  bool transit_retire = false;            // VAULT_TRANSIT_RETIRE
  // TLS (the Vault CLI's variables).
  std::string ca_cert;          // VAULT_CACERT: PEM file of CAs
  std::string ca_path;          // VAULT_CAPATH: directory of PEM CAs
  std::string client_cert;      // VAULT_CLIENT_CERT
  std::string client_key;       // VAULT_CLIENT_KEY
  std::string tls_server_name;  // VAULT_TLS_SERVER_NAME: SNI and the name verified
  int max_attempts = 3;         // VAULT_MAX_RETRIES + 1 (the CLI's VAULT_MAX_RETRIES, default 2)
  int timeout_ms = 10000;       // VAULT_CLIENT_TIMEOUT (seconds, as the CLI) in ms
  int concurrency = 8;          // VAULT_CONCURRENCY: calls at once of a batch (key rotation)

  // Auth.
  VaultAuthMethod auth = VaultAuthMethod::kToken;
  SecretBytes token{};          // VAULT_TOKEN
  std::string token_file;       // VAULT_TOKEN_FILE, else ~/.vault-token when it exists
  std::string role_id;          // VAULT_ROLE_ID (AppRole)
  SecretBytes secret_id{};      // VAULT_SECRET_ID
  std::string secret_id_file;   // VAULT_SECRET_ID_FILE
  std::string approle_mount = "approle";  // VAULT_APPROLE_MOUNT
  std::string k8s_role;         // VAULT_K8S_ROLE
  std::string k8s_token_file = "/var/run/secrets/kubernetes.io/serviceaccount/token";  // VAULT_K8S_TOKEN_FILE
  std::string k8s_mount = "kubernetes";  // VAULT_K8S_MOUNT
  std::string jwt_role;         // VAULT_JWT_ROLE
  std::string jwt_file;         // VAULT_JWT_FILE (required with VAULT_JWT_ROLE)
  std::string jwt_mount = "jwt";  // VAULT_JWT_MOUNT
  std::string cert_role;        // VAULT_CERT_ROLE (optional name of the cert auth role)
  std::string cert_mount = "cert";  // VAULT_CERT_MOUNT
  // Namespace of the auth mount when it differs (VAULT_AUTH_NAMESPACE); "": VAULT_NAMESPACE.
  std::string auth_namespace;
};

// `env`: the plain variables; `secrets`: the secret ones (Config::secret_env).
Result<VaultSettings> ReadVaultSettings(const EnvMap& env, const SecretEnv& secrets);

// SECRETS_PREFIX as the start of KV paths (`<prefix>/providers/<id>`):
// segments of letters, digits and ._-, separated by '/'.
Status CheckVaultSecretsPrefix(const std::string& prefix);

}  // namespace dyad
