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

// A provider's name takes no C0 control character and no DEL (a NUL, an
// escape sequence, a line break would hide or forge text where it is shown);
// any other character, non-ASCII included, is kept as sent.
TEST(ProviderJson, ANameWithAControlCharacterIsRefused) {
  for (const std::string escaped : {"\\u0000", "\\u0001", "\\u001b[2J", "\\t", "\\n", "\\r", "\\u007f"}) {
    for (BodyKind kind : {BodyKind::kCreate, BodyKind::kUpdate}) {
      EXPECT_EQ(ErrorOf(R"({"name":"a)" + escaped + R"(b","slug":"a","type":"local"})", kind),
                "field 'name' must not contain control characters")
          << escaped;
    }
  }
  auto r = ParseProviderBody(R"({"name":"Open AI \u00e9 ~!","slug":"a","type":"local"})", BodyKind::kCreate);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r->name, "Open AI \xc3\xa9 ~!");
}

// The same for model ids (matched against what clients send, listed by
// GET /v1/models, sent upstream) and a description, which may hold tabs and
// line breaks (free text) but no other control character.
TEST(ProviderJson, ModelIdsAndADescriptionWithAControlCharacterAreRefused) {
  for (const std::string escaped : {"\\u0000", "\\u001b[2J", "\\t", "\\n", "\\u007f"}) {
    for (const std::string key : {"dyadModelId", "adapterModelId"}) {
      const std::string other = key == "dyadModelId" ? "adapterModelId" : "dyadModelId";
      EXPECT_EQ(ErrorOf(R"({"name":"n","slug":"a","type":"local",)"
                        R"("models":[{"dyadModelId":"ok","adapterModelId":"ok"},{")" +
                            key + R"(":"m)" + escaped + R"(",")" + other + R"(":"m"}]})",
                        BodyKind::kUpdate),
                "field 'models[1]." + key + "' must not contain control characters")
          << key << " " << escaped;
    }
  }
  for (const std::string escaped : {"\\u0000", "\\u0001", "\\u001b[2J", "\\u007f"}) {
    EXPECT_EQ(ErrorOf(R"({"name":"n","slug":"a","type":"local","description":"a)" + escaped + R"(b"})"),
              "field 'description' must not contain control characters other than tabs and line breaks")
        << escaped;
  }
  auto r = ParseProviderBody(R"({"name":"n","slug":"a","type":"local","description":"one\tline\r\ntwo \u00e9",)"
                             R"("models":[{"dyadModelId":"gpt-4o \u00e9","adapterModelId":"a/b:c"}]})",
                             BodyKind::kCreate);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r->description, "one\tline\r\ntwo \xc3\xa9");
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

// A client may send back what it read: the read-only members are ignored,
// and the placeholder a response shows is refused rather than stored as
// the credential.
TEST(ProviderJson, WhatAResponseShowsIsNotTakenAsAValue) {
  auto r = ParseProviderBody(R"({"description":"d","credentialsVersion":4,"createdAt":"t"})", BodyKind::kUpdate);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(ErrorOf(R"({"credentials":{"api_key":"[STORED_EXTERNALLY]"}})", BodyKind::kUpdate),
            "field 'credentials.api_key' holds the placeholder [STORED_EXTERNALLY] that responses show, not a value; "
            "send the value (PATCH: leave the field out to keep it)");
  auto rotate = ParseCredentialsBody(R"({"credentials":{"org":"[STORED_EXTERNALLY]"}})");
  ASSERT_FALSE(rotate.ok());
  EXPECT_EQ(rotate.error().message.rfind("field 'credentials.org' holds the placeholder", 0), 0u);
}

TEST(ProviderJson, CredentialsBody) {
  EXPECT_TRUE(ParseCredentialsBody(R"({"credentials":{"api_key":"k"}})").ok());
  EXPECT_FALSE(ParseCredentialsBody(R"({"credentials":{}})").ok());
  EXPECT_FALSE(ParseCredentialsBody(R"({"creds":{"a":"b"}})").ok());
  EXPECT_FALSE(ParseCredentialsBody("nope").ok());
  EXPECT_FALSE(ParseCredentialsBody(R"({"credentials":{"api_key":"k"},"validate":true})").ok());
}

