// CloudCallObserver: what JsonClient reports about its calls, for metrics
// (Metrics implements it as dyad_cloud_* counters). `endpoint` is the
// service's host[:port], `op` the operation's name (an AWS action, a Vault
// path template): both bounded sets, fit for labels. Implementations are
// thread-safe and cheap: they run on the calling thread.
#pragma once

#include <optional>
#include <string_view>

#include "core/clock.h"
#include "core/result.h"

namespace dyad {

class CloudCallObserver {
 public:
  virtual ~CloudCallObserver() = default;
  // A call ended, after all its attempts: nullopt on success, else the code
  // of the error it returned.
  virtual void OnCall(std::string_view endpoint, std::string_view op, std::optional<ErrorCode> error) = 0;
  // A request was sent again (after a backoff, or at once after the auth step
  // corrected itself).
  virtual void OnRetry(std::string_view endpoint, std::string_view op) = 0;
  // The service answered that the caller is over its rate (HTTP 429 or the
  // service's own throttling error).
  virtual void OnThrottle(std::string_view endpoint, std::string_view op) = 0;
  // One attempt of a call was answered (`http_status`, 0 when no answer
  // came: `error` then says why) after `elapsed`; `attempt` counts from 1.
  virtual void OnAttempt(std::string_view /*endpoint*/, std::string_view /*op*/, int /*attempt*/,
                         int /*http_status*/, std::optional<ErrorCode> /*error*/, Clock::Duration /*elapsed*/) {}
};

}  // namespace dyad
