#include "core/environment.h"

#include <fstream>
#include <sstream>

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

static std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

static bool ValidName(std::string_view name) {
  if (name.empty() || (name[0] >= '0' && name[0] <= '9')) return false;
  for (char c : name) {
    if (!(c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
      return false;
  }
  return true;
}

Result<EnvMap> ParseDotenv(std::string_view text) {
  EnvMap env;
  size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    auto nl = text.find('\n');
    std::string_view line = Trim(text.substr(0, nl));
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    if (line.empty() || line.front() == '#') continue;
    if (line.substr(0, 7) == "export ") line = Trim(line.substr(7));
    auto eq = line.find('=');
    if (eq == std::string_view::npos) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "line " + std::to_string(line_no) + ": expected KEY=VALUE");
    }
    std::string_view name = Trim(line.substr(0, eq));
    std::string_view value = Trim(line.substr(eq + 1));
    if (!ValidName(name)) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "line " + std::to_string(line_no) +
                           ": variable names take letters, digits and '_'");
    }
    if (!value.empty() && (value.front() == '"' || value.front() == '\'')) {
      char q = value.front();
      if (value.size() < 2 || value.back() != q) {
        return MakeError(ErrorCode::kInvalidArgument,
                         "line " + std::to_string(line_no) + ": unterminated quoted value for " +
                             std::string(name));
      }
      value = value.substr(1, value.size() - 2);
    } else if (auto hash = value.find(" #"); hash != std::string_view::npos) {
      value = Trim(value.substr(0, hash));
    }
    env[std::string(name)] = std::string(value);
  }
  return env;
}

Status MergeDotenvFile(const std::string& path, EnvMap& env) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return MakeError(ErrorCode::kNotFound, "cannot read env file " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  auto parsed = ParseDotenv(ss.str());
  if (!parsed.ok()) {
    return MakeError(ErrorCode::kInvalidArgument, path + ": " + parsed.error().message);
  }
  for (auto& [k, v] : *parsed) env.emplace(k, v);
  return OkStatus();
}

}  // namespace dyad
