// ShardedHistogram: a latency histogram cheap enough for the cache-hit path
// (a hit is tens of nanoseconds).
//
// Each thread adds to a stripe of its own, taken round-robin on its first
// observation: kStripes stripes, each on cache lines of its own, so two cores
// never write one line while there are no more threads than stripes (past
// that, threads share stripes; the adds stay atomic, so nothing is lost).
// No lock and no shared written line on Observe(); Read() sums the stripes
// at scrape time, so a read may see an observation's bucket before its sum.
// Bucket bounds (seconds, ascending, at most kMaxBounds) are fixed at
// construction. Thread-safe.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace dyad {

class ShardedHistogram {
 public:
  static constexpr size_t kMaxBounds = 28;
  static constexpr size_t kStripes = 32;

  // `bounds`: upper bounds in seconds, ascending; more than kMaxBounds are cut.
  explicit ShardedHistogram(std::vector<double> bounds);

  // `weight`: how many observations this one stands for (a sampled one).
  void Observe(int64_t nanoseconds, uint64_t weight = 1) {
    size_t b = 0;
    while (b < nbounds_ && nanoseconds > bounds_ns_[b]) ++b;  // small, and nearly always the first few
    Stripe& s = stripes_[StripeIndex()];
    s.buckets[b].fetch_add(weight, std::memory_order_relaxed);
    s.sum_ns.fetch_add(nanoseconds > 0 ? weight * static_cast<uint64_t>(nanoseconds) : 0, std::memory_order_relaxed);
  }

  struct Snapshot {
    std::vector<double> bounds;      // seconds
    std::vector<uint64_t> cumulative;  // per bound, then +Inf (== count)
    uint64_t count = 0;
    double sum_seconds = 0;
  };
  Snapshot Read() const;

  // {1, 2, 5} × 10^k seconds from `lowest` up to `highest` (inclusive).
  static std::vector<double> OneTwoFive(double lowest, double highest);

 private:
  struct alignas(64) Stripe {
    std::array<std::atomic<uint64_t>, kMaxBounds + 1> buckets{};
    std::atomic<uint64_t> sum_ns{0};
  };
  static size_t StripeIndex();

  std::vector<double> bounds_;
  std::array<int64_t, kMaxBounds> bounds_ns_{};
  size_t nbounds_ = 0;
  std::unique_ptr<Stripe[]> stripes_;
};

}  // namespace dyad
