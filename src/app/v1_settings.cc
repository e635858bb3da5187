#include "app/v1_settings.h"

#include <algorithm>
#include <string>

#include "core/env_vars.h"

namespace dyad {

Result<V1Settings> ReadV1Settings(const EnvMap& env) {
  V1Settings s;
  int pool = 64;
  DYAD_RETURN_IF_ERROR(ReadIntVariable(env, "GATEWAY_V1_THREADS", 1, 1024, pool));
  const bool pool_set = FindVariable(env, "GATEWAY_V1_THREADS") != nullptr;
  int total = std::max(1, pool - 4);
  DYAD_RETURN_IF_ERROR(ReadIntVariable(env, "GATEWAY_V1_MAX_CONCURRENT", 1, 1024, total));
  // A cap set alone brings its pool along (four threads over it), so a
  // deployment that raised it for /v1 before /v1 had a pool keeps working.
  if (!pool_set && total >= pool) pool = total + 4;
  // Below the pool: a call past the cap must find a thread to answer its
  // 429 at once, not queue (with its body, before authentication) for one.
  if (pool > 1 && total >= pool) {
    return BadVariable("GATEWAY_V1_MAX_CONCURRENT",
                       std::to_string(total) + " is not below GATEWAY_V1_THREADS (" + std::to_string(pool) +
                           "): a call past the cap would wait for a thread instead of a 429; use an integer "
                           "from 1 to " + std::to_string(pool - 1) + " or raise GATEWAY_V1_THREADS");
  }
  // No tighter cap per client unless asked: a deployment with one client
  // token (the common case) gets every /v1 slot.
  int per_client = total;
  DYAD_RETURN_IF_ERROR(ReadIntVariable(env, "GATEWAY_V1_MAX_CONCURRENT_PER_CLIENT", 1, 1024, per_client));
  if (per_client > total) {
    return BadVariable("GATEWAY_V1_MAX_CONCURRENT_PER_CLIENT",
                       std::to_string(per_client) + " is above GATEWAY_V1_MAX_CONCURRENT (" + std::to_string(total) +
                           "); use an integer from 1 to " + std::to_string(total));
  }
  int total_ms = 600000;
  DYAD_RETURN_IF_ERROR(ReadIntVariable(env, "GATEWAY_UPSTREAM_TOTAL_TIMEOUT_MS", 1, 86400000, total_ms));
  s.threads = pool;
  // 0: every 401 to a cached credential may force a read (no window).
  int refresh_ms = 5000;
  DYAD_RETURN_IF_ERROR(ReadIntVariable(env, "GATEWAY_V1_REFRESH_INTERVAL_MS", 0, 3600000, refresh_ms));
  s.refresh_interval = std::chrono::milliseconds(refresh_ms);
  DYAD_RETURN_IF_ERROR(ReadBoolVariable(env, "GATEWAY_V1_EVENTED", s.evented));
  s.limits.total = total;
  s.limits.per_client = per_client;
  s.upstream_total = std::chrono::milliseconds(total_ms);
  return s;
}

}  // namespace dyad