TEST(ProviderJson, RotateBodyTakesValidate) {
  auto plain = ParseRotateBody(R"({"credentials":{"api_key":"k"}})");
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->validate);
  auto checked = ParseRotateBody(R"({"validate":true,"credentials":{"api_key":"k"}})");
  ASSERT_TRUE(checked.ok());
  EXPECT_TRUE(checked->validate);
  EXPECT_EQ(checked->credentials.at("api_key").view(), "k");
  for (const char* bad : {R"({"credentials":{"api_key":"k"},"validate":"true"})",
                          R"({"credentials":{"api_key":"k"},"validate":1})",
                          R"({"credentials":{"api_key":"k"},"validate":null})",
                          R"({"credentials":{"api_key":"k"},"validate":true,"validate":false})",
                          R"({"validate":true})", R"({"credentials":{"api_key":"k"},"live":true})"}) {
    EXPECT_EQ(ParseRotateBody(bad).code(), ErrorCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(ParseRotateBody(R"({"credentials":{"api_key":"k"},"validate":1})").error().message,
            "field 'validate' must be true or false");
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


std::string RefError(const std::string& credential) {
  auto r = ParseCredentialsBody(R"({"credentials":{"api_key":)" + credential + "}}");
  EXPECT_FALSE(r.ok()) << credential;
  return r.ok() ? "" : r.error().message;
}

TEST(ProviderJson, ACredentialMayReferToADynamicSecret) {
  auto r = ParseCredentialsBody(
      R"({"credentials":{"api_key":{"vault":"database/creds/readonly","field":"password"},"org":"o-1"}})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  auto ref = DecodeReference(r->at("api_key"));
  ASSERT_TRUE(ref.has_value());
  EXPECT_EQ(ref->path, "database/creds/readonly");
  EXPECT_EQ(ref->field, "password");
  EXPECT_FALSE(DecodeReference(r->at("org")).has_value());
  // The payload keeps the object, and reads back as the same reference.
  SecretBytes payload = CredentialsToJson(*r);
  EXPECT_EQ(std::string(payload.view()),
            R"({"api_key":{"field":"password","vault":"database/creds/readonly"},"org":"o-1"})");
  auto back = CredentialsFromJson(payload.view());
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->at("api_key") == r->at("api_key"));
}

TEST(ProviderJson, HostileReferencesAreRefusedNamingTheField) {
  const std::string shape = "field 'credentials.api_key' is an object: a reference takes exactly";
  EXPECT_EQ(RefError(R"({})").rfind(shape, 0), 0u);
  EXPECT_EQ(RefError(R"({"vault":"database/creds/r"})").rfind(shape, 0), 0u);
  EXPECT_EQ(RefError(R"({"vault":"database/creds/r","field":"password","x":1})").rfind(shape, 0), 0u);
  EXPECT_EQ(RefError(R"({"vault":"database/creds/r","value":"password"})").rfind(shape, 0), 0u);
  EXPECT_EQ(RefError(R"({"vault":1,"field":"password"})"), "field 'credentials.api_key.vault' must be a string");
  EXPECT_EQ(RefError(R"({"vault":"a/b","field":{"x":"y"}})"), "field 'credentials.api_key.field' must be a string");
  const std::string segments = "field 'credentials.api_key' 'vault' must be segments of";
  for (const char* path : {"", "/database/creds/r", "database/creds/r/", "database//r", "database/../sys/x",
                           "database/./r", "..", "database/creds/r?x=1", "database/creds/r#f", "data base/r",
                           "database\\creds", "database/creds/\u00e9"}) {
    std::string err = RefError(std::string(R"({"vault":)") + nlohmann::json(path).dump() + R"(,"field":"f"})");
    EXPECT_TRUE(err.rfind(segments, 0) == 0 || err.find("must be a path of 1-512 bytes") != std::string::npos)
        << path << ": " << err;
  }
  EXPECT_NE(RefError(R"({"vault":")" + std::string(513, 'a') + R"(","field":"f"})").find("1-512 bytes"),
            std::string::npos);
  // The backend's own tokens and settings are never a credential.
  // At any depth: ns1/auth/… is a child namespace's token.
  for (const char* path : {"auth/token/lookup-self", "sys/wrapping/unwrap", "identity/oidc/token/x", "cubbyhole/x",
                           "ns1/auth/token/lookup-self", "ns1/ns2/sys/wrapping/unwrap", "a/identity/oidc/token/x",
                           "database/creds/cubbyhole", "ns1/cubbyhole/x"}) {
    EXPECT_NE(RefError(std::string(R"({"vault":")") + path + R"(","field":"id"})").find("may not name a path under"),
              std::string::npos)
        << path;
  }
  EXPECT_NE(RefError(R"({"vault":"ns1/auth/token/lookup-self","field":"id"})")
                .find("'vault' may not name a path under auth/ at any depth (the backend's own tokens and settings, "
                      "never a provider credential)"),
            std::string::npos);
  for (const char* path : {"database/creds/authors", "ns1/system/x", "db/sys.x/r"}) {  // whole segments only
    auto ok = ParseCredentialsBody(std::string(R"({"credentials":{"api_key":{"vault":")") + path +
                                   R"(","field":"id"}}})");
    EXPECT_TRUE(ok.ok()) << path << ": " << ok.error().message;
  }
  EXPECT_NE(RefError(R"({"vault":"database/creds/r","field":""})").find("'field' must be 1-128"), std::string::npos);
  EXPECT_NE(RefError(R"({"vault":"database/creds/r","field":"a/b"})").find("'field' must be 1-128"), std::string::npos);
  EXPECT_NE(RefError(R"({"vault":"database/creds/r","field":")" + std::string(129, 'f') + R"("})")
                .find("'field' must be 1-128"),
            std::string::npos);
  EXPECT_EQ(RefError(R"(["database/creds/r"])"),
            R"(field 'credentials.api_key' must be a string, or a reference {"vault":"<path>","field":"<name>"})");
  // A stored payload is checked the same way (kDataLoss, the field named).
  auto bad = CredentialsFromJson(R"({"api_key":{"vault":"auth/token/lookup-self","field":"id"}})");
  ASSERT_EQ(bad.code(), ErrorCode::kDataLoss);
  EXPECT_EQ(bad.error().message.rfind("credentials field 'api_key': 'vault' may not name", 0), 0u);
  bad = CredentialsFromJson(R"({"api_key":{"vault":"a/b","field":"f","extra":"x"}})");
  ASSERT_EQ(bad.code(), ErrorCode::kDataLoss);
  bad = CredentialsFromJson(R"({"api_key":{"vault":"a/b","field":7}})");
  ASSERT_EQ(bad.code(), ErrorCode::kDataLoss);
  // A value starting with the tag byte is not valid UTF-8, so no JSON string
  // can pose as a reference.
  EXPECT_EQ(ParseCredentialsBody("{\"credentials\":{\"api_key\":\"\xff" "a/b\"}}").code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(CredentialsFromJson("{\"api_key\":\"\xff" "a/b\"}").code(), ErrorCode::kDataLoss);
}
}  // namespace
}  // namespace dyad
