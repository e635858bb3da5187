#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "app/app.h"
#include "core/encoding.h"
#include "core/random.h"

namespace dyad {
namespace {

// Reads a one-line secret file, or creates it (0600) with `make()` when
// `make` is set; kNotFound when the file is absent and there is no `make`.
// A file that is there is never written over: one whose first line is
// empty is an error (it may hold the key further down, or a crash left it).
Result<std::string> ReadOrCreate(const std::string& path, const std::function<std::string()>& make, bool& created) {
  created = false;
  auto read = [&path]() -> std::optional<Result<std::string>> {
    std::ifstream in(path);
    if (!in) return std::nullopt;
    std::string line;
    std::getline(in, line);
    ::chmod(path.c_str(), 0600);  // also a file an older build (or a copy) left readable
    if (line.empty()) {
      return Result<std::string>(MakeError(ErrorCode::kDataLoss, path + " is empty or its first line is blank; "
                                                                        "put the value on its first line, or "
                                                                        "remove the file to start afresh"));
    }
    return Result<std::string>(std::move(line));
  };
  if (auto existing = read()) return std::move(*existing);
  if (!make) {
    return MakeError(ErrorCode::kNotFound, path + " does not exist; only `dyad-gateway serve --dev` generates it");
  }
  // Written whole under a name of its own (mkostemp: unique, 0600), then
  // linked to `path`, which link() never replaces: no half-written file
  // under the name, and of two processes starting at once the second reads
  // the first one's. A filesystem without hard links: created exclusively
  // in place.
  std::string value = make();
  std::string text = value + "\n";
  // 0, or the errno of what failed; closes `fd`.
  auto write_all = [&text](int fd) {
    int err = 0;
    const ssize_t n = ::write(fd, text.data(), text.size());
    if (n != static_cast<ssize_t>(text.size())) err = n < 0 ? errno : EIO;
    if (err == 0 && (::fchmod(fd, 0600) != 0 || ::fsync(fd) != 0)) err = errno;
    ::close(fd);
    return err;
  };
  std::string staged = path + ".new-XXXXXX";
  const int fd = ::mkostemp(staged.data(), O_CLOEXEC);
  int err = fd < 0 ? errno : write_all(fd);
  bool link_refused = false;
  if (fd >= 0) {
    if (err == 0 && ::link(staged.c_str(), path.c_str()) != 0) {
      err = errno;
      link_refused = err == EPERM || err == ENOSYS || err == EOPNOTSUPP;
    }
    ::unlink(staged.c_str());
  }
  if (link_refused) {  // no hard links here: created exclusively in place
    const int in_place = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    err = in_place < 0 ? errno : write_all(in_place);
    if (in_place >= 0 && err != 0) ::unlink(path.c_str());  // never a partial file under the name
  }
  Cleanse(text);
  if (err == EEXIST) {  // another process made it first: its key
    Cleanse(value);
    if (auto theirs = read()) return std::move(*theirs);
  }
  if (err != 0) {
    Cleanse(value);
    return MakeError(ErrorCode::kUnavailable, "cannot write " + path + ": " + std::strerror(err));
  }
  // The name itself made durable: a registry sealed with this key must not
  // outlive it after a power loss.
  const std::string dir = std::filesystem::path(path).parent_path().string();
  if (const int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  created = true;
  return value;
}

std::string RandomHex(size_t bytes) {
  std::string raw(bytes, '\0');
  if (!DefaultRandom().Fill(reinterpret_cast<uint8_t*>(raw.data()), raw.size()).ok()) std::abort();
  std::string hex = HexEncode(raw);
  Cleanse(raw);
  return hex;
}

}  // namespace

Status EnsureDataDir(const std::string& dir, bool create) {
  std::error_code ec;
  if (create) std::filesystem::create_directories(dir, ec);
  if (ec) return MakeError(ErrorCode::kInvalidArgument, "GATEWAY_DATA_DIR: cannot create '" + dir + "': " + ec.message());
  // Also a dir an older build (or mkdir under umask 022) made 0755; but never
  // a shared one such as /tmp (sticky) or one that someone else owns.
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 077) && !(st.st_mode & S_ISVTX) &&
      st.st_uid == ::geteuid()) {
    ::chmod(dir.c_str(), 0700);
  }
  return OkStatus();
}

Status RequireEmptyDataDir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::directory_iterator it(dir, ec);
  if (ec == std::errc::no_such_file_or_directory) return OkStatus();
  if (ec) return MakeError(ErrorCode::kInvalidArgument, "GATEWAY_DATA_DIR: cannot read '" + dir + "': " + ec.message());
  std::string names;
  int count = 0;
  for (; it != std::filesystem::directory_iterator(); it.increment(ec)) {
    if (count++ < 3) names += (names.empty() ? "'" : ", '") + it->path().filename().string() + "'";
  }
  if (count == 0) return OkStatus();
  return MakeError(ErrorCode::kFailedPrecondition,
                   "GATEWAY_DATA_DIR '" + dir + "' is not empty (it holds " + names + (count > 3 ? ", …" : "") +
                       "): restore only into an empty or new data dir");
}

Status PrepareDevSecrets(Config& config, bool generate) {
  if (generate) DYAD_RETURN_IF_ERROR(EnsureDataDir(config.data_dir));
  bool created = false;
  if (!config.encryption_key) {
    std::string path = config.data_dir + "/dev-encryption-key";
    std::function<std::string()> make;
    if (generate) make = [] { return RandomHex(32); };
    // A registry without the key that sealed it (a restored backup, which
    // does not hold the key, or a key file removed): a new key opens
    // nothing there, and left behind it would stand in the old one's place.
    std::error_code ec;
    if (generate && config.secrets_provider == "environment" && !config.database_path.empty() &&
        !std::filesystem::exists(path, ec) &&
        std::filesystem::file_size(config.database_path, ec) > 0 && !ec) {
      return MakeError(ErrorCode::kFailedPrecondition,
                       "dev mode: " + path + " is missing, but the registry " + config.database_path +
                           " exists, sealed under the key that file held: copy it there from the data dir the "
                           "registry comes from (a backup does not hold it), or set ENCRYPTION_KEY; no key was "
                           "generated");
    }
    DYAD_ASSIGN_OR_RETURN(std::string hex, ReadOrCreate(path, make, created));
    auto raw = HexDecode(hex);
    if (!raw || raw->size() != 32) {
      return MakeError(ErrorCode::kDataLoss, path + " does not hold 64 hex characters; remove it to start afresh");
    }
    config.encryption_key = SecretBytes(*raw);
    Cleanse(*raw);
    Cleanse(hex);
    if (created) std::fprintf(stderr, "dev mode: generated ENCRYPTION_KEY in %s\n", path.c_str());
  }
  // A CLI command needs no admin token: it reads one only if there is one.
  if (!config.admin_api_key && config.admin_tokens_file.empty() &&
      (generate || std::filesystem::exists(config.data_dir + "/dev-admin-token"))) {
    std::string path = config.data_dir + "/dev-admin-token";
    std::function<std::string()> make;
    if (generate) make = [] { return "dgw_" + RandomHex(24); };
    DYAD_ASSIGN_OR_RETURN(std::string token, ReadOrCreate(path, make, created));
    config.admin_api_key = SecretBytes(token);
    if (created) {
      std::fprintf(stdout, "dev mode: admin token (shown once; kept in %s): %s\n", path.c_str(), token.c_str());
      std::fflush(stdout);
    } else {
      std::fprintf(stderr, "dev mode: admin token is in %s\n", path.c_str());
    }
    Cleanse(token);
  }
  return OkStatus();
}

}  // namespace dyad
