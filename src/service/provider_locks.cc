#include "service/provider_locks.h"

#include <thread>

namespace dyad {
namespace {

Error Busy(const std::string& provider_id) {
  return MakeError(ErrorCode::kConflict, "provider '" + provider_id + "' is being changed by another writer; try again");
}

Error ShuttingDown(const std::string& provider_id) {
  return MakeError(ErrorCode::kUnavailable, "provider '" + provider_id +
                                                "' is being changed by another writer and this gateway is shutting "
                                                "down; try again (on another instance)");
}

}  // namespace

std::mutex& ProviderLocks::MutexOf(const std::string& provider_id) {
  return mutexes_[std::hash<std::string>{}(provider_id) % mutexes_.size()];
}

Result<std::unique_ptr<ProviderLocks::Held>> ProviderLocks::Hold(const std::string& provider_id) {
  // The mutex is shared by the providers that hash to it: waited for with
  // the same deadline as the lease (real time: it is this process's own).
  std::unique_lock lock(MutexOf(provider_id), std::try_to_lock);
  const auto mutex_deadline = std::chrono::steady_clock::now() + options_.max_wait;
  while (!lock.owns_lock()) {
    if (interrupted_.load()) return ShuttingDown(provider_id);
    if (std::chrono::steady_clock::now() >= mutex_deadline) return Busy(provider_id);
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    (void)lock.try_lock();
  }
  if (!leases_) {
    return std::make_unique<Held>(std::move(lock), nullptr, provider_id, "", options_.ttl, DeadlineFrom(clock_.Now()));
  }
  std::string owner = NewUuid(random_);
  const auto deadline = clock_.Now() + options_.max_wait;
  while (true) {
    // The lease runs from no earlier than the ask (TryAcquire may wait for
    // a pooled connection before it stamps the lease's end).
    const Clock::Instant asked = clock_.Now();
    DYAD_ASSIGN_OR_RETURN(bool held, leases_->TryAcquire(provider_id, owner, options_.ttl));
    if (held) {
      return std::make_unique<Held>(std::move(lock), leases_, provider_id, std::move(owner), options_.ttl,
                                    DeadlineFrom(asked));
    }
    if (interrupted_.load()) return ShuttingDown(provider_id);
    if (clock_.Now() >= deadline) return Busy(provider_id);
    clock_.SleepFor(options_.poll);
  }
}

Clock::Instant ProviderLocks::DeadlineFrom(Clock::Instant asked) const {
  return asked + std::max<Clock::Duration>(options_.ttl - options_.margin, Clock::Duration(0));
}

Status ProviderLocks::Held::Confirm() {
  if (!leases_) return OkStatus();
  DYAD_ASSIGN_OR_RETURN(bool renewed, leases_->Renew(id_, owner_, ttl_));
  if (renewed) return OkStatus();
  lost_ = true;
  return MakeError(ErrorCode::kConflict, "the lease on provider '" + id_ +
                                             "' ran out and another instance took it over; read it again and retry");
}

}  // namespace dyad
