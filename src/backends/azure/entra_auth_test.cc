#include "backends/azure/entra_auth.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fstream>
#include <future>
#include <thread>
#include <nlohmann/json.hpp>

#include "backends/azure/azure_client.h"
#include "backends/azure/base64url.h"
#include "core/encoding.h"
#include "testing/fakes.h"

namespace dyad {
namespace {

using nlohmann::json;
using testing::ScriptedTransport;

constexpr char kTenant[] = "72f988bf-86f1-41af-91ab-2d7cd011db47";
constexpr char kClient[] = "c0ffee00-0000-4000-8000-000000000001";
constexpr char kScope[] = "https://vault.azure.net/.default";
constexpr char kChallenge[] =
    "Bearer authorization=\"https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47\", "
    "resource=\"https://vault.azure.net\"";

AzureSettings Settings() {
  AzureSettings s;
  s.vault_url = "https://kv1.vault.azure.net";
  s.vault_host = "kv1.vault.azure.net";
  s.tenant_id = kTenant;
  s.client_id = kClient;
  return s;
}

std::string TokenAnswer(const std::string& token, long long expires_in = 3599) {
  return json{{"token_type", "Bearer"}, {"expires_in", expires_in}, {"access_token", token}}.dump();
}

// key=value of a form body, decoded.
std::map<std::string, std::string> Form(const std::string& body) {
  std::map<std::string, std::string> out;
  size_t at = 0;
  while (at <= body.size()) {
    size_t amp = body.find('&', at);
    if (amp == std::string::npos) amp = body.size();
    std::string pair = body.substr(at, amp - at);
    auto eq = pair.find('=');
    out[PercentDecode(pair.substr(0, eq), true)] = PercentDecode(pair.substr(eq + 1), true);
    at = amp + 1;
  }
  return out;
}

std::string FromBase64Url(const std::string& s) { return Base64UrlDecode(s).value_or(""); }

Result<std::unique_ptr<EntraTokenSource>> Source(const AzureSettings& s, ScriptedTransport& http, FakeClock& clock) {
  static testing::ConstantRandom random(7);
  return NewEntraTokenSource(s, http, clock, random);
}

TEST(EntraAuth, ClientSecretPostsTheClientCredentialsGrant) {
  ScriptedTransport http;
  FakeClock clock;
  AzureSettings s = Settings();
  s.client_secret = SecretBytes(std::string_view("s3cret&=+canary"));
  s.auth_method = "secret";
  http.Then(200, TokenAnswer("tok-1"));
  auto source = Source(s, http, clock);
  ASSERT_TRUE(source.ok());
  EXPECT_EQ((*source)->Name(), "client secret");
  auto token = (*source)->Fetch(kScope);
  ASSERT_TRUE(token.ok()) << token.error().message;
  EXPECT_EQ(token->value.view(), "tok-1");
  EXPECT_EQ(*token->expires, clock.WallNow() + std::chrono::seconds(3599));
  ASSERT_EQ(http.calls.size(), 1u);
  const HttpCall& call = http.calls[0];
  EXPECT_EQ(call.method, "POST");
  EXPECT_EQ(call.url, std::string("https://login.microsoftonline.com/") + kTenant + "/oauth2/v2.0/token");
  EXPECT_EQ(ScriptedTransport::HeaderOf(call, "Content-Type"), "application/x-www-form-urlencoded");
  EXPECT_EQ(ScriptedTransport::HeaderOf(call, "Accept"), "application/json");
  EXPECT_EQ(call.timeout, std::chrono::milliseconds(10000));
}

TEST(EntraAuth, ClientSecretFormFieldsAreEncoded) {
  // A transport that keeps the body before the sender wipes it.
  class Keeping final : public HttpTransport {
   public:
    Result<HttpReply> Send(const HttpCall& call) override {
      body = call.body;
      return HttpReply{200, {}, TokenAnswer("tok")};
    }
    std::string body;
  } http;
  FakeClock clock;
  testing::ConstantRandom random(1);
  AzureSettings s = Settings();
  s.client_secret = SecretBytes(std::string_view("s3cret&=+canary"));
  auto source = NewEntraTokenSource(s, http, clock, random);
  ASSERT_TRUE(source.ok());
  ASSERT_TRUE((*source)->Fetch(kScope).ok());
  auto form = Form(http.body);
  EXPECT_EQ(form["grant_type"], "client_credentials");
  EXPECT_EQ(form["client_id"], kClient);
  EXPECT_EQ(form["scope"], kScope);
  EXPECT_EQ(form["client_secret"], "s3cret&=+canary");
  EXPECT_EQ(form.count("client_assertion"), 0u);
}

TEST(EntraAuth, RefusalsKeepEntraMessageAndNeverTheSecret) {
  ScriptedTransport http;
  FakeClock clock;
  AzureSettings s = Settings();
  s.client_secret = SecretBytes(std::string_view("secret-canary"));
  auto source = Source(s, http, clock);
  ASSERT_TRUE(source.ok());
  http.Then(401, R"({"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x"})");
  auto r = (*source)->Fetch(kScope);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnauthenticated);
  EXPECT_EQ(r.error().message,
            "Entra ID token (client secret): HTTP 401: invalid_client: AADSTS7000215: Invalid client secret provided.  "
            "Trace ID: x");
  http.Then(503, "<html>busy</html>");
  r = (*source)->Fetch(kScope);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(r.error().message, "Entra ID token (client secret): HTTP 503");
  http.ThenFail(MakeError(ErrorCode::kUnavailable, "Could not resolve host: login.microsoftonline.com"));
  r = (*source)->Fetch(kScope);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(r.error().message, "Entra ID token (client secret): Could not resolve host: login.microsoftonline.com");
}

TEST(EntraAuth, MalformedTokenAnswersAreRefused) {
  FakeClock clock;
  const long long now = std::chrono::duration_cast<std::chrono::seconds>(clock.WallNow().time_since_epoch()).count();
  AzureSettings s = Settings();
  s.client_secret = SecretBytes(std::string_view("x"));
  for (const std::string& body :
       {std::string("not json"), std::string("[]"), std::string(R"({"access_token":5,"expires_in":10})"),
        std::string(R"({"access_token":"tok-canary"})"),
        std::string(R"({"access_token":"tok-canary","expires_in":"soon"})"),
        std::string(R"({"access_token":"tok-canary","expires_in":-5})"),
        std::string(R"({"access_token":"tok-canary","expires_in":99999999999999999999})"),
        std::string(R"({"access_token":"tok-canary","expires_in":1e9})"),
        std::string(R"({"access_token":"tok-canary","expires_in":18446744073709551615})"),
        std::string(R"({"access_token":"tok-canary","expires_on":18446744073709551615})"),
        std::string(R"({"access_token":"tok-canary","expires_on":"9223372036854775807"})"),
        std::string(R"({"access_token":"tok-canary","expires_in":[3600]})"),
        std::string(R"({"access_token":"tok-canary","expires_on":)") + std::to_string(now - 1) + "}",
        std::string(R"({"access_token":"tok-canary\r\nX-Evil: 1","expires_in":10})"),
        std::string(R"({"access_token":"tok canary","expires_in":10})"),
        std::string(R"({"access_token":"","expires_in":10})"),
        std::string(R"({"access_token":"tok-canary","expires_in":10,"token_type":"mac"})")}) {
    ScriptedTransport http;
    http.Then(200, body);
    auto source = Source(s, http, clock);
    ASSERT_TRUE(source.ok());
    auto r = (*source)->Fetch(kScope);
    ASSERT_FALSE(r.ok()) << body;
    EXPECT_EQ(r.error().code, ErrorCode::kUnavailable) << body;
    EXPECT_NE(r.error().message.find("Entra ID token (client secret): malformed token answer: "), std::string::npos)
        << r.error().message;
    EXPECT_EQ(r.error().message.find("canary"), std::string::npos) << r.error().message;
  }
}

// A self-signed RSA certificate and its key in one PEM file.
struct TestCertificate {
  std::string pem;
  std::string thumbprint;  // base64url SHA-256 of the DER
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key{nullptr, EVP_PKEY_free};
};

TestCertificate MakeCertificate(bool rsa = true) {
  TestCertificate out;
  out.key.reset(rsa ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256"));
  std::unique_ptr<X509, decltype(&X509_free)> x(X509_new(), X509_free);
  X509_set_version(x.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x.get()), 1);
  X509_gmtime_adj(X509_getm_notBefore(x.get()), 0);
  X509_gmtime_adj(X509_getm_notAfter(x.get()), 3600);
  X509_set_pubkey(x.get(), out.key.get());
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x.get()), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("dyad-test"), -1, -1, 0);
  X509_set_issuer_name(x.get(), X509_get_subject_name(x.get()));
  X509_sign(x.get(), out.key.get(), EVP_sha256());
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, out.key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  PEM_write_bio_X509(bio, x.get());  // the key first: the order must not matter
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  out.pem.assign(data, static_cast<size_t>(n));
  BIO_free(bio);
  unsigned char* der = nullptr;
  int len = i2d_X509(x.get(), &der);
  std::string digest = Sha256(std::string_view(reinterpret_cast<char*>(der), static_cast<size_t>(len)));
  OPENSSL_free(der);
  out.thumbprint = Base64Encode(digest);  // independently of the code under test: + / = to - _ and none
  for (char& c : out.thumbprint) c = c == '+' ? '-' : c == '/' ? '_' : c;
  while (out.thumbprint.ends_with('=')) out.thumbprint.pop_back();
  return out;
}

