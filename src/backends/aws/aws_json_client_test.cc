#include "backends/aws/aws_json_client.h"

#include <gtest/gtest.h>

#include "testing/fakes.h"

namespace dyad {
namespace {

class StaticCredentials final : public AwsCredentialSource {
 public:
  Result<AwsCredentials> Get() override { return AwsCredentials{"AKIDEXAMPLE", SecretBytes("secret"), ""}; }
  std::string SourceName() override { return "static"; }
};

struct Fixture {
  FakeClock clock;
  testing::ConstantRandom random{0x10};
  StaticCredentials creds;
  testing::ScriptedTransport* http = nullptr;
  std::unique_ptr<AwsJsonClient> client;

  Fixture() {
    auto t = std::make_unique<testing::ScriptedTransport>();
    http = t.get();
    client = std::move(AwsJsonClient::Create({"secretsmanager", "secretsmanager", "http://127.0.0.1:4566/",
                                              "us-east-1", {}},
                                             creds, std::move(t), clock, random))
                 .value();
  }
};

HttpReply Reply(int status, std::string body, HttpHeaders headers = {}) {
  return HttpReply{status, std::move(headers), std::move(body)};
}

TEST(AwsErrorFromReply, MapsTypesToCodesAndKeepsAwsMessage) {
  struct Case {
    int status;
    std::string body;
    ErrorCode code;
  } cases[] = {
      {400, R"({"__type":"com.amazonaws.secretsmanager#ResourceNotFoundException","message":"no such"})", ErrorCode::kNotFound},
      {400, R"({"__type":"ResourceExistsException","Message":"taken"})", ErrorCode::kAlreadyExists},
      {400, R"({"__type":"ThrottlingException","message":"Rate exceeded"})", ErrorCode::kUnavailable},
      {400, R"({"__type":"AccessDeniedException","message":"no"})", ErrorCode::kPermissionDenied},
      {400, R"({"__type":"UnrecognizedClientException","message":"bad key"})", ErrorCode::kPermissionDenied},
      {400, R"({"__type":"InvalidCiphertextException"})", ErrorCode::kDataLoss},
      {400, R"({"__type":"InvalidRequestException","message":"marked for deletion"})", ErrorCode::kFailedPrecondition},
      {400, R"({"__type":"ValidationException","message":"too long"})", ErrorCode::kInvalidArgument},
      {500, R"({"__type":"InternalServiceError"})", ErrorCode::kUnavailable},
      {503, "<html>busy</html>", ErrorCode::kUnavailable},
      {501, "not implemented", ErrorCode::kUnimplemented},
      {403, "<ErrorResponse><Error><Code>SignatureDoesNotMatch</Code><Message>calc differs</Message></Error></ErrorResponse>",
       ErrorCode::kPermissionDenied},
      {400, "not json at all", ErrorCode::kInternal},
  };
  for (const auto& c : cases) {
    Error e = AwsErrorFromReply("GetSecretValue", Reply(c.status, c.body));
    EXPECT_EQ(e.code, c.code) << c.body;
    EXPECT_TRUE(e.message.starts_with("GetSecretValue: ")) << e.message;
  }
  Error xml = AwsErrorFromReply("ListKeys", Reply(403, cases[11].body));
  EXPECT_EQ(xml.message, "ListKeys: SignatureDoesNotMatch: calc differs");
  Error header = AwsErrorFromReply("Decrypt", Reply(400, "{}", {{"x-amzn-errortype", "NotFoundException:http://x"}}));
  EXPECT_EQ(header.code, ErrorCode::kNotFound);
  bool skew = false;
  AwsErrorFromReply("X", Reply(400, R"({"__type":"InvalidSignatureException","message":"Signature expired: 20260101T000000Z is now earlier than ..."})"), &skew);
  EXPECT_TRUE(skew);
}

TEST(AwsJsonClient, SignsJson11Calls) {
  Fixture f;
  f.http->Then(200, R"({"Name":"x"})");
  auto r = f.client->Call("GetSecretValue", R"({"SecretId":"x"})");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r, R"({"Name":"x"})");
  const HttpCall& call = f.http->calls.at(0);
  EXPECT_EQ(call.url, "http://127.0.0.1:4566/");
  EXPECT_EQ(testing::ScriptedTransport::HeaderOf(call, "Host"), "127.0.0.1:4566");
  EXPECT_EQ(testing::ScriptedTransport::HeaderOf(call, "X-Amz-Target"), "secretsmanager.GetSecretValue");
  EXPECT_EQ(testing::ScriptedTransport::HeaderOf(call, "X-Amz-Date"), "20260101T000000Z");
  std::string auth = testing::ScriptedTransport::HeaderOf(call, "Authorization");
  EXPECT_TRUE(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/secretsmanager/aws4_request"))
      << auth;
  EXPECT_EQ(auth.find("secret"), auth.find("secretsmanager"));  // the secret key itself is never sent
}

TEST(AwsJsonClient, RetriesThrottlingWithBackoffButNotDenial) {
  Fixture f;
  f.http->Then(400, R"({"__type":"ThrottlingException"})");
  f.http->Then(503, "");
  f.http->Then(200, "{}");
  ASSERT_TRUE(f.client->Call("ListSecrets", "{}").ok());
  EXPECT_EQ(f.http->calls.size(), 3u);
  EXPECT_GT(f.clock.Slept().count(), 0);

  Fixture g;
  g.http->Then(400, R"({"__type":"AccessDeniedException","message":"not allowed"})");
  auto r = g.client->Call("ListSecrets", "{}");
  EXPECT_EQ(r.code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(g.http->calls.size(), 1u);

  Fixture h;
  h.http->ThenFail(MakeError(ErrorCode::kUnavailable, "Couldn't connect to server"));
  auto down = h.client->Call("ListSecrets", "{}");
  EXPECT_EQ(down.code(), ErrorCode::kUnavailable);
  EXPECT_EQ(h.http->calls.size(), 3u);  // the default three attempts, then the error
  EXPECT_NE(down.error().message.find("after 3 attempts"), std::string::npos);
}

TEST(AwsJsonClient, CorrectsClockSkewFromTheDateHeaderOnce) {
  Fixture f;
  HttpHeaders date = {{"date", "Thu, 01 Jan 2026 01:00:00 GMT"}};  // the server is an hour ahead
  f.http->Then(400, R"({"__type":"InvalidSignatureException","message":"Signature expired"})", date);
  f.http->Then(200, "{}");
  ASSERT_TRUE(f.client->Call("ListSecrets", "{}").ok());
  ASSERT_EQ(f.http->calls.size(), 2u);
  EXPECT_EQ(testing::ScriptedTransport::HeaderOf(f.http->calls[1], "X-Amz-Date"), "20260101T010000Z");
  EXPECT_EQ(f.client->skew(), std::chrono::hours(1));

  Fixture g;  // still refused after the correction: no loop
  g.http->Then(400, R"({"__type":"RequestTimeTooSkewed"})", date);
  EXPECT_EQ(g.client->Call("ListSecrets", "{}").code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(g.http->calls.size(), 2u);
}

TEST(DecodeAwsReply, FlagsThrottlingAndClockSkew) {
  ReplyError throttled = DecodeAwsReply("Decrypt", Reply(400, R"({"__type":"ThrottlingException"})"));
  EXPECT_TRUE(throttled.throttled);
  EXPECT_EQ(throttled.error.code, ErrorCode::kUnavailable);
  EXPECT_TRUE(DecodeAwsReply("Decrypt", Reply(429, "")).throttled);
  EXPECT_FALSE(DecodeAwsReply("Decrypt", Reply(503, "")).throttled);
  ReplyError skew = DecodeAwsReply("Decrypt", Reply(400, R"({"__type":"RequestTimeTooSkewed"})"));
  EXPECT_TRUE(skew.auth_rejected);
  EXPECT_FALSE(skew.throttled);
  EXPECT_FALSE(DecodeAwsReply("Decrypt", Reply(400, R"({"__type":"AccessDeniedException"})")).auth_rejected);
}

class CountingObserver final : public CloudCallObserver {
 public:
  void OnCall(std::string_view endpoint, std::string_view op, std::optional<ErrorCode> error) override {
    last = std::string(endpoint) + " " + std::string(op) + (error ? " error" : " ok");
  }
  void OnRetry(std::string_view, std::string_view) override { ++retries; }
  void OnThrottle(std::string_view, std::string_view) override { ++throttles; }
  std::string last;
  int retries = 0, throttles = 0;
};

TEST(AwsJsonClient, ReportsCallsRetriesAndThrottlesAndHonoursRetryAfter) {
  FakeClock clock;
  testing::ConstantRandom random(0);
  StaticCredentials creds;
  CountingObserver observer;
  auto t = std::make_unique<testing::ScriptedTransport>();
  auto* http = t.get();
  http->Then(400, R"({"__type":"ThrottlingException"})", {{"retry-after", "1"}});
  http->Then(200, "{}");
  auto client = AwsJsonClient::Create({"kms", "TrentService", "http://127.0.0.1:4566", "us-east-1", {}, &observer},
                                      creds, std::move(t), clock, random)
                    .value();
  ASSERT_TRUE(client->Call("Decrypt", "{}").ok());
  EXPECT_EQ(observer.last, "127.0.0.1:4566 Decrypt ok");
  EXPECT_EQ(observer.retries, 1);
  EXPECT_EQ(observer.throttles, 1);
  EXPECT_EQ(clock.Slept(), std::chrono::seconds(1));
}

TEST(AwsJsonClient, RejectsEndpointsThatAreNotHostAndPort) {
  StaticCredentials creds;
  FakeClock clock;
  testing::ConstantRandom random(1);
  for (const char* bad : {"127.0.0.1:4566", "ftp://host", "https://", "https://host/path", "https://user@host"}) {
    auto c = AwsJsonClient::Create({"kms", "TrentService", bad, "us-east-1", {}}, creds,
                                   std::make_unique<testing::ScriptedTransport>(), clock, random);
    EXPECT_EQ(c.code(), ErrorCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace dyad
