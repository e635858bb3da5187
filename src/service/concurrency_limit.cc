#include "service/concurrency_limit.h"

namespace dyad {

std::optional<ConcurrencyLimit::Slot> ConcurrencyLimit::TryAcquire(std::string_view key, Refusal* why) {
  Refusal refusal = Refusal::kNone;
  {
    MutexLock lock(&mu_);
    if (in_use_ >= limits_.total) {
      refusal = Refusal::kTotal;
    } else {
      auto [it, unused] = by_key_.try_emplace(std::string(key), 0);
      if (it->second >= limits_.per_client) {
        refusal = Refusal::kPerClient;
      } else {
        ++it->second;
        ++in_use_;
      }
    }
  }
  if (why) *why = refusal;
  if (refusal != Refusal::kNone) return std::nullopt;
  return Slot(this, std::string(key));
}

void ConcurrencyLimit::Release(const std::string& key) {
  MutexLock lock(&mu_);
  --in_use_;
  auto it = by_key_.find(key);
  if (it != by_key_.end() && --it->second <= 0) by_key_.erase(it);
}

int ConcurrencyLimit::InUse() const {
  MutexLock lock(&mu_);
  return in_use_;
}

}  // namespace dyad
