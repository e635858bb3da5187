// RefreshingCredential<T>: a credential that expires (temporary AWS keys, a
// Vault token, an Entra access token), fetched from its source ahead of
// expiry, once for all callers.
//
// Get() answers the current credential until `refresh_before` its expiry;
// then the first caller fetches a new one while the others keep getting the
// current one. When there is no usable credential (none yet, expired, or
// invalidated), callers wait for that one fetch and share its outcome
// instead of each calling the source. A failed refresh keeps serving the
// current credential until it actually expires, logs a warning, and is tried
// again no sooner than `min_retry_interval` later. Once nothing usable is
// left, Get() returns the source's own error, asking the source again at
// each call, except after the source refused the credentials while none
// was usable (kPermissionDenied, kUnauthenticated: a wrong secret, whose
// every try would count toward a login lockout such as Vault's, for every
// instance using that login): then not before `min_retry_interval` has
// passed, doubling with each such refusal in a row up to 8 times that.
// A credential that expires is always fetched again once at once, whatever
// its refreshes ahead met.
//
// The fetch runs on the caller's thread without the lock held; at most one
// runs at a time. Expiry is wall time (what servers state); the retry
// interval is monotonic time; both from the injected Clock. Thread-safe.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "core/clock.h"
#include "core/mutex.h"
#include "core/result.h"

namespace dyad {

template <typename T>
struct Expiring {
  T value;
  std::optional<Clock::WallTime> expires;  // nullopt: never expires
  // When to fetch ahead (a Vault token at two thirds of its lease); nullopt:
  // `refresh_before` its expiry.
  std::optional<Clock::WallTime> refresh_at = std::nullopt;
};

struct RefreshOptions {
  std::string name;  // in the log line of a failed refresh: "AWS credentials"
  Clock::Duration refresh_before = std::chrono::minutes(5);
  Clock::Duration min_retry_interval = std::chrono::seconds(30);
};

namespace refreshing_credential_internal {
// The warning of a refresh that failed while the current credential is kept.
void LogKeptAfterFailure(std::string_view name, const Error& error, std::optional<Clock::WallTime> expires);
}  // namespace refreshing_credential_internal

template <typename T>
class RefreshingCredential {
 public:
  using Fetch = std::function<Result<Expiring<T>>()>;

  RefreshingCredential(Fetch fetch, const Clock& clock, RefreshOptions options)
      : fetch_(std::move(fetch)), clock_(clock), options_(std::move(options)) {}
  RefreshingCredential(const RefreshingCredential&) = delete;
  RefreshingCredential& operator=(const RefreshingCredential&) = delete;

  Result<T> Get() DYAD_LOCKS_EXCLUDED(mu_) {
    bool replacing = false;  // a usable credential is being refreshed ahead
    {
      MutexLock lock(&mu_);
      const Clock::WallTime now = clock_.WallNow();
      if (current_ && !RefreshDue(now)) return current_->value;
      const bool usable = Usable(now);
      if (!usable && !refreshing_ && refusals_ > 0 && clock_.Now() < retry_after_) return last_error_;
      if (refreshing_ || (usable && clock_.Now() < retry_after_)) {
        if (usable) return current_->value;
        // Nothing to serve meanwhile: the outcome of the fetch in flight.
        for (const uint64_t flight = flights_; flights_ == flight;) cv_.Wait(&mu_);
        if (Usable(clock_.WallNow())) return current_->value;
        return last_error_;
      }
      refreshing_ = true;
      replacing = usable;
    }
    Result<Expiring<T>> fetched = fetch_();
    MutexLock lock(&mu_);
    refreshing_ = false;
    ++flights_;
    cv_.SignalAll();
    if (fetched.ok()) {
      current_ = std::move(fetched).value();
      invalidated_ = false;
      fetched_at_ = clock_.Now();
      refusals_ = 0;
      retry_after_ = Clock::Instant::min();
      return current_->value;
    }
    last_error_ = fetched.error();
    const bool refused = !replacing && (last_error_.code == ErrorCode::kPermissionDenied ||
                                        last_error_.code == ErrorCode::kUnauthenticated);
    refusals_ = refused ? std::min(refusals_ + 1, 4) : 0;
    retry_after_ = clock_.Now() + options_.min_retry_interval * (refused ? 1 << (refusals_ - 1) : 1);
    if (Usable(clock_.WallNow())) {
      refreshing_credential_internal::LogKeptAfterFailure(options_.name, last_error_, current_->expires);
      return current_->value;
    }
    return last_error_;
  }

  // The server refused the current credential (a revoked token): the next
  // Get() fetches and waits for a new one. Ignored for a credential fetched
  // less than `min_retry_interval` ago, so that a burst of refusals of the
  // old one does not discard the new one. True when the next Get() fetches
  // (a retry may get a new credential); false when it was ignored (a fresh
  // credential refused: a policy's denial, not worth another request).
  bool Invalidate() DYAD_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    if (!current_ || invalidated_) return true;
    if (clock_.Now() < fetched_at_ + options_.min_retry_interval) return false;
    invalidated_ = true;
    if (refusals_ == 0) retry_after_ = Clock::Instant::min();  // a refusal's back-off holds
    return true;
  }

 private:
  bool RefreshDue(Clock::WallTime now) const DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (invalidated_) return true;
    if (current_->refresh_at) return now >= *current_->refresh_at;
    return current_->expires && now >= *current_->expires - options_.refresh_before;
  }
  bool Usable(Clock::WallTime now) const DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return current_ && !invalidated_ && (!current_->expires || now < *current_->expires);
  }

  const Fetch fetch_;
  const Clock& clock_;
  const RefreshOptions options_;
  Mutex mu_;
  CondVar cv_;
  std::optional<Expiring<T>> current_ DYAD_GUARDED_BY(mu_);
  bool invalidated_ DYAD_GUARDED_BY(mu_) = false;
  Clock::Instant fetched_at_ DYAD_GUARDED_BY(mu_){};
  bool refreshing_ DYAD_GUARDED_BY(mu_) = false;
  uint64_t flights_ DYAD_GUARDED_BY(mu_) = 0;  // fetches finished
  Error last_error_ DYAD_GUARDED_BY(mu_){ErrorCode::kInternal, "no fetch yet"};
  // No refresh before this while a usable credential is served, nor, after
  // a refusal, while none is.
  Clock::Instant retry_after_ DYAD_GUARDED_BY(mu_) = Clock::Instant::min();
  int refusals_ DYAD_GUARDED_BY(mu_) = 0;  // fetches refused in a row (1 to 4)
};

}  // namespace dyad
