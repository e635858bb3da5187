// The one retry policy of outbound calls: up to `max_attempts` tries while
// the attempt fails with kUnavailable (transport failure, timeout, 5xx,
// throttling), waiting between tries a "full jitter" backoff: uniform in
// [0, min(cap, base · 2^retry)] (the AWS Architecture Blog's recommendation;
// many clients retrying together spread out instead of arriving in waves).
// Waiting goes through the injected Clock, so tests never sleep.
#pragma once

#include <chrono>
#include <string>

#include "core/clock.h"
#include "core/random.h"
#include "core/result.h"

namespace dyad {

struct RetryPolicy {
  int max_attempts = 3;
  std::chrono::milliseconds base{100};
  std::chrono::milliseconds cap{5000};
  // When set: no retry once this long has passed since the first attempt
  // began (an attempt that itself waits long, a busy pool, ends the
  // retries); the last wait may still end past it.
  std::chrono::milliseconds max_elapsed{0};
};

// The wait before retry number `retry` (0 for the first retry).
Clock::Duration FullJitterBackoff(const RetryPolicy& policy, int retry, Random& random);

// Calls `attempt()` (returning Result<T> or Status) until it succeeds, fails
// with another code than kUnavailable, or the attempts run out; the last
// error then says how many attempts were made.
//
// With a `deadline` (the end of what the retries belong to: a provider
// write's, ProviderLocks::Held::deadline()), no retry begins at or after it,
// nor a wait that would end past it; an attempt begun before it may end
// after it. The first attempt is always made: what it does must be safe
// late (a read, or a write fenced by a version or a lease).
template <typename F>
auto WithRetries(const RetryPolicy& policy, const Clock& clock, Random& random, Clock::Instant deadline, F&& attempt)
    -> decltype(attempt()) {
  const Clock::Instant start = clock.Now();
  for (int i = 1;; ++i) {
    auto r = attempt();
    if (r.ok() || r.code() != ErrorCode::kUnavailable) return r;
    const Clock::Instant now = clock.Now();
    const bool late = policy.max_elapsed.count() > 0 && now - start >= policy.max_elapsed;
    const bool last = i >= policy.max_attempts || late;
    const Clock::Duration wait = last ? Clock::Duration(0) : FullJitterBackoff(policy, i - 1, random);
    if (last || now + wait >= deadline) {
      if (policy.max_attempts > 1) {
        return MakeError(r.code(), r.error().message + " (after " + std::to_string(i) + " attempts" +
                                       (last ? "" : ", at its deadline") + ")");
      }
      return r;
    }
    clock.SleepFor(wait);
  }
}

template <typename F>
auto WithRetries(const RetryPolicy& policy, const Clock& clock, Random& random, F&& attempt) -> decltype(attempt()) {
  return WithRetries(policy, clock, random, Clock::Instant::max(), std::forward<F>(attempt));
}

}  // namespace dyad