TEST(EntraAuth, CertificateSendsAnRs256AssertionTheCertificateVerifies) {
  class Keeping final : public HttpTransport {
   public:
    Result<HttpReply> Send(const HttpCall& call) override {
      body = call.body;
      return HttpReply{200, {}, TokenAnswer("tok-cert")};
    }
    std::string body;
  } http;
  FakeClock clock;
  testing::ConstantRandom random(9);
  testing::TempDir dir;
  TestCertificate cert = MakeCertificate();
  std::ofstream(dir.File("cert.pem")) << cert.pem;
  AzureSettings s = Settings();
  s.client_certificate_path = dir.File("cert.pem");
  auto source = NewEntraTokenSource(s, http, clock, random);
  ASSERT_TRUE(source.ok()) << source.error().message;
  EXPECT_EQ((*source)->Name(), "client certificate");
  auto token = (*source)->Fetch(kScope);
  ASSERT_TRUE(token.ok()) << token.error().message;
  EXPECT_EQ(token->value.view(), "tok-cert");
  auto form = Form(http.body);
  EXPECT_EQ(form["client_assertion_type"], "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
  EXPECT_EQ(form.count("client_secret"), 0u);
  const std::string jwt = form["client_assertion"];
  const auto dot1 = jwt.find('.'), dot2 = jwt.rfind('.');
  ASSERT_NE(dot1, dot2);
  json header = json::parse(FromBase64Url(jwt.substr(0, dot1)));
  json claims = json::parse(FromBase64Url(jwt.substr(dot1 + 1, dot2 - dot1 - 1)));
  EXPECT_EQ(header["alg"], "RS256");
  EXPECT_EQ(header["typ"], "JWT");
  EXPECT_EQ(header["x5t#S256"], cert.thumbprint);
  const long long now = std::chrono::duration_cast<std::chrono::seconds>(clock.WallNow().time_since_epoch()).count();
  EXPECT_EQ(claims["aud"], std::string("https://login.microsoftonline.com/") + kTenant + "/oauth2/v2.0/token");
  EXPECT_EQ(claims["iss"], kClient);
  EXPECT_EQ(claims["sub"], kClient);
  EXPECT_EQ(claims["nbf"], now);
  EXPECT_EQ(claims["exp"], now + 600);
  EXPECT_EQ(claims["jti"].get<std::string>().size(), 36u);
  // The signature verifies under the certificate's public key, and not over other claims.
  const std::string sig = FromBase64Url(jwt.substr(dot2 + 1));
  auto verify = [&](const std::string& input) {
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, cert.key.get());
    return EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                            reinterpret_cast<const unsigned char*>(input.data()), input.size()) == 1;
  };
  EXPECT_TRUE(verify(jwt.substr(0, dot2)));
  EXPECT_FALSE(verify(jwt.substr(0, dot2) + "x"));
}

