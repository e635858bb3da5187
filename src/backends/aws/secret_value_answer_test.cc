#include "backends/aws/secret_value_answer.h"

#include <gtest/gtest.h>

namespace dyad {
namespace {

using namespace std::string_view_literals;

// Both readers on `text`: the one-pass reader, when it decides, answers as
// the general parser does; returns the combined parser's answer.
Result<SecretValueAnswer> Parse(std::string_view text, bool expect_fast) {
  auto fast = ScanSecretValueAnswerForTesting(text);
  auto general = ParseSecretValueAnswerGeneralForTesting(text);
  EXPECT_EQ(fast.has_value(), expect_fast) << text;
  if (fast) {
    EXPECT_TRUE(general.ok()) << text;
    if (general.ok()) {
      EXPECT_EQ(fast->secret_string, general->secret_string) << text;
      EXPECT_EQ(fast->version_id, general->version_id) << text;
    }
  }
  auto combined = ParseSecretValueAnswer(text);
  EXPECT_EQ(combined.ok(), general.ok()) << text;
  if (combined.ok() && general.ok()) {
    EXPECT_EQ(combined->secret_string, general->secret_string);
    EXPECT_EQ(combined->version_id, general->version_id);
  }
  return combined;
}

TEST(SecretValueAnswer, ReadsMotosAnswerInOnePass) {
  auto a = Parse(R"({"ARN": "arn:aws:secretsmanager:us-east-1:1:secret:x-AbCdEf", "Name": "x",
                     "VersionId": "6a1f2c3e-0000-4000-8000-000000000001",
                     "SecretString": "{\"v\": 1, \"ct\": \"xx\"}", "VersionStages": ["AWSCURRENT"],
                     "CreatedDate": 1764536400.123})",
                 true);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->secret_string, R"({"v": 1, "ct": "xx"})");
  EXPECT_EQ(a->version_id, "6a1f2c3e-0000-4000-8000-000000000001");
}

TEST(SecretValueAnswer, DecodesEveryEscape) {
  auto a = Parse(R"({"SecretString":"q\" b\\ s\/ \b\f\n\r\t end","VersionId":"v"})", true);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->secret_string, "q\" b\\ s/ \b\f\n\r\t end");
}

TEST(SecretValueAnswer, DecodesUnicodeEscapesAndSurrogatePairs) {
  auto a = Parse(R"({"SecretString":"\u0041\u00e9\u20AC\ud83d\ude00\u0000x caf\u00C9 é😀"})", true);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*a->secret_string, std::string("A\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80", 10) + std::string(1, '\0') +
                                   "x caf\xC3\x89 \xC3\xA9\xF0\x9F\x98\x80");
  EXPECT_EQ(a->version_id, "");
}

TEST(SecretValueAnswer, KeysWithEscapesAreMatchedDecoded) {
  auto a = Parse(R"({"Secret\u0053tring":"s","Version\u0049d":"v"})", true);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->secret_string, "s");
  EXPECT_EQ(a->version_id, "v");
}

TEST(SecretValueAnswer, MissingOrNonStringFieldsAreAbsent) {
  auto none = Parse(R"({"SecretBinary":"AAEC","VersionStages":["AWSCURRENT"]})", true);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->secret_string);
  EXPECT_EQ(none->version_id, "");
  auto typed = Parse(R"({"SecretString":{"a":[1,2,{"b":null}]},"VersionId":17})", true);
  ASSERT_TRUE(typed.ok());
  EXPECT_FALSE(typed->secret_string);
  EXPECT_EQ(typed->version_id, "");
  auto empty = Parse("{}", true);
  ASSERT_TRUE(empty.ok());
  EXPECT_FALSE(empty->secret_string);
}

TEST(SecretValueAnswer, ErrorBodiesParseAsObjectsWithoutAValue) {
  auto a = Parse(R"({"__type":"ResourceNotFoundException","Message":"Secrets Manager can't find it."})", true);
  ASSERT_TRUE(a.ok());
  EXPECT_FALSE(a->secret_string);
}

TEST(SecretValueAnswer, AHugeValueIsReadWhole) {
  const std::string value(1 << 20, 'v');
  auto a = Parse(R"({"VersionId":"v","SecretString":")" + value + R"("})", true);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->secret_string, value);
}

