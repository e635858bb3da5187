#include "service/provider_locks.h"

namespace dyad {

std::unique_lock<std::mutex> ProviderLocks::LockInProcess(const std::string& provider_id) {
  return std::unique_lock(mutexes_[std::hash<std::string>{}(provider_id) % mutexes_.size()]);
}

Result<std::unique_ptr<ProviderLocks::Held>> ProviderLocks::Hold(const std::string& provider_id) {
  auto lock = LockInProcess(provider_id);
  if (!leases_) return std::make_unique<Held>(std::move(lock), nullptr, provider_id, "");
  std::string owner = NewUuid(random_);
  const auto deadline = clock_.Now() + options_.max_wait;
  while (true) {
    DYAD_ASSIGN_OR_RETURN(bool held, leases_->TryAcquire(provider_id, owner, options_.ttl));
    if (held) return std::make_unique<Held>(std::move(lock), leases_, provider_id, std::move(owner));
    if (clock_.Now() >= deadline) {
      return MakeError(ErrorCode::kConflict,
                       "provider '" + provider_id + "' is being changed by another instance; try again");
    }
    clock_.SleepFor(options_.poll);
  }
}

}  // namespace dyad
