#include "core/environment.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "core/encoding.h"
#include "core/secret_bytes.h"

extern char** environ;

namespace dyad {

EnvMap ReadProcessEnvironment() {
  EnvMap env;
  for (char** p = environ; p && *p; ++p) {
    std::string_view entry(*p);
    auto eq = entry.find('=');
    if (eq == std::string_view::npos) continue;
    env.emplace(std::string(entry.substr(0, eq)), std::string(entry.substr(eq + 1)));
  }
  return env;
}


static bool ValidName(std::string_view name) {
  if (name.empty() || (name[0] >= '0' && name[0] <= '9')) return false;
  for (char c : name) {
    if (!(c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
      return false;
  }
  return true;
}

// The inside of a quoted value: the value ends with its quote, or the quote
// is followed by spaces and a '#' comment (KEY="a # b" # note is "a # b").
static std::optional<std::string_view> UnquoteValue(std::string_view value) {
  char q = value.front();
  if (value.size() >= 2 && value.back() == q) return value.substr(1, value.size() - 2);
  for (size_t hash = value.find('#', 1); hash != std::string_view::npos; hash = value.find('#', hash + 1)) {
    std::string_view before = TrimSpace(value.substr(0, hash));
    if (before.size() >= 2 && before.back() == q) return before.substr(1, before.size() - 2);
  }
  return std::nullopt;
}

Result<EnvMap> ParseDotenv(std::string_view text) {
  EnvMap env;
  size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    auto nl = text.find('\n');
    std::string_view line = TrimSpace(text.substr(0, nl));
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    if (line.empty() || line.front() == '#') continue;
    if (line.substr(0, 7) == "export ") line = TrimSpace(line.substr(7));
    auto eq = line.find('=');
    if (eq == std::string_view::npos) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "line " + std::to_string(line_no) + ": expected KEY=VALUE");
    }
    std::string_view name = TrimSpace(line.substr(0, eq));
    std::string_view value = TrimSpace(line.substr(eq + 1));
    if (!ValidName(name)) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "line " + std::to_string(line_no) +
                           ": variable names take letters, digits and '_'");
    }
    if (!value.empty() && (value.front() == '"' || value.front() == '\'')) {
      auto quoted = UnquoteValue(value);
      if (!quoted) {
        return MakeError(ErrorCode::kInvalidArgument,
                         "line " + std::to_string(line_no) + ": unterminated quoted value for " +
                             std::string(name) + " (a closing quote may be followed only by a # comment)");
      }
      value = *quoted;
    } else if (auto hash = value.find(" #"); hash != std::string_view::npos) {
      value = TrimSpace(value.substr(0, hash));
    }
    env[std::string(name)] = std::string(value);
  }
  return env;
}

Result<std::string> ReadSmallFile(const std::string& path, size_t max_bytes) {
  // The file may hold secrets (an --env-file with ENCRYPTION_KEY): it is read
  // with read(2) straight into the result, with no stream or stack buffer in
  // between. When the result must grow, the bytes are copied into a larger
  // string and the old buffer is wiped; on every error path the partial
  // result is wiped too. Only the returned string holds the plaintext; its
  // owner wipes it (Cleanse, which covers the whole capacity).
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return MakeError(ErrorCode::kNotFound, "cannot read " + path);
  std::string text(std::min<size_t>(4096, max_bytes + 1), '\0');
  size_t len = 0;
  auto fail = [&](ErrorCode code, std::string message) -> Result<std::string> {
    ::close(fd);
    Cleanse(text);
    return MakeError(code, std::move(message));
  };
  while (true) {
    if (len == text.size()) {
      if (len > max_bytes) {
        return fail(ErrorCode::kInvalidArgument, path + ": larger than " + std::to_string(max_bytes) + " bytes");
      }
      std::string bigger(std::min<size_t>(text.size() * 2, max_bytes + 1), '\0');
      std::memcpy(bigger.data(), text.data(), len);
      Cleanse(text);
      text.swap(bigger);
    }
    ssize_t n = ::read(fd, text.data() + len, text.size() - len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(ErrorCode::kNotFound, "cannot read " + path);
    if (n == 0) break;
    len += static_cast<size_t>(n);
  }
  ::close(fd);
  if (len > max_bytes) {
    Cleanse(text);
    return MakeError(ErrorCode::kInvalidArgument, path + ": larger than " + std::to_string(max_bytes) + " bytes");
  }
  text.resize(len);  // shrinking: no reallocation, nothing copied
  return text;
}

Status MergeDotenvFile(const std::string& path, EnvMap& env) {
  auto text = ReadSmallFile(path);
  if (!text.ok()) {
    return MakeError(text.code(), text.code() == ErrorCode::kNotFound ? "cannot read env file " + path
                                                                       : text.error().message);
  }
  auto parsed = ParseDotenv(*text);
  Cleanse(*text);  // the file may hold ENCRYPTION_KEY and the like
  if (!parsed.ok()) {
    return MakeError(ErrorCode::kInvalidArgument, path + ": " + parsed.error().message);
  }
  for (auto& [k, v] : *parsed) {
    env.emplace(k, v);
    Cleanse(v);
  }
  return OkStatus();
}

}  // namespace dyad
