#include "core/config.h"

#include <openssl/crypto.h>
#include <stdlib.h>

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <thread>

#include "core/cron.h"
#include "core/encoding.h"
#include "core/endpoint.h"
#include "core/ini.h"

namespace dyad {
namespace {

Error Bad(std::string_view var, std::string_view what) {
  return MakeError(ErrorCode::kInvalidArgument, std::string(var) + ": " + std::string(what));
}

const std::string* Find(const EnvMap& env, const std::string& name) {
  auto it = env.find(name);
  return it == env.end() ? nullptr : &it->second;
}

Status ReadBool(const EnvMap& env, const std::string& name, bool& out) {
  const std::string* v = Find(env, name);
  if (!v) return OkStatus();
  std::string s;
  for (char c : *v) s.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  if (s == "true" || s == "1" || s == "yes" || s == "on") out = true;
  else if (s == "false" || s == "0" || s == "no" || s == "off") out = false;
  else return Bad(name, "'" + *v + "' is not a boolean; use true or false");
  return OkStatus();
}

template <typename Int>
Status ReadInt(const EnvMap& env, const std::string& name, long long min, long long max,
               Int& out) {
  const std::string* v = Find(env, name);
  if (!v) return OkStatus();
  long long n = 0;
  auto [ptr, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
  if (v->empty() || ec != std::errc() || ptr != v->data() + v->size() || n < min || n > max) {
    return Bad(name, "'" + *v + "' is not valid; use an integer from " + std::to_string(min) +
                         " to " + std::to_string(max));
  }
  out = static_cast<Int>(n);
  return OkStatus();
}

Status ReadOneOf(const EnvMap& env, const std::string& name,
                 std::initializer_list<std::string_view> allowed, std::string& out) {
  const std::string* v = Find(env, name);
  if (!v) return OkStatus();
  std::string accepted;
  for (auto a : allowed) {
    if (*v == a) {
      out = *v;
      return OkStatus();
    }
    accepted += (accepted.empty() ? "" : ", ") + std::string(a);
  }
  return Bad(name, "'" + *v + "' is not one of: " + accepted);
}

// A 256-bit key as 64 hex characters. The value is never echoed.
Result<SecretBytes> ParseHexKey(std::string_view name, std::string_view value) {
  if (value.size() != 64) {
    return Bad(name, "must be 64 hexadecimal characters (a 256-bit key); got " +
                         std::to_string(value.size()) + " characters");
  }
  auto raw = HexDecode(value);
  if (!raw) return Bad(name, "must be 64 hexadecimal characters (0-9, a-f); found another character");
  SecretBytes key(*raw);
  Cleanse(*raw);
  return key;
}

Status ReadDatabase(const EnvMap& env, Config& c) {
  const std::string* url = Find(env, "GATEWAY_DATABASE_URL");
  c.database_url = url ? *url : "sqlite://" + c.data_dir + "/gateway.db";
  constexpr std::string_view kSqlite = "sqlite://";
  if (c.database_url.rfind(kSqlite, 0) == 0) {
    c.database_path = c.database_url.substr(kSqlite.size());
    if (c.database_path.empty()) {
      return Bad("GATEWAY_DATABASE_URL", "the sqlite:// URL needs a file path, e.g. sqlite://./data/gateway.db");
    }
    return OkStatus();
  }
  if (c.database_url.rfind("postgresql://", 0) == 0 || c.database_url.rfind("postgres://", 0) == 0) {
    return Bad("GATEWAY_DATABASE_URL", "postgresql:// (cluster mode) is not available in this build yet; use sqlite://PATH");
  }
  return Bad("GATEWAY_DATABASE_URL", "unsupported scheme; use sqlite://PATH");
}

Status ReadKeys(const EnvMap& env, Config& c) {
  if (const std::string* v = Find(env, "ENCRYPTION_KEY_ID")) {
    if (v->empty() || v->size() > 256) return Bad("ENCRYPTION_KEY_ID", "must be 1 to 256 characters");
    c.encryption_key_id = *v;
  }
  if (const std::string* v = Find(env, "ENCRYPTION_KEY")) {
    DYAD_ASSIGN_OR_RETURN(SecretBytes key, ParseHexKey("ENCRYPTION_KEY", *v));
    c.encryption_key = std::move(key);
  }
  if (const std::string* v = Find(env, "ENCRYPTION_KEY_PREVIOUS"); v && !v->empty()) {
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
  if (c.secrets_provider == "environment" && !c.encryption_key && !c.dev) {
    return Bad("ENCRYPTION_KEY", "is required when SECRETS_PROVIDER=environment; set 64 hex characters "
                                 "(e.g. from `openssl rand -hex 32`) or run `serve --dev`");
  }
  return OkStatus();
}

// `region` of the AWS_PROFILE (default) profile in AWS_CONFIG_FILE or ~/.aws/config.
std::optional<std::string> ProfileRegion(const EnvMap& env) {
  const std::string* file = Find(env, "AWS_CONFIG_FILE");
  const std::string* home = Find(env, "HOME");
  std::string path = file && !file->empty() ? *file : home && !home->empty() ? *home + "/.aws/config" : "";
  if (path.empty()) return std::nullopt;
  auto text = ReadSmallFile(path);
  if (!text.ok()) return std::nullopt;
  const std::string* p = Find(env, "AWS_PROFILE");
  std::string profile = p && !p->empty() ? *p : "default";
  return IniValue(*text, profile == "default" ? profile : "profile " + profile, "region");
}

Status ReadEndpoint(const EnvMap& env, const std::string& specific, const std::string& service,
                    const std::string& region, std::string& out) {
  const std::string* v = Find(env, specific);
  std::string name = specific;
  if (!v || v->empty()) {
    v = Find(env, "AWS_ENDPOINT_URL");
    name = "AWS_ENDPOINT_URL";
  }
  if (!v || v->empty()) {
    out = "https://" + service + "." + region + ".amazonaws.com";
    return OkStatus();
  }
  auto endpoint = ParseEndpoint(*v);
  if (!endpoint) return Bad(name, "'" + *v + "' is not an endpoint URL; use https://host[:port] (no path)");
  out = endpoint->url;
  return OkStatus();
}

Status ReadAws(const EnvMap& env, AwsSettings& aws) {
  for (const char* name : {"AWS_REGION", "AWS_DEFAULT_REGION"}) {
    if (const std::string* v = Find(env, name); v && !v->empty() && aws.region.empty()) aws.region = *v;
  }
  if (aws.region.empty()) {
    if (auto r = ProfileRegion(env)) aws.region = *r;
  }
  if (aws.region.empty()) {
    return Bad("AWS_REGION", "is required when SECRETS_PROVIDER=aws (or AWS_DEFAULT_REGION, or region in the "
                             "profile of ~/.aws/config), e.g. us-east-1");
  }
  bool region_ok = aws.region.size() <= 64;
  for (char ch : aws.region) region_ok = region_ok && (std::isalnum(static_cast<unsigned char>(ch)) || ch == '-');
  if (!region_ok) return Bad("AWS_REGION", "'" + aws.region + "' is not a region name such as us-east-1");
  DYAD_RETURN_IF_ERROR(ReadEndpoint(env, "AWS_ENDPOINT_URL_SECRETS_MANAGER", "secretsmanager", aws.region,
                                    aws.endpoint_secrets_manager));
  DYAD_RETURN_IF_ERROR(ReadEndpoint(env, "AWS_ENDPOINT_URL_KMS", "kms", aws.region, aws.endpoint_kms));
  DYAD_RETURN_IF_ERROR(ReadEndpoint(env, "AWS_ENDPOINT_URL_STS", "sts", aws.region, aws.endpoint_sts));
  if (const std::string* v = Find(env, "AWS_CA_BUNDLE")) aws.ca_bundle = *v;
  DYAD_RETURN_IF_ERROR(ReadInt(env, "AWS_MAX_ATTEMPTS", 1, 10, aws.max_attempts));
  DYAD_RETURN_IF_ERROR(ReadInt(env, "AWS_SECRETS_RECOVERY_WINDOW_DAYS", 7, 30, aws.recovery_window_days));
  DYAD_RETURN_IF_ERROR(ReadInt(env, "AWS_REQUEST_TIMEOUT_MS", 100, 120000, aws.timeout_ms));
  DYAD_RETURN_IF_ERROR(ReadInt(env, "AWS_CONCURRENCY", 1, 64, aws.concurrency));
  return OkStatus();
}

// The schedule, parsed in full so that a bad one stops the start; generated
// from the interval when unset.
Status ReadSchedule(const EnvMap& env, Config& c) {
  const std::string* v = Find(env, "KEY_ROTATION_SCHEDULE");
  if (!v || v->empty()) {
    c.key_rotation_schedule = CronSchedule::FromIntervalHours(c.key_rotation_interval_hours);
    c.key_rotation_schedule_generated = true;
    return OkStatus();
  }
  auto parsed = CronSchedule::Parse(*v);
  if (!parsed.ok()) {
    return Bad("KEY_ROTATION_SCHEDULE", "'" + *v + "' is not a valid cron expression: " + parsed.error().message +
                                            " (5 fields, UTC: minute hour day-of-month month day-of-week)");
  }
  c.key_rotation_schedule = *v;
  return OkStatus();
}

Status ReadAdmin(const EnvMap& env, Config& c) {
  if (const std::string* v = Find(env, "GATEWAY_ADMIN_API_KEY"); v && !v->empty()) {
    if (v->size() < 16) return Bad("GATEWAY_ADMIN_API_KEY", "must be at least 16 characters");
    c.admin_api_key = SecretBytes(*v);
  }
  if (const std::string* v = Find(env, "GATEWAY_ADMIN_TOKENS_FILE")) c.admin_tokens_file = *v;
  if (!c.admin_api_key && c.admin_tokens_file.empty() && !c.dev) {
    return Bad("GATEWAY_ADMIN_API_KEY", "is required (or GATEWAY_ADMIN_TOKENS_FILE); the admin API "
                                        "never runs without a token outside `serve --dev`");
  }
  return OkStatus();
}

}  // namespace

bool IsSecretVariable(std::string_view name) {
  static constexpr std::string_view kSecret[] = {"ENCRYPTION_KEY", "ENCRYPTION_KEY_PREVIOUS", "GATEWAY_ADMIN_API_KEY",
                                                 "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_CLIENT_SECRET",
                                                 "VAULT_TOKEN"};
  return name.starts_with("DYAD_PROVIDER_") || std::find(std::begin(kSecret), std::end(kSecret), name) != std::end(kSecret);
}

SecretEnv ProviderVariables(const EnvMap& env) {
  SecretEnv out;
  for (const auto& [name, value] : env) {
    if (name.starts_with("DYAD_PROVIDER_")) out.emplace(name, SecretBytes(value));
  }
  return out;
}

void ClearSecretVariables() {
  std::vector<std::string> names;
  for (char** e = ::environ; e && *e; ++e) {
    std::string_view entry(*e);
    auto eq = entry.find('=');
    if (eq == std::string_view::npos || !IsSecretVariable(entry.substr(0, eq))) continue;
    names.emplace_back(entry.substr(0, eq));
    // In place: the initial environment lives on the stack, where unsetenv
    // would leave the bytes (and /proc/PID/environ shows them).
    OPENSSL_cleanse(*e + eq + 1, entry.size() - eq - 1);
  }
  for (const auto& name : names) ::unsetenv(name.c_str());
}

Result<Config> LoadConfig(const EnvMap& env, bool dev) {
  Config c;
  c.dev = dev;
  for (const auto& [name, value] : env) {
    if (!IsSecretVariable(name)) c.env.emplace(name, value);
  }
  c.provider_env = ProviderVariables(env);
  if (const std::string* v = Find(env, "AWS_SECRET_ACCESS_KEY")) c.aws.secret_access_key = SecretBytes(*v);
  if (const std::string* v = Find(env, "AWS_SESSION_TOKEN")) c.aws.session_token = SecretBytes(*v);
  DYAD_RETURN_IF_ERROR(ReadOneOf(env, "SECRETS_PROVIDER", {"aws", "azure", "vault", "environment"},
                                 c.secrets_provider));
  if (c.secrets_provider != "environment" && c.secrets_provider != "aws") {
    return Bad("SECRETS_PROVIDER", "'" + c.secrets_provider +
                                       "' is not available in this build yet; use environment or aws");
  }
  DYAD_RETURN_IF_ERROR(ReadOneOf(env, "SECRETS_ENCRYPTION_MODE", {"envelope", "provider"},
                                 c.encryption_mode));
  if (c.encryption_mode == "provider" && c.secrets_provider == "environment") {
    return Bad("SECRETS_ENCRYPTION_MODE", "provider relies on the store's own encryption, which the environment "
                                          "provider does not have; use envelope, or SECRETS_PROVIDER=aws");
  }
  if (const std::string* v = Find(env, "SECRETS_PREFIX")) {
    // AWS Secrets Manager names allow letters, digits and /_+=.@- (the
    // tightest of the stores the prefix is used with, Azure aside).
    bool ok = !v->empty() && v->size() <= 128;
    for (char ch : *v) {
      ok = ok && (std::isalnum(static_cast<unsigned char>(ch)) || std::string_view("/_+=.@-").find(ch) != std::string_view::npos);
    }
    if (!ok) return Bad("SECRETS_PREFIX", "use 1 to 128 characters of letters, digits and /_+=.@-");
    c.secrets_prefix = *v;
  }
  if (c.secrets_provider == "aws") DYAD_RETURN_IF_ERROR(ReadAws(env, c.aws));
  DYAD_RETURN_IF_ERROR(ReadBool(env, "KEY_ROTATION_ENABLED", c.key_rotation_enabled));
  DYAD_RETURN_IF_ERROR(ReadInt(env, "KEY_ROTATION_INTERVAL_HOURS", 1, 24 * 366, c.key_rotation_interval_hours));
  DYAD_RETURN_IF_ERROR(ReadSchedule(env, c));
  DYAD_RETURN_IF_ERROR(ReadInt(env, "KEY_ROTATION_MAX_ENCRYPTIONS", 1000, 4294967295LL, c.key_rotation_max_encryptions));
  DYAD_RETURN_IF_ERROR(ReadBool(env, "SECRETS_CACHE_ENABLED", c.cache_enabled));
  DYAD_RETURN_IF_ERROR(ReadInt(env, "SECRETS_CACHE_TTL_SECONDS", 1, 86400, c.cache_ttl_seconds));
  DYAD_RETURN_IF_ERROR(ReadInt(env, "SECRETS_CACHE_MAX_SIZE", 1, 1000000, c.cache_max_size));
  DYAD_RETURN_IF_ERROR(ReadInt(env, "SECRETS_CACHE_STALE_IF_ERROR_SECONDS", 0, 7 * 86400,
                               c.cache_stale_if_error_seconds));
  DYAD_RETURN_IF_ERROR(ReadBool(env, "SECRETS_FALLBACK_ENABLED", c.fallback_enabled));
  DYAD_RETURN_IF_ERROR(ReadBool(env, "SECRETS_FALLBACK_TO_ENV", c.fallback_to_env));
  DYAD_RETURN_IF_ERROR(ReadOneOf(env, "GATEWAY_LOG_LEVEL",
                                 {"trace", "debug", "info", "warn", "error", "critical", "off"},
                                 c.log_level));
  if (const std::string* v = Find(env, "GATEWAY_HOST")) {
    if (v->empty()) return Bad("GATEWAY_HOST", "must be an IP address such as 127.0.0.1");
    c.host = *v;
  }
  DYAD_RETURN_IF_ERROR(ReadInt(env, "GATEWAY_PORT", 0, 65535, c.port));
  if (const std::string* v = Find(env, "GATEWAY_DATA_DIR")) {
    if (v->empty()) return Bad("GATEWAY_DATA_DIR", "must be a directory path");
    c.data_dir = *v;
  }
  DYAD_RETURN_IF_ERROR(ReadDatabase(env, c));
  const std::string* audit = Find(env, "AUDIT_LOG_PATH");
  c.audit_log_path = audit && !audit->empty() ? *audit : c.data_dir + "/audit.log";
  DYAD_RETURN_IF_ERROR(ReadInt(env, "GATEWAY_MAX_BODY_BYTES", 1024, 64 << 20, c.max_body_bytes));
  DYAD_RETURN_IF_ERROR(ReadInt(env, "GATEWAY_HEADER_TIMEOUT_SECONDS", 1, 3600, c.header_timeout_seconds));
  DYAD_RETURN_IF_ERROR(ReadInt(env, "GATEWAY_IDLE_TIMEOUT_SECONDS", 1, 3600, c.idle_timeout_seconds));
  DYAD_RETURN_IF_ERROR(ReadInt(env, "GATEWAY_THREADS", 0, 256, c.threads));
  DYAD_RETURN_IF_ERROR(ReadInt(env, "GATEWAY_MAX_CONNECTIONS", 1, 1000000, c.max_connections));
  DYAD_RETURN_IF_ERROR(ReadInt(env, "GATEWAY_BLOCKING_THREADS", 1, 1024, c.blocking_threads));
  if (c.threads == 0) c.threads = static_cast<int>(std::max(2u, std::thread::hardware_concurrency()));
  DYAD_RETURN_IF_ERROR(ReadKeys(env, c));
  DYAD_RETURN_IF_ERROR(ReadAdmin(env, c));
  return c;
}

}  // namespace dyad