TEST(EntraAuth, BadCertificateFilesNameTheVariable) {
  ScriptedTransport http;
  FakeClock clock;
  testing::TempDir dir;
  AzureSettings s = Settings();
  s.auth_method = "certificate";
  TestCertificate ec = MakeCertificate(false);
  TestCertificate rsa = MakeCertificate();
  std::ofstream(dir.File("ec.pem")) << ec.pem;
  std::ofstream(dir.File("junk.pem")) << "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n";
  std::ofstream(dir.File("nokey.pem")) << rsa.pem.substr(rsa.pem.find("-----BEGIN CERTIFICATE"));
  TestCertificate other = MakeCertificate();
  std::ofstream(dir.File("mismatch.pem")) << other.pem.substr(0, other.pem.find("-----BEGIN CERTIFICATE"))
                                          << rsa.pem.substr(rsa.pem.find("-----BEGIN CERTIFICATE"));
  for (auto [file, why] : {std::pair<std::string, std::string>{"missing.pem", "cannot be read"},
                           {"junk.pem", "holds no PEM certificate"},
                           {"nokey.pem", "holds no unencrypted PEM private key"},
                           {"ec.pem", "holds a private key that is not RSA"},
                           {"mismatch.pem", "holds a private key that does not match its certificate"}}) {
    s.client_certificate_path = dir.File(file);
    auto source = Source(s, http, clock);
    ASSERT_FALSE(source.ok()) << file;
    EXPECT_EQ(source.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(source.error().message.find("AZURE_CLIENT_CERTIFICATE_PATH: '" + dir.File(file) + "' " + why),
              std::string::npos)
        << source.error().message;
  }
}

TEST(EntraAuth, WorkloadIdentityReadsTheTokenFileOnEveryFetch) {
  class Keeping final : public HttpTransport {
   public:
    Result<HttpReply> Send(const HttpCall& call) override {
      bodies.push_back(call.body);
      return HttpReply{200, {}, TokenAnswer("tok-wl")};
    }
    std::vector<std::string> bodies;
  } http;
  FakeClock clock;
  testing::ConstantRandom random(1);
  testing::TempDir dir;
  AzureSettings s = Settings();
  s.federated_token_file = dir.File("token");
  auto source = NewEntraTokenSource(s, http, clock, random);
  ASSERT_TRUE(source.ok());
  EXPECT_EQ((*source)->Name(), "workload identity");
  auto r = (*source)->Fetch(kScope);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_NE(r.error().message.find("AZURE_FEDERATED_TOKEN_FILE cannot be read"), std::string::npos);
  std::ofstream(dir.File("token")) << "\n";
  r = (*source)->Fetch(kScope);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("AZURE_FEDERATED_TOKEN_FILE is empty"), std::string::npos);
  EXPECT_TRUE(http.bodies.empty());
  std::ofstream(dir.File("token")) << "eyJ.first.sig\n";
  ASSERT_TRUE((*source)->Fetch(kScope).ok());
  std::ofstream(dir.File("token")) << "eyJ.second.sig";
  ASSERT_TRUE((*source)->Fetch(kScope).ok());
  ASSERT_EQ(http.bodies.size(), 2u);
  EXPECT_EQ(Form(http.bodies[0])["client_assertion"], "eyJ.first.sig");
  EXPECT_EQ(Form(http.bodies[1])["client_assertion"], "eyJ.second.sig");
  EXPECT_EQ(Form(http.bodies[1])["client_assertion_type"], "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
}

TEST(EntraAuth, ManagedIdentityThroughImdsAndAppService) {
  ScriptedTransport http;
  FakeClock clock;
  const long long now = std::chrono::duration_cast<std::chrono::seconds>(clock.WallNow().time_since_epoch()).count();
  AzureSettings s = Settings();
  s.tenant_id.clear();
  s.auth_method = "managed";
  s.imds_endpoint = "http://127.0.0.1:8081";
  auto source = Source(s, http, clock);
  ASSERT_TRUE(source.ok());
  EXPECT_EQ((*source)->Name(), "managed identity (IMDS)");
  http.Then(200, json{{"access_token", "tok-mi"}, {"expires_in", "3599"}, {"expires_on", std::to_string(now + 3000)},
                      {"resource", "https://vault.azure.net"}, {"token_type", "Bearer"}}.dump());
  auto token = (*source)->Fetch(kScope);
  ASSERT_TRUE(token.ok()) << token.error().message;
  EXPECT_EQ(token->value.view(), "tok-mi");
  EXPECT_EQ(*token->expires, Clock::WallTime(std::chrono::seconds(now + 3000)));  // expires_on wins
  EXPECT_EQ(http.calls[0].method, "GET");
  EXPECT_EQ(http.calls[0].url,
            "http://127.0.0.1:8081/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault."
            "azure.net&client_id=" + std::string(kClient));
  EXPECT_EQ(ScriptedTransport::HeaderOf(http.calls[0], "Metadata"), "true");
  http.Then(400, R"({"error":"invalid_request","error_description":"Identity not found"})");
  auto r = (*source)->Fetch(kScope);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnauthenticated);
  EXPECT_EQ(r.error().message, "Entra ID token (managed identity (IMDS)): HTTP 400: invalid_request: Identity not found");

  s.client_id.clear();
  s.identity_endpoint = "http://127.0.0.1:41741/MSI/token/";
  s.identity_header = SecretBytes(std::string_view("header-canary"));
  ScriptedTransport app;
  auto app_source = Source(s, app, clock);
  ASSERT_TRUE(app_source.ok());
  EXPECT_EQ((*app_source)->Name(), "managed identity (App Service)");
  app.Then(200, json{{"access_token", "tok-app"}, {"expires_on", now + 86400}, {"token_type", "Bearer"}}.dump());
  token = (*app_source)->Fetch(kScope);
  ASSERT_TRUE(token.ok()) << token.error().message;
  EXPECT_EQ(token->value.view(), "tok-app");
  EXPECT_EQ(app.calls[0].url,
            "http://127.0.0.1:41741/MSI/token/?api-version=2019-08-01&resource=https%3A%2F%2Fvault.azure.net");
  EXPECT_EQ(ScriptedTransport::HeaderOf(app.calls[0], "Metadata"), "");
  EXPECT_EQ(ScriptedTransport::HeaderOf(app.calls[0], "X-IDENTITY-HEADER"), "header-canary");
  app.Then(401, R"({"statusCode":401,"message":"Unauthorized request"})");
  r = (*app_source)->Fetch(kScope);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnauthenticated);
  EXPECT_EQ(r.error().message, "Entra ID token (managed identity (App Service)): HTTP 401: Unauthorized request");
  app.Then(500, R"({"error":{"code":"Busy","message":"try later"}})");
  r = (*app_source)->Fetch(kScope);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(r.error().message, "Entra ID token (managed identity (App Service)): HTTP 500: try later");
}

