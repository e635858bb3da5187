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

}  // namespace
}  // namespace dyad
