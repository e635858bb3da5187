#include "api/provider_patch.h"

#include <gtest/gtest.h>

#include "api/provider_json.h"

namespace dyad {
namespace {

using nlohmann::json;

Provider Row() {
  Provider p;
  p.id = "p-1";
  p.name = "OpenAI";
  p.slug = "openai";
  p.type = "http-sdk";
  p.description = "first";
  p.enabled = false;
  p.models_json = R"([{"dyadModelId":"gpt","adapterModelId":"gpt-4o"}])";
  p.adapter_config_json = R"({"baseUrl":"https://x","headers":{"a":"1","b":"2"}})";
  p.credential_fields = {"api_key", "org"};
  p.credentials_version = 3;
  return p;
}

// The stored credentials as ProviderService::Edit shows them: masked.
CredentialFields Masked() {
  CredentialFields f;
  f.emplace("api_key", SecretBytes(kStoredValue));
  f.emplace("org", SecretBytes(kStoredValue));
  f.emplace("db", EncodeReference({"database/creds/ro", "password"}));
  return f;
}

// Their lengths: 10 and 3 bytes.
StoredBytes MaskedBytes() { return {{"api_key", 10}, {"org", 3}}; }
constexpr size_t kMaxBody = 1 << 20;  // GATEWAY_MAX_BODY_BYTES' default

Result<ProviderPatch> Merge(const std::string& patch, size_t max_body = kMaxBody) {
  return MergeProviderPatch(Row(), Masked(), MaskedBytes(), json::parse(patch), max_body);
}

std::string ErrorOf(const std::string& patch, size_t max_body = kMaxBody) {
  auto r = Merge(patch, max_body);
  EXPECT_FALSE(r.ok()) << patch;
  return r.ok() ? "" : r.error().message;
}

// A name, description or model id stored with a control character (before
// those checks, or by an older instance) does not block a PATCH of another
// member; a PATCH that sets one is checked.
TEST(ProviderPatch, StoredControlCharactersDoNotBlockAChangeToAnotherMember) {
  Provider row = Row();
  row.name = "Open\x1b[2JAI";
  row.description = "bad\x07" "desc";
  row.models_json = R"([{"dyadModelId":"x\u0000y","adapterModelId":"gpt\u007f"}])";
  auto merge = [&](const std::string& patch) {
    return MergeProviderPatch(row, Masked(), MaskedBytes(), json::parse(patch), kMaxBody);
  };
  auto r = merge(R"({"enabled":true})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r->name, row.name);
  EXPECT_EQ(*r->description, row.description);
  EXPECT_EQ(json::parse(*r->models_json), json::parse(row.models_json));
  r = merge(R"({"description":"fixed","credentials":{"api_key":"sk-new"}})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r->description, "fixed");
  for (const auto& [patch, field] : std::vector<std::pair<std::string, std::string>>{
           {R"({"name":"a\u0001b"})", "name"},
           {R"({"description":"still\u0007bad"})", "description"},
           {R"({"models":[{"dyadModelId":"ok","adapterModelId":"b\u001bad"}]})", "models[0].adapterModelId"}}) {
    auto bad = merge(patch);
    ASSERT_FALSE(bad.ok()) << patch;
    EXPECT_NE(bad.error().message.find("field '" + field + "' must not contain control characters"),
              std::string::npos)
        << bad.error().message;
  }
}

TEST(ProviderPatch, MembersLeftOutKeepTheirValueAndCredentialsAreNotWritten) {
  auto r = Merge(R"({"description":"second"})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r->description, "second");
  EXPECT_EQ(*r->name, "OpenAI");
  EXPECT_EQ(*r->slug, "openai");
  EXPECT_FALSE(*r->enabled);
  EXPECT_EQ(json::parse(*r->models_json), json::parse(Row().models_json));
  EXPECT_EQ(json::parse(*r->adapter_config_json), json::parse(Row().adapter_config_json));
  EXPECT_FALSE(r->credentials.has_value());
  EXPECT_FALSE(Merge(R"({"credentials":{}})")->credentials.has_value()) << "an empty object merges nothing";
}

TEST(ProviderPatch, ObjectsMergeAtAnyDepthAndNullRemovesAMember) {
  auto r = Merge(R"({"adapterConfig":{"headers":{"a":null,"c":"3"},"timeout":5}})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(json::parse(*r->adapter_config_json),
            json::parse(R"({"baseUrl":"https://x","headers":{"b":"2","c":"3"},"timeout":5})"));
}

TEST(ProviderPatch, ArraysAndScalarsReplace) {
  auto r = Merge(R"({"models":[{"dyadModelId":"m","adapterModelId":"n"}],"enabled":true})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(json::parse(*r->models_json), json::parse(R"([{"dyadModelId":"m","adapterModelId":"n"}])"));
  EXPECT_TRUE(*r->enabled);
}

TEST(ProviderPatch, CredentialsMergeWithTheStoredOnesWhichStayMasked) {
  auto r = Merge(R"({"credentials":{"org":null,"extra":"sk-new"}})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_TRUE(r->credentials.has_value());
  const CredentialFields& c = *r->credentials;
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c.at("api_key").view(), kStoredValue) << "kept: the service puts the stored value back";
  EXPECT_EQ(c.at("extra").view(), "sk-new");
  EXPECT_EQ(c.count("org"), 0u);
  auto ref = DecodeReference(c.at("db"));
  ASSERT_TRUE(ref.has_value());
  EXPECT_EQ(ref->path, "database/creds/ro");
}

TEST(ProviderPatch, AReferenceMergesMemberByMember) {
  auto r = Merge(R"({"credentials":{"db":{"field":"username"}}})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  auto ref = DecodeReference(r->credentials->at("db"));
  ASSERT_TRUE(ref.has_value());
  EXPECT_EQ(ref->path, "database/creds/ro");
  EXPECT_EQ(ref->field, "username");
  EXPECT_EQ(r->credentials->at("api_key").view(), kStoredValue);
}

TEST(ProviderPatch, NullCredentialsRemoveThemAll) {
  auto r = Merge(R"({"credentials":null})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_TRUE(r->credentials.has_value());
  EXPECT_TRUE(r->credentials->empty());
}

TEST(ProviderPatch, TheMergedProviderIsValidatedAsACreateIs) {
  EXPECT_EQ(ErrorOf(R"({"name":null})"), "field 'name' is required");
  EXPECT_EQ(ErrorOf(R"({"slug":"Bad Slug"})").rfind("field 'slug' must match", 0), 0u);
  EXPECT_EQ(ErrorOf(R"({"type":"grpc"})").rfind("field 'type' must be one of", 0), 0u);
  EXPECT_EQ(ErrorOf(R"({"models":[{"dyadModelId":"x"}]})"), "field 'models[0].adapterModelId' is required");
  EXPECT_EQ(ErrorOf(R"({"adapterConfig":"x"})"), "field 'adapterConfig' must be an object");
  EXPECT_EQ(ErrorOf(R"({"colour":"red"})"), "field 'colour' is unknown");
  EXPECT_EQ(ErrorOf(R"({"credentials":"sk-1"})").rfind("field 'credentials' must be an object", 0), 0u);
  EXPECT_EQ(ErrorOf(R"({"credentials":{"api_key":5}})").rfind("field 'credentials.api_key' must be a string", 0), 0u);
  // A new name that maps to the variable of a kept one.
  EXPECT_EQ(ErrorOf(R"({"credentials":{"API-KEY":"x"}})").rfind(
                "field 'credentials.api_key' clashes with credentials.API-KEY: both map to DYAD_PROVIDER_<SLUG>_API_KEY", 0),
            0u);
  EXPECT_EQ(ErrorOf(R"({"credentials":{"api_key":"[STORED_EXTERNALLY]"}})")
                .rfind("field 'credentials.api_key' holds the placeholder", 0), 0u);
  EXPECT_EQ(ErrorOf(R"({"credentials":{"db":{"path":"x"}}})").rfind("field 'credentials.db' is an object", 0), 0u);
}

TEST(ProviderPatch, ErrorsNeverQuoteAValue) {
  std::string e = ErrorOf(R"({"credentials":{"bad name":"sk-CANARY-1"}})");
  EXPECT_NE(e.find("credentials.bad name"), std::string::npos);
  EXPECT_EQ(e.find("sk-CANARY-1"), std::string::npos);
}

TEST(ProviderPatch, TooManyFieldsCountTheKeptOnes) {
  json many = json::object();
  for (int i = 0; i < 62; ++i) many["f" + std::to_string(i)] = "v";  // 3 stored + 62 > 64
  auto r = MergeProviderPatch(Row(), Masked(), MaskedBytes(), json{{"credentials", many}}, kMaxBody);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "field 'credentials' has more than 64 fields");
}

// "enabled": null would put back the default, true: a disabled provider
// back in service through a removal. Refused, as null name/slug/type are.
TEST(ProviderPatch, NullIsRefusedForMembersWhoseDefaultIsNotEmpty) {
  EXPECT_EQ(ErrorOf(R"({"enabled":null})").rfind("field 'enabled' cannot be removed (null)", 0), 0u);
  EXPECT_EQ(ErrorOf(R"({"name":null})"), "field 'name' is required");
  EXPECT_EQ(ErrorOf(R"({"slug":null})"), "field 'slug' is required");
  EXPECT_EQ(ErrorOf(R"({"type":null})"), "field 'type' is required");
  // The others' defaults are empty: removing them empties them.
  auto r = Merge(R"({"description":null,"models":null,"adapterConfig":null})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r->description, "");
  EXPECT_EQ(*r->models_json, "[]");
  EXPECT_EQ(*r->adapter_config_json, "{}");
}

// The merged provider is held to what a body may hold, whatever each
// PATCH held: the member count, and the size with the kept values counted.
TEST(ProviderPatch, TheResultMustFitWhatABodyMayHold) {
  json big = json::object();
  for (int i = 0; i < 10001; ++i) big["a" + std::to_string(i)] = 1;
  std::string e = ErrorOf(json{{"adapterConfig", big}}.dump());
  EXPECT_EQ(e, "field 'adapterConfig' would leave the provider with more than 10000 object members in all, more "
               "than a create or PUT body may hold");
  // Sized: fits at the limit, not a byte over; the kept values count at
  // their length (10 + 3), not at kStoredValue's.
  json doc = ProviderToJson(Row());
  for (const char* read_only : {"id", "createdAt", "updatedAt", "credentialsVersion"}) doc.erase(read_only);
  doc["credentials"] = {{"api_key", ""}, {"org", ""}, {"db", {{"vault", "database/creds/ro"}, {"field", "password"}}}};
  const size_t want = doc.dump().size() + 13;
  EXPECT_TRUE(Merge(R"({"credentials":{"x":null}})", want).ok());
  e = ErrorOf(R"({"credentials":{"x":null}})", want - 1);
  EXPECT_NE(e.find("would make the provider " + std::to_string(want) + " bytes of JSON, more than the " +
                   std::to_string(want - 1)), std::string::npos) << e;
  EXPECT_EQ(e.rfind("field '", 0), 0u) << e;
}

TEST(ProviderPatch, ReadOnlyMembersAreIgnored) {
  auto r = Merge(R"({"id":"other","createdAt":"x","updatedAt":"y","credentialsVersion":9,"name":"N"})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r->name, "N");
}

TEST(ProviderPatch, TouchesCredentialsUnlessAbsentOrEmpty) {
  EXPECT_FALSE(PatchTouchesCredentials(json::parse(R"({"name":"x"})")));
  EXPECT_FALSE(PatchTouchesCredentials(json::parse(R"({"credentials":{}})")));
  EXPECT_TRUE(PatchTouchesCredentials(json::parse(R"({"credentials":null})")));
  EXPECT_TRUE(PatchTouchesCredentials(json::parse(R"({"credentials":{"a":null}})")));
  EXPECT_TRUE(PatchTouchesCredentials(json::parse(R"({"credentials":"x"})")));
}

TEST(ProviderPatch, MediaTypes) {
  EXPECT_TRUE(IsMergePatchMediaType("application/merge-patch+json"));
  EXPECT_TRUE(IsMergePatchMediaType("Application/Merge-Patch+JSON; charset=utf-8"));
  EXPECT_TRUE(IsMergePatchMediaType("application/json"));
  EXPECT_TRUE(IsMergePatchMediaType(" application/json ;charset=UTF-8"));
  EXPECT_FALSE(IsMergePatchMediaType(""));
  EXPECT_FALSE(IsMergePatchMediaType("application/json-patch+json"));  // RFC 6902, another format
  EXPECT_FALSE(IsMergePatchMediaType("application/x-www-form-urlencoded"));
  EXPECT_FALSE(IsMergePatchMediaType("text/json"));
}

// A request can never carry the mask: JSON text is UTF-8, the mask is not.
TEST(ProviderPatch, TheMaskCannotComeFromARequest) {
  std::string body = std::string(R"({"credentials":{"api_key":")") + std::string(kStoredValue) + "\"}}";
  auto parsed = ParseJsonObject(body);
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.error().message.rfind("malformed JSON in the request body (at byte ", 0), 0u) << parsed.error().message;
}

}  // namespace
}  // namespace dyad
