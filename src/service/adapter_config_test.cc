#include "service/adapter_config.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "transport/upstream_address.h"

namespace dyad {
namespace {

using nlohmann::json;

Result<AdapterConfig> Parse(const json& j, bool allow_plaintext = false) {
  return ParseAdapterConfig(j.dump(), UpstreamPolicy{allow_plaintext});
}

Result<AdapterConfig> ParseUrl(const std::string& url, bool allow_plaintext = false) {
  return Parse(json{{"baseUrl", url}}, allow_plaintext);
}

std::string ErrorOf(const Result<AdapterConfig>& r) {
  if (r.ok()) return "(ok)";
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  return r.error().message;
}

CredentialFields Fields(std::initializer_list<std::pair<std::string, std::string>> kv) {
  CredentialFields f;
  for (const auto& [k, v] : kv) f.emplace(k, SecretBytes(v));
  return f;
}

TEST(AdapterConfigTest, DefaultsWithOnlyABaseUrl) {
  auto r = Parse(json{{"baseUrl", "https://api.openai.com/v1/"}, {"headers", {{"x", 1}}}, {"timeout", 5}});
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->base_url, "https://api.openai.com/v1");
  EXPECT_EQ(r->auth.header, "Authorization");
  EXPECT_EQ(r->auth.value_template, "Bearer {api_key}");
  ASSERT_EQ(r->credential_headers.size(), 1u);
  EXPECT_EQ(r->credential_headers[0], std::make_pair(std::string("organization"), std::string("OpenAI-Organization")));
  EXPECT_EQ(r->validate_path, "/models");
}

TEST(AdapterConfigTest, ReadsEveryMember) {
  auto r = Parse(json::parse(R"({"baseUrl":"HTTPS://api.anthropic.com:8443//","auth":{"header":"x-api-key",
    "template":"{api_key}"},"credentialHeaders":{"project":"OpenAI-Project"},"validatePath":"/v1/models?limit=1"})"));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->base_url, "https://api.anthropic.com:8443");
  EXPECT_EQ(r->auth.header, "x-api-key");
  EXPECT_EQ(r->auth.value_template, "{api_key}");
  ASSERT_EQ(r->credential_headers.size(), 1u);
  EXPECT_EQ(r->credential_headers[0].second, "OpenAI-Project");
  EXPECT_EQ(r->validate_path, "/v1/models?limit=1");
  auto none = Parse(json{{"baseUrl", "https://x.test"}, {"credentialHeaders", json::object()}});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->credential_headers.empty());
}

TEST(AdapterConfigTest, BaseUrlIsRequiredAndAString) {
  EXPECT_EQ(ErrorOf(Parse(json::object())).rfind("adapterConfig.baseUrl: is required", 0), 0u);
  for (const json& bad : {json(1), json(nullptr), json::array({"https://x"}), json::object(), json(true)}) {
    EXPECT_EQ(ErrorOf(Parse(json{{"baseUrl", bad}})), "adapterConfig.baseUrl: must be a string") << bad.dump();
  }
  EXPECT_EQ(ErrorOf(ParseAdapterConfig("not json", {})), "adapterConfig: is not JSON");
  EXPECT_EQ(ErrorOf(ParseAdapterConfig("[]", {})), "adapterConfig: must be an object");
}

TEST(AdapterConfigTest, RefusesMalformedUrls) {
  for (const char* url : {"", "api.openai.com", "ftp://x", "file:///etc/passwd", "https://", "https:///path",
                          "https://user:pw@api.openai.com", "https://@x", "https://x/v1?a=b", "https://x/v1#f",
                          "https://x:0", "https://x:65536", "https://x:", "https://x:8a", "https://x:+80",
                          "https://x y", "https://x\r\nHost: y", "https://x/\t", "https://x\\@y", "https://[::1",
                          "https://[zz]/", "https://[::1]x", "https://[fe80::1%25eth0]/", "https://x/%zz",
                          "https://x/a%2", "https://ex%61mple.com", "https://x/\xc3\xa9", "javascript:alert(1)",
                          "https://x/<script>", "https://a:1:2"}) {
    auto r = ParseUrl(url);
    EXPECT_FALSE(r.ok()) << url;
    if (!r.ok()) {
      EXPECT_EQ(r.error().message.rfind("adapterConfig.baseUrl: ", 0), 0u) << r.error().message;
    }
  }
  EXPECT_NE(ErrorOf(ParseUrl("https://user:secret-pw@x")).find("user info"), std::string::npos);
  EXPECT_EQ(ErrorOf(ParseUrl("https://user:secret-pw@x")).find("secret-pw"), std::string::npos);
  EXPECT_FALSE(ParseUrl("https://" + std::string(3000, 'a')).ok());
  EXPECT_FALSE(ParseUrl("https://" + std::string(300, 'a') + "/v1").ok());
}

