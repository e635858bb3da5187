#include "cloud/refreshing_credential.h"

#include <gtest/gtest.h>

#include <atomic>
#include <deque>
#include <thread>
#include <vector>

#include "testing/gate.h"

namespace dyad {
namespace {

using std::chrono::minutes;
using std::chrono::seconds;

// A source answering from a script (the last answer repeats) and counting calls.
struct Source {
  explicit Source(const FakeClock& c) : clock(c) {}
  const FakeClock& clock;
  std::deque<Result<Expiring<std::string>>> script;
  std::atomic<int> calls{0};

  void Then(std::string value, Clock::Duration lifetime) {
    script.push_back(Expiring<std::string>{std::move(value), clock.WallNow() + lifetime});
  }
  void ThenFail(ErrorCode code) { script.push_back(MakeError(code, "source says no")); }
  Result<Expiring<std::string>> operator()() {
    ++calls;
    auto r = script.front();
    if (script.size() > 1) script.pop_front();
    return r;
  }
};

RefreshOptions Options() { return RefreshOptions{"test credential", minutes(5), seconds(30)}; }

TEST(RefreshingCredential, ServesTheCurrentOneUntilTheRefreshWindowThenRefreshesAhead) {
  FakeClock clock;
  Source source{clock};
  source.Then("first", minutes(60));
  RefreshingCredential<std::string> cred([&] { return source(); }, clock, Options());
  EXPECT_EQ(cred.Get().value(), "first");
  clock.Advance(minutes(54));  // six minutes left
  EXPECT_EQ(cred.Get().value(), "first");
  EXPECT_EQ(source.calls, 1);

  source.script.clear();
  source.Then("second", minutes(60));
  clock.Advance(minutes(2));  // four minutes left: refreshed before it expires
  EXPECT_EQ(cred.Get().value(), "second");
  EXPECT_EQ(source.calls, 2);
}

TEST(RefreshingCredential, ACredentialWithoutExpiryIsFetchedOnce) {
  FakeClock clock;
  int calls = 0;
  RefreshingCredential<int> cred(
      [&]() -> Result<Expiring<int>> { return Expiring<int>{++calls, std::nullopt}; }, clock, Options());
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(cred.Get().value(), 1);
    clock.Advance(std::chrono::hours(24 * 365));
  }
  EXPECT_EQ(calls, 1);
}

TEST(RefreshingCredential, AFailedRefreshKeepsTheOldOneAndRetriesNoSoonerThanTheInterval) {
  FakeClock clock;
  Source source{clock};
  source.Then("old", minutes(10));
  source.ThenFail(ErrorCode::kUnavailable);
  RefreshingCredential<std::string> cred([&] { return source(); }, clock, Options());
  ASSERT_EQ(cred.Get().value(), "old");

  clock.Advance(minutes(6));  // refresh due, source down
  EXPECT_EQ(cred.Get().value(), "old");
  EXPECT_EQ(source.calls, 2);
  clock.Advance(seconds(29));  // within the retry interval: no call
  EXPECT_EQ(cred.Get().value(), "old");
  EXPECT_EQ(cred.Get().value(), "old");
  EXPECT_EQ(source.calls, 2);
  clock.Advance(seconds(1));  // the interval has passed: tried again, still down
  EXPECT_EQ(cred.Get().value(), "old");
  EXPECT_EQ(source.calls, 3);

  source.script.clear();
  source.Then("new", minutes(60));
  clock.Advance(seconds(30));
  EXPECT_EQ(cred.Get().value(), "new");
  EXPECT_EQ(source.calls, 4);
}

TEST(RefreshingCredential, ExpiredAndFailingReturnsTheSourcesError) {
  FakeClock clock;
  Source source{clock};
  source.Then("old", minutes(10));
  source.ThenFail(ErrorCode::kPermissionDenied);
  RefreshingCredential<std::string> cred([&] { return source(); }, clock, Options());
  ASSERT_TRUE(cred.Get().ok());
  clock.Advance(minutes(10));  // expired now
  auto r = cred.Get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(r.error().message, "source says no");
  EXPECT_EQ(source.calls, 2);
}

// With nothing to serve, a source that refused (a wrong secret: each try
// counts toward a login lockout) is not asked again before the retry
// interval, doubled with each refusal in a row up to 8 times; one that is
// unavailable is asked at each call.
TEST(RefreshingCredential, ARefusalIsNotAskedAgainAtOnceAndBacksOff) {
  FakeClock clock;
  Source source{clock};
  source.ThenFail(ErrorCode::kPermissionDenied);
  RefreshingCredential<std::string> cred([&] { return source(); }, clock, Options());
  EXPECT_EQ(cred.Get().code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(cred.Get().error().message, "source says no");  // the refusal, kept
  EXPECT_EQ(source.calls, 1);
  int expected = 1;
  for (int wait : {30, 60, 120, 240, 240}) {
    clock.Advance(seconds(wait - 1));
    EXPECT_EQ(cred.Get().code(), ErrorCode::kPermissionDenied);
    EXPECT_EQ(source.calls, expected) << "before " << wait << " s";
    clock.Advance(seconds(1));
    EXPECT_EQ(cred.Get().code(), ErrorCode::kPermissionDenied);
    EXPECT_EQ(source.calls, ++expected) << "after " << wait << " s";
  }
  // A success ends the back-off; an unavailable source is asked each time.
  source.script.clear();
  source.ThenFail(ErrorCode::kUnavailable);
  clock.Advance(seconds(240));
  EXPECT_EQ(cred.Get().code(), ErrorCode::kUnavailable);
  EXPECT_EQ(cred.Get().code(), ErrorCode::kUnavailable);
  EXPECT_EQ(source.calls, expected + 2);
  source.script.clear();
  source.Then("fine", minutes(60));
  EXPECT_EQ(cred.Get().value(), "fine");
}

// Refusals met while refreshing ahead (the current credential still
// serving) arm no back-off: at expiry the source is asked again at once.
// Neither do a source's other failures (a file not there yet).
TEST(RefreshingCredential, ACredentialThatExpiresIsFetchedAgainAtOnce) {
  FakeClock clock;
  Source source{clock};
  source.Then("old", minutes(10));
  for (int i = 0; i < 4; ++i) source.ThenFail(ErrorCode::kPermissionDenied);
  source.Then("new", minutes(60));
  RefreshingCredential<std::string> cred([&] { return source(); }, clock, Options());
  ASSERT_EQ(cred.Get().value(), "old");
  clock.Advance(minutes(5));  // the refresh window: refused, the old one kept
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(cred.Get().value(), "old");
    clock.Advance(seconds(30));
  }
  EXPECT_EQ(source.calls, 4);
  clock.Advance(minutes(5));  // expired: asked at once (its 4th refusal), then the next call's fetch succeeds
  EXPECT_EQ(cred.Get().code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(source.calls, 5);
  clock.Advance(seconds(30));
  EXPECT_EQ(cred.Get().value(), "new");

  Source files{clock};
  files.ThenFail(ErrorCode::kFailedPrecondition);
  RefreshingCredential<std::string> late([&] { return files(); }, clock, Options());
  EXPECT_FALSE(late.Get().ok());
  EXPECT_FALSE(late.Get().ok());
  EXPECT_EQ(files.calls, 2);  // asked at each call
}

TEST(RefreshingCredential, TheFirstFetchFailingIsTheSourcesError) {
  FakeClock clock;
  Source source{clock};
  source.ThenFail(ErrorCode::kFailedPrecondition);
  RefreshingCredential<std::string> cred([&] { return source(); }, clock, Options());
  EXPECT_EQ(cred.Get().code(), ErrorCode::kFailedPrecondition);
}

TEST(RefreshingCredential, InvalidateFetchesAgainUnlessTheCredentialIsNew) {
  FakeClock clock;
  Source source{clock};
  source.Then("a", minutes(60));
  RefreshingCredential<std::string> cred([&] { return source(); }, clock, Options());
  EXPECT_TRUE(cred.Invalidate());  // nothing fetched yet: the first Get fetches anyway
  ASSERT_EQ(cred.Get().value(), "a");
  EXPECT_FALSE(cred.Invalidate());  // just fetched: a refusal of an older one, ignored
  EXPECT_EQ(cred.Get().value(), "a");
  EXPECT_EQ(source.calls, 1);

  source.script.clear();
  source.Then("b", minutes(60));
  clock.Advance(minutes(1));
  EXPECT_TRUE(cred.Invalidate());
  EXPECT_TRUE(cred.Invalidate());  // already invalidated: the next Get still fetches
  EXPECT_EQ(cred.Get().value(), "b");
  EXPECT_EQ(source.calls, 2);
  EXPECT_FALSE(cred.Invalidate());
}

TEST(RefreshingCredential, ARefreshTimeOfItsOwnReplacesTheWindowBeforeExpiry) {
  FakeClock clock;
  int calls = 0;
  RefreshingCredential<std::string> cred(
      [&]() -> Result<Expiring<std::string>> {
        ++calls;
        // A 60 s lease refreshed at 40 s, although the window (5 min) is longer than the lease.
        return Expiring<std::string>{std::to_string(calls), clock.WallNow() + seconds(60),
                                     clock.WallNow() + seconds(40)};
      },
      clock, Options());
  EXPECT_EQ(cred.Get().value(), "1");
  clock.Advance(seconds(39));
  EXPECT_EQ(cred.Get().value(), "1");
  EXPECT_EQ(calls, 1);
  clock.Advance(seconds(1));
  EXPECT_EQ(cred.Get().value(), "2");
  EXPECT_EQ(cred.Get().value(), "2");
  EXPECT_EQ(calls, 2);
}

TEST(RefreshingCredential, WithNothingUsableManyCallersShareOneFetch) {
  constexpr int kThreads = 16;
  FakeClock clock;
  std::atomic<int> calls{0};
  testing::Gate gate;  // the source passes it: held until opened
  RefreshingCredential<std::string> cred(
      [&]() -> Result<Expiring<std::string>> {
        ++calls;
        gate.Pass();
        return Expiring<std::string>{"fresh", clock.WallNow() + minutes(60)};
      },
      clock, Options());
  std::atomic<int> started{0};
  std::vector<std::string> got(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      ++started;
      got[i] = cred.Get().value();
    });
  }
  while (started < kThreads) std::this_thread::yield();
  gate.Open();
  for (auto& t : threads) t.join();
  // Callers that came after the fetch found it fresh; the others waited for it.
  EXPECT_EQ(calls, 1);
  for (const auto& v : got) EXPECT_EQ(v, "fresh");
}

