#include "transport/retry.h"

#include <gtest/gtest.h>

#include "testing/fakes.h"

namespace dyad {
namespace {

using std::chrono::milliseconds;

TEST(FullJitterBackoff, StaysWithinTheDoublingCeilingAndTheCap) {
  RetryPolicy p{5, milliseconds(100), milliseconds(1000)};
  testing::ConstantRandom lowest(0x00), highest(0xff);
  for (int retry = 0; retry < 40; ++retry) {
    EXPECT_EQ(FullJitterBackoff(p, retry, lowest).count(), 0);
    auto ceiling = std::min<int64_t>(1000, retry < 20 ? 100LL << retry : 1000);
    auto high = FullJitterBackoff(p, retry, highest);
    EXPECT_LE(high, milliseconds(ceiling));
    EXPECT_GT(high, milliseconds(ceiling) * 99 / 100);  // the top of the range is reachable
  }
}

TEST(WithRetries, RetriesNoMoreOnceMaxElapsedHasPassed) {
  FakeClock clock;
  testing::ConstantRandom half(0x80);
  RetryPolicy p{10, milliseconds(100), milliseconds(5000), milliseconds(1000)};
  int calls = 0;
  auto r = WithRetries(p, clock, half, [&]() -> Status {
    ++calls;
    clock.Advance(milliseconds(400));  // each attempt waits (a busy pool)
    return MakeError(ErrorCode::kUnavailable, "busy");
  });
  EXPECT_EQ(r.code(), ErrorCode::kUnavailable);
  // 400 ms, +50 slept, 850 ms, +100 slept: the third attempt ends at 1350 ms, past the limit.
  EXPECT_EQ(calls, 3);
  EXPECT_NE(r.error().message.find("(after 3 attempts)"), std::string::npos) << r.error().message;
}

TEST(WithRetries, RetriesOnlyUnavailableAndWaitsThroughTheClock) {
  FakeClock clock;
  testing::ConstantRandom half(0x80);
  RetryPolicy p{4, milliseconds(100), milliseconds(5000)};
  int calls = 0;
  auto r = WithRetries(p, clock, half, [&]() -> Result<int> {
    ++calls;
    if (calls < 3) return MakeError(ErrorCode::kUnavailable, "busy");
    return 7;
  });
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 7);
  EXPECT_EQ(calls, 3);
  // Half of 100 ms, then half of 200 ms.
  using Ms = std::chrono::duration<double, std::milli>;
  EXPECT_NEAR(Ms(clock.Slept()).count(), 150.0, 1.0);

  calls = 0;
  auto denied = WithRetries(p, clock, half, [&]() -> Status {
    ++calls;
    return MakeError(ErrorCode::kPermissionDenied, "no");
  });
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(denied.code(), ErrorCode::kPermissionDenied);

  calls = 0;
  auto down = WithRetries(p, clock, half, [&]() -> Status {
    ++calls;
    return MakeError(ErrorCode::kUnavailable, "connection refused");
  });
  EXPECT_EQ(calls, 4);
  EXPECT_EQ(down.code(), ErrorCode::kUnavailable);
  EXPECT_EQ(down.error().message, "connection refused (after 4 attempts)");
}

TEST(WithRetries, BeginsNoAttemptNorWaitPastTheDeadline) {
  FakeClock clock;
  testing::ConstantRandom half(0x80);
  RetryPolicy p{10, milliseconds(100), milliseconds(5000)};
  const Clock::Instant deadline = clock.Now() + milliseconds(1000);
  int calls = 0;
  auto r = WithRetries(p, clock, half, deadline, [&]() -> Status {
    ++calls;
    clock.Advance(milliseconds(300));
    return MakeError(ErrorCode::kUnavailable, "busy");
  });
  // 300 ms, +50 slept, 650 ms, +100 slept, 1050 ms: the third attempt,
  // begun before the deadline, ends past it, and no wait follows.
  EXPECT_EQ(calls, 3);
  EXPECT_LT(clock.Now(), deadline + milliseconds(300));
  EXPECT_EQ(r.code(), ErrorCode::kUnavailable);
  EXPECT_EQ(r.error().message, "busy (after 3 attempts, at its deadline)");

  // Past the deadline: the first attempt (fenced, or a read) is still made,
  // but not retried.
  calls = 0;
  auto late = WithRetries(p, clock, half, deadline, [&]() -> Status {
    ++calls;
    return MakeError(ErrorCode::kUnavailable, "busy");
  });
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(late.error().message, "busy (after 1 attempts, at its deadline)");
}

}  // namespace
}  // namespace dyad
