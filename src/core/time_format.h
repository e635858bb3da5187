// ISO 8601 UTC timestamps ("2026-01-15T10:30:00.123Z"). Pure; thread-safe.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace dyad {

std::string FormatIso8601(std::chrono::system_clock::time_point t);
// "YYYY-MM-DDThh:mm:ss[.fff](Z|+00:00)" → time (fraction dropped); nullopt
// for anything else, including other offsets.
std::optional<std::chrono::system_clock::time_point> ParseIso8601(std::string_view text);

}  // namespace dyad
