#include "app/migration_setup.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/secret_bytes.h"

namespace dyad {
namespace {

// Printed as a name only: the seed's secret variables, and anything whose
// name says it is one.
bool ShownAsNameOnly(const std::string& name) {
  if (IsSecretVariable(name)) return true;
  for (const char* end : {"SECRET", "_TOKEN", "PASSWORD", "_SECRET_ID", "_KEY"}) {
    if (name.ends_with(end) && name != "ENCRYPTION_KEY_ID") return true;
  }
  return name.find("SECRET_ACCESS") != std::string::npos || name.find("PRIVATE") != std::string::npos;
}

}  // namespace

Result<TargetConfig> LoadTargetConfig(const std::string& path, const Config& source, const BackendRegistry& backends) {
  EnvMap env;
  if (Status s = MergeDotenvFile(path, env); !s.ok()) return MakeError(ErrorCode::kInvalidArgument, s.error().message);
  TargetConfig out;
  for (const auto& [name, value] : env) {
    out.switch_lines.push_back(ShownAsNameOnly(name) ? name + "=<secret: the value in " + path + ">" : name + "=" + value);
  }
  if (!env.count("GATEWAY_DATA_DIR") && !env.count("GATEWAY_DATABASE_URL")) {
    for (const char* name : {"GATEWAY_DATA_DIR", "GATEWAY_DATABASE_URL"}) {
      if (auto it = source.env.find(name); it != source.env.end()) {
        env.emplace(name, it->second);
        out.switch_lines.push_back(std::string(name) + "=" + it->second + "  # the source's, kept");
      }
    }
  }
  // The admin token is the target's `serve`'s business: without one in
  // TARGET.env, a stand-in lets its backend settings be checked (the
  // migration serves nothing).
  if (!env.count("GATEWAY_ADMIN_API_KEY") && !env.count("GATEWAY_ADMIN_TOKENS_FILE")) {
    env.emplace("GATEWAY_ADMIN_API_KEY", "migrate-checks-no-token-here-0000");
  }
  auto check = [&backends](const Config& c) { return backends.Check(c); };
  auto config = LoadConfig(env, false, check);
  for (auto& [name, value] : env) {
    if (IsSecretVariable(name)) Cleanse(value);
  }
  if (!config.ok()) return MakeError(ErrorCode::kInvalidArgument, path + ": " + config.error().message);
  if (config->database_path != source.database_path) {
    return MakeError(ErrorCode::kInvalidArgument,
                     path + ": GATEWAY_DATA_DIR / GATEWAY_DATABASE_URL: the target's registry database is '" +
                         config->database_path + "', the source's '" + source.database_path +
                         "': a migration keeps the registry (provider rows, key versions); set the same data dir or "
                         "leave both unset in " + path);
  }
  out.config = std::move(config).value();
  return out;
}

Result<std::unique_ptr<MigrationLock>> MigrationLock::Acquire(const std::string& data_dir) {
  const std::string path = data_dir + "/migrate.lock";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return MakeError(ErrorCode::kUnavailable, "cannot open " + path + ": " + std::strerror(errno));
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

MigrationLock::~MigrationLock() { ::close(fd_); }

}  // namespace dyad
