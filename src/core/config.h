// Config: every setting of the service, parsed and validated from an EnvMap.
//
// LoadConfig() reads the variables of DESIGN.md §3 with their documented
// defaults, but for the secrets backend's own: those, SECRETS_PREFIX, the
// encryption mode it takes and whether SECRETS_PROVIDER names a backend at
// all are checked by its factory (BackendRegistry::Check). Any bad value is
// an kInvalidArgument error whose message names the variable, says what is
// wrong and the accepted form, and never repeats a secret value. The result is immutable and safe to share between threads.
//
// Secret variables (keys, tokens, cloud secret keys, DYAD_PROVIDER_*) are
// parsed into SecretBytes and are not in Config::env; after loading, the CLI
// removes them from the process environment (ClearSecretVariables).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/environment.h"
#include "core/residency.h"
#include "core/result.h"
#include "core/secret_bytes.h"

namespace dyad {

// Secret variables by name, e.g. the DYAD_PROVIDER_* fallback values.
using SecretEnv = std::map<std::string, SecretBytes>;

// The admin listener's TLS files (GATEWAY_TLS_*): cert and key both or
// neither; a client CA only with them. Only paths: the server reads the files.
struct TlsFiles {
  std::string cert_file;       // PEM chain, leaf first
  std::string key_file;        // PEM private key, unencrypted
  std::string client_ca_file;  // PEM CAs; set: every client must present a certificate they issued
  bool enabled() const { return !cert_file.empty(); }
};

struct Config {
  bool dev = false;

  // Secrets backend and keys.
  std::string secrets_provider = "environment";  // a name in the BackendRegistry (backends/registry.h)
  std::string encryption_key_id = "dyad-gateway-encryption-key";
  std::optional<SecretBytes> encryption_key;      // 32 bytes (ENCRYPTION_KEY)
  std::vector<SecretBytes> encryption_key_previous;  // ENCRYPTION_KEY_PREVIOUS, comma-separated
  std::string encryption_mode = "envelope";       // envelope|provider (whether the backend takes it: its factory)
  std::string secrets_prefix = "dyad-gateway";    // checked by the backend against its own naming rules
  // SECRETS_ALLOWED_REGIONS (core/residency.h); nullopt: anywhere. Each
  // backend's Check() holds its store, KMS and replicas to it.
  std::optional<AllowedRegions> allowed_regions;

  // Key rotation.
  bool key_rotation_enabled = false;
  int key_rotation_interval_hours = 168;
  std::string key_rotation_schedule;  // KEY_ROTATION_SCHEDULE (cron); empty: the interval since the last success
  uint64_t key_rotation_max_encryptions = 4294967295ULL;  // 2^32 - 1

  // Cache and fallback.
  bool cache_enabled = true;
  int cache_ttl_seconds = 300;
  int cache_max_size = 100;
  int cache_stale_if_error_seconds = 3600;
  bool fallback_enabled = true;
  bool fallback_to_env = true;

