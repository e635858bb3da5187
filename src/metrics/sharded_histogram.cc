#include "metrics/sharded_histogram.h"

#include <cmath>

namespace dyad {

ShardedHistogram::ShardedHistogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), stripes_(std::make_unique<Stripe[]>(kStripes)) {
  if (bounds_.size() > kMaxBounds) bounds_.resize(kMaxBounds);
  nbounds_ = bounds_.size();
  for (size_t i = 0; i < nbounds_; ++i) bounds_ns_[i] = static_cast<int64_t>(std::llround(bounds_[i] * 1e9));
}

size_t ShardedHistogram::StripeIndex() {
  static std::atomic<size_t> next{0};
  thread_local const size_t mine = next.fetch_add(1, std::memory_order_relaxed) % kStripes;
  return mine;
}

ShardedHistogram::Snapshot ShardedHistogram::Read() const {
  Snapshot s;
  s.bounds = bounds_;
  std::vector<uint64_t> per(nbounds_ + 1, 0);
  uint64_t sum_ns = 0;
  for (size_t k = 0; k < kStripes; ++k) {
    for (size_t b = 0; b <= nbounds_; ++b) per[b] += stripes_[k].buckets[b].load(std::memory_order_relaxed);
    sum_ns += stripes_[k].sum_ns.load(std::memory_order_relaxed);
  }
  s.cumulative.resize(nbounds_ + 1);
  uint64_t running = 0;
  for (size_t b = 0; b <= nbounds_; ++b) s.cumulative[b] = running += per[b];
  s.count = running;
  s.sum_seconds = static_cast<double>(sum_ns) / 1e9;
  return s;
}

std::vector<double> ShardedHistogram::OneTwoFive(double lowest, double highest) {
  std::vector<double> out;
  for (double decade = lowest; decade <= highest * 1.0001; decade *= 10) {
    for (double m : {1.0, 2.0, 5.0}) {
      double v = decade * m;
      if (v <= highest * 1.0001) out.push_back(v);
    }
  }
  return out;
}

}  // namespace dyad
