#include "backends/azure/azure_settings.h"

#include <cctype>
#include <string_view>

#include "core/endpoint.h"
#include "core/env_vars.h"

namespace dyad {
namespace {

// Key Vault object names: 1 to 127 letters, digits and '-'.
bool IsObjectName(std::string_view s) {
  if (s.empty() || s.size() > 127) return false;
  for (char ch : s) {
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-') return false;
  }
  return true;
}

// A URL as shown in an error: nothing after a user-info '@'.
std::string Shown(const std::string& v) {
  if (auto at = v.find('@'); at != std::string::npos) return "…" + v.substr(at);
  return v;
}

// https://host[:port] (no path); `allow_http` for the local metadata endpoints.
Status ReadUrl(const EnvMap& env, const std::string& name, bool allow_http, std::string& url, std::string* host) {
  const std::string* v = FindVariable(env, name);
  if (!v || v->empty()) return OkStatus();
  auto e = ParseEndpoint(*v);
  if (!e) return BadVariable(name, "'" + Shown(*v) + "' is not a URL; use https://host[:port] (no path, no user)");
  if (!allow_http && !e->url.starts_with("https://")) {
    return BadVariable(name, "'" + Shown(*v) + "' is not https; a token is never sent in clear text");
  }
  url = e->url;
  if (host) *host = e->host;
  return OkStatus();
}

// ENCRYPTION_KEY_ID: NAME, or https://VAULT/keys/NAME[/VERSION][/].
Status ReadKeyId(const std::string& v, AzureSettings& az) {
  constexpr std::string_view kForm = "use a key name (letters, digits, '-') or https://VAULT/keys/NAME[/VERSION]";
  if (!v.starts_with("https://") && !v.starts_with("http://")) {
    if (!IsObjectName(v)) return BadVariable("ENCRYPTION_KEY_ID", "'" + Shown(v) + "' is not valid; " + std::string(kForm));
    az.key_name = v;
    return OkStatus();
  }
  const auto path_at = v.find('/', v.find("://") + 3);
  auto vault = path_at == std::string::npos ? std::nullopt : ParseEndpoint(v.substr(0, path_at));
  std::string_view path = path_at == std::string::npos ? "" : std::string_view(v).substr(path_at);
  if (path.ends_with('/')) path.remove_suffix(1);
  bool ok = vault && vault->url.starts_with("https://") && path.starts_with("/keys/");
  std::string_view rest = ok ? path.substr(6) : "";
  const auto slash = rest.find('/');
  std::string_view name = rest.substr(0, slash), version = slash == std::string_view::npos ? "" : rest.substr(slash + 1);
  ok = ok && IsObjectName(name) && (version.empty() || IsObjectName(version));
  if (!ok) return BadVariable("ENCRYPTION_KEY_ID", "'" + Shown(v) + "' is not a key identifier; " + std::string(kForm));
  az.key_vault_url = vault->url;
  az.key_name = name;
  az.key_version = version;
  return OkStatus();
}

}  // namespace

Result<AzureSettings> ReadAzureSettings(const EnvMap& env, const SecretEnv& secrets) {
  AzureSettings az;
  const std::string* vault = FindVariable(env, "AZURE_KEY_VAULT_URL");
  if (!vault || vault->empty()) {
    return BadVariable("AZURE_KEY_VAULT_URL",
                       "is required when SECRETS_PROVIDER=azure, e.g. https://NAME.vault.azure.net");
  }
  DYAD_RETURN_IF_ERROR(ReadUrl(env, "AZURE_KEY_VAULT_URL", false, az.vault_url, &az.vault_host));
  std::string key_vault;
  DYAD_RETURN_IF_ERROR(ReadUrl(env, "AZURE_KEY_VAULT_KEY_URL", false, key_vault, nullptr));
  const std::string* key_id = FindVariable(env, "ENCRYPTION_KEY_ID");
  if (!key_id || key_id->empty()) {
    return BadVariable("ENCRYPTION_KEY_ID", "is required when SECRETS_PROVIDER=azure: the name (or key identifier "
                                            "URL) of the Key Vault key that wraps data keys");
  }
  DYAD_RETURN_IF_ERROR(ReadKeyId(*key_id, az));
  if (!az.key_vault_url.empty() && !key_vault.empty() && az.key_vault_url != key_vault) {
    return BadVariable("AZURE_KEY_VAULT_KEY_URL", "'" + key_vault + "' is not the vault of ENCRYPTION_KEY_ID (" +
                                                      az.key_vault_url + "); set one or make them agree");
  }
  if (az.key_vault_url.empty()) az.key_vault_url = key_vault.empty() ? az.vault_url : key_vault;

  if (const std::string* v = FindVariable(env, "AZURE_TENANT_ID")) az.tenant_id = *v;
  if (const std::string* v = FindVariable(env, "AZURE_CLIENT_ID")) az.client_id = *v;
  // Both end up in a URL path or query: no room for anything but an id.
  for (auto [name, value] : {std::pair<const char*, const std::string*>{"AZURE_TENANT_ID", &az.tenant_id},
                             {"AZURE_CLIENT_ID", &az.client_id}}) {
    bool ok = value->size() <= 128;
    for (char ch : *value) ok = ok && (std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '.');
    if (!ok) return BadVariable(name, "'" + *value + "' is not valid; use a GUID or a domain name (letters, digits, '-', '.')");
  }
  if (auto it = secrets.find("AZURE_CLIENT_SECRET"); it != secrets.end()) az.client_secret = it->second;
  if (auto it = secrets.find("IDENTITY_HEADER"); it != secrets.end()) az.identity_header = it->second;
  if (const std::string* v = FindVariable(env, "AZURE_CLIENT_CERTIFICATE_PATH")) az.client_certificate_path = *v;
  if (const std::string* v = FindVariable(env, "AZURE_FEDERATED_TOKEN_FILE")) az.federated_token_file = *v;
  if (const std::string* v = FindVariable(env, "AZURE_CA_BUNDLE")) az.ca_bundle = *v;
  DYAD_RETURN_IF_ERROR(ReadUrl(env, "AZURE_AUTHORITY_HOST", false, az.authority_host, nullptr));
  DYAD_RETURN_IF_ERROR(ReadUrl(env, "AZURE_POD_IDENTITY_AUTHORITY_HOST", true, az.imds_endpoint, nullptr));
  if (const std::string* v = FindVariable(env, "IDENTITY_ENDPOINT"); v && !v->empty()) {
    const auto path_at = v->find('/', v->find("://") == std::string::npos ? 0 : v->find("://") + 3);
    if (!ParseEndpoint(v->substr(0, path_at))) {
      return BadVariable("IDENTITY_ENDPOINT", "'" + Shown(*v) + "' is not an http(s) URL");
    }
    az.identity_endpoint = *v;
  }
  DYAD_RETURN_IF_ERROR(ReadBoolVariable(env, "AZURE_VERIFY_CHALLENGE_RESOURCE", az.verify_challenge_resource));
  DYAD_RETURN_IF_ERROR(ReadOneOfVariable(env, "AZURE_AUTH_METHOD", {"chain", "secret", "certificate", "workload", "managed"},
                                         az.auth_method));
  DYAD_RETURN_IF_ERROR(ReadBoolVariable(env, "AZURE_PURGE_ON_DELETE", az.purge_on_delete));
  DYAD_RETURN_IF_ERROR(ReadIntVariable(env, "AZURE_MAX_RETRIES", 0, 10, az.max_retries));
  DYAD_RETURN_IF_ERROR(ReadIntVariable(env, "AZURE_REQUEST_TIMEOUT_MS", 100, 120000, az.timeout_ms));
  DYAD_RETURN_IF_ERROR(ReadIntVariable(env, "AZURE_CONCURRENCY", 1, 64, az.concurrency));

  // A forced method needs its variables; the chain needs none (managed
  // identity is its last resort).
  const bool app = !az.tenant_id.empty() && !az.client_id.empty();
  if (az.auth_method == "secret" && (!app || az.client_secret.empty())) {
    return BadVariable("AZURE_AUTH_METHOD", "'secret' needs AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET");
  }
  if (az.auth_method == "certificate" && (!app || az.client_certificate_path.empty())) {
    return BadVariable("AZURE_AUTH_METHOD",
                       "'certificate' needs AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_CERTIFICATE_PATH");
  }
  if (az.auth_method == "workload" && (!app || az.federated_token_file.empty())) {
    return BadVariable("AZURE_AUTH_METHOD",
                       "'workload' needs AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_FEDERATED_TOKEN_FILE");
  }
  if (!az.identity_endpoint.empty() && az.identity_header.empty()) {
    return BadVariable("IDENTITY_HEADER", "is required with IDENTITY_ENDPOINT (App Service managed identity)");
  }
  return az;
}

Status CheckAzureSecretsPrefix(const std::string& prefix) {
  constexpr size_t kMaxName = 127, kSuffix = std::string_view("--providers--").size() + kAzureMaxProviderIdLength;
  bool ok = !prefix.empty();
  for (char ch : prefix) ok = ok && (std::isalnum(static_cast<unsigned char>(ch)) || ch == '-');
  if (!ok) return BadVariable("SECRETS_PREFIX", "use letters, digits and '-' (the characters of Key Vault secret names)");
  for (char ch : prefix) {
    if (std::isupper(static_cast<unsigned char>(ch))) {
      return BadVariable("SECRETS_PREFIX", "use lower case: Key Vault secret names are case-insensitive, so "
                                           "'Dyad' and 'dyad' would name the same secrets");
    }
  }
  if (prefix.size() + kSuffix > kMaxName) {
    return BadVariable("SECRETS_PREFIX", "use at most " + std::to_string(kMaxName - kSuffix) +
                                             " characters: a Key Vault secret name is at most 127");
  }
  return OkStatus();
}

}  // namespace dyad