TEST(EntraAuth, TheChainTakesTheFirstConfiguredSourceInDefaultAzureCredentialOrder) {
  ScriptedTransport http;
  FakeClock clock;
  testing::TempDir dir;
  TestCertificate cert = MakeCertificate();
  std::ofstream(dir.File("cert.pem")) << cert.pem;
  AzureSettings s = Settings();
  s.client_secret = SecretBytes(std::string_view("x"));
  s.client_certificate_path = dir.File("cert.pem");
  s.federated_token_file = dir.File("token");
  EXPECT_EQ((*Source(s, http, clock))->Name(), "client secret");
  s.client_secret = SecretBytes();
  EXPECT_EQ((*Source(s, http, clock))->Name(), "client certificate");
  s.client_certificate_path.clear();
  EXPECT_EQ((*Source(s, http, clock))->Name(), "workload identity");
  s.tenant_id.clear();  // an app needs its tenant: managed identity (user-assigned by client id) is left
  EXPECT_EQ((*Source(s, http, clock))->Name(), "managed identity (IMDS)");
  // A configured certificate that is broken is reported, not skipped.
  s = Settings();
  s.client_certificate_path = dir.File("missing.pem");
  auto broken = Source(s, http, clock);
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(broken.error().message.find("AZURE_CLIENT_CERTIFICATE_PATH"), std::string::npos);
  // A forced method wins over the chain's order.
  s = Settings();
  s.client_secret = SecretBytes(std::string_view("x"));
  s.auth_method = "managed";
  EXPECT_EQ((*Source(s, http, clock))->Name(), "managed identity (IMDS)");
}

TEST(EntraAuth, ChallengesAreParsed) {
  auto c = ParseEntraChallenge(kChallenge);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->authority, std::string("https://login.microsoftonline.com/") + kTenant);
  EXPECT_EQ(c->scope, kScope);
  c = ParseEntraChallenge(
      "Bearer authorization_uri=\"https://login.microsoftonline.com/t\", scope=\"https://vault.azure.cn/.default\"");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->authority, "https://login.microsoftonline.com/t");
  EXPECT_EQ(c->scope, "https://vault.azure.cn/.default");
  c = ParseEntraChallenge("bearer resource=https://vault.usgovcloudapi.net/,authorization=x");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->scope, "https://vault.usgovcloudapi.net/.default");
  for (const char* bad : {"", "Bearer", "Basic realm=\"x\"", "Bearer authorization=\"https://login/t\"",
                          "Bearer resource=\"https://vault.azure.net", "Bearer resource=\"http://vault.azure.net\"",
                          "Bearer scope=\"https://vault.azure.net/.default\r\nX: y\"", "Bearer ,,,=,=", "Bearer ====",
                          "Bearer resource=\"\""}) {
    EXPECT_FALSE(ParseEntraChallenge(bad)) << bad;
  }
  EXPECT_FALSE(ParseEntraChallenge("Bearer resource=\"https://" + std::string(600, 'a') + "\""));
}

