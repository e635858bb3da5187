#include "api/provider_json.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace dyad {
namespace {

std::string ErrorOf(const std::string& body, BodyKind kind = BodyKind::kCreate) {
  auto r = ParseProviderBody(body, kind);
  EXPECT_FALSE(r.ok()) << body;
  return r.ok() ? "" : r.error().message;
}

TEST(ProviderJson, ValidCreate) {
  auto r = ParseProviderBody(R"({"name":"OpenAI","slug":"openai-1","type":"http-sdk","enabled":false,
    "models":[{"dyadModelId":"gpt","adapterModelId":"gpt-4o","maxTokens":4096,"contextWindow":128000}],
    "adapterConfig":{"baseUrl":"https://x"},"credentials":{"api_key":"sk-1"}})", BodyKind::kCreate);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r->slug, "openai-1");
  EXPECT_FALSE(*r->enabled);
  EXPECT_EQ(r->credentials->at("api_key").view(), "sk-1");
}

TEST(ProviderJson, EachBadFieldIsNamed) {
  EXPECT_NE(ErrorOf("{").find("malformed JSON"), std::string::npos);
  EXPECT_NE(ErrorOf("[]").find("JSON object"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"slug":"a","type":"local"})").find("'name' is required"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":1,"slug":"a","type":"local"})").find("'name' must be a string"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"n","slug":"Bad_Slug","type":"local"})").find("'slug' must match"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"n","slug":"a","type":"grpc"})").find("'type' must be one of"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"n","slug":"a","type":"local","enabled":"yes"})").find("'enabled'"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"n","slug":"a","type":"local","models":{}})").find("'models' must be an array"),
            std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"n","slug":"a","type":"local","models":[{"dyadModelId":"x"}]})")
                .find("models[0].adapterModelId"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"n","slug":"a","type":"local","models":[{"dyadModelId":"x","adapterModelId":"y","maxTokens":-1}]})")
                .find("models[0].maxTokens"), std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"n","slug":"a","type":"local","adapterConfig":[]})").find("'adapterConfig'"),
            std::string::npos);
  EXPECT_NE(ErrorOf(R"({"name":"n","slug":"a","type":"local","colour":"red"})").find("'colour' is unknown"),
            std::string::npos);
}

TEST(ProviderJson, CredentialErrorsNeverEchoValues) {
  std::string m = ErrorOf(R"({"name":"n","slug":"a","type":"local","credentials":{"api_key":42}})");
  EXPECT_NE(m.find("credentials.api_key"), std::string::npos);
  m = ErrorOf(R"({"name":"n","slug":"a","type":"local","credentials":{"bad key!":"sk-secret"}})");
  EXPECT_EQ(m.find("sk-secret"), std::string::npos);
  std::string huge(70000, 'x');
  m = ErrorOf(R"({"name":"n","slug":"a","type":"local","credentials":{"api_key":")" + huge + "\"}}");
  EXPECT_NE(m.find("65536"), std::string::npos);
}

TEST(ProviderJson, UpdateNeedsNothingButRejectsBadFields) {
  EXPECT_TRUE(ParseProviderBody(R"({"description":"d","id":"ignored"})", BodyKind::kUpdate).ok());
  EXPECT_NE(ErrorOf(R"({"slug":""})", BodyKind::kUpdate).find("'slug'"), std::string::npos);
}

TEST(ProviderJson, CredentialsBody) {
  EXPECT_TRUE(ParseCredentialsBody(R"({"credentials":{"api_key":"k"}})").ok());
  EXPECT_FALSE(ParseCredentialsBody(R"({"credentials":{}})").ok());
  EXPECT_FALSE(ParseCredentialsBody(R"({"creds":{"a":"b"}})").ok());
  EXPECT_FALSE(ParseCredentialsBody("nope").ok());
}

TEST(ProviderJson, RowShowsPlaceholdersOnly) {
  Provider p;
  p.id = "i";
  p.credential_fields = {"api_key", "organization"};
  auto j = ProviderToJson(p);
  EXPECT_EQ(j["credentials"]["api_key"], "[STORED_EXTERNALLY]");
  EXPECT_EQ(j["credentials"]["organization"], "[STORED_EXTERNALLY]");
}

