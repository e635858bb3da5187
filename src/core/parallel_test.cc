#include "core/parallel.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

namespace dyad {
namespace {

TEST(ParallelFor, EveryIndexExactlyOnceOnSeveralThreads) {
  std::vector<std::atomic<int>> seen(1000);
  std::mutex mu;
  std::set<std::thread::id> threads;
  ParallelFor(seen.size(), 4, [&](size_t i) {
    ++seen[i];
    std::lock_guard lock(mu);
    threads.insert(std::this_thread::get_id());
  });
  for (auto& s : seen) EXPECT_EQ(s.load(), 1);
  EXPECT_LE(threads.size(), 4u);
}

TEST(ParallelFor, OneThreadRunsInlineInOrder) {
  std::vector<size_t> order;
  ParallelFor(5, 1, [&](size_t i) { order.push_back(i); });
  EXPECT_EQ(order, (std::vector<size_t>{0, 1, 2, 3, 4}));
  ParallelFor(0, 8, [&](size_t) { FAIL() << "no work, no call"; });
}

}  // namespace
}  // namespace dyad
