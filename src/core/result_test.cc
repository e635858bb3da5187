#include "core/result.h"

#include <gtest/gtest.h>

#include "core/parse_int.h"

namespace dyad {
namespace {

// Issue 9, item 2: in a Release build value() on an error read the wrong
// variant alternative (an exception, or worse); it must stop the process
// with the error's words.
TEST(ResultDeathTest, ValueOnAnErrorAbortsWithTheMessage) {
  Result<int> r = MakeError(ErrorCode::kNotFound, "no provider p-1");
  EXPECT_DEATH((void)r.value(), "Result::value\\(\\) on an error: NOT_FOUND: no provider p-1");
  EXPECT_DEATH((void)*r, "Result::value\\(\\) on an error");
  EXPECT_DEATH((void)std::move(r).value(), "Result::value\\(\\) on an error");
  Result<int> ok = 7;
  EXPECT_DEATH((void)ok.error(), "Result::error\\(\\) on a success");
  EXPECT_EQ(ok.value(), 7);
}

// Issue 9, item 2: text to numbers without exceptions.
TEST(ParseInt, WholeNumbersOnly) {
  EXPECT_EQ(ParseInt<int64_t>("42"), 42);
  EXPECT_EQ(ParseInt<int64_t>("-7"), -7);
  EXPECT_EQ(ParseInt<int>("2147483647"), 2147483647);
  for (const char* bad : {"", " 1", "1 ", "+1", "1x", "0x10", "99999999999999999999", "1.5", "-"}) {
    EXPECT_FALSE(ParseInt<int64_t>(bad).has_value()) << bad;
  }
  EXPECT_FALSE(ParseInt<int>("2147483648").has_value());
  EXPECT_FALSE(ParseInt<uint32_t>("-1").has_value());
}

}  // namespace
}  // namespace dyad
