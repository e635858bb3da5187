// ProviderLocks::Interrupt: the waits of Hold() end when the server's
// shutdown begins (a write waiting up to max_wait for another writer would
// otherwise keep the process past its shutdown grace).
#include "service/provider_locks.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include "core/clock.h"
#include "core/random.h"

namespace dyad {
namespace {

using namespace std::chrono_literals;

// Another instance holds every lease, for good; counts the asks.
class TakenLeases final : public ProviderLeases {
 public:
  Result<bool> TryAcquire(const std::string&, const std::string&, Clock::Duration) override {
    ++asks;
    return false;
  }
  Result<bool> Renew(const std::string&, const std::string&, Clock::Duration) override { return false; }
  Status Release(const std::string&, const std::string&) override { return OkStatus(); }
  std::atomic<int> asks{0};
};

ProviderLeaseOptions Patient() {
  ProviderLeaseOptions o;
  o.max_wait = 10min;  // longer than any test: only the interrupt ends the wait
  o.poll = 1ms;
  return o;
}

// Polls `done` (bounded): true once it holds.
template <class Fn>
bool Eventually(Fn done) {
  const auto give_up = std::chrono::steady_clock::now() + 30s;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= give_up) return false;
    std::this_thread::yield();
  }
  return true;
}

TEST(ProviderLocksInterrupt, AWaitForAnotherInstancesLeaseEndsAtTheInterrupt) {
  SystemClock clock;
  TakenLeases leases;
  ProviderLocks locks(&leases, clock, DefaultRandom(), Patient());
  auto held = std::async(std::launch::async, [&] { return locks.Hold("p"); });
  ASSERT_TRUE(Eventually([&] { return leases.asks.load() >= 2; })) << "Hold never asked for the lease";
  locks.Interrupt();
  if (held.wait_for(30s) != std::future_status::ready) {
    ADD_FAILURE() << "Hold still waits after the interrupt";
    std::_Exit(1);  // the waiting thread cannot be joined
  }
  auto r = held.get();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.code(), ErrorCode::kUnavailable);
  EXPECT_NE(r.error().message.find("shutting down"), std::string::npos) << r.error().message;
}

TEST(ProviderLocksInterrupt, AProviderHeldInThisProcessIsNotWaitedForAfterTheInterrupt) {
  SystemClock clock;
  ProviderLocks locks(nullptr, clock, DefaultRandom(), Patient());
  auto first = locks.Hold("p");
  ASSERT_TRUE(first.ok()) << first.error().message;
  locks.Interrupt();
  auto second = std::async(std::launch::async, [&] { return locks.Hold("p"); });
  if (second.wait_for(30s) != std::future_status::ready) {
    ADD_FAILURE() << "Hold waited for the held provider after the interrupt";
    std::_Exit(1);
  }
  EXPECT_EQ(second.get().code(), ErrorCode::kUnavailable);
  // A provider free at once is still taken: a request in flight finishes its write.
  first->reset();
  auto free = locks.Hold("p");
  EXPECT_TRUE(free.ok()) << free.error().message;
}

}  // namespace
}  // namespace dyad