TEST(AdapterConfigTest, AcceptsOrdinaryUrls) {
  for (const char* url : {"https://api.openai.com/v1", "https://[2001:db8::1]:443/v1", "https://10.0.0.5:8080",
                          "http://localhost:11434/v1", "http://127.0.0.1:8000", "http://[::1]:9000/x/",
                          "http://127.5.6.7", "http://LOCALHOST:1/", "https://a_b.internal/v1/%20x"}) {
    auto r = ParseUrl(url);
    EXPECT_TRUE(r.ok()) << url << ": " << (r.ok() ? "" : r.error().message);
  }
}

TEST(AdapterConfigTest, PlainHttpOnlyToLoopbackUnlessAllowed) {
  for (const char* url : {"http://api.openai.com/v1", "http://10.0.0.5", "http://localhost.evil.test",
                          "http://128.0.0.1", "http://[::2]", "http://localhost@evil.test"}) {
    auto r = ParseUrl(url);
    ASSERT_FALSE(r.ok()) << url;
  }
  EXPECT_NE(ErrorOf(ParseUrl("http://api.openai.com")).find("GATEWAY_ALLOW_PLAINTEXT_UPSTREAM"), std::string::npos);
  EXPECT_TRUE(ParseUrl("http://api.openai.com/v1", true).ok());
  // Loopback in the odd spellings is still loopback.
  EXPECT_TRUE(ParseUrl("http://2130706433/").ok());
  EXPECT_TRUE(ParseUrl("http://[::ffff:127.0.0.1]/").ok());
}

TEST(AdapterConfigTest, RefusesEverySpellingOfAMetadataHost) {
  for (const char* host :
       {"169.254.169.254", "169.254.0.1", "169.254.255.255", "169.254.169.254.", "2852039166", "0xA9FEA9FE",
        "0xa9fea9fe", "0251.0376.0251.0376", "0251.254.169.254", "0xa9.0xfe.0xa9.0xfe", "169.254.43518",
        "169.16689662", "0xA9.16689662", "[fe80::1]", "[FE80::a:b]", "[febf::1]", "[fd00:ec2::254]",
        "[FD00:EC2:0:0:0:0:0:254]", "[::ffff:169.254.169.254]", "[::ffff:a9fe:a9fe]", "[::169.254.169.254]",
        "[64:ff9b::169.254.169.254]", "[2002:a9fe:a9fe::1]", "metadata.google.internal", "METADATA.google.internal.",
        "instance-data"}) {
    for (const std::string scheme : {"https://", "http://"}) {
      auto r = ParseUrl(scheme + host + "/latest/meta-data", /*allow_plaintext=*/true);
      ASSERT_FALSE(r.ok()) << host;
      EXPECT_NE(r.error().message.find("link-local or cloud metadata"), std::string::npos) << host << ": " << r.error().message;
    }
    auto with_port = ParseUrl(std::string("https://") + host + ":80");
    EXPECT_FALSE(with_port.ok()) << host;
  }
  // Near misses are ordinary hosts.
  for (const char* host : {"169.255.169.254", "169.253.1.1", "[fec0::1]", "[fd00:ec2::253]", "169.254.169.254.1"}) {
    EXPECT_TRUE(ParseUrl(std::string("https://") + host).ok()) << host;
  }
}

TEST(AdapterConfigTest, AuthHeaderMustBeAnOrdinaryHeaderName) {
  auto auth = [](const json& header) {
    return Parse(json{{"baseUrl", "https://x.test"}, {"auth", {{"header", header}}}});
  };
  for (const char* name : {"Host", "content-length", "Transfer-Encoding", "CONNECTION", "keep-alive", "TE",
                           "upgrade", "Proxy-Authorization", "trailer", "expect"}) {
    EXPECT_NE(ErrorOf(auth(name)).find("adapterConfig.auth.header: names a connection or framing header"),
              std::string::npos) << name;
  }
  for (const json& bad : {json(""), json("x api key"), json("x-key:"), json("x\r\nEvil: 1"), json("é"),
                          json(std::string(200, 'a')), json(3), json(nullptr)}) {
    EXPECT_EQ(ErrorOf(auth(bad)).rfind("adapterConfig.auth.header: ", 0), 0u) << bad.dump();
  }
  EXPECT_TRUE(auth("x-api-key").ok());
  EXPECT_EQ(ErrorOf(Parse(json{{"baseUrl", "https://x.test"}, {"auth", "x-api-key"}})).rfind("adapterConfig.auth: must be an object", 0), 0u);
  EXPECT_EQ(ErrorOf(Parse(json{{"baseUrl", "https://x.test"}, {"auth", {{"name", "x"}}}})), "adapterConfig.auth: takes only header and template");
}

