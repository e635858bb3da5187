// Timestamps as text. Pure; thread-safe.
//
// ISO 8601 UTC ("2026-01-15T10:30:00.123Z"): what the service shows and what
// AWS answers carry. HTTP-date (RFC 7231 §7.1.1.1): the Date and Retry-After
// headers; the preferred IMF-fixdate and, as a recipient must, the two
// obsolete forms.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace dyad {

std::string FormatIso8601(std::chrono::system_clock::time_point t);
// "YYYY-MM-DDThh:mm:ss[.fff](Z|+00:00)" → time (fraction dropped); nullopt
// for anything else, including other offsets and times system_clock cannot
// hold (before 1678, after 2262).
std::optional<std::chrono::system_clock::time_point> ParseIso8601(std::string_view text);

// IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT" (sub-seconds dropped).
std::string FormatHttpDate(std::chrono::system_clock::time_point t);
// Accepts exactly the three forms of RFC 7231, each in GMT:
//   IMF-fixdate  "Sun, 06 Nov 1994 08:49:37 GMT"
//   rfc850-date  "Sunday, 06-Nov-94 08:49:37 GMT" (year 70–99 → 19xx, 00–69 → 20xx)
//   asctime-date "Sun Nov  6 08:49:37 1994"
// Names are case-sensitive as in the grammar; the weekday must be a weekday
// name but is not checked against the date; an impossible date (31 Apr) or
// time, one system_clock cannot hold (after 2262), another zone, or anything
// around the value is nullopt.
std::optional<std::chrono::system_clock::time_point> ParseHttpDate(std::string_view text);

}  // namespace dyad
