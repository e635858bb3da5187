#include "backends/aws/aws_credentials.h"

#include <gtest/gtest.h>

#include <fstream>

#include "core/ini.h"
#include "core/time_format.h"
#include "testing/fakes.h"

namespace dyad {
namespace {

using testing::ScriptedTransport;

EnvMap NoImds(EnvMap env) {
  env["AWS_EC2_METADATA_DISABLED"] = "true";
  return env;
}

AwsChainOptions Options(EnvMap env, std::string region = "us-east-1", std::string sts = "") {
  AwsChainOptions o;
  o.env = std::move(env);
  o.region = std::move(region);
  o.sts_endpoint = std::move(sts);
  return o;
}

void Write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

TEST(AwsCredentialChain, EnvironmentFirst) {
  FakeClock clock;
  ScriptedTransport http;
  auto chain = NewAwsCredentialChain(
      Options(NoImds({{"AWS_ACCESS_KEY_ID", "AKIAENV"}, {"AWS_SECRET_ACCESS_KEY", "s"}, {"AWS_SESSION_TOKEN", "t"}})), http,
      clock);
  auto c = chain->Get();
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->access_key_id, "AKIAENV");
  EXPECT_EQ(c->session_token, "t");
  EXPECT_EQ(chain->SourceName(), "environment");
  EXPECT_TRUE(http.calls.empty());
}

TEST(AwsCredentialChain, HalfSetEnvironmentNamesTheMissingVariable) {
  FakeClock clock;
  ScriptedTransport http;
  auto c = NewAwsCredentialChain(Options(NoImds({{"AWS_ACCESS_KEY_ID", "AKIAENV"}})), http, clock)->Get();
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message.find("AWS_SECRET_ACCESS_KEY"), std::string::npos);
}

TEST(AwsCredentialChain, ProfileFromCredentialsThenConfigFile) {
  testing::TempDir dir;
  Write(dir.File("credentials"), "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = d\n");
  Write(dir.File("config"), "[profile work]\nregion = eu-west-1\naws_access_key_id=AKIAWORK\n"
                            "aws_secret_access_key=w\ns3 =\n  aws_access_key_id = nested-ignored\n");
  FakeClock clock;
  ScriptedTransport http;
  EnvMap env = NoImds({{"AWS_SHARED_CREDENTIALS_FILE", dir.File("credentials")}, {"AWS_CONFIG_FILE", dir.File("config")}});
  auto c = NewAwsCredentialChain(Options(env), http, clock)->Get();
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->access_key_id, "AKIADEFAULT");

  env["AWS_PROFILE"] = "work";
  auto chain = NewAwsCredentialChain(Options(env), http, clock);
  c = chain->Get();
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->access_key_id, "AKIAWORK");
  EXPECT_EQ(chain->SourceName(), "profile work");

  Write(dir.File("credentials"), "[work]\naws_access_key_id = AKIAHALF\n");
  c = NewAwsCredentialChain(Options(env), http, clock)->Get();
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message.find("needs both"), std::string::npos);
}

TEST(AwsCredentialChain, UnreachableInstanceMetadataMeansNothingConfigured) {
  FakeClock clock;
  ScriptedTransport http;
  http.ThenFail(MakeError(ErrorCode::kUnavailable, "Connection timed out"));
  auto c = NewAwsCredentialChain(Options({{"HOME", "/nonexistent"}}), http, clock)->Get();
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(c.error().message.find("no AWS credentials found"), std::string::npos);
  EXPECT_NE(c.error().message.find("Connection timed out"), std::string::npos);
}

TEST(AwsCredentialChain, NothingConfiguredSaysWhatWasLookedFor) {
  FakeClock clock;
  ScriptedTransport http;
  auto c = NewAwsCredentialChain(Options(NoImds({{"HOME", "/nonexistent"}})), http, clock)->Get();
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(c.error().message.find("AWS_ACCESS_KEY_ID"), std::string::npos);
}

