// ConcurrencyLimit: the /v1 caps, in all and per client (issue 16 review, item 1).
#include "service/concurrency_limit.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace dyad {
namespace {

using Refusal = ConcurrencyLimit::Refusal;

TEST(ConcurrencyLimit, TheTotalCapRefusesAndAReleasedSlotIsFreeAgain) {
  ConcurrencyLimit limit({.total = 2, .per_client = 2});
  auto a = limit.TryAcquire("app");
  auto b = limit.TryAcquire("other");
  ASSERT_TRUE(a && b);
  Refusal why = Refusal::kNone;
  EXPECT_FALSE(limit.TryAcquire("third", &why));
  EXPECT_EQ(why, Refusal::kTotal);
  EXPECT_EQ(limit.InUse(), 2);
  a.reset();
  EXPECT_EQ(limit.InUse(), 1);
  auto c = limit.TryAcquire("third", &why);
  EXPECT_TRUE(c);
  EXPECT_EQ(why, Refusal::kNone);
}

TEST(ConcurrencyLimit, OneClientCannotTakeEverySlot) {
  ConcurrencyLimit limit({.total = 4, .per_client = 2});
  std::vector<ConcurrencyLimit::Slot> held;
  for (int i = 0; i < 2; ++i) {
    auto s = limit.TryAcquire("greedy");
    ASSERT_TRUE(s);
    held.push_back(std::move(*s));
  }
  Refusal why = Refusal::kNone;
  EXPECT_FALSE(limit.TryAcquire("greedy", &why));
  EXPECT_EQ(why, Refusal::kPerClient);
  // The others still get the rest; a refusal took nothing.
  auto x = limit.TryAcquire("polite");
  auto y = limit.TryAcquire("polite");
  ASSERT_TRUE(x && y);
  EXPECT_FALSE(limit.TryAcquire("polite", &why));
  EXPECT_EQ(why, Refusal::kTotal);
  EXPECT_EQ(limit.InUse(), 4);
  held.clear();  // the greedy client's slots come back, for it too
  EXPECT_TRUE(limit.TryAcquire("greedy"));
  EXPECT_EQ(limit.InUse(), 2);
}

TEST(ConcurrencyLimit, ManyThreadsNeverHoldMoreThanTheCap) {
  ConcurrencyLimit limit({.total = 3, .per_client = 3});
  std::atomic<int> inside{0}, most{0}, refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        auto s = limit.TryAcquire("app");
        if (!s) {
          ++refused;
          continue;
        }
        int now = ++inside;
        int seen = most.load();
        while (now > seen && !most.compare_exchange_weak(seen, now)) {
        }
        --inside;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LE(most.load(), 3);
  EXPECT_EQ(limit.InUse(), 0);
}

}  // namespace
}  // namespace dyad