TEST(EntraAuth, ChallengeResourceMustBeTheVaultsDomain) {
  EXPECT_TRUE(ChallengeResourceMatches("kv1.vault.azure.net", "https://vault.azure.net/.default"));
  EXPECT_TRUE(ChallengeResourceMatches("KV1.Vault.Azure.Net:443", "https://vault.azure.net/.default"));
  EXPECT_TRUE(ChallengeResourceMatches("kv1.vault.azure.cn", "https://vault.azure.cn/.default"));
  EXPECT_TRUE(ChallengeResourceMatches("kv1.vault.usgovcloudapi.net", "https://vault.usgovcloudapi.net/.default"));
  EXPECT_TRUE(ChallengeResourceMatches("kv1.vault.microsoftazure.de", "https://vault.microsoftazure.de/.default"));
  EXPECT_FALSE(ChallengeResourceMatches("kv1.vault.azure.net.evil.example", "https://vault.azure.net/.default"));
  EXPECT_FALSE(ChallengeResourceMatches("evilvault.azure.net", "https://vault.azure.net/.default"));
  EXPECT_FALSE(ChallengeResourceMatches("vault.azure.net", "https://vault.azure.net/.default"));
  EXPECT_FALSE(ChallengeResourceMatches("kv1.vault.azure.net", "https://evil.example/.default"));
  EXPECT_FALSE(ChallengeResourceMatches("kv1.vault.azure.net", "https://vault.azure.cn/.default"));
  EXPECT_FALSE(ChallengeResourceMatches("127.0.0.1:8443", "https://vault.azure.net/.default"));
  EXPECT_FALSE(ChallengeResourceMatches("kv1.vault.azure.net", "https://@vault.azure.net/.default"));
}

// A token source that counts its fetches and answers tok-1, tok-2, …
class CountingSource final : public EntraTokenSource {
 public:
  explicit CountingSource(const Clock& clock, std::chrono::seconds lifetime = std::chrono::seconds(3600))
      : clock_(clock), lifetime_(lifetime) {}
  Result<Expiring<SecretBytes>> Fetch(const std::string& scope) override {
    scopes.push_back(scope);
    if (fail) return MakeError(ErrorCode::kUnauthenticated, "refused");
    return Expiring<SecretBytes>{SecretBytes(std::string_view("tok-" + std::to_string(scopes.size()))),
                                 clock_.WallNow() + lifetime_};
  }
  const std::string& Name() const override { return name_; }
  std::vector<std::string> scopes;
  bool fail = false;

 private:
  const Clock& clock_;
  const std::chrono::seconds lifetime_;
  const std::string name_ = "counting";
};

// A credential over a CountingSource on `clock`; `*source` is that source.
std::shared_ptr<EntraCredential> CountedCredential(const Clock& clock, CountingSource** source) {
  auto owned = std::make_unique<CountingSource>(clock);
  *source = owned.get();
  return std::make_shared<EntraCredential>(std::move(owned), clock);
}

std::string AuthorizationOf(const CloudRequest& r) {
  for (const auto& [k, v] : r.headers) {
    if (k == "Authorization") return v;
  }
  return "";
}

HttpReply Challenge401(const std::string& www = kChallenge) {
  return HttpReply{401, {{"www-authenticate", www}}, R"({"error":{"code":"Unauthorized","message":"no token"}})"};
}

TEST(EntraAuth, TheFirstRequestProbesAndTheChallengeSetsTheScope) {
  FakeClock clock;
  CountingSource* source = nullptr;
  auto credential = CountedCredential(clock, &source);
  auto auth = NewEntraAuth("kv1.vault.azure.net", true, credential);
  CloudRequest r{"PUT", "kv1.vault.azure.net", "/secrets/x", "api-version=7.5", {}, R"({"value":"plain-canary"})"};
  ASSERT_TRUE(auth->Authorize(r).ok());
  EXPECT_EQ(AuthorizationOf(r), "");
  EXPECT_EQ(r.body, "");  // the probe carries no secret value
  EXPECT_TRUE(source->scopes.empty());
  EXPECT_FALSE(auth->OnRejected("secrets.set", HttpReply{401, {}, ""}));  // no challenge, no scope: nothing to fix
  EXPECT_FALSE(auth->OnRejected("secrets.set", HttpReply{403, {{"www-authenticate", kChallenge}}, ""}));
  EXPECT_TRUE(auth->OnRejected("secrets.set", Challenge401()));
  CloudRequest again{"PUT", "kv1.vault.azure.net", "/secrets/x", "api-version=7.5", {}, "{}"};
  ASSERT_TRUE(auth->Authorize(again).ok());
  EXPECT_EQ(AuthorizationOf(again), "Bearer tok-1");
  EXPECT_EQ(again.body, "{}");
  EXPECT_EQ(source->scopes, std::vector<std::string>{kScope});
  // Cached: the next request fetches nothing.
  CloudRequest third{"GET", "kv1.vault.azure.net", "/secrets/x", "", {}, ""};
  ASSERT_TRUE(auth->Authorize(third).ok());
  EXPECT_EQ(AuthorizationOf(third), "Bearer tok-1");
  EXPECT_EQ(source->scopes.size(), 1u);
  // Never to another host.
  CloudRequest elsewhere{"GET", "evil.example", "/", "", {}, ""};
  auto refused = auth->Authorize(elsewhere);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(AuthorizationOf(elsewhere), "");
}