TEST(AdapterConfigTest, TemplatePlaceholdersAndInjection) {
  auto tmpl = [](const json& t) { return Parse(json{{"baseUrl", "https://x.test"}, {"auth", {{"template", t}}}}); };
  EXPECT_TRUE(tmpl("Token {api_key}").ok());
  EXPECT_TRUE(tmpl("{user}:{password}").ok());
  for (const json& bad : {json("Bearer sk-static"), json("Bearer {api_key"), json("Bearer api_key}"), json("{}"),
                          json("{a b}"), json("{a{b}}"), json("Bearer {api_key}\r\nX-Evil: 1"), json("{api_key}\n"),
                          json(std::string("{api_key}\0", 10)), json(std::string(2000, 'a') + "{k}"), json(7),
                          json::array(), json("{" + std::string(65, 'k') + "}")}) {
    EXPECT_EQ(ErrorOf(tmpl(bad)).rfind("adapterConfig.auth.template: ", 0), 0u) << bad.dump();
  }
  EXPECT_NE(ErrorOf(tmpl("a\r\nb {k}")).find("control character"), std::string::npos);
}

TEST(AdapterConfigTest, CredentialHeadersAndValidatePath) {
  auto ch = [](const json& j) { return Parse(json{{"baseUrl", "https://x.test"}, {"credentialHeaders", j}}); };
  EXPECT_EQ(ErrorOf(ch(json::array())).rfind("adapterConfig.credentialHeaders: must be an object", 0), 0u);
  EXPECT_EQ(ErrorOf(ch(json{{"org", 1}})), "adapterConfig.credentialHeaders.org: must be a string");
  EXPECT_NE(ErrorOf(ch(json{{"org", "Host"}})).find("adapterConfig.credentialHeaders.org: names a connection"), std::string::npos);
  EXPECT_NE(ErrorOf(ch(json{{"a b", "X-A"}})).find("not a credential field name"), std::string::npos);
  EXPECT_NE(ErrorOf(ch(json{{"org", "authorization"}})).find("another entry or auth.header"), std::string::npos);
  EXPECT_NE(ErrorOf(ch(json{{"a", "X-A"}, {"b", "x-a"}})).find("another entry"), std::string::npos);
  json many = json::object();
  for (int i = 0; i < 17; ++i) many["f" + std::to_string(i)] = "X-F" + std::to_string(i);
  EXPECT_NE(ErrorOf(ch(many)).find("more than 16"), std::string::npos);

  auto vp = [](const json& j) { return Parse(json{{"baseUrl", "https://x.test"}, {"validatePath", j}}); };
  for (const json& bad : {json("models"), json(""), json("//evil.test/models"), json("/models#x"), json("/a b"),
                          json("/a\r\n"), json(1), json("/" + std::string(2000, 'a'))}) {
    EXPECT_EQ(ErrorOf(vp(bad)).rfind("adapterConfig.validatePath: ", 0), 0u) << bad.dump();
  }
}

TEST(AdapterConfigTest, CredentialHeadersInjectTheFields) {
  auto config = Parse(json{{"baseUrl", "https://x.test"}}).value();
  auto h = CredentialHeaders(config, Fields({{"api_key", "sk-1"}, {"organization", "org-2"}, {"other", "x"}}));
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h.value(), (HttpHeaders{{"Authorization", "Bearer sk-1"}, {"OpenAI-Organization", "org-2"}}));
  // An optional extra header is left out when the field is absent.
  auto only = CredentialHeaders(config, Fields({{"api_key", "sk-1"}}));
  ASSERT_TRUE(only.ok());
  EXPECT_EQ(only.value(), (HttpHeaders{{"Authorization", "Bearer sk-1"}}));

  auto custom = Parse(json::parse(R"({"baseUrl":"https://x.test","auth":{"header":"x-api-key","template":"{user}:{api_key}!"}})")).value();
  auto c = CredentialHeaders(custom, Fields({{"api_key", "k"}, {"user", "u"}}));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c.value()[0], std::make_pair(std::string("x-api-key"), std::string("u:k!")));
}