std::string ImdsCredentials(const std::string& key, Clock::WallTime expires) {
  return R"({"Code":"Success","AccessKeyId":")" + key + R"(","SecretAccessKey":"s","Token":"tok","Expiration":")" +
         FormatIso8601(expires) + "\"}";
}

TEST(AwsCredentialChain, InstanceMetadataWithTokenAndRefreshBeforeExpiry) {
  FakeClock clock;
  ScriptedTransport http;
  auto expires = clock.WallNow() + std::chrono::hours(1);
  http.Then(200, "imds-token");
  http.Then(200, "role-a\n");
  http.Then(200, ImdsCredentials("ASIAFIRST", expires));
  EnvMap env = {{"HOME", "/nonexistent"}, {"AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1338/"}};
  auto chain = NewAwsCredentialChain(Options(env), http, clock);
  auto c = chain->Get();
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->access_key_id, "ASIAFIRST");
  EXPECT_EQ(c->session_token, "tok");
  ASSERT_EQ(http.calls.size(), 3u);
  EXPECT_EQ(http.calls[0].method, "PUT");
  EXPECT_EQ(http.calls[0].url, "http://127.0.0.1:1338/latest/api/token");
  EXPECT_EQ(ScriptedTransport::HeaderOf(http.calls[1], "X-aws-ec2-metadata-token"), "imds-token");
  EXPECT_EQ(http.calls[2].url, "http://127.0.0.1:1338/latest/meta-data/iam/security-credentials/role-a");

  clock.Advance(std::chrono::minutes(50));  // more than five minutes left: cached
  ASSERT_TRUE(chain->Get().ok());
  EXPECT_EQ(http.calls.size(), 3u);

  clock.Advance(std::chrono::minutes(6));  // inside the refresh window
  http.Then(200, "imds-token-2");
  http.Then(200, "role-a");
  http.Then(200, ImdsCredentials("ASIASECOND", clock.WallNow() + std::chrono::hours(1)));
  c = chain->Get();
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->access_key_id, "ASIASECOND");
  EXPECT_EQ(http.calls.size(), 6u);
}

TEST(AwsCredentialChain, FailedRefreshKeepsValidCredentialsUntilTheyExpire) {
  FakeClock clock;
  ScriptedTransport http;
  http.Then(200, "t");
  http.Then(200, "role");
  http.Then(200, ImdsCredentials("ASIAOLD", clock.WallNow() + std::chrono::minutes(10)));
  http.ThenFail(MakeError(ErrorCode::kUnavailable, "Timeout was reached"));
  auto chain = NewAwsCredentialChain(Options({{"HOME", "/nonexistent"}}), http, clock);
  ASSERT_TRUE(chain->Get().ok());
  clock.Advance(std::chrono::minutes(7));  // refresh due, metadata service down
  auto c = chain->Get();
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->access_key_id, "ASIAOLD");
  clock.Advance(std::chrono::minutes(4));  // now expired
  EXPECT_EQ(chain->Get().code(), ErrorCode::kUnavailable);
}

TEST(AwsCredentialChain, ContainerEndpointWithAuthorizationToken) {
  FakeClock clock;
  ScriptedTransport http;
  http.Then(200, ImdsCredentials("ASIAECS", clock.WallNow() + std::chrono::hours(6)));
  EnvMap env = NoImds({{"AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:51679/creds"},
                       {"AWS_CONTAINER_AUTHORIZATION_TOKEN", "Bearer abc"}});
  auto c = NewAwsCredentialChain(Options(env), http, clock)->Get();
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->access_key_id, "ASIAECS");
  EXPECT_EQ(ScriptedTransport::HeaderOf(http.calls.at(0), "Authorization"), "Bearer abc");
}