TEST(EntraAuth, AChallengeForAnotherDomainGetsNoToken) {
  FakeClock clock;
  CountingSource* source = nullptr;
  auto credential = CountedCredential(clock, &source);
  auto auth = NewEntraAuth("kv1.vault.azure.net", true, credential);
  EXPECT_FALSE(auth->OnRejected("secrets.get", Challenge401("Bearer authorization=\"https://login.microsoftonline.com/t\", "
                                                            "resource=\"https://evil.example\"")));
  CloudRequest r{"GET", "kv1.vault.azure.net", "/secrets/x", "", {}, ""};
  ASSERT_TRUE(auth->Authorize(r).ok());
  EXPECT_EQ(AuthorizationOf(r), "");
  EXPECT_TRUE(source->scopes.empty());
  // A loopback vault cannot match any resource domain: only with verification off.
  auto strict = NewEntraAuth("127.0.0.1:8443", true, credential);
  EXPECT_FALSE(strict->OnRejected("secrets.get", Challenge401()));
  auto loose = NewEntraAuth("127.0.0.1:8443", false, credential);
  EXPECT_TRUE(loose->OnRejected("secrets.get", Challenge401()));
  CloudRequest local{"GET", "127.0.0.1:8443", "/secrets/x", "", {}, ""};
  ASSERT_TRUE(loose->Authorize(local).ok());
  EXPECT_EQ(AuthorizationOf(local), "Bearer tok-1");
}

TEST(EntraAuth, ARejectedTokenIsRefreshedOnceThenTheCallFails) {
  FakeClock clock;
  CountingSource* source = nullptr;
  auto credential = CountedCredential(clock, &source);
  auto auth = NewEntraAuth("kv1.vault.azure.net", true, credential);
  ASSERT_TRUE(auth->OnRejected("op", Challenge401()));
  CloudRequest r{"GET", "kv1.vault.azure.net", "/secrets/x", "", {}, ""};
  ASSERT_TRUE(auth->Authorize(r).ok());
  EXPECT_EQ(AuthorizationOf(r), "Bearer tok-1");
  // Key Vault refuses the token later (revoked): a fresh one for the retry.
  clock.Advance(std::chrono::seconds(31));
  EXPECT_TRUE(auth->OnRejected("op", HttpReply{401, {{"www-authenticate", kChallenge}}, ""}));
  CloudRequest retry{"GET", "kv1.vault.azure.net", "/secrets/x", "", {}, ""};
  ASSERT_TRUE(auth->Authorize(retry).ok());
  EXPECT_EQ(AuthorizationOf(retry), "Bearer tok-2");
  // When the source then refuses, the call fails with its error (no token).
  source->fail = true;
  clock.Advance(std::chrono::seconds(31));
  EXPECT_TRUE(auth->OnRejected("op", HttpReply{401, {}, ""}));
  CloudRequest failed{"GET", "kv1.vault.azure.net", "/secrets/x", "", {}, ""};
  auto s = auth->Authorize(failed);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kUnauthenticated);
  EXPECT_EQ(AuthorizationOf(failed), "");
}

// A vault that refuses every token (another tenant): a fresh token refused
// fails the call; 50 calls fetch one token, not 50.
TEST(EntraAuth, AFreshTokenRefusedFailsClosedWithoutAnotherFetch) {
  FakeClock clock;
  CountingSource* source = nullptr;
  auto credential = CountedCredential(clock, &source);
  auto auth = NewEntraAuth("kv1.vault.azure.net", true, credential);
  ASSERT_TRUE(auth->OnRejected("op", Challenge401()));
  for (int i = 0; i < 50; ++i) {
    CloudRequest r{"GET", "kv1.vault.azure.net", "/secrets/x", "", {}, ""};
    ASSERT_TRUE(auth->Authorize(r).ok());
    EXPECT_EQ(AuthorizationOf(r), "Bearer tok-1");
    EXPECT_FALSE(auth->OnRejected("op", Challenge401()));
  }
  EXPECT_EQ(source->scopes.size(), 1u);
  // Past the retry interval a refusal earns one new token again.
  clock.Advance(std::chrono::seconds(31));
  CloudRequest r{"GET", "kv1.vault.azure.net", "/secrets/x", "", {}, ""};
  ASSERT_TRUE(auth->Authorize(r).ok());
  EXPECT_TRUE(auth->OnRejected("op", Challenge401()));
  CloudRequest retry{"GET", "kv1.vault.azure.net", "/secrets/x", "", {}, ""};
  ASSERT_TRUE(auth->Authorize(retry).ok());
  EXPECT_EQ(AuthorizationOf(retry), "Bearer tok-2");
  EXPECT_EQ(source->scopes.size(), 2u);
}

TEST(EntraAuth, RefusalsOfAnAlreadyReplacedTokenFetchNoOtherToken) {
  FakeClock clock;
  CountingSource* source = nullptr;
  auto credential = CountedCredential(clock, &source);
  auto auth = NewEntraAuth("kv1.vault.azure.net", true, credential);
  ASSERT_TRUE(auth->OnRejected("op", Challenge401()));
  // Another thread sends tok-1 and hears of its refusal only after this one has replaced it.
  std::promise<void> sent, replaced;
  std::string other_retry;
  std::thread other([&] {
    CloudRequest r{"GET", "kv1.vault.azure.net", "/", "", {}, ""};
    EXPECT_TRUE(auth->Authorize(r).ok());
    EXPECT_EQ(AuthorizationOf(r), "Bearer tok-1");
    sent.set_value();
    replaced.get_future().wait();
    EXPECT_TRUE(auth->OnRejected("op", Challenge401()));
    CloudRequest retry{"GET", "kv1.vault.azure.net", "/", "", {}, ""};
    EXPECT_TRUE(auth->Authorize(retry).ok());
    other_retry = AuthorizationOf(retry);
  });
  sent.get_future().wait();
  CloudRequest r{"GET", "kv1.vault.azure.net", "/", "", {}, ""};
  ASSERT_TRUE(auth->Authorize(r).ok());
  EXPECT_EQ(AuthorizationOf(r), "Bearer tok-1");
  clock.Advance(std::chrono::seconds(31));
  EXPECT_TRUE(auth->OnRejected("op", Challenge401()));
  CloudRequest retry{"GET", "kv1.vault.azure.net", "/", "", {}, ""};
  ASSERT_TRUE(auth->Authorize(retry).ok());
  EXPECT_EQ(AuthorizationOf(retry), "Bearer tok-2");
  replaced.set_value();
  other.join();
  EXPECT_EQ(other_retry, "Bearer tok-2");
  EXPECT_EQ(source->scopes.size(), 2u);  // one fetch for the burst
}

