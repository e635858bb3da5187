#include "core/parallel.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

namespace dyad {
namespace {

TEST(ParallelFor, EveryIndexExactlyOnceOnSeveralThreads) {
  // Each call waits until four calls are in flight at once: that can only
  // happen on four threads, so a ParallelFor that ran the calls one after
  // another (or on fewer threads) fails here instead of passing. The wait has
  // a deadline so that such a ParallelFor fails rather than hangs.
  constexpr size_t kThreads = 4;
  std::vector<std::atomic<int>> seen(1000);
  std::mutex mu;
  std::condition_variable cv;
  size_t arrived = 0;
  bool all_arrived = false, gave_up = false;
  std::set<std::thread::id> threads;
  ParallelFor(seen.size(), kThreads, [&](size_t i) {
    ++seen[i];
    std::unique_lock lock(mu);
    threads.insert(std::this_thread::get_id());
    if (all_arrived || gave_up) return;
    if (++arrived == kThreads) {
      all_arrived = true;
      cv.notify_all();
      return;
    }
    if (!cv.wait_for(lock, std::chrono::seconds(30), [&] { return all_arrived; })) gave_up = true;
  });
  EXPECT_FALSE(gave_up) << "never " << kThreads << " calls at once";
  for (auto& s : seen) EXPECT_EQ(s.load(), 1);
  EXPECT_EQ(threads.size(), kThreads);
  EXPECT_EQ(threads.count(std::this_thread::get_id()), 1u);  // the caller's thread is one of them
}

TEST(ParallelFor, OneThreadRunsInlineInOrder) {
  std::vector<size_t> order;
  std::set<std::thread::id> threads;
  ParallelFor(5, 1, [&](size_t i) {
    order.push_back(i);
    threads.insert(std::this_thread::get_id());
  });
  EXPECT_EQ(order, (std::vector<size_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(threads, (std::set<std::thread::id>{std::this_thread::get_id()}));
  ParallelFor(0, 8, [&](size_t) { FAIL() << "no work, no call"; });
}

}  // namespace
}  // namespace dyad