TEST(RefreshingCredential, WhileOneCallerRefreshesTheOthersGetTheCurrentOne) {
  constexpr int kThreads = 16;
  FakeClock clock;
  std::atomic<int> calls{0};
  testing::Gate gate;  // the source passes it: held until opened
  RefreshingCredential<std::string> cred(
      [&]() -> Result<Expiring<std::string>> {
        if (++calls == 1) return Expiring<std::string>{"current", clock.WallNow() + minutes(10)};
        gate.Pass();
        return Expiring<std::string>{"next", clock.WallNow() + minutes(60)};
      },
      clock, Options());
  ASSERT_EQ(cred.Get().value(), "current");
  clock.Advance(minutes(6));  // refresh due, still valid

  std::atomic<int> served_current{0};
  std::thread refresher([&] { EXPECT_EQ(cred.Get().value(), "next"); });
  while (calls < 2) std::this_thread::yield();  // the refresher is inside the source
  std::vector<std::thread> others;
  for (int i = 0; i < kThreads; ++i) {
    others.emplace_back([&] {
      if (cred.Get().value() == "current") ++served_current;
    });
  }
  for (auto& t : others) t.join();  // none of them waited for the blocked fetch
  EXPECT_EQ(served_current, kThreads);
  gate.Open();
  refresher.join();
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(cred.Get().value(), "next");
}

TEST(RefreshingCredential, WaitersShareAFailedFetchsError) {
  FakeClock clock;
  std::atomic<int> calls{0};
  testing::Gate gate;  // the source passes it: held until opened
  RefreshingCredential<std::string> cred(
      [&]() -> Result<Expiring<std::string>> {
        ++calls;
        gate.Pass();
        return MakeError(ErrorCode::kUnavailable, "metadata service down");
      },
      clock, Options());
  std::thread first([&] { EXPECT_EQ(cred.Get().code(), ErrorCode::kUnavailable); });
  while (calls < 1) std::this_thread::yield();
  // A second caller now waits for the fetch in flight (or, if it comes after,
  // makes its own): either way it gets the source's error.
  std::thread second([&] {
    auto r = cred.Get();
    EXPECT_EQ(r.code(), ErrorCode::kUnavailable);
    EXPECT_EQ(r.error().message, "metadata service down");
  });
  gate.Open();
  first.join();
  second.join();
  EXPECT_LE(calls, 2);
}

}  // namespace
}  // namespace dyad