TEST(EntraAuth, TokensAreRefreshedAheadOfExpiryAndSharedAcrossVaults) {
  FakeClock clock;
  CountingSource* source = nullptr;
  auto credential = CountedCredential(clock, &source);
  auto a = NewEntraAuth("kv1.vault.azure.net", true, credential);
  auto b = NewEntraAuth("keys1.vault.azure.net", true, credential);
  ASSERT_TRUE(a->OnRejected("op", Challenge401()));
  ASSERT_TRUE(b->OnRejected("op", Challenge401()));
  CloudRequest ra{"GET", "kv1.vault.azure.net", "/", "", {}, ""};
  CloudRequest rb{"GET", "keys1.vault.azure.net", "/", "", {}, ""};
  ASSERT_TRUE(a->Authorize(ra).ok());
  ASSERT_TRUE(b->Authorize(rb).ok());
  EXPECT_EQ(AuthorizationOf(rb), "Bearer tok-1");
  EXPECT_EQ(source->scopes.size(), 1u);
  clock.Advance(std::chrono::minutes(54));
  CloudRequest later{"GET", "kv1.vault.azure.net", "/", "", {}, ""};
  ASSERT_TRUE(a->Authorize(later).ok());
  EXPECT_EQ(AuthorizationOf(later), "Bearer tok-1");
  clock.Advance(std::chrono::minutes(2));  // 4 minutes left: due
  CloudRequest refreshed{"GET", "kv1.vault.azure.net", "/", "", {}, ""};
  ASSERT_TRUE(a->Authorize(refreshed).ok());
  EXPECT_EQ(AuthorizationOf(refreshed), "Bearer tok-2");
  EXPECT_EQ(source->scopes.size(), 2u);
}

TEST(EntraAuth, AzureClientProbesThenSendsTheTokenFromTheChallenge) {
  FakeClock clock;
  testing::ConstantRandom random(3);
  auto transport = std::make_unique<ScriptedTransport>();
  ScriptedTransport* vault = transport.get();
  vault->Then(401, R"({"error":{"code":"Unauthorized","message":"AKV10000: Request is missing a Bearer or PoP token."}})",
              {{"www-authenticate", kChallenge}});
  vault->Then(200, R"({"value":"v","id":"https://kv1.vault.azure.net/secrets/x/abc"})");
  ScriptedTransport entra;
  entra.Then(200, TokenAnswer("tok-entra"));
  AzureSettings s = Settings();
  s.client_secret = SecretBytes(std::string_view("x"));
  auto source = NewEntraTokenSource(s, entra, clock, random);
  ASSERT_TRUE(source.ok());
  auto credential = std::make_shared<EntraCredential>(std::move(*source), clock);
  auto client = AzureClient::Create({"https://kv1.vault.azure.net"}, NewEntraAuth("kv1.vault.azure.net", true, credential),
                                    std::move(transport), clock, random);
  ASSERT_TRUE(client.ok());
  auto answer = (*client)->Call({"secrets.get", "GET", "/secrets/x"});
  ASSERT_TRUE(answer.ok()) << answer.error().message;
  EXPECT_EQ((*answer)["value"], "v");
  ASSERT_EQ(vault->calls.size(), 2u);
  EXPECT_EQ(ScriptedTransport::HeaderOf(vault->calls[0], "Authorization"), "");
  EXPECT_EQ(ScriptedTransport::HeaderOf(vault->calls[1], "Authorization"), "Bearer tok-entra");
  EXPECT_EQ(Form(entra.calls[0].body).size() > 0, true);
  // A vault refusing the token just fetched (another tenant): no other token, the 401 is the answer.
  vault->Then(401, R"({"error":{"code":"Unauthorized","message":"AKV10032: Invalid issuer."}})",
              {{"www-authenticate", kChallenge}});
  auto denied = (*client)->Call({"secrets.get", "GET", "/secrets/x"});
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.error().code, ErrorCode::kUnauthenticated);
  EXPECT_EQ(vault->calls.size(), 3u);
  EXPECT_EQ(entra.calls.size(), 1u);
  // A vault that keeps refusing an older token: one retry, then the 401 is the answer.
  clock.Advance(std::chrono::seconds(31));
  vault->Then(401, R"({"error":{"code":"Unauthorized","message":"expired"}})", {{"www-authenticate", kChallenge}});
  entra.Then(200, TokenAnswer("tok-entra-2"));
  auto refused = (*client)->Call({"secrets.get", "GET", "/secrets/x"});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, ErrorCode::kUnauthenticated);
  EXPECT_EQ(vault->calls.size(), 5u);
  EXPECT_EQ(ScriptedTransport::HeaderOf(vault->calls[4], "Authorization"), "Bearer tok-entra-2");
}


