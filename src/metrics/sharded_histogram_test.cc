#include "metrics/sharded_histogram.h"

#include <gtest/gtest.h>

#include <thread>

namespace dyad {
namespace {

TEST(ShardedHistogram, OneTwoFiveResolves100NanosecondsTo10Seconds) {
  auto b = ShardedHistogram::OneTwoFive(1e-7, 10);
  ASSERT_EQ(b.size(), 25u);  // 8 decades × 3, and 10 s
  EXPECT_DOUBLE_EQ(b.front(), 1e-7);
  EXPECT_DOUBLE_EQ(b[1], 2e-7);
  EXPECT_DOUBLE_EQ(b[2], 5e-7);
  EXPECT_NEAR(b.back(), 10, 1e-9);
  EXPECT_LE(b.size(), ShardedHistogram::kMaxBounds);
}

TEST(ShardedHistogram, CountsEachObservationInItsBucketCumulatively) {
  ShardedHistogram h({1e-7, 1e-6, 1e-3});
  h.Observe(50);         // ≤ 100 ns
  h.Observe(100);        // on the bound: le="1e-07"
  h.Observe(700);        // ≤ 1 µs
  h.Observe(2'000'000);  // 2 ms: +Inf
  auto s = h.Read();
  ASSERT_EQ(s.cumulative.size(), 4u);
  EXPECT_EQ(s.cumulative[0], 2u);
  EXPECT_EQ(s.cumulative[1], 3u);
  EXPECT_EQ(s.cumulative[2], 3u);
  EXPECT_EQ(s.cumulative[3], 4u);
  EXPECT_EQ(s.count, 4u);
  EXPECT_NEAR(s.sum_seconds, 2'000'850e-9, 1e-12);
}

TEST(ShardedHistogram, LosesNothingAcrossMoreThreadsThanStripes) {
  ShardedHistogram h(ShardedHistogram::OneTwoFive(1e-7, 10));
  const size_t threads = ShardedHistogram::kStripes + 8;  // some share a stripe
  std::vector<std::thread> pool;
  for (size_t t = 0; t < threads; ++t) {
    pool.emplace_back([&h] {
      for (int i = 0; i < 1000; ++i) h.Observe(30);
    });
  }
  for (auto& t : pool) t.join();
  auto s = h.Read();
  EXPECT_EQ(s.count, threads * 1000);
  EXPECT_EQ(s.cumulative[0], threads * 1000);  // all ≤ 100 ns
}

TEST(ShardedHistogram, CutsBoundsBeyondItsCapacity) {
  std::vector<double> many;
  for (size_t i = 1; i <= ShardedHistogram::kMaxBounds + 5; ++i) many.push_back(double(i));
  ShardedHistogram h(many);
  h.Observe(int64_t(1e12));
  auto s = h.Read();
  EXPECT_EQ(s.bounds.size(), ShardedHistogram::kMaxBounds);
  EXPECT_EQ(s.cumulative.back(), 1u);
}

}  // namespace
}  // namespace dyad

namespace dyad {
namespace {

TEST(ShardedHistogram, AWeightedObservationCountsAsThatManyInBucketsAndSum) {
  ShardedHistogram h({1e-7, 1e-6});
  h.Observe(40, 16);
  auto s = h.Read();
  EXPECT_EQ(s.cumulative[0], 16u);
  EXPECT_EQ(s.count, 16u);
  EXPECT_NEAR(s.sum_seconds, 640e-9, 1e-15);
}

}  // namespace
}  // namespace dyad
