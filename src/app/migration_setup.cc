#include "app/migration_setup.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <set>

#include "core/residency.h"
#include "core/secret_bytes.h"

namespace dyad {
namespace {

// The variables whose values the switch block prints: the gateway's and its
// backends' settings that are never secret and whose readers refuse user
// info in a URL. Every other variable, a secret or one this build does not
// know (GATEWAY_DATABASE_URL may carry a password), is printed by name.
bool ShownWithValue(const std::string& name) {
  static const std::set<std::string, std::less<>> kShown = {
      // core/config.cc
      "AUDIT_LOG_PATH", "ENCRYPTION_KEY_ID", "GATEWAY_ADMIN_TOKENS_FILE", "GATEWAY_ALLOW_PLAINTEXT",
      "GATEWAY_ALLOW_PLAINTEXT_UPSTREAM",
      "GATEWAY_BLOCKING_THREADS", "GATEWAY_DATA_DIR", "GATEWAY_HEADER_TIMEOUT_SECONDS", "GATEWAY_HOST",
      "GATEWAY_IDLE_TIMEOUT_SECONDS", "GATEWAY_LOG_FORMAT", "GATEWAY_LOG_LEVEL", "GATEWAY_MAX_BODY_BYTES",
      "GATEWAY_MAX_CONNECTIONS", "GATEWAY_PORT", "GATEWAY_UPSTREAM_CONNECT_TIMEOUT_MS",
      "GATEWAY_UPSTREAM_FIRST_BYTE_TIMEOUT_MS", "GATEWAY_UPSTREAM_IDLE_TIMEOUT_MS", "GATEWAY_UPSTREAM_TOTAL_TIMEOUT_MS",
      "GATEWAY_V1_MAX_CONCURRENT", "GATEWAY_V1_MAX_CONCURRENT_PER_CLIENT", "GATEWAY_V1_REFRESH_INTERVAL_MS",
      "GATEWAY_V1_THREADS", "GATEWAY_THREADS", "GATEWAY_TLS_CERT_FILE",
      "GATEWAY_TLS_CLIENT_CA_FILE", "GATEWAY_TLS_KEY_FILE", "KEY_ROTATION_ENABLED", "KEY_ROTATION_INTERVAL_HOURS",
      "KEY_ROTATION_MAX_ENCRYPTIONS", "KEY_ROTATION_SCHEDULE", "SECRETS_ALLOWED_REGIONS", "SECRETS_ALLOW_PLAINTEXT_BACKEND", "SECRETS_CACHE_ENABLED",
      "SECRETS_CACHE_MAX_SIZE", "SECRETS_CACHE_STALE_IF_ERROR_SECONDS", "SECRETS_CACHE_TTL_SECONDS",
      "SECRETS_CACHE_WARM", "SECRETS_CACHE_WARM_BLOCKS_READY", "SECRETS_ENCRYPTION_MODE", "SECRETS_FALLBACK_ENABLED",
      "SECRETS_FALLBACK_TO_ENV", "SECRETS_PREFIX", "SECRETS_PROVIDER",
      // backends/aws
      "AWS_CA_BUNDLE", "AWS_CONCURRENCY", "AWS_CONFIG_FILE", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL",
      "AWS_ENDPOINT_URL_KMS", "AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_ENDPOINT_URL_STS", "AWS_MAX_ATTEMPTS",
      "AWS_PROFILE", "AWS_REGION", "AWS_REQUEST_TIMEOUT_MS", "AWS_SECRETS_RECOVERY_WINDOW_DAYS",
      "AWS_SECRETS_REPLICA_REGIONS", "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME", "AWS_SHARED_CREDENTIALS_FILE",
      "AWS_WEB_IDENTITY_TOKEN_FILE",
      // backends/vault
      "VAULT_ADDR", "VAULT_APPROLE_MOUNT", "VAULT_AUTH_METHOD", "VAULT_AUTH_NAMESPACE", "VAULT_CACERT",
      "VAULT_CAPATH", "VAULT_CERT_MOUNT", "VAULT_CERT_ROLE", "VAULT_CLIENT_CERT", "VAULT_CLIENT_KEY",
      "VAULT_CLIENT_TIMEOUT", "VAULT_CONCURRENCY", "VAULT_DYNAMIC_PATHS", "VAULT_JWT_FILE", "VAULT_JWT_MOUNT",
      "VAULT_JWT_ROLE", "VAULT_K8S_MOUNT", "VAULT_K8S_ROLE", "VAULT_K8S_TOKEN_FILE", "VAULT_MAX_RETRIES",
      "VAULT_MOUNT_PATH", "VAULT_NAMESPACE", "VAULT_REDIRECT_HOSTS", "VAULT_SECRET_ID_FILE",
      "VAULT_TLS_SERVER_NAME", "VAULT_TOKEN_FILE", "VAULT_TRANSIT_MOUNT", "VAULT_TRANSIT_RETIRE",
      // backends/azure
      "AZURE_AUTH_METHOD", "AZURE_CA_BUNDLE", "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_CLIENT_ID",
      "AZURE_CONCURRENCY", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_KEY_VAULT_KEY_URL", "AZURE_KEY_VAULT_URL",
      "AZURE_MAX_RETRIES", "AZURE_PURGE_ON_DELETE", "AZURE_REQUEST_TIMEOUT_MS", "AZURE_TENANT_ID",
      "AZURE_VERIFY_CHALLENGE_RESOURCE"};
  return !IsSecretVariable(name) && kShown.count(name) > 0;
}

std::string SwitchLine(const std::string& name, const std::string& value, const std::string& where) {
  if (ShownWithValue(name)) return name + "=" + value;
  return name + (IsSecretVariable(name) ? "=<secret: the value in " : "=<not shown: the value in ") + where + ">";
}

// Refused before anything is opened: the target under the source's
// SECRETS_ALLOWED_REGIONS too (the backends' own checks, with the source's
// list), and a target whose store is the source's. Returns the route,
// "<source location> -> <target location>".
Result<std::string> CheckTargetLocation(const std::string& path, Config& target, const Config& source,
                           const BackendRegistry& backends) {
  if (source.allowed_regions) {
    std::optional<AllowedRegions> own = std::move(target.allowed_regions);
    target.allowed_regions = source.allowed_regions;
    Status held = backends.Check(target);
    target.allowed_regions = std::move(own);
    if (!held.ok()) {
      return MakeError(held.code(), path + ": the source's " + std::string(kAllowedRegionsVariable) +
                                        " holds the target too: " + held.error().message);
    }
  }
  DYAD_ASSIGN_OR_RETURN(std::string from, backends.StoreLocation(source));
  DYAD_ASSIGN_OR_RETURN(std::string to, backends.StoreLocation(target));
  if (from == to) {
    return MakeError(ErrorCode::kInvalidArgument, path + ": the target stores credentials where the source does (" +
                                                      to + "): choose another backend, location or SECRETS_PREFIX");
  }
  return from + " -> " + to;
}

}  // namespace

Result<TargetConfig> LoadTargetConfig(const std::string& path, const Config& source, const BackendRegistry& backends) {
  EnvMap env;
  if (Status s = MergeDotenvFile(path, env); !s.ok()) return MakeError(ErrorCode::kInvalidArgument, s.error().message);
  TargetConfig out;
  for (const auto& [name, value] : env) {
    out.switch_lines.push_back(SwitchLine(name, value, path));
  }
  if (!env.count("GATEWAY_DATA_DIR") && !env.count("GATEWAY_DATABASE_URL")) {
    for (const char* name : {"GATEWAY_DATA_DIR", "GATEWAY_DATABASE_URL"}) {
      if (auto it = source.env.find(name); it != source.env.end()) {
        env.emplace(name, it->second);
        out.switch_lines.push_back(SwitchLine(name, it->second, "the source's configuration") +
                                   "  # the source's, kept");
      }
    }
  }
  // The admin token is the target's `serve`'s business (the migration
  // serves nothing).
  auto check = [&backends](const Config& c) { return backends.Check(c); };
  auto config = LoadConfig(env, false, check, ConfigUse::kCommand);
  for (auto& [name, value] : env) {
    if (IsSecretVariable(name)) Cleanse(value);
  }
  if (!config.ok()) return MakeError(ErrorCode::kInvalidArgument, path + ": " + config.error().message);
  // SQLite: the same file; PostgreSQL: the same URL (shown without password).
  if (config->database_path != source.database_path ||
      (source.database_path.empty() && config->database_url != source.database_url)) {
    return MakeError(ErrorCode::kInvalidArgument,
                     path + ": GATEWAY_DATA_DIR / GATEWAY_DATABASE_URL: the target's registry database is '" +
                         DatabaseDisplayName(config->database_url) + "', the source's '" + DatabaseDisplayName(source.database_url) +
                         "': a migration keeps the registry (provider rows, key versions); set the same data dir or "
                         "leave both unset in " + path);
  }
  DYAD_ASSIGN_OR_RETURN(out.route, CheckTargetLocation(path, *config, source, backends));
  out.config = std::move(config).value();
  return out;
}

Result<std::unique_ptr<MigrationLock>> MigrationLock::Acquire(const std::string& data_dir, bool create) {
  const std::string path = data_dir + "/migrate.lock";
  // Never through a symbolic link (it would lock, or create, another file).
  int fd = ::open(path.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
  if (fd < 0 && errno == ENOENT && !create) return std::unique_ptr<MigrationLock>(new MigrationLock(-1));
  if (fd < 0 && errno == ELOOP) {
    return MakeError(ErrorCode::kFailedPrecondition, "refusing " + path + ": it is a symbolic link; remove it "
                                                     "(migrate makes its own lock file there)");
  }
  if (fd < 0) return MakeError(ErrorCode::kUnavailable, "cannot open " + path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return MakeError(ErrorCode::kFailedPrecondition, "refusing " + path + ": not a regular file; remove it");
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) {
      return MakeError(ErrorCode::kFailedPrecondition, "another `dyad-gateway migrate` is running on this data dir (" +
                                                           path + " is locked)");
    }
    return MakeError(ErrorCode::kUnavailable, "cannot lock " + path + ": " + std::strerror(err));
  }
  return std::unique_ptr<MigrationLock>(new MigrationLock(fd));
}

int64_t MigrationAdvisoryLockKey() {
  return 0x6479616400000002;
}

Result<std::unique_ptr<MigrationLock>> MigrationLock::AcquireOnPostgresql(const std::string& url,
                                                                          PgDb::Options options) {
  options.max_connections = 1;
  options.migrate = false;
  DYAD_ASSIGN_OR_RETURN(std::shared_ptr<PgDb> session, PgDb::Open(url, options));
  auto taken = session->With<bool>([](PgConnection& c) -> Result<bool> {
    DYAD_ASSIGN_OR_RETURN(PgRows rows, c.Query("SELECT pg_try_advisory_lock($1)", {MigrationAdvisoryLockKey()}));
    return rows.Bool(0, 0);
  });
  if (!taken.ok()) return taken.error();
  if (!*taken) {
    return MakeError(ErrorCode::kFailedPrecondition, "another `dyad-gateway migrate` is running on this registry (" +
                                                         session->display_name() + ": its advisory lock is held)");
  }
  auto lock = std::unique_ptr<MigrationLock>(new MigrationLock(-1));
  lock->session_ = std::move(session);
  return lock;
}

MigrationLock::~MigrationLock() {
  if (fd_ >= 0) ::close(fd_);
}
}  // namespace dyad
