#include "core/config.h"

#include <openssl/crypto.h>
#include <stdlib.h>

#include <arpa/inet.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "core/cron.h"
#include "core/encoding.h"
#include "core/env_vars.h"

namespace dyad {
namespace {

// A 256-bit key as 64 hex characters. The value is never echoed.
Result<SecretBytes> ParseHexKey(std::string_view name, std::string_view value) {
  if (value.size() != 64) {
    return BadVariable(name, "must be 64 hexadecimal characters (a 256-bit key); got " +
                                 std::to_string(value.size()) + " characters");
  }
  auto raw = HexDecode(value);
  if (!raw) return BadVariable(name, "must be 64 hexadecimal characters (0-9, a-f); found another character");
  SecretBytes key(*raw);
  Cleanse(*raw);
  return key;
}

Status ReadDatabase(const EnvMap& env, Config& c) {
  const std::string* url = FindVariable(env, "GATEWAY_DATABASE_URL");
  c.database_url = url ? *url : "sqlite://" + c.data_dir + "/gateway.db";
  constexpr std::string_view kSqlite = "sqlite://";
  if (c.database_url.rfind(kSqlite, 0) == 0) {
    c.database_path = c.database_url.substr(kSqlite.size());
    if (c.database_path.empty()) {
      return BadVariable("GATEWAY_DATABASE_URL", "the sqlite:// URL needs a file path, e.g. sqlite://./data/gateway.db");
    }
    return OkStatus();
  }
  // Cluster mode: libpq reads the rest (host, port, sslmode, the password or
  // PGPASSFILE) when the database is opened (registry/database.h); nothing
  // of it is repeated here.
  if (c.database_url.rfind("postgresql://", 0) == 0 || c.database_url.rfind("postgres://", 0) == 0) {
    return OkStatus();
  }
  return BadVariable("GATEWAY_DATABASE_URL", "unsupported scheme; use sqlite://PATH or postgresql://USER@HOST:PORT/DB");
}

Status ReadStorage(const EnvMap& env, Config& c) {
  if (const std::string* v = FindVariable(env, "GATEWAY_DATA_DIR")) {
    if (v->empty()) return BadVariable("GATEWAY_DATA_DIR", "must be a directory path");
    c.data_dir = *v;
  }
  DYAD_RETURN_IF_ERROR(ReadDatabase(env, c));
  const std::string* audit = FindVariable(env, "AUDIT_LOG_PATH");
  c.audit_log_path = audit && !audit->empty() ? *audit : c.data_dir + "/audit.log";
  if (const std::string* v = FindVariable(env, "AUDIT_LOG_ORIGIN")) {
    constexpr size_t kMax = 256;
    const bool printable = std::all_of(v->begin(), v->end(), [](char ch) { return ch >= 0x20 && ch < 0x7f; });
    if (v->empty() || v->size() > kMax || !printable || v->front() == ' ' || v->back() == ' ') {
      return BadVariable("AUDIT_LOG_ORIGIN", "must be 1 to 256 printable ASCII characters without leading or "
                                             "trailing spaces (e.g. gateway-a:/var/lib/dyad/audit.log), or unset");
    }
    c.audit_log_origin = *v;
  }
  return OkStatus();
}

Status ReadKeys(const EnvMap& env, Config& c) {
  if (const std::string* v = FindVariable(env, "ENCRYPTION_KEY_ID")) {
    if (v->empty() || v->size() > 256) return BadVariable("ENCRYPTION_KEY_ID", "must be 1 to 256 characters");
    c.encryption_key_id = *v;
  }
  if (const std::string* v = FindVariable(env, "ENCRYPTION_KEY")) {
    DYAD_ASSIGN_OR_RETURN(SecretBytes key, ParseHexKey("ENCRYPTION_KEY", *v));
    c.encryption_key = std::move(key);
  }
  if (const std::string* v = FindVariable(env, "ENCRYPTION_KEY_PREVIOUS"); v && !v->empty()) {
    std::string_view rest = *v;
    int index = 0;
    while (true) {
      auto comma = rest.find(',');
      std::string_view item = rest.substr(0, comma);
      auto key = ParseHexKey("ENCRYPTION_KEY_PREVIOUS (entry " + std::to_string(++index) + ")", item);
      if (!key.ok()) return key.error();
      c.encryption_key_previous.push_back(std::move(key).value());
      if (comma == std::string_view::npos) break;
      rest = rest.substr(comma + 1);
    }
  }
  return OkStatus();
}

// The schedule, parsed in full so that a bad one stops the start; when unset
// the interval (KEY_ROTATION_INTERVAL_HOURS) is the timing.
Status ReadSchedule(const EnvMap& env, Config& c) {
  const std::string* v = FindVariable(env, "KEY_ROTATION_SCHEDULE");
  if (!v || v->empty()) return OkStatus();
  auto parsed = CronSchedule::Parse(*v);
  if (!parsed.ok()) {
    return BadVariable("KEY_ROTATION_SCHEDULE", "'" + *v + "' is not a valid cron expression: " + parsed.error().message +
                                                    " (5 fields, UTC: minute hour day-of-month month day-of-week)");
  }
  c.key_rotation_schedule = *v;
  return OkStatus();
}

Status ReadAdmin(const EnvMap& env, Config& c, ConfigUse use) {
  if (const std::string* v = FindVariable(env, "GATEWAY_ADMIN_API_KEY"); v && !v->empty()) {
    if (v->size() < 16) return BadVariable("GATEWAY_ADMIN_API_KEY", "must be at least 16 characters");
    c.admin_api_key = SecretBytes(*v);
  }
  if (use == ConfigUse::kCommand) return OkStatus();  // it serves nothing: no tokens file is read
  if (const std::string* v = FindVariable(env, "GATEWAY_ADMIN_TOKENS_FILE")) c.admin_tokens_file = *v;
  if (const std::string* v = FindVariable(env, "GATEWAY_CLIENT_API_KEYS_FILE")) c.client_api_keys_file = *v;
  if (!c.admin_api_key && c.admin_tokens_file.empty() && !c.dev) {
    return BadVariable("GATEWAY_ADMIN_API_KEY", "is required (or GATEWAY_ADMIN_TOKENS_FILE); the admin API "
                                                "never runs without a token outside `serve --dev`");
  }
  return OkStatus();
}

// GATEWAY_HOST must be an IP address; one that is not loopback is served
// only over TLS, or in plain text when GATEWAY_ALLOW_PLAINTEXT=true (behind a
// TLS-terminating proxy): bearer tokens would otherwise cross the network in
// clear.
Status ReadListener(const EnvMap& env, Config& c) {
  if (const std::string* v = FindVariable(env, "GATEWAY_HOST")) {
    if (v->empty()) return BadVariable("GATEWAY_HOST", "must be an IP address such as 127.0.0.1");
    c.host = *v;
  }
  unsigned char buf[sizeof(in6_addr)];
  if (inet_pton(AF_INET, c.host.c_str(), buf) != 1 && inet_pton(AF_INET6, c.host.c_str(), buf) != 1) {
    return BadVariable("GATEWAY_HOST", "'" + c.host + "' is not an IP address; use e.g. 127.0.0.1 or ::1");
  }
  const std::string* cert = FindVariable(env, "GATEWAY_TLS_CERT_FILE");
  const std::string* key = FindVariable(env, "GATEWAY_TLS_KEY_FILE");
  const std::string* ca = FindVariable(env, "GATEWAY_TLS_CLIENT_CA_FILE");
  // Present but empty (a template that did not expand) is refused, not read
  // as unset: an empty client CA would turn mTLS off without a word.
  for (const auto& [name, value] : {std::pair{"GATEWAY_TLS_CERT_FILE", cert}, std::pair{"GATEWAY_TLS_KEY_FILE", key},
                                    std::pair{"GATEWAY_TLS_CLIENT_CA_FILE", ca}}) {
    if (value && value->empty()) return BadVariable(name, "is set but empty: give a PEM file path, or unset it");
  }
  bool has_cert = cert != nullptr, has_key = key != nullptr, has_ca = ca != nullptr;
  if (has_cert && !has_key) return BadVariable("GATEWAY_TLS_KEY_FILE", "is required with GATEWAY_TLS_CERT_FILE (the certificate's private key, PEM)");
  if (has_key && !has_cert) return BadVariable("GATEWAY_TLS_CERT_FILE", "is required with GATEWAY_TLS_KEY_FILE (the certificate chain, PEM)");
  if (has_ca && !has_cert) {
    return BadVariable("GATEWAY_TLS_CLIENT_CA_FILE", "needs GATEWAY_TLS_CERT_FILE and GATEWAY_TLS_KEY_FILE: client "
                                                     "certificates are asked for only over TLS");
  }
  if (has_cert) c.tls = TlsFiles{*cert, *key, has_ca ? *ca : ""};
  DYAD_RETURN_IF_ERROR(ReadBoolVariable(env, "GATEWAY_ALLOW_PLAINTEXT", c.allow_plaintext));
  if (!c.tls.enabled() && !c.allow_plaintext && !IsLoopbackAddress(c.host)) {
    return BadVariable("GATEWAY_HOST", "'" + c.host + "' is not a loopback address and GATEWAY_TLS_CERT_FILE is not "
                                       "set: bearer tokens would cross the network in clear; set GATEWAY_TLS_CERT_FILE "
                                       "and GATEWAY_TLS_KEY_FILE, or GATEWAY_ALLOW_PLAINTEXT=true behind a TLS proxy");
  }
  return OkStatus();
}

// The secret variables parsed here rather than by a backend.
bool IsCoreSecretVariable(std::string_view name) {
  return name.starts_with("DYAD_PROVIDER_") || name == "ENCRYPTION_KEY" || name == "ENCRYPTION_KEY_PREVIOUS" ||
         name == "GATEWAY_ADMIN_API_KEY";
}

}  // namespace

bool IsSecretVariable(std::string_view name) {
  static constexpr std::string_view kSecret[] = {"ENCRYPTION_KEY", "ENCRYPTION_KEY_PREVIOUS", "GATEWAY_ADMIN_API_KEY",
                                                 "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_CLIENT_SECRET",
                                                 "IDENTITY_HEADER", "VAULT_TOKEN", "VAULT_SECRET_ID"};
  return name.starts_with("DYAD_PROVIDER_") || std::find(std::begin(kSecret), std::end(kSecret), name) != std::end(kSecret);
}

bool IsLoopbackAddress(const std::string& host) {
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, host.c_str(), &v6) != 1) return false;
  if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
  return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
}