TEST(SecretValueAnswer, WhatItDoesNotHandleGoesToTheGeneralParser) {
  // A number that might overflow a double (the general parser refuses it), a
  // repeated field (the last one counts), a byte-order mark, a NUL, deep nesting.
  auto huge = Parse(R"({"SecretString":"s","CreatedDate":1.7e400})", false);
  EXPECT_FALSE(huge.ok());
  auto near = Parse(R"({"SecretString":"s","CreatedDate":1.7e300})", false);
  ASSERT_TRUE(near.ok());
  EXPECT_EQ(near->secret_string, "s");
  auto long_whole = Parse(R"({"SecretString":"s","n":)" + std::string(301, '1') + "}", false);
  ASSERT_TRUE(long_whole.ok());
  auto twice = Parse(R"({"SecretString":"a","SecretString":"b"})", false);
  ASSERT_TRUE(twice.ok());
  EXPECT_EQ(twice->secret_string, "b");
  auto bom = Parse("\xEF\xBB\xBF{\"SecretString\":\"s\"}", false);
  ASSERT_TRUE(bom.ok());
  EXPECT_EQ(bom->secret_string, "s");
  // nlohmann/json takes a NUL byte for the end of the input.
  auto nul = Parse("{\"SecretString\":\"s\"}\0 x"sv, false);
  ASSERT_TRUE(nul.ok());
  EXPECT_EQ(nul->secret_string, "s");
  auto deep = Parse(R"({"a":)" + std::string(40, '[') + std::string(40, ']') + R"(,"SecretString":"s"})", false);
  ASSERT_TRUE(deep.ok());
  EXPECT_EQ(deep->secret_string, "s");
}

TEST(SecretValueAnswer, ExponentsAreReadInOnePass) {
  for (std::string_view n : {"1.7e9", "1.523477145713E9", "1E+2", "-2e-5", "0e0", "1e-999999999999", "1e299",
                             "-0.5E+0299"}) {
    auto a = Parse(R"({"SecretString":"s","CreatedDate":)" + std::string(n) + "}", true);
    ASSERT_TRUE(a.ok()) << n;
    EXPECT_EQ(a->secret_string, "s");
  }
  for (std::string_view bad : {"1e", "1E+", "1e-", "1.e5", "1ee5", "1e+-5", "1e5.0", "e5", "-e5"}) {
    auto a = Parse(R"({"SecretString":"s","CreatedDate":)" + std::string(bad) + "}", false);
    EXPECT_FALSE(a.ok()) << bad;
  }
}

TEST(SecretValueAnswer, WhatIsNotAJsonObjectIsRefusedAsTheGeneralParserDoes) {
  for (std::string_view bad : std::initializer_list<std::string_view>
       {"", "[]", "\"s\"", "null", "{", R"({"SecretString":"s"} x)", R"({"SecretString":"s",})",
        R"({"SecretString":"a\qb"})", R"({"SecretString":"\ud800"})", R"({"SecretString":"\udc00\ud800"})",
        R"({"SecretString":"\ud800\u0041"})", "{\"SecretString\":\"a\nb\"}", "{\"SecretString\":\"\xC3\x28\"}",
        "{\"SecretString\":\"\xED\xA0\x80\"}", R"({"SecretString":"s","n":01})", R"({"n":1.})", R"({"n":-})",
        R"({"n":tru})", R"({"SecretString":"\u12"})"}) {
    auto a = Parse(bad, false);
    ASSERT_FALSE(a.ok()) << bad;
    EXPECT_EQ(a.code(), ErrorCode::kUnavailable);
    EXPECT_EQ(a.error().message, "GetSecretValue: the answer is not a JSON object");
  }
}

// AWS itself writes timestamps with an exponent — the
// GetSecretValue API reference's raw answer is
// {"ARN":...,"CreatedDate":1.523477145713E9,...} (also DescribeDocument's
// "CreatedDate":1.585061751738E9) — so on the real service every answer
// went to the general parser: the one-pass reader ran only against moto,
// the instruction count and the "never grown" wipe held only there.
TEST(SecretValueAnswer, AwsDocumentedAnswerIsReadInOnePass) {
  auto a = Parse(R"({"ARN":"arn:aws:secretsmanager:us-west-2:123456789012:secret:MyTestDatabaseSecret-a1b2c3",)"
                 R"("CreatedDate":1.523477145713E9,"Name":"MyTestDatabaseSecret",)"
                 R"("SecretString":"{\n  \"username\":\"david\",\n  \"password\":\"EXAMPLE-PASSWORD\"\n}\n",)"
                 R"("VersionId":"EXAMPLE1-90ab-cdef-fedc-ba987SECRET1","VersionStages":["AWSPREVIOUS"]})",
                 true);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->version_id, "EXAMPLE1-90ab-cdef-fedc-ba987SECRET1");
}

}  // namespace
}  // namespace dyad