TEST(EntraAuth, AShortLivedTokenIsReusedForHalfItsLifetime) {
  ScriptedTransport http;
  FakeClock clock;
  AzureSettings s = Settings();
  s.client_secret = SecretBytes(std::string_view("s3cret"));
  s.auth_method = "secret";
  http.Then(200, TokenAnswer("tok-1", 30));
  http.Then(200, TokenAnswer("tok-2", 30));
  auto source = Source(s, http, clock);
  ASSERT_TRUE(source.ok());
  EntraCredential credential(std::move(*source), clock);
  for (int i = 0; i < 10; ++i) {
    auto token = credential.Get(kScope);
    ASSERT_TRUE(token.ok()) << token.error().message;
    EXPECT_EQ(token->view(), "tok-1");
    clock.Advance(std::chrono::seconds(1));
  }
  EXPECT_EQ(http.calls.size(), 1u);
  clock.Advance(std::chrono::seconds(6));  // 16 s after the fetch: past half of 30 s
  auto token = credential.Get(kScope);
  ASSERT_TRUE(token.ok()) << token.error().message;
  EXPECT_EQ(token->view(), "tok-2");
  EXPECT_EQ(http.calls.size(), 2u);
}


TEST(EntraAuth, OnlyAScopeOfExactlyDotDefaultIsAccepted) {
  for (const char* good : {"Bearer scope=\"https://vault.azure.net/.default\"",
                           "Bearer resource=\"https://vault.azure.net\"",
                           "Bearer resource=\"https://vault.azure.net/\""}) {
    auto c = ParseEntraChallenge(good);
    ASSERT_TRUE(c) << good;
    EXPECT_EQ(c->scope, kScope) << good;
  }
  for (const char* bad : {"Bearer scope=\"https://vault.azure.net/x/.default\"",
                          "Bearer scope=\"https://vault.azure.net/.default?x=1\"",
                          "Bearer scope=\"https://vault.azure.net/.default#f\"",
                          "Bearer scope=\"https://vault.azure.net\"",
                          "Bearer scope=\"https:///.default\"",
                          "Bearer resource=\"https://vault.azure.net/x\"",
                          "Bearer resource=\"https://vault.azure.net/x/.default\"",
                          "Bearer resource=\"https://vault.azure.net?x=1\"",
                          "Bearer resource=\"https://vault.azure.net//\""}) {
    EXPECT_FALSE(ParseEntraChallenge(bad)) << bad;
  }
  FakeClock clock;
  CountingSource* source = nullptr;
  auto credential = CountedCredential(clock, &source);
  auto auth = NewEntraAuth("kv1.vault.azure.net", true, credential);
  for (const char* bad : {"Bearer authorization=\"https://login.microsoftonline.com/t\", "
                          "scope=\"https://vault.azure.net/x/.default\"",
                          "Bearer authorization=\"https://login.microsoftonline.com/t\", "
                          "scope=\"https://vault.azure.net/.default?x=1\""}) {
    EXPECT_FALSE(auth->OnRejected("secrets.get", Challenge401(bad))) << bad;  // the call fails with the 401
    CloudRequest r{"GET", "kv1.vault.azure.net", "/secrets/x", "", {}, ""};
    ASSERT_TRUE(auth->Authorize(r).ok());
    EXPECT_EQ(AuthorizationOf(r), "");
  }
  EXPECT_TRUE(source->scopes.empty());
}


TEST(EntraAuth, AChallengeFromAnotherTenantFailsClosedNamingBothTenants) {
  FakeClock clock;
  CountingSource* source = nullptr;
  auto credential = CountedCredential(clock, &source);
  auto same = NewEntraAuth("kv1.vault.azure.net", true, credential, kTenant);
  EXPECT_TRUE(same->OnRejected("secrets.get", Challenge401()));
  auto other = NewEntraAuth("kv2.vault.azure.net", true, credential, kTenant);
  EXPECT_FALSE(other->OnRejected("secrets.get", Challenge401("Bearer authorization=\"https://login.microsoftonline.com/"
                                                             "0000aaaa-1111-2222-3333-444455556666/\", "
                                                             "resource=\"https://vault.azure.net\"")));
  CloudRequest r{"GET", "kv2.vault.azure.net", "/secrets/x", "", {}, ""};
  auto refused = other->Authorize(r);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, ErrorCode::kUnauthenticated);
  EXPECT_NE(refused.error().message.find("0000aaaa-1111-2222-3333-444455556666"), std::string::npos);
  EXPECT_NE(refused.error().message.find(kTenant), std::string::npos);
  EXPECT_EQ(AuthorizationOf(r), "");
  EXPECT_TRUE(source->scopes.empty());
}


TEST(EntraAuth, ANewChallengeScopeReplacesTheOldTokenHolder) {
  FakeClock clock;
  CountingSource* source = nullptr;
  auto credential = CountedCredential(clock, &source);
  auto auth = NewEntraAuth("127.0.0.1:8443", false, credential);
  for (int i = 0; i < 5; ++i) {
    const std::string scope = "https://r" + std::to_string(i) + ".example/.default";
    ASSERT_TRUE(auth->OnRejected("secrets.get", Challenge401("Bearer scope=\"" + scope + "\"")));
    CloudRequest r{"GET", "127.0.0.1:8443", "/secrets/x", "", {}, ""};
    ASSERT_TRUE(auth->Authorize(r).ok());
    EXPECT_EQ(AuthorizationOf(r), "Bearer tok-" + std::to_string(i + 1));
    EXPECT_EQ(credential->ScopeCount(), 1u);
  }
  EXPECT_EQ(source->scopes.size(), 5u);
}

}  // namespace
}  // namespace dyad