SecretEnv ProviderVariables(const EnvMap& env) {
  SecretEnv out;
  for (const auto& [name, value] : env) {
    if (name.starts_with("DYAD_PROVIDER_")) out.emplace(name, SecretBytes(value));
  }
  return out;
}

namespace {

// Zeroes, in place, all a PostgreSQL URL holds after its scheme: libpq
// takes a password in its user info (up to the last '@' before a '/',
// whatever comes between) or as a parameter (percent-encoded names too),
// and Config keeps its own copy. An SQLite URL holds none: kept.
void CleanseDatabaseUrl(char* url, size_t size) {
  std::string_view u(url, size);
  for (std::string_view scheme : {"postgresql://", "postgres://"}) {
    if (u.starts_with(scheme)) OPENSSL_cleanse(url + scheme.size(), size - scheme.size());
  }
}

}  // namespace

void ClearSecretVariables() {
  std::vector<std::string> names;
  for (char** e = ::environ; e && *e; ++e) {
    std::string_view entry(*e);
    auto eq = entry.find('=');
    if (eq != std::string_view::npos && entry.substr(0, eq) == "GATEWAY_DATABASE_URL") {
      // Read already (Config::database_url); /proc/PID/environ would show it.
      CleanseDatabaseUrl(*e + eq + 1, entry.size() - eq - 1);
      continue;
    }
    if (eq == std::string_view::npos || !IsSecretVariable(entry.substr(0, eq))) continue;
    names.emplace_back(entry.substr(0, eq));
    // In place: the initial environment lives on the stack, where unsetenv
    // would leave the bytes (and /proc/PID/environ shows them).
    OPENSSL_cleanse(*e + eq + 1, entry.size() - eq - 1);
  }
  for (const auto& name : names) ::unsetenv(name.c_str());
}