TEST(AdapterConfigTest, CredentialHeadersRefuseMissingFieldsAndInjection) {
  auto config = Parse(json{{"baseUrl", "https://x.test"}}).value();
  auto missing = CredentialHeaders(config, Fields({{"token", "sk-secret"}}));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_EQ(missing.error().message, "adapterConfig.auth.template: credential field 'api_key' is not among the provider's credentials");
  for (std::string bad : {std::string("sk-1\r\nX-Evil: 1"), std::string("sk\n"), std::string("sk\0x", 4), std::string("a\x7f")}) {
    auto r = CredentialHeaders(config, Fields({{"api_key", bad}}));
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("'api_key'"), std::string::npos);
    EXPECT_EQ(r.error().message.find("sk-1"), std::string::npos);
    auto org = CredentialHeaders(config, Fields({{"api_key", "ok"}, {"organization", bad}}));
    ASSERT_FALSE(org.ok());
    EXPECT_NE(org.error().message.find("credentialHeaders.organization"), std::string::npos);
  }
}

// At write time: the fields the config sends in a header, and only those,
// are refused with what CredentialHeaders would refuse at use.
TEST(AdapterConfigTest, HeaderBoundFieldsAreCheckedForAWrite) {
  auto config = Parse(json{{"baseUrl", "https://x.test"}}).value();
  const std::string pem = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n";
  EXPECT_TRUE(CheckHeaderBoundFields(config, Fields({{"api_key", "sk-1\tx"}, {"private_key", pem}})).ok());
  EXPECT_TRUE(CheckHeaderBoundFields(config, Fields({{"token", "no api_key: not this check's"}})).ok());
  CredentialFields ref;
  ref.emplace("api_key", EncodeReference({"database/creds/readonly", "password"}));  // holds a NUL; resolved at use
  EXPECT_TRUE(CheckHeaderBoundFields(config, ref).ok());
  for (std::string bad : {std::string("sk-1\r\nX-Evil: 1"), std::string("sk-1\n"), std::string("sk-1\0x", 6),
                          std::string("sk-1\x7f")}) {
    Status s = CheckHeaderBoundFields(config, Fields({{"api_key", bad}, {"private_key", pem}}));
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().code, ErrorCode::kInvalidArgument);
    EXPECT_EQ(s.error().message,
              "field 'credentials.api_key' holds a control character (CR, LF, NUL, …), which the header it is sent in "
              "(adapterConfig.auth.template) cannot carry");
    Status org = CheckHeaderBoundFields(config, Fields({{"api_key", "ok"}, {"organization", bad}}));
    ASSERT_FALSE(org.ok());
    EXPECT_NE(org.error().message.find("'credentials.organization'"), std::string::npos) << org.error().message;
    EXPECT_NE(org.error().message.find("adapterConfig.credentialHeaders.organization"), std::string::npos);
    EXPECT_EQ(org.error().message.find("sk-1"), std::string::npos);
  }
  auto custom = Parse(json::parse(R"({"baseUrl":"https://x.test","auth":{"header":"x-api-key","template":"{user}:{api_key}!"}})")).value();
  Status user = CheckHeaderBoundFields(custom, Fields({{"api_key", "k"}, {"user", "u\r\n"}}));
  ASSERT_FALSE(user.ok());
  EXPECT_NE(user.error().message.find("'credentials.user'"), std::string::npos) << user.error().message;
  // Not sent by this config: its line breaks are its own.
  EXPECT_TRUE(CheckHeaderBoundFields(custom, Fields({{"api_key", "k"}, {"user", "u"}, {"note", "o\n"}})).ok());
}

TEST(AdapterConfigTest, CheckTemplateFieldsNamesAFieldTheCredentialsLack) {
  auto config = Parse(json{{"baseUrl", "https://x.test"}}).value();
  EXPECT_TRUE(CheckTemplateFields(config, {"api_key", "organization"}).ok());
  EXPECT_TRUE(CheckTemplateFields(config, {}).ok());  // none stored: the environment's are read
  Status lacking = CheckTemplateFields(config, {"organization", "token"});
  ASSERT_FALSE(lacking.ok());
  EXPECT_EQ(lacking.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(lacking.error().message,
            "adapterConfig.auth.template: sends credential field 'api_key', which the provider's credentials do not "
            "have (they hold 'organization', 'token'): every call would fail");
  auto custom = Parse(json::parse(R"({"baseUrl":"https://x.test","auth":{"header":"x-api-key","template":"{user}:{api_key}"}})")).value();
  EXPECT_TRUE(CheckTemplateFields(custom, {"api_key", "user"}).ok());
  Status second = CheckTemplateFields(custom, {"user"});
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.error().message.find("'api_key'"), std::string::npos) << second.error().message;
  // credentialHeaders' fields are optional: sent when the provider has them.
  EXPECT_TRUE(CheckTemplateFields(config, {"api_key"}).ok());
}

TEST(AdapterConfigTest, AnEmptyFieldTheTemplateSendsIsRefusedAtWrite) {
  auto config = Parse(json{{"baseUrl", "https://x.test"}}).value();
  Status empty = CheckHeaderBoundFields(config, Fields({{"api_key", ""}}));
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.error().message,
            "field 'credentials.api_key' is empty, and adapterConfig.auth.template sends it on every call");
  EXPECT_TRUE(CheckHeaderBoundFields(config, Fields({{"api_key", "k"}, {"organization", ""}, {"note", ""}})).ok());
}

// What a write is judged by, whichever instance takes it: the plaintext
// policy is CheckUpstream's, not this check's (an instance allowed plain
// http may serve the provider).
TEST(AdapterConfigTest, CheckCredentialsWriteJudgesEveryUpstreamConfigAlike) {
  const std::vector<std::string> lacking = {"token"};
  for (const char* config : {R"({"baseUrl":"https://x.test"})", R"({"baseUrl":"http://192.0.2.1"})"}) {
    Status s = CheckCredentialsWrite("http-sdk", config, nullptr, lacking);
    ASSERT_FALSE(s.ok()) << config;
    EXPECT_NE(s.error().message.find("'api_key'"), std::string::npos) << s.error().message;
    EXPECT_FALSE(CheckCredentialsWrite("proxy", config, nullptr, lacking).ok()) << config;
  }
  EXPECT_TRUE(CheckCredentialsWrite("local", R"({"baseUrl":"https://x.test"})", nullptr, lacking).ok());
  EXPECT_TRUE(CheckCredentialsWrite("http-sdk", R"({"auth":{"template":"{x}"}})", nullptr, lacking).ok())
      << "an adapterConfig that does not parse is another check's";
  CredentialFields bad = Fields({{"api_key", "k\r\n"}});
  EXPECT_FALSE(CheckCredentialsWrite("http-sdk", R"({"baseUrl":"http://192.0.2.1"})", &bad, {"api_key"}).ok());
  EXPECT_EQ(RequiredCredentialFields("http-sdk", R"({"baseUrl":"http://192.0.2.1","auth":{"template":"{a}{b}{a}"}})"),
            (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(RequiredCredentialFields("proxy", "not json"), (std::vector<std::string>{"api_key"}));
  EXPECT_TRUE(RequiredCredentialFields("spawn-cli", R"({"baseUrl":"https://x.test"})").empty());
}

TEST(AdapterConfigTest, UpstreamHostStripsPortAndBrackets) {
  EXPECT_EQ(UpstreamHost("https://api.openai.com:8443/v1"), "api.openai.com");
  EXPECT_EQ(UpstreamHost("http://[::1]:9/x"), "::1");
  EXPECT_EQ(UpstreamHost("nonsense"), "");
}

TEST(UpstreamAddressTest, ForbiddenAddresses) {
  auto forbidden = [](const char* a) {
    auto ip = ParseIpLiteral(a);
    return ip && IsForbiddenIp(*ip);
  };
  for (const char* a : {"169.254.169.254", "169.254.0.0", "fe80::1", "fd00:ec2::254", "::ffff:169.254.169.254",
                        "febf:ffff::1", "2852039166", "[fe80::1%eth0]", "fe80::1%eth0"}) {
    EXPECT_TRUE(forbidden(a)) << a;
  }
  for (const char* a : {"127.0.0.1", "10.0.0.1", "::1", "fec0::1", "2001:db8::1", "169.255.0.1"}) {
    EXPECT_FALSE(forbidden(a)) << a;
  }
  for (const char* a : {"api.openai.com", "", "1.2.3.4.5", "256.1.1.1", "09.1.1.1", "0x1g.0.0.0", "4294967296",
                        "1.2.3.256", "1.2.65536", "[1.2.3.4]"}) {
    EXPECT_FALSE(ParseIpLiteral(a).has_value()) << a;
  }
  ASSERT_TRUE(ParseIpLiteral("1.2.65535").has_value());
  EXPECT_TRUE(IsLoopbackIp(*ParseIpLiteral("0x7f.1")));
}

}  // namespace
}  // namespace dyad
