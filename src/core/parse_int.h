// ParseInt: a whole decimal integer from text, without exceptions.
//
// The one way to turn stored or received text into a number (std::stol and
// friends throw on bad input or overflow, and would take a handler down with
// them). Accepts an optional '-' and digits, nothing else: no spaces, no '+',
// no trailing characters; nullopt on anything else or when out of range of T.
// Pure function; thread-safe.
#pragma once

#include <charconv>
#include <optional>
#include <string_view>
#include <system_error>

namespace dyad {

template <typename T>
std::optional<T> ParseInt(std::string_view text) {
  T value{};
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value, 10);
  if (text.empty() || ec != std::errc() || ptr != end) return std::nullopt;
  return value;
}

}  // namespace dyad