Result<Config> LoadConfig(const EnvMap& env, bool dev, const BackendCheck& check_backend, ConfigUse use) {
  Config c;
  c.dev = dev;
  for (const auto& [name, value] : env) {
    if (!IsSecretVariable(name)) c.env.emplace(name, value);
  }
  c.provider_env = ProviderVariables(env);
  for (const auto& [name, value] : env) {
    if (IsSecretVariable(name) && !IsCoreSecretVariable(name)) c.secret_env.emplace(name, SecretBytes(value));
  }
  // Which backends there are, and what each accepts (SECRETS_PREFIX,
  // provider mode, its own variables), is the backend registry's to say.
  if (const std::string* v = FindVariable(env, "SECRETS_PROVIDER")) c.secrets_provider = *v;
  DYAD_RETURN_IF_ERROR(ReadOneOfVariable(env, "SECRETS_ENCRYPTION_MODE", {"envelope", "provider"},
                                         c.encryption_mode));
  if (const std::string* v = FindVariable(env, "SECRETS_PREFIX")) c.secrets_prefix = *v;
  DYAD_ASSIGN_OR_RETURN(c.allowed_regions, ReadAllowedRegions(env));
  DYAD_RETURN_IF_ERROR(ReadBoolVariable(env, "KEY_ROTATION_ENABLED", c.key_rotation_enabled));
  DYAD_RETURN_IF_ERROR(ReadIntVariable(env, "KEY_ROTATION_INTERVAL_HOURS", 1, 24 * 366, c.key_rotation_interval_hours));
  DYAD_RETURN_IF_ERROR(ReadSchedule(env, c));
  DYAD_RETURN_IF_ERROR(ReadIntVariable(env, "KEY_ROTATION_MAX_ENCRYPTIONS", 1000, 4294967295LL, c.key_rotation_max_encryptions));
  DYAD_RETURN_IF_ERROR(ReadBoolVariable(env, "SECRETS_CACHE_ENABLED", c.cache_enabled));
  DYAD_RETURN_IF_ERROR(ReadIntVariable(env, "SECRETS_CACHE_TTL_SECONDS", 1, 86400, c.cache_ttl_seconds));
  DYAD_RETURN_IF_ERROR(ReadIntVariable(env, "SECRETS_CACHE_MAX_SIZE", 1, 1000000, c.cache_max_size));
  DYAD_RETURN_IF_ERROR(ReadIntVariable(env, "SECRETS_CACHE_STALE_IF_ERROR_SECONDS", 0, 7 * 86400,
                                       c.cache_stale_if_error_seconds));
  DYAD_RETURN_IF_ERROR(ReadBoolVariable(env, "SECRETS_FALLBACK_ENABLED", c.fallback_enabled));
  DYAD_RETURN_IF_ERROR(ReadBoolVariable(env, "SECRETS_FALLBACK_TO_ENV", c.fallback_to_env));
  DYAD_RETURN_IF_ERROR(ReadOneOfVariable(env, "GATEWAY_LOG_LEVEL",
                                         {"trace", "debug", "info", "warn", "error", "critical", "off"},
                                         c.log_level));
  DYAD_RETURN_IF_ERROR(ReadListener(env, c));
  DYAD_RETURN_IF_ERROR(ReadOneOfVariable(env, "GATEWAY_LOG_FORMAT", {"text", "json"}, c.log_format));
  DYAD_RETURN_IF_ERROR(ReadBoolVariable(env, "GATEWAY_ALLOW_PLAINTEXT_UPSTREAM", c.allow_plaintext_upstream));
  DYAD_RETURN_IF_ERROR(ReadBoolVariable(env, "SECRETS_CACHE_WARM", c.cache_warm));
  DYAD_RETURN_IF_ERROR(ReadBoolVariable(env, "SECRETS_CACHE_WARM_BLOCKS_READY", c.cache_warm_blocks_ready));
  DYAD_RETURN_IF_ERROR(ReadIntVariable(env, "GATEWAY_PORT", 0, 65535, c.port));
  DYAD_RETURN_IF_ERROR(ReadStorage(env, c));
  DYAD_RETURN_IF_ERROR(ReadIntVariable(env, "GATEWAY_MAX_BODY_BYTES", 1024, 64 << 20, c.max_body_bytes));
  DYAD_RETURN_IF_ERROR(ReadIntVariable(env, "GATEWAY_HEADER_TIMEOUT_SECONDS", 1, 3600, c.header_timeout_seconds));
  DYAD_RETURN_IF_ERROR(ReadIntVariable(env, "GATEWAY_IDLE_TIMEOUT_SECONDS", 1, 3600, c.idle_timeout_seconds));
  DYAD_RETURN_IF_ERROR(ReadIntVariable(env, "GATEWAY_THREADS", 0, 256, c.threads));
  DYAD_RETURN_IF_ERROR(ReadIntVariable(env, "GATEWAY_MAX_CONNECTIONS", 1, 1000000, c.max_connections));
  DYAD_RETURN_IF_ERROR(ReadIntVariable(env, "GATEWAY_BLOCKING_THREADS", 1, 1024, c.blocking_threads));
  DYAD_RETURN_IF_ERROR(ReadIntVariable(env, "GATEWAY_UPSTREAM_CONNECT_TIMEOUT_MS", 1, 600000,
                                       c.upstream_connect_timeout_ms));
  DYAD_RETURN_IF_ERROR(ReadIntVariable(env, "GATEWAY_UPSTREAM_FIRST_BYTE_TIMEOUT_MS", 1, 3600000,
                                       c.upstream_first_byte_timeout_ms));
  DYAD_RETURN_IF_ERROR(ReadIntVariable(env, "GATEWAY_UPSTREAM_IDLE_TIMEOUT_MS", 1, 3600000, c.upstream_idle_timeout_ms));
  if (const std::string* v = FindVariable(env, "GATEWAY_UPSTREAM_CA_FILE")) c.upstream_ca_file = *v;
  if (c.threads == 0) c.threads = static_cast<int>(std::max(2u, std::thread::hardware_concurrency()));
  DYAD_RETURN_IF_ERROR(ReadKeys(env, c));
  if (check_backend) DYAD_RETURN_IF_ERROR(check_backend(c));
  DYAD_RETURN_IF_ERROR(ReadAdmin(env, c, use));
  return c;
}

Result<Config> LoadStorageConfig(const EnvMap& env) {
  Config c;
  DYAD_RETURN_IF_ERROR(ReadStorage(env, c));
  return c;
}

}  // namespace dyad
