// LeasedSecrets on the fake source: resolves ordered by credentials version
// (a late loader of an older version revokes and caches nothing), a late
// resolve after RevokeAll, and one provider's slow backend call not holding
// up another provider's resolve.
#include "service/leased_secrets.h"

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <thread>

#include "secrets/credentials.h"
#include "testing/fake_dynamic_secrets.h"
#include "testing/fakes.h"

namespace dyad {
namespace {

using namespace std::chrono_literals;

Credentials Refs(int64_t version, const std::string& path = "database/creds/ro") {
  Credentials c;
  c.version = version;
  c.fields.emplace("api_key", EncodeReference({path, "password"}));
  c.fields.emplace("user", EncodeReference({path, "username"}));
  return c;
}

TEST(LeasedSecretsTest, ALateResolveOfAnOlderVersionRevokesNothingReadsNothingAndFailsToBeReadAgain) {
  testing::FakeDynamicSecrets source;
  FakeClock clock;
  LeasedSecrets leased(source, clock);
  Credentials v2 = Refs(2);
  ASSERT_TRUE(leased.Resolve("p", v2).ok());
  // A loader that read version 1 before the update finishes after it.
  Credentials v1 = Refs(1);
  Status late = leased.Resolve("p", v1);
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.code(), ErrorCode::kConflict);
  EXPECT_NE(late.error().message.find("version 1"), std::string::npos) << late.error().message;
  EXPECT_NE(late.error().message.find("version 2"), std::string::npos) << late.error().message;
  EXPECT_EQ(late.error().message.find(testing::kDynamicCanary), std::string::npos);
  EXPECT_TRUE(DecodeReference(v1.fields.at("api_key")).has_value()) << "no value handed to the late loader";
  EXPECT_TRUE(source.revoked().empty());
  EXPECT_EQ(source.reads().size(), 1u);
  // Version 2 keeps its lease: no flip-flop.
  Credentials again = Refs(2);
  ASSERT_TRUE(leased.Resolve("p", again).ok());
  EXPECT_EQ(again.fields.at("api_key"), v2.fields.at("api_key"));
  EXPECT_EQ(source.reads().size(), 1u);
  EXPECT_TRUE(source.revoked().empty());
  EXPECT_EQ(leased.LeaseCount("p"), 1u);
}

TEST(LeasedSecretsTest, ANewerVersionStillSupersedesTheHeldLease) {
  testing::FakeDynamicSecrets source;
  FakeClock clock;
  LeasedSecrets leased(source, clock);
  Credentials v1 = Refs(1);
  ASSERT_TRUE(leased.Resolve("p", v1).ok());
  Credentials v2 = Refs(2);
  ASSERT_TRUE(leased.Resolve("p", v2).ok());
  EXPECT_EQ(source.reads().size(), 2u);
  ASSERT_EQ(source.revoked().size(), 1u);
  EXPECT_EQ(source.revoked()[0], "database/creds/ro/1");
  EXPECT_EQ(leased.LeaseCount("p"), 1u);
  EXPECT_EQ(leased.LeaseCount("unknown-provider"), 0u);
}

TEST(LeasedSecretsTest, AResolveFinishingAfterRevokeAllCachesNothingAndReadsNothing) {
  testing::FakeDynamicSecrets source;
  FakeClock clock;
  LeasedSecrets leased(source, clock);
  Credentials c = Refs(1);
  ASSERT_TRUE(leased.Resolve("p", c).ok());
  auto r = leased.RevokeAll("p");  // provider deleted
  EXPECT_EQ(r.revoked, 1u);
  Credentials late = Refs(1);  // a load that began before the delete
  Status s = leased.Resolve("p", late);
  EXPECT_EQ(s.code(), ErrorCode::kConflict);
  EXPECT_EQ(leased.LeaseCount("p"), 0u) << "a lease of a deleted provider held and never revoked";
  EXPECT_EQ(source.reads().size(), 1u);
  EXPECT_EQ(source.revoked().size(), 1u);
  EXPECT_EQ(leased.RevokeAll("p").revoked, 0u);
  // Credentials replaced (a newer version) resolve and are held as before.
  Credentials v2 = Refs(2);
  ASSERT_TRUE(leased.Resolve("p", v2).ok());
  EXPECT_EQ(leased.LeaseCount("p"), 1u);
  EXPECT_EQ(source.reads().size(), 2u);
  // Another provider is not affected by p's RevokeAll.
  Credentials q = Refs(1);
  EXPECT_TRUE(leased.Resolve("q", q).ok());
  EXPECT_EQ(leased.LeaseCount("q"), 1u);
}

// Reopen: an undo put version 1 back after the write of version 2 ended
// its leases.
class LeasedSecretsReopenTest : public ::testing::Test {
 protected:
  // Version `version`'s credentials, resolved (the test fails if not).
  Credentials Resolved(int64_t version) {
    Credentials c = Refs(version);
    Status s = leased_.Resolve("p", c);
    EXPECT_TRUE(s.ok()) << s.error().message;
    return c;
  }
  testing::FakeDynamicSecrets source_;
  FakeClock clock_;
  LeasedSecrets leased_{source_, clock_};
};

// Version 1 resolves again, with a new lease; older versions stay refused.
TEST_F(LeasedSecretsReopenTest, AVersionReopenedAfterRevokeAllResolvesAgainWithANewLease) {
  Credentials v1 = Resolved(1);
  leased_.RevokeAll("p");  // the write of version 2 replaced them
  Credentials refused = Refs(1);
  EXPECT_EQ(leased_.Resolve("p", refused).code(), ErrorCode::kConflict);

  leased_.Reopen("p", 1);  // … and was undone
  Credentials again = Resolved(1);
  EXPECT_NE(again.fields.at("api_key"), v1.fields.at("api_key"));  // a new lease: the old one was revoked
  EXPECT_EQ(source_.reads().size(), 2u);
  Credentials older = Refs(0);
  EXPECT_EQ(leased_.Resolve("p", older).code(), ErrorCode::kConflict);
  EXPECT_EQ(source_.reads().size(), 2u);
}

// A loader resolved the undone version 2 before the undo: the reopen
// revokes its lease, and version 1 is no longer refused as older.
TEST_F(LeasedSecretsReopenTest, AReopenRevokesTheLeasesOfTheUndoneVersion) {
  Resolved(1);
  leased_.RevokeAll("p");
  Resolved(2);
  leased_.Reopen("p", 1);
  EXPECT_EQ(source_.revoked(), (std::vector<std::string>{"database/creds/ro/1", "database/creds/ro/2"}));
  EXPECT_EQ(leased_.LeaseCount("p"), 0u);
  Resolved(1);
  EXPECT_EQ(source_.reads().size(), 3u);
  EXPECT_EQ(leased_.LeaseCount("p"), 1u);
}

// Reopening the version whose leases are held (nothing was ended) keeps them.
TEST_F(LeasedSecretsReopenTest, AReopenOfTheHeldVersionKeepsItsLeases) {
  Credentials v1 = Resolved(1);
  leased_.Reopen("p", 1);
  EXPECT_EQ(Resolved(1).fields.at("api_key"), v1.fields.at("api_key"));
  EXPECT_EQ(source_.reads().size(), 1u);
  EXPECT_TRUE(source_.revoked().empty());
}

TEST(LeasedSecretsTest, AResolveThatFailedStillMarksItsVersionForRevokeAll) {
  testing::FakeDynamicSecrets source;
  FakeClock clock;
  LeasedSecrets leased(source, clock);
  source.read_error = MakeError(ErrorCode::kUnavailable, "vault is sealed");
  Credentials c = Refs(3);
  EXPECT_EQ(leased.Resolve("p", c).code(), ErrorCode::kUnavailable);
  leased.RevokeAll("p");
  source.read_error.reset();
  Credentials late = Refs(3);
  EXPECT_EQ(leased.Resolve("p", late).code(), ErrorCode::kConflict);
  EXPECT_EQ(leased.LeaseCount("p"), 0u);
  EXPECT_EQ(source.reads().size(), 1u);
}

TEST(LeasedSecretsTest, VersionZeroCredentialsStillResolveAndAreReused) {
  testing::FakeDynamicSecrets source;
  FakeClock clock;
  LeasedSecrets leased(source, clock);
  Credentials a = Refs(0), b = Refs(0);
  ASSERT_TRUE(leased.Resolve("p", a).ok());
  leased.RevokeAll("q");  // another provider, never resolved: no mark
  ASSERT_TRUE(leased.Resolve("p", b).ok());
  EXPECT_EQ(source.reads().size(), 1u);
  Credentials q = Refs(1);
  EXPECT_TRUE(leased.Resolve("q", q).ok());
}

TEST(LeasedSecretsTest, ASlowReadOfOneProviderDoesNotHoldUpAnother) {
  testing::FakeDynamicSecrets source;
  FakeClock clock;
  LeasedSecrets leased(source, clock);
  std::promise<void> entered, release;
  std::shared_future<void> released = release.get_future().share();
  source.before_read = [&](const std::string& path) {
    if (path.starts_with("slow/")) {
      entered.set_value();
      released.wait();
    }
  };
  auto slow = std::async(std::launch::async, [&] {
    Credentials c = Refs(1, "slow/creds/ro");
    return leased.Resolve("a", c);
  });
  entered.get_future().wait();  // provider a's read is now in the (sealed, slow) backend
  auto fast = std::async(std::launch::async, [&] {
    Credentials c = Refs(1);
    return leased.Resolve("b", c);
  });
  const bool done = fast.wait_for(10s) == std::future_status::ready;
  EXPECT_TRUE(done) << "provider b waited for provider a's backend call";
  release.set_value();
  EXPECT_TRUE(slow.get().ok());
  EXPECT_TRUE(fast.get().ok());
  EXPECT_EQ(leased.LeaseCount("a"), 1u);
  EXPECT_EQ(leased.LeaseCount("b"), 1u);
}

TEST(LeasedSecretsTest, ConcurrentResolvesOfOneProviderMakeOneRead) {
  testing::FakeDynamicSecrets source;
  FakeClock clock;
  LeasedSecrets leased(source, clock);
  std::promise<void> entered, release;
  std::shared_future<void> released = release.get_future().share();
  bool first = true;
  source.before_read = [&](const std::string&) {
    if (!first) return;
    first = false;
    entered.set_value();
    released.wait();
  };
  auto one = std::async(std::launch::async, [&] {
    Credentials c = Refs(1);
    return leased.Resolve("p", c);
  });
  entered.get_future().wait();
  auto two = std::async(std::launch::async, [&] {
    Credentials c = Refs(1);
    Status s = leased.Resolve("p", c);
    return s.ok() ? std::string(c.fields.at("api_key").view()) : s.error().message;
  });
  release.set_value();
  ASSERT_TRUE(one.get().ok());
  EXPECT_EQ(two.get(), std::string(testing::kDynamicCanary) + "-p1");
  EXPECT_EQ(source.reads().size(), 1u);
}

}  // namespace
}  // namespace dyad
