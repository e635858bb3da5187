#include "core/cron.h"

#include <gtest/gtest.h>

#include "core/time_format.h"

namespace dyad {
namespace {

using std::chrono::system_clock;

system_clock::time_point At(int y, int mo, int d, int h = 0, int mi = 0) {
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  return system_clock::from_time_t(timegm(&tm));
}

// `expr`'s Next(t) (or, with `prev`, its Prev(t)), as FormatIso8601 writes it.
std::string SlotOf(const std::string& expr, system_clock::time_point t, bool prev) {
  auto c = CronSchedule::Parse(expr);
  EXPECT_TRUE(c.ok()) << expr << ": " << (c.ok() ? "" : c.error().message);
  if (!c.ok()) return "invalid";
  auto slot = prev ? c->Prev(t) : c->Next(t);
  return slot ? FormatIso8601(*slot) : "never";
}
std::string NextAfter(const std::string& expr, system_clock::time_point t) { return SlotOf(expr, t, false); }
std::string PrevAt(const std::string& expr, system_clock::time_point t) { return SlotOf(expr, t, true); }

TEST(Cron, EveryMinuteAndFixedTimes) {
  EXPECT_EQ(NextAfter("* * * * *", At(2026, 1, 1, 10, 30)), "2026-01-01T10:31:00.000Z");
  EXPECT_EQ(NextAfter("0 3 * * *", At(2026, 1, 1, 3, 0)), "2026-01-02T03:00:00.000Z");
  EXPECT_EQ(NextAfter("0 0 * * 0", At(2026, 1, 1)), "2026-01-04T00:00:00.000Z");  // a Sunday
}

TEST(Cron, RangesListsStepsAndNames) {
  EXPECT_EQ(NextAfter("*/15 * * * *", At(2026, 1, 1, 10, 16)), "2026-01-01T10:30:00.000Z");
  EXPECT_EQ(NextAfter("5-10/5 * * * *", At(2026, 1, 1, 10, 6)), "2026-01-01T10:10:00.000Z");
  EXPECT_EQ(NextAfter("0 9 * * MON-FRI", At(2026, 1, 2, 10)), "2026-01-05T09:00:00.000Z");  // Fri → Mon
  EXPECT_EQ(NextAfter("0 0 1 jan,JUL *", At(2026, 2, 1)), "2026-07-01T00:00:00.000Z");
  EXPECT_EQ(NextAfter("30 2 * * 7", At(2026, 1, 1)), "2026-01-04T02:30:00.000Z");  // 7 is Sunday
  EXPECT_EQ(NextAfter("0 12 10/10 * *", At(2026, 1, 11)), "2026-01-20T12:00:00.000Z");
}

TEST(Cron, DayOfMonthOrDayOfWeekWhenBothRestricted) {
  // The 13th or any Friday: 2026-02-06 is a Friday before the 13th.
  EXPECT_EQ(NextAfter("0 0 13 * FRI", At(2026, 2, 1)), "2026-02-06T00:00:00.000Z");
  EXPECT_EQ(NextAfter("0 0 13 * FRI", At(2026, 2, 6, 1)), "2026-02-13T00:00:00.000Z");
  // Only one restricted: both must hold (the 13th falling on a Friday is an AND when dow is *).
  EXPECT_EQ(NextAfter("0 0 13 * *", At(2026, 2, 1)), "2026-02-13T00:00:00.000Z");
}

TEST(Cron, MonthEnds) {
  EXPECT_EQ(NextAfter("0 0 31 * *", At(2026, 4, 1)), "2026-05-31T00:00:00.000Z");  // April has 30
  EXPECT_EQ(NextAfter("0 0 29 2 *", At(2026, 3, 1)), "2028-02-29T00:00:00.000Z");  // leap year
  EXPECT_EQ(NextAfter("59 23 31 12 *", At(2026, 12, 31, 23, 59)), "2027-12-31T23:59:00.000Z");
  EXPECT_EQ(NextAfter("0 0 30 2 *", At(2026, 1, 1)), "never");
}

// Prev: the slot a restarted scheduler last had (at or before now).
TEST(Cron, PrevIsTheLastMatchingMinuteAtOrBefore) {
  EXPECT_EQ(PrevAt("* * * * *", At(2026, 1, 1, 10, 30) + std::chrono::seconds(59)), "2026-01-01T10:30:00.000Z");
  EXPECT_EQ(PrevAt("0 3 * * *", At(2026, 1, 2, 3, 0)), "2026-01-02T03:00:00.000Z");  // at: itself
  EXPECT_EQ(PrevAt("0 3 * * *", At(2026, 1, 2, 2, 59)), "2026-01-01T03:00:00.000Z");
  EXPECT_EQ(PrevAt("30 2 * * MON", At(2026, 3, 15, 12)), "2026-03-09T02:30:00.000Z");  // Sunday → last Monday
  EXPECT_EQ(PrevAt("0 0 1 jan,JUL *", At(2026, 6, 30)), "2026-01-01T00:00:00.000Z");
  EXPECT_EQ(PrevAt("0 0 13 * FRI", At(2026, 2, 12)), "2026-02-06T00:00:00.000Z");  // the OR rule
  EXPECT_EQ(PrevAt("0 0 31 * *", At(2026, 5, 30)), "2026-03-31T00:00:00.000Z");  // April has 30
  EXPECT_EQ(PrevAt("0 0 29 2 *", At(2027, 3, 1)), "2024-02-29T00:00:00.000Z");  // leap year
  EXPECT_EQ(PrevAt("0 0 30 2 *", At(2026, 1, 1)), "never");
  // Against Next, every 7 h 13 min over two years: Prev(t) matches, and no match lies in (Prev(t), t].
  for (const char* expr : {"*/15 9-17 * * MON-FRI", "0 0 13 * FRI", "5 4 * * SUN", "0 12 10/10 2,8 *"}) {
    auto c = CronSchedule::Parse(expr);
    ASSERT_TRUE(c.ok()) << expr;
    for (auto t = At(2026, 1, 1); t < At(2028, 1, 1); t += std::chrono::minutes(7 * 60 + 13)) {
      auto prev = c->Prev(t);
      ASSERT_TRUE(prev.has_value()) << expr;
      EXPECT_TRUE(*prev <= t && c->Matches(*prev)) << expr << " at " << FormatIso8601(t);
      EXPECT_GT(*c->Next(*prev), t) << expr << " at " << FormatIso8601(t);
    }
  }
}

TEST(Cron, InvalidExpressionsSayWhy) {
  auto err = [](const std::string& e) {
    auto c = CronSchedule::Parse(e);
    EXPECT_FALSE(c.ok()) << e;
    return c.ok() ? "" : c.error().message;
  };
  EXPECT_NE(err("* * * *").find("expected 5 fields"), std::string::npos);
  EXPECT_NE(err("60 * * * *").find("minute field '60': 60 is out of range 0-59"), std::string::npos);
  EXPECT_NE(err("* 24 * * *").find("hour field"), std::string::npos);
  EXPECT_NE(err("* * 0 * *").find("day-of-month field"), std::string::npos);
  EXPECT_NE(err("* * * FOO *").find("'FOO' is not a month name"), std::string::npos);
  EXPECT_NE(err("* * * * 8").find("day-of-week field"), std::string::npos);
  EXPECT_NE(err("*/0 * * * *").find("step '0' must be a positive number"), std::string::npos);
  EXPECT_NE(err("10-5 * * * *").find("runs backwards"), std::string::npos);
  EXPECT_NE(err("1,,2 * * * *").find("empty list item"), std::string::npos);
  EXPECT_NE(err("a * * * *").find("is not a minute name"), std::string::npos);
}

}  // namespace
}  // namespace dyad
