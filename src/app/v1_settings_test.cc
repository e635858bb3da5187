// Issue 16 review, items 1 and 2: the /v1 caps stay below the blocking pool
// (and per client below the total); the upstream call's total deadline.
#include "app/v1_settings.h"

#include <gtest/gtest.h>

namespace dyad {
namespace {

std::string ErrorFor(const EnvMap& env, int pool = 16) {
  auto s = ReadV1Settings(env, pool);
  EXPECT_FALSE(s.ok());
  return s.ok() ? "" : s.error().message;
}

TEST(V1Settings, DefaultsLeaveFourThreadsAndNoTighterCapPerClient) {
  auto s = ReadV1Settings({}, 16);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->limits.total, 12);
  EXPECT_EQ(s->limits.per_client, 12);
  EXPECT_EQ(s->upstream_total, std::chrono::milliseconds(600000));
  s = ReadV1Settings({}, 6);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->limits.total, 2);
  EXPECT_EQ(s->limits.per_client, 2);
  s = ReadV1Settings({}, 2);  // too few to keep 4: still one for /admin
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->limits.total, 1);
  s = ReadV1Settings({}, 1);  // one thread in all: nothing to keep
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->limits.total, 1);
}

TEST(V1Settings, ACapThatCouldTakeEveryThreadIsAStartUpErrorNamingTheVariable) {
  EXPECT_NE(ErrorFor({{"GATEWAY_V1_MAX_CONCURRENT", "16"}})
                .find("GATEWAY_V1_MAX_CONCURRENT: 16 is not below GATEWAY_BLOCKING_THREADS (16)"),
            std::string::npos);
  EXPECT_NE(ErrorFor({{"GATEWAY_V1_MAX_CONCURRENT", "40"}}, 8).find("use an integer from 1 to 7"), std::string::npos);
  EXPECT_NE(ErrorFor({{"GATEWAY_V1_MAX_CONCURRENT", "0"}}).find("GATEWAY_V1_MAX_CONCURRENT: '0' is not valid"),
            std::string::npos);
  EXPECT_NE(ErrorFor({{"GATEWAY_V1_MAX_CONCURRENT", "lots"}}).find("GATEWAY_V1_MAX_CONCURRENT"), std::string::npos);
  EXPECT_NE(ErrorFor({{"GATEWAY_V1_MAX_CONCURRENT", "8"}, {"GATEWAY_V1_MAX_CONCURRENT_PER_CLIENT", "9"}})
                .find("GATEWAY_V1_MAX_CONCURRENT_PER_CLIENT: 9 is above GATEWAY_V1_MAX_CONCURRENT (8)"),
            std::string::npos);
  EXPECT_NE(ErrorFor({{"GATEWAY_UPSTREAM_TOTAL_TIMEOUT_MS", "0"}}).find("GATEWAY_UPSTREAM_TOTAL_TIMEOUT_MS"),
            std::string::npos);
  auto s = ReadV1Settings({{"GATEWAY_V1_MAX_CONCURRENT", "8"},
                           {"GATEWAY_V1_MAX_CONCURRENT_PER_CLIENT", "3"},
                           {"GATEWAY_UPSTREAM_TOTAL_TIMEOUT_MS", "250"}},
                          16);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->limits.total, 8);
  EXPECT_EQ(s->limits.per_client, 3);
  EXPECT_EQ(s->upstream_total, std::chrono::milliseconds(250));
}

}  // namespace
}  // namespace dyad

namespace dyad {
namespace {

// Issue 16 review round 2, item 2: the 401-forced read's window is a setting.
TEST(V1Settings, RefreshIntervalDefaultsToFiveSecondsAndIsValidated) {
  auto s = ReadV1Settings({}, 16);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->refresh_interval, std::chrono::milliseconds(5000));
  s = ReadV1Settings({{"GATEWAY_V1_REFRESH_INTERVAL_MS", "0"}}, 16);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->refresh_interval, std::chrono::milliseconds(0));
  s = ReadV1Settings({{"GATEWAY_V1_REFRESH_INTERVAL_MS", "250"}}, 16);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->refresh_interval, std::chrono::milliseconds(250));
  for (const char* bad : {"-1", "5s", "", " 5", "3600001", "99999999999999999999", "0x10"}) {
    EXPECT_NE(ErrorFor({{"GATEWAY_V1_REFRESH_INTERVAL_MS", bad}}).find("GATEWAY_V1_REFRESH_INTERVAL_MS"),
              std::string::npos)
        << bad;
  }
}

}  // namespace
}  // namespace dyad