  // Gateway.
  std::string log_level = "info";
  std::string log_format = "text";  // GATEWAY_LOG_FORMAT: text | json
  // SECRETS_CACHE_WARM: load the providers' credentials into the cache at
  // start and after clear-cache; _BLOCKS_READY: /readyz waits for it.
  bool cache_warm = false;
  bool cache_warm_blocks_ready = false;
  std::string host = "127.0.0.1";  // an IP address; non-loopback needs TLS or allow_plaintext
  uint16_t port = 3001;
  TlsFiles tls;
  bool allow_plaintext = false;  // GATEWAY_ALLOW_PLAINTEXT: a non-loopback host without TLS
  // GATEWAY_ALLOW_PLAINTEXT_UPSTREAM: an http:// baseUrl to a host that is
  // not loopback (the credential then crosses the network in clear).
  bool allow_plaintext_upstream = false;
  std::string data_dir = "./data";
  std::string database_url;   // sqlite://PATH or postgresql://…
  std::string database_path;  // the SQLite file, when database_url is sqlite
  std::optional<SecretBytes> admin_api_key;
  std::string admin_tokens_file;
  // GATEWAY_CLIENT_API_KEYS_FILE: a tokens file of role "client" entries only
  // (the /v1 path's callers; server/auth.h).
  std::string client_api_keys_file;
  std::string audit_log_path;
  // AUDIT_LOG_ORIGIN: where the audit log's head says it was written (audit/
  // audit_log.h AuditLogOrigin); empty for the default (host name and path
  // in cluster mode, the path with SQLite). Set, it survives a new host name.
  std::string audit_log_origin;
  size_t max_body_bytes = 1 << 20;
  int header_timeout_seconds = 10;
  int idle_timeout_seconds = 60;
  int threads = 0;  // 0: one per core
  int max_connections = 4096;  // GATEWAY_MAX_CONNECTIONS: open at once; more are closed at once
  int blocking_threads = 16;   // GATEWAY_BLOCKING_THREADS: run handlers that wait on a backend

  // The /v1 path's upstream calls (DESIGN.md §12): GATEWAY_UPSTREAM_CONNECT_TIMEOUT_MS,
  // _FIRST_BYTE_TIMEOUT_MS (the request sent to the answer's head) and
  // _IDLE_TIMEOUT_MS (the longest silence inside a body); GATEWAY_UPSTREAM_CA_FILE
  // (PEM; empty: the system's CAs).
  int upstream_connect_timeout_ms = 5000;
  int upstream_first_byte_timeout_ms = 60000;
  int upstream_idle_timeout_ms = 60000;
  std::string upstream_ca_file;

  // Every variable of the process but the secret ones (IsSecretVariable).
  EnvMap env;
  // DYAD_PROVIDER_<SLUG>_<FIELD>: the read-only source and fallback (§4).
  SecretEnv provider_env;
  // The other secret variables, which backends parse themselves
  // (AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, …).
  SecretEnv secret_env;
};

// `check_backend` (the CLI passes BackendRegistry::Check) runs once the
// generic settings and keys are read, before the admin token's: the
// backend's errors (ENCRYPTION_KEY for the keyring, AWS_REGION, …) come
// before a missing token's, as they always have.
using BackendCheck = std::function<Status(const Config&)>;
// What the configuration is read for: `serve` needs an admin token (or
// tokens file) outside dev mode; a command that serves nothing does not.
enum class ConfigUse { kServe, kCommand };
Result<Config> LoadConfig(const EnvMap& env, bool dev, const BackendCheck& check_backend = nullptr,
                          ConfigUse use = ConfigUse::kServe);

// True for 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104; false for anything
// else, including what is not an IP address.
bool IsLoopbackAddress(const std::string& host);

// Only where the data lives — GATEWAY_DATA_DIR, GATEWAY_DATABASE_URL,
// AUDIT_LOG_PATH — with the same defaults and checks; every other field keeps
// its default. For `backup` and `restore`, which need no key and no token.
Result<Config> LoadStorageConfig(const EnvMap& env);

// ENCRYPTION_KEY, ENCRYPTION_KEY_PREVIOUS, GATEWAY_ADMIN_API_KEY,
// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AZURE_CLIENT_SECRET, IDENTITY_HEADER
// (App Service's managed identity), VAULT_TOKEN, VAULT_SECRET_ID and DYAD_PROVIDER_*.
bool IsSecretVariable(std::string_view name);

// The DYAD_PROVIDER_* variables of `env`, as SecretBytes.
SecretEnv ProviderVariables(const EnvMap& env);

// Zeroes the values of the secret variables in the process environment and
// removes them (also from /proc/self/environ). Call once the configuration is
// loaded, before any thread starts: the environment is not thread-safe.
void ClearSecretVariables();

}  // namespace dyad
