// ISO 8601 UTC timestamps ("2026-01-15T10:30:00.123Z"). Pure; thread-safe.
#pragma once

#include <chrono>
#include <string>

namespace dyad {

std::string FormatIso8601(std::chrono::system_clock::time_point t);

}  // namespace dyad
