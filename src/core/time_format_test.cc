#include "core/time_format.h"

#include <gtest/gtest.h>

namespace dyad {
namespace {

using std::chrono::system_clock;

system_clock::time_point At(const char* iso) { return ParseIso8601(iso).value(); }

TEST(Iso8601, RefusesTimesSystemClockCannotHold) {
  EXPECT_TRUE(ParseIso8601("2262-01-01T00:00:00Z"));
  EXPECT_FALSE(ParseIso8601("0026-11-30T10:20:30.123Z"));  // found by aws_answers_fuzz
  EXPECT_FALSE(ParseIso8601("9999-12-31T23:59:59Z"));
}

TEST(HttpDate, ParsesTheThreeFormsOfRfc7231) {
  const auto t = At("1994-11-06T08:49:37Z");
  EXPECT_EQ(ParseHttpDate("Sun, 06 Nov 1994 08:49:37 GMT"), t);   // IMF-fixdate
  EXPECT_EQ(ParseHttpDate("Sunday, 06-Nov-94 08:49:37 GMT"), t);  // rfc850-date
  EXPECT_EQ(ParseHttpDate("Sun Nov  6 08:49:37 1994"), t);        // asctime-date
  EXPECT_EQ(ParseHttpDate("Thu, 01 Jan 2026 01:00:00 GMT"), At("2026-01-01T01:00:00Z"));
  EXPECT_EQ(ParseHttpDate("Thursday, 01-Jan-26 01:00:00 GMT"), At("2026-01-01T01:00:00Z"));
  EXPECT_EQ(ParseHttpDate("Mon Dec 31 23:59:59 2029"), At("2029-12-31T23:59:59Z"));
  EXPECT_EQ(ParseHttpDate("Tue, 29 Feb 2028 12:00:00 GMT"), At("2028-02-29T12:00:00Z"));  // leap year
  EXPECT_EQ(ParseHttpDate("Wed, 31 Dec 2025 23:59:60 GMT"), At("2026-01-01T00:00:00Z"));  // leap second
}

TEST(HttpDate, RejectsEverythingElse) {
  for (const char* bad : {
           "",
           "Sun, 06 Nov 1994 08:49:37",        // no zone
           "Sun, 06 Nov 1994 08:49:37 UTC",    // another zone name
           "Sun, 06 Nov 1994 08:49:37 +0000",  // a numeric offset
           "Sun, 6 Nov 1994 08:49:37 GMT",     // one-digit day
           "sun, 06 nov 1994 08:49:37 GMT",    // names are case-sensitive
           "Sun, 06 Foo 1994 08:49:37 GMT",    // no such month
           "Xyz, 06 Nov 1994 08:49:37 GMT",    // no such day
           "Sun, 31 Apr 2026 08:49:37 GMT",    // no such date
           "Sun, 29 Feb 2026 08:49:37 GMT",    // not a leap year
           "Sun, 06 Nov 1994 24:00:00 GMT",    // no such hour
           "Sun, 06 Nov 1994 08:60:00 GMT",    // no such minute
           "Sun, 06 Nov 4726 08:49:37 GMT",    // past what system_clock holds
           "Sun, 06 Nov 0001 08:49:37 GMT",
           " Sun, 06 Nov 1994 08:49:37 GMT",   // anything around the value
           "Sun, 06 Nov 1994 08:49:37 GMT ",
           "Sun, 06 Nov 1994 08:49:37 GMTx",
           "Sunday, 06-Nov-1994 08:49:37 GMT",  // rfc850 with four digits
           "Sun Nov 6 08:49:37 1994",           // asctime's day is space-padded
           "2026-01-01T00:00:00Z",              // ISO 8601 is not an HTTP-date
           "120",                               // nor is a Retry-After delay
       }) {
    EXPECT_FALSE(ParseHttpDate(bad)) << '"' << bad << '"';
  }
}

TEST(HttpDate, FormatsImfFixdateThatParsesBack) {
  const auto t = At("2026-01-01T00:00:00Z");
  EXPECT_EQ(FormatHttpDate(t), "Thu, 01 Jan 2026 00:00:00 GMT");
  EXPECT_EQ(FormatHttpDate(At("1994-11-06T08:49:37.900Z")), "Sun, 06 Nov 1994 08:49:37 GMT");  // sub-seconds dropped
  for (auto offset : {std::chrono::hours(0), std::chrono::hours(37), std::chrono::hours(24 * 400 + 5)}) {
    EXPECT_EQ(ParseHttpDate(FormatHttpDate(t + offset)), t + offset);
  }
}

}  // namespace
}  // namespace dyad
