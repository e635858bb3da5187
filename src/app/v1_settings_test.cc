// Issue 16: /v1 runs on its own pool (GATEWAY_V1_THREADS); the caps stay
// within it (and per client within the total); the upstream call's total
// deadline.
#include "app/v1_settings.h"

#include <gtest/gtest.h>

namespace dyad {
namespace {

std::string ErrorFor(const EnvMap& env) {
  auto s = ReadV1Settings(env);
  EXPECT_FALSE(s.ok());
  return s.ok() ? "" : s.error().message;
}

TEST(V1Settings, DefaultsAreAPoolOf64AndACapThatLeavesFourThreadsFor429s) {
  auto s = ReadV1Settings({});
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->threads, 64);
  EXPECT_EQ(s->limits.total, 60);  // 16 concurrent streams are far from it
  EXPECT_EQ(s->limits.per_client, 60);
  EXPECT_EQ(s->upstream_total, std::chrono::milliseconds(600000));
  s = ReadV1Settings({{"GATEWAY_V1_THREADS", "6"}});
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->threads, 6);
  EXPECT_EQ(s->limits.total, 2);
  EXPECT_EQ(s->limits.per_client, 2);
  s = ReadV1Settings({{"GATEWAY_V1_THREADS", "2"}});  // too few to keep 4
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->limits.total, 1);
  // The admin pool no longer bounds /v1: a tiny GATEWAY_BLOCKING_THREADS
  // is not this function's concern.
  s = ReadV1Settings({{"GATEWAY_BLOCKING_THREADS", "1"}, {"GATEWAY_V1_MAX_CONCURRENT", "64"}});
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->limits.total, 64);
  // A cap set alone (a deployment from before the pool) brings its pool.
  EXPECT_EQ(s->threads, 68);
  s = ReadV1Settings({{"GATEWAY_V1_MAX_CONCURRENT", "200"}});
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->threads, 204);
}

TEST(V1Settings, BadPoolOrCapAboveThePoolIsAStartUpErrorNamingTheVariable) {
  EXPECT_NE(ErrorFor({{"GATEWAY_V1_THREADS", "64"}, {"GATEWAY_V1_MAX_CONCURRENT", "64"}})
                .find("GATEWAY_V1_MAX_CONCURRENT: 64 is not below GATEWAY_V1_THREADS (64)"),
            std::string::npos);
  EXPECT_NE(ErrorFor({{"GATEWAY_V1_THREADS", "8"}, {"GATEWAY_V1_MAX_CONCURRENT", "40"}})
                .find("use an integer from 1 to 7"),
            std::string::npos);
  for (const char* bad : {"0", "-1", "1025", "lots", "", " 8", "8x", "0x10"}) {
    EXPECT_NE(ErrorFor({{"GATEWAY_V1_THREADS", bad}}).find("GATEWAY_V1_THREADS"), std::string::npos) << bad;
  }
  EXPECT_NE(ErrorFor({{"GATEWAY_V1_MAX_CONCURRENT", "0"}}).find("GATEWAY_V1_MAX_CONCURRENT: '0' is not valid"),
            std::string::npos);
  EXPECT_NE(ErrorFor({{"GATEWAY_V1_MAX_CONCURRENT", "lots"}}).find("GATEWAY_V1_MAX_CONCURRENT"), std::string::npos);
  EXPECT_NE(ErrorFor({{"GATEWAY_V1_MAX_CONCURRENT", "8"}, {"GATEWAY_V1_MAX_CONCURRENT_PER_CLIENT", "9"}})
                .find("GATEWAY_V1_MAX_CONCURRENT_PER_CLIENT: 9 is above GATEWAY_V1_MAX_CONCURRENT (8)"),
            std::string::npos);
  EXPECT_NE(ErrorFor({{"GATEWAY_UPSTREAM_TOTAL_TIMEOUT_MS", "0"}}).find("GATEWAY_UPSTREAM_TOTAL_TIMEOUT_MS"),
            std::string::npos);
  auto s = ReadV1Settings({{"GATEWAY_V1_THREADS", "8"},
                           {"GATEWAY_V1_MAX_CONCURRENT", "7"},
                           {"GATEWAY_V1_MAX_CONCURRENT_PER_CLIENT", "3"},
                           {"GATEWAY_UPSTREAM_TOTAL_TIMEOUT_MS", "250"}});
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->threads, 8);
  EXPECT_EQ(s->limits.total, 7);
  EXPECT_EQ(s->limits.per_client, 3);
  EXPECT_EQ(s->upstream_total, std::chrono::milliseconds(250));
}

}  // namespace
}  // namespace dyad

namespace dyad {
namespace {

// Issue 16 review round 2, item 2: the 401-forced read's window is a setting.
TEST(V1Settings, RefreshIntervalDefaultsToFiveSecondsAndIsValidated) {
  auto s = ReadV1Settings({});
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->refresh_interval, std::chrono::milliseconds(5000));
  s = ReadV1Settings({{"GATEWAY_V1_REFRESH_INTERVAL_MS", "0"}});
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->refresh_interval, std::chrono::milliseconds(0));
  s = ReadV1Settings({{"GATEWAY_V1_REFRESH_INTERVAL_MS", "250"}});
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
