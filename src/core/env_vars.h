// Reading settings from an EnvMap: the one way every settings reader
// (Config, each backend's factory) parses a variable and words its error.
//
// Each Read* leaves `out` as it is when the variable is unset and returns a
// kInvalidArgument error "NAME: what is wrong; the accepted form" when it is
// set to a bad value. Values of secret variables must not go through these
// (their errors repeat the value). Pure functions; thread-safe.
#pragma once

#include <charconv>
#include <initializer_list>
#include <string>
#include <string_view>
#include <system_error>

#include "core/environment.h"
#include "core/result.h"

namespace dyad {

// "NAME: what".
Error BadVariable(std::string_view name, std::string_view what);

// The value of `name`, or nullptr when unset.
const std::string* FindVariable(const EnvMap& env, const std::string& name);

// true/1/yes/on or false/0/no/off, any case.
Status ReadBoolVariable(const EnvMap& env, const std::string& name, bool& out);

// One of `allowed`; the error lists them.
Status ReadOneOfVariable(const EnvMap& env, const std::string& name, std::initializer_list<std::string_view> allowed,
                         std::string& out);

// A whole decimal number from `min` to `max`.
template <typename Int>
Status ReadIntVariable(const EnvMap& env, const std::string& name, long long min, long long max, Int& out) {
  const std::string* v = FindVariable(env, name);
  if (!v) return OkStatus();
  long long n = 0;
  auto [ptr, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
  if (v->empty() || ec != std::errc() || ptr != v->data() + v->size() || n < min || n > max) {
    return BadVariable(name, "'" + *v + "' is not valid; use an integer from " + std::to_string(min) + " to " +
                                 std::to_string(max));
  }
  out = static_cast<Int>(n);
  return OkStatus();
}

}  // namespace dyad
