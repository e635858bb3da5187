// AzureSettings: the settings of SECRETS_PROVIDER=azure, read from the
// environment, with the meanings azure-identity and the Key Vault SDKs give
// the variables of the same names.
//
// ReadAzureSettings() parses and validates them; an error is
// kInvalidArgument naming the variable and the accepted form, never a
// secret value (AZURE_CLIENT_SECRET and IDENTITY_HEADER come from the secret
// variables, Config::secret_env). It checks forms only: files (certificate,
// federated token) are read when the backend opens and when tokens are
// fetched. Pure.
#pragma once

#include <string>

#include "core/config.h"
#include "core/environment.h"
#include "core/result.h"
#include "core/secret_bytes.h"

namespace dyad {

struct AzureSettings {
  std::string vault_url;   // AZURE_KEY_VAULT_URL: https://host[:port], no trailing slash
  std::string vault_host;  // its host[:port]
  // The key that wraps data keys (ENCRYPTION_KEY_ID: a name, or
  // https://VAULT/keys/NAME[/VERSION]) and the vault it is in: the key
  // identifier's, else AZURE_KEY_VAULT_KEY_URL, else the secrets vault.
  std::string key_vault_url;
  std::string key_name;
  std::string key_version;  // "": the key's current version
  std::string tenant_id;    // AZURE_TENANT_ID
  std::string client_id;    // AZURE_CLIENT_ID (also the user-assigned managed identity)
  SecretBytes client_secret{};           // AZURE_CLIENT_SECRET
  std::string client_certificate_path;   // AZURE_CLIENT_CERTIFICATE_PATH: PEM, certificate and private key
  std::string federated_token_file;      // AZURE_FEDERATED_TOKEN_FILE
  std::string authority_host = "https://login.microsoftonline.com";  // AZURE_AUTHORITY_HOST
  std::string ca_bundle;                 // AZURE_CA_BUNDLE
  bool verify_challenge_resource = true;  // AZURE_VERIFY_CHALLENGE_RESOURCE
  std::string imds_endpoint = "http://169.254.169.254";  // AZURE_POD_IDENTITY_AUTHORITY_HOST
  std::string identity_endpoint;         // IDENTITY_ENDPOINT (App Service, Container Apps)
  SecretBytes identity_header{};         // IDENTITY_HEADER
  std::string auth_method = "chain";     // AZURE_AUTH_METHOD: secret|certificate|workload|managed|chain
  bool purge_on_delete = false;          // AZURE_PURGE_ON_DELETE
  int max_retries = 3;                   // AZURE_MAX_RETRIES: retries after the first attempt (0–10)
  int timeout_ms = 10000;                // AZURE_REQUEST_TIMEOUT_MS
  int concurrency = 8;                   // AZURE_CONCURRENCY: calls at once of a batch (key rotation)
};

// `env`: the plain variables; `secrets`: the secret ones (Config::secret_env).
Result<AzureSettings> ReadAzureSettings(const EnvMap& env, const SecretEnv& secrets);

// The longest provider id the Azure backend stores: the gateway's ids are
// UUIDs (36 characters).
inline constexpr size_t kAzureMaxProviderIdLength = 36;

// SECRETS_PREFIX as the start of Key Vault secret names
// (`<prefix>--providers--<id>`): letters, digits and '-', the whole name at
// most 127 characters, so the prefix at most 127 - 13 - 36 = 78.
Status CheckAzureSecretsPrefix(const std::string& prefix);

}  // namespace dyad
