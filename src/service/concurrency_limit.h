// ConcurrencyLimit: how many /v1 calls may run at once (DESIGN.md §12), in
// all and per client identity, so that slow upstreams or slow-reading
// clients never hold every /v1 handler thread (a call past the cap is
// answered 429 at once) and one client token cannot take every slot.
//
// TryAcquire(key) either hands out a Slot, released when it is destroyed, or
// says which cap is reached (nothing waits: the caller answers 429 at once).
// Thread-safe; a Slot may be released on any thread but must not outlive its
// ConcurrencyLimit. No errors beyond a refused acquire.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/mutex.h"

namespace dyad {

struct ConcurrencyLimits {
  int total = 60;       // GATEWAY_V1_MAX_CONCURRENT
  int per_client = 60;  // GATEWAY_V1_MAX_CONCURRENT_PER_CLIENT
};

class ConcurrencyLimit {
 public:
  explicit ConcurrencyLimit(ConcurrencyLimits limits) : limits_(limits) {}
  ConcurrencyLimit(const ConcurrencyLimit&) = delete;
  ConcurrencyLimit& operator=(const ConcurrencyLimit&) = delete;

  class Slot {
   public:
    Slot(Slot&& other) noexcept : owner_(other.owner_), key_(std::move(other.key_)) { other.owner_ = nullptr; }
    Slot& operator=(Slot&&) = delete;
    Slot(const Slot&) = delete;
    ~Slot() {
      if (owner_) owner_->Release(key_);
    }

   private:
    friend class ConcurrencyLimit;
    Slot(ConcurrencyLimit* owner, std::string key) : owner_(owner), key_(std::move(key)) {}
    ConcurrencyLimit* owner_;
    std::string key_;
  };

  enum class Refusal { kNone, kTotal, kPerClient };

  // A slot for `key` (a client identity), or nullopt with `why` set.
  std::optional<Slot> TryAcquire(std::string_view key, Refusal* why = nullptr) DYAD_LOCKS_EXCLUDED(mu_);

  const ConcurrencyLimits& limits() const { return limits_; }
  int InUse() const DYAD_LOCKS_EXCLUDED(mu_);

 private:
  void Release(const std::string& key) DYAD_LOCKS_EXCLUDED(mu_);

  const ConcurrencyLimits limits_;
  mutable Mutex mu_;
  int in_use_ DYAD_GUARDED_BY(mu_) = 0;
  std::unordered_map<std::string, int> by_key_ DYAD_GUARDED_BY(mu_);
};

}  // namespace dyad
