#include "cloud/refreshing_credential.h"

#include <spdlog/spdlog.h>

#include "core/time_format.h"

namespace dyad::refreshing_credential_internal {

void LogKeptAfterFailure(std::string_view name, const Error& error, std::optional<Clock::WallTime> expires) {
  spdlog::warn("{}: refresh failed, using the current one until it expires at {}: {}", name,
               expires ? FormatIso8601(*expires) : "never", error.message);
}

}  // namespace dyad::refreshing_credential_internal
