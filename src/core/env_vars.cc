#include "core/env_vars.h"

#include <cctype>

#include "core/encoding.h"

namespace dyad {

Error BadVariable(std::string_view name, std::string_view what) {
  return MakeError(ErrorCode::kInvalidArgument, std::string(name) + ": " + std::string(what));
}

const std::string* FindVariable(const EnvMap& env, const std::string& name) {
  auto it = env.find(name);
  return it == env.end() ? nullptr : &it->second;
}

Status ReadBoolVariable(const EnvMap& env, const std::string& name, bool& out) {
  const std::string* v = FindVariable(env, name);
  if (!v) return OkStatus();
  const std::string s = AsciiLower(*v);
  if (s == "true" || s == "1" || s == "yes" || s == "on") out = true;
  else if (s == "false" || s == "0" || s == "no" || s == "off") out = false;
  else return BadVariable(name, "'" + *v + "' is not a boolean; use true or false");
  return OkStatus();
}

Status ReadOneOfVariable(const EnvMap& env, const std::string& name, std::initializer_list<std::string_view> allowed,
                         std::string& out) {
  const std::string* v = FindVariable(env, name);
  if (!v) return OkStatus();
  std::string accepted;
  for (auto a : allowed) {
    if (*v == a) {
      out = *v;
      return OkStatus();
    }
    accepted += (accepted.empty() ? "" : ", ") + std::string(a);
  }
  return BadVariable(name, "'" + *v + "' is not one of: " + accepted);
}

}  // namespace dyad