TEST(AwsCredentialChain, WebIdentityThroughSts) {
  testing::TempDir dir;
  Write(dir.File("token"), "eyJ.web.identity\n");
  FakeClock clock;
  ScriptedTransport http;
  http.Then(200,
            "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>"
            "<AccessKeyId>ASIAWEB</AccessKeyId><SecretAccessKey>ws</SecretAccessKey><SessionToken>wt</SessionToken>"
            "<Expiration>2026-01-01T01:00:00Z</Expiration></Credentials></AssumeRoleWithWebIdentityResult>"
            "</AssumeRoleWithWebIdentityResponse>");
  EnvMap env = NoImds({{"AWS_WEB_IDENTITY_TOKEN_FILE", dir.File("token")},
                       {"AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/gw"}});
  auto c = NewAwsCredentialChain(Options(env, "eu-west-1", "http://127.0.0.1:5000"), http, clock)->Get();
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(c->access_key_id, "ASIAWEB");
  EXPECT_EQ(c->session_token, "wt");
  const HttpCall& call = http.calls.at(0);
  EXPECT_EQ(call.url, "http://127.0.0.1:5000/");
  EXPECT_NE(call.body.find("Action=AssumeRoleWithWebIdentity"), std::string::npos);
  EXPECT_NE(call.body.find("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fgw"), std::string::npos);
}

// STS's throttling and an unreachable identity provider are passing
// troubles (kUnavailable); its refusals are not backed off either (STS
// locks nothing out, and says InvalidIdentityToken for passing troubles
// too).
TEST(AwsCredentialChain, StsRefusalsAreToldFromItsPassingTroubles) {
  testing::TempDir dir;
  Write(dir.File("token"), "eyJ.web.identity\n");
  EnvMap env = NoImds({{"AWS_WEB_IDENTITY_TOKEN_FILE", dir.File("token")},
                       {"AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/gw"}});
  auto sts_error = [](const char* code) {
    return std::string("<ErrorResponse><Error><Type>Sender</Type><Code>") + code +
           "</Code><Message>no</Message></Error></ErrorResponse>";
  };
  struct Case {
    int status;
    const char* code;
    ErrorCode expected;
  };
  for (const Case& c : {Case{400, "InvalidIdentityToken", ErrorCode::kInvalidArgument},
                        Case{403, "AccessDenied", ErrorCode::kPermissionDenied},
                        Case{400, "Throttling", ErrorCode::kUnavailable},
                        Case{400, "IDPCommunicationError", ErrorCode::kUnavailable},
                        Case{429, "", ErrorCode::kUnavailable}}) {
    FakeClock clock;
    ScriptedTransport http;
    http.Then(c.status, sts_error(c.code));
    auto r = NewAwsCredentialChain(Options(env, "eu-west-1", "http://127.0.0.1:5000"), http, clock)->Get();
    ASSERT_FALSE(r.ok()) << c.code;
    EXPECT_EQ(r.error().code, c.expected) << c.code << ": " << r.error().message;
  }
}

TEST(Ini, SectionsCommentsAndNestedBlocks) {
  const char* text = "# c\n[default]\nregion=us-east-1\n; c\n[profile x]\n  region = nested\nregion = eu-west-1 \n"
                     "[broken\nregion = ignored-no-section-change\n";
  EXPECT_EQ(IniValue(text, "default", "region"), "us-east-1");
  EXPECT_EQ(IniValue(text, "profile x", "region"), "ignored-no-section-change");
  EXPECT_EQ(IniValue(text, "profile y", "region"), std::nullopt);
  EXPECT_EQ(IniValue("", "default", "region"), std::nullopt);
}

TEST(Iso8601, ParsesUtcFormsAndRejectsTheRest) {
  auto t = ParseIso8601("2026-11-30T10:20:30Z");
  ASSERT_TRUE(t);
  EXPECT_EQ(FormatIso8601(*t), "2026-11-30T10:20:30.000Z");
  EXPECT_TRUE(ParseIso8601("2026-11-30T10:20:30.123456Z"));
  EXPECT_TRUE(ParseIso8601("2026-11-30T10:20:30+00:00"));
  for (const char* bad : {"", "2026-11-30", "2026-11-30T10:20:30", "2026-11-30T10:20:30+01:00", "2026-13-01T00:00:00Z",
                          "2026-11-30T10:20:30.Z", "x026-11-30T10:20:30Z"}) {
    EXPECT_FALSE(ParseIso8601(bad)) << bad;
  }
}

}  // namespace
}  // namespace dyad
