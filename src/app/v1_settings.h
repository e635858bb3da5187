// The /v1 path's settings that are not Config's (issue 16): read from the
// process's variables (Config::env) at start.
//
//   GATEWAY_V1_THREADS                   the pool /v1 calls run on, apart from
//                                        /admin's blocking pool (so /v1 load never
//                                        takes /admin's threads); default 64 (or the
//                                        cap + 4 when only the cap is set higher),
//                                        1..1024
//   GATEWAY_V1_MAX_CONCURRENT            /v1 calls in progress at once; default
//                                        GATEWAY_V1_THREADS - 4 (at least 1), so a
//                                        call past the cap still finds a thread to
//                                        answer its 429 at once; below
//                                        GATEWAY_V1_THREADS
//   GATEWAY_V1_MAX_CONCURRENT_PER_CLIENT the same per client identity; default
//                                        and at most the above
//   GATEWAY_UPSTREAM_TOTAL_TIMEOUT_MS    the whole client call upstream (the 401
//                                        retry included); default 600000
//   GATEWAY_V1_REFRESH_INTERVAL_MS       at most one 401-forced credential read per
//                                        provider and credential in this time;
//                                        default 5000, 0 to 3600000 (0: no limit)
//   GATEWAY_V1_EVENTED                   true (default): over plain HTTP, a call
//                                        whose credential is cached, to a plain
//                                        HTTP upstream at an IP address, runs on
//                                        the I/O threads with no thread waiting
//                                        for its upstream; false: every call on
//                                        the pool above
//
// Errors: kInvalidArgument naming the variable, its value and the accepted
// range. Pure; thread-safe.
#pragma once

#include <chrono>

#include "core/environment.h"
#include "core/result.h"
#include "service/concurrency_limit.h"

namespace dyad {

struct V1Settings {
  int threads = 64;
  ConcurrencyLimits limits;
  std::chrono::milliseconds upstream_total{600000};
  std::chrono::milliseconds refresh_interval{5000};
  bool evented = true;
};

Result<V1Settings> ReadV1Settings(const EnvMap& env);

}  // namespace dyad
