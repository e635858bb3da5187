// The ProviderLeases contract, on every registry engine (SQLite always,
// PostgreSQL when DYAD_TEST_PG_URL is set: testing/registry_engines.h).
// Two instances are two pools on one database with one fake clock.
#include <gtest/gtest.h>

#include <latch>
#include <thread>
#include <vector>

#include "testing/registry_engines.h"

namespace dyad {
namespace {

using std::chrono::seconds;

class ProviderLeasesContract : public testing::TwoInstanceContractTest {
 protected:
  void SetUp() override {
    TwoInstanceContractTest::SetUp();
    a_ = inst_a_.leases.get();
    b_ = inst_b_.leases.get();
  }
  ProviderLeases* a_ = nullptr;
  ProviderLeases* b_ = nullptr;
};

// Issue 9 item 3: a lease has one owner until it expires, then anyone may
// take it over; only its owner releases it.
TEST_P(ProviderLeasesContract, OneOwnerUntilExpiryThenTakeover) {
  EXPECT_TRUE(*a_->TryAcquire("p", "a", seconds(30)));
  EXPECT_FALSE(*b_->TryAcquire("p", "b", seconds(30)));
  EXPECT_FALSE(*a_->TryAcquire("p", "a", seconds(30)));  // held, by itself too: not re-entrant
  EXPECT_TRUE(*b_->TryAcquire("q", "b", seconds(30)));  // per provider
  ASSERT_TRUE(b_->Release("p", "b").ok());  // not b's to release
  EXPECT_FALSE(*b_->TryAcquire("p", "b", seconds(30)));
  fake_clock_.Advance(seconds(29));
  EXPECT_FALSE(*b_->TryAcquire("p", "b", seconds(30)));
  fake_clock_.Advance(seconds(1));
  EXPECT_TRUE(*b_->TryAcquire("p", "b", seconds(30)));  // a's expired: taken over
  ASSERT_TRUE(a_->Release("p", "a").ok());  // a, late, cannot free b's lease
  EXPECT_FALSE(*a_->TryAcquire("p", "c", seconds(30)));
  ASSERT_TRUE(b_->Release("p", "b").ok());
  EXPECT_TRUE(*a_->TryAcquire("p", "c", seconds(30)));
}

// Renew extends only its owner's lease, and tells a lost one.
TEST_P(ProviderLeasesContract, RenewKeepsTheLeaseOnlyForItsOwner) {
  ASSERT_TRUE(*a_->TryAcquire("p", "a", seconds(30)));
  fake_clock_.Advance(seconds(20));
  EXPECT_TRUE(*a_->Renew("p", "a", seconds(30)));  // now until +50 s
  EXPECT_FALSE(*b_->Renew("p", "b", seconds(30)));  // not b's
  fake_clock_.Advance(seconds(20));
  EXPECT_FALSE(*b_->TryAcquire("p", "b", seconds(30)));  // renewed: still a's at +40 s
  fake_clock_.Advance(seconds(10));
  EXPECT_TRUE(*b_->TryAcquire("p", "b", seconds(30)));  // +50 s: expired, taken over
  EXPECT_FALSE(*a_->Renew("p", "a", seconds(30)));  // a learns it lost it
  EXPECT_FALSE(*a_->Renew("unknown", "a", seconds(30)));
}

// Two instances (several threads each) try to take one free provider's
// lease at once: exactly one gets it, every round; then one expired lease,
// taken over by racers: again exactly one.
TEST_P(ProviderLeasesContract, ConcurrentAcquiresOfOneProviderHaveOneWinner) {
  constexpr int kRacers = 4;
  for (int round = 0; round < 20; ++round) {
    const std::string provider = "p-" + std::to_string(round % 10);  // rounds 10…19: expired leases
    std::latch start(kRacers);
    Result<bool> got[kRacers] = {false, false, false, false};
    std::vector<std::thread> threads;
    for (int i = 0; i < kRacers; ++i) {
      threads.emplace_back([&, i] {
        start.arrive_and_wait();
        got[i] = (i % 2 ? b_ : a_)->TryAcquire(provider, "owner-" + std::to_string(i), seconds(30));
      });
    }
    for (auto& t : threads) t.join();
    int winners = 0;
    for (int i = 0; i < kRacers; ++i) {
      ASSERT_TRUE(got[i].ok()) << got[i].error().message;
      winners += *got[i] ? 1 : 0;
    }
    EXPECT_EQ(winners, 1) << "round " << round;
    if (round == 9) fake_clock_.Advance(seconds(30));  // every lease taken so far expires
  }
}

DYAD_INSTANTIATE_ON_REGISTRY_ENGINES(ProviderLeasesContract);

}  // namespace
}  // namespace dyad