// Issue 9, item 2: hostile bodies are refused before a DOM is built.
TEST(JsonLimits, DeepNestingIsRefusedWithoutRecursion) {
  std::string deep = R"({"name":"n","slug":"a","type":"local","adapterConfig":)";
  for (int i = 0; i < 100000; ++i) deep += "{\"a\":";
  deep += "1";
  for (int i = 0; i < 100000; ++i) deep += "}";
  deep += "}";
  EXPECT_NE(ErrorOf(deep).find("nested deeper than 64 levels"), std::string::npos);
  std::string arrays(100000, '[');
  auto r = ParseJsonObject(arrays);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("nested deeper than 64"), std::string::npos);
}

TEST(JsonLimits, DepthSixtyFourIsAccepted) {
  std::string ok = "{\"adapterConfig\":";
  for (int i = 0; i < 63; ++i) ok += "{\"a\":";
  ok += "1";
  for (int i = 0; i < 63; ++i) ok += "}";
  ok += "}";
  EXPECT_TRUE(ParseProviderBody(ok, BodyKind::kUpdate).ok());
  EXPECT_FALSE(ParseJsonObject("{\"a\":" + ok + "}").ok());  // 65 levels
}

TEST(JsonLimits, MembersInAllAreCounted) {
  auto body = [](int n) {
    std::string b = "{\"adapterConfig\":{";
    for (int i = 0; i < n; ++i) b += (i ? ",\"k" : "\"k") + std::to_string(i) + "\":{}";
    return b + "}}";
  };
  EXPECT_TRUE(ParseProviderBody(body(9999), BodyKind::kUpdate).ok());
  std::string m = ErrorOf(body(10000), BodyKind::kUpdate);
  EXPECT_NE(m.find("more than 10000 object members"), std::string::npos) << m;
}

TEST(JsonLimits, DuplicateKeysAreNamed) {
  EXPECT_NE(ErrorOf(R"({"name":"n","slug":"a","slug":"b","type":"local"})").find("duplicate key 'slug'"),
            std::string::npos);
  auto r = ParseCredentialsBody(R"({"credentials":{"api_key":"a","api_key":"b"}})");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("duplicate key 'api_key'"), std::string::npos);
  // The same key in two different objects is no duplicate.
  EXPECT_TRUE(ParseJsonObject(R"({"a":{"x":1},"b":{"x":1}})").ok());
}

TEST(JsonLimits, LongStringsAreRefusedPastTheLimit) {
  JsonLimits limits;
  limits.max_string_bytes = 8;
  EXPECT_TRUE(ParseJsonObject(R"({"a":"12345678"})", limits).ok());
  auto r = ParseJsonObject(R"({"a":"123456789"})", limits);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("longer than 8 bytes"), std::string::npos);
}

// Issue 9, item 13: names that one DYAD_PROVIDER_ variable cannot tell apart.
TEST(ProviderJson, CredentialFieldsMappingToOneVariableClash) {
  for (std::string other : {"API_KEY", "api.key", "api-key"}) {
    auto r = ParseCredentialsBody(R"({"credentials":{"api_key":"a",")" + other + R"(":"b"}})");
    ASSERT_FALSE(r.ok()) << other;
    EXPECT_NE(r.error().message.find("clashes"), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find("API_KEY"), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find(other), std::string::npos) << r.error().message;
    EXPECT_EQ(r.error().message.find("\"a\""), std::string::npos);
  }
  EXPECT_TRUE(ParseCredentialsBody(R"({"credentials":{"api_key":"a","api_key2":"b"}})").ok());
}

TEST(ProviderJson, SlugNeedsALetterOrDigit) {
  for (std::string slug : {"-", "--", "---"}) {
    EXPECT_NE(ErrorOf(R"({"name":"n","slug":")" + slug + R"(","type":"local"})").find("'slug' must match"),
              std::string::npos) << slug;
  }
  EXPECT_TRUE(ParseProviderBody(R"({"name":"n","slug":"-a-","type":"local"})", BodyKind::kCreate).ok());
}

}  // namespace
}  // namespace dyad
