#include "cloud/json_client.h"

#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include <map>

#include "core/time_format.h"
#include "testing/fakes.h"

namespace dyad {
namespace {

using testing::ScriptedTransport;

// Adds "Authorization: Bearer token-N" for its Nth call; can fail, and can
// claim to have corrected itself when told of a rejection.
class CountingAuth final : public RequestAuth {
 public:
  Status Authorize(CloudRequest& request) override {
    ++authorized;
    seen.push_back(request);
    if (fail) return *fail;
    request.headers.emplace_back("Authorization", "Bearer token-" + std::to_string(authorized));
    return OkStatus();
  }
  bool OnRejected(std::string_view op, const HttpReply& reply) override {
    ++rejections;
    return corrects;
  }
  int authorized = 0;
  int rejections = 0;
  bool corrects = true;
  std::optional<Error> fail;
  std::vector<CloudRequest> seen;
};

class RecordingObserver final : public CloudCallObserver {
 public:
  void OnCall(std::string_view endpoint, std::string_view op, std::optional<ErrorCode> error) override {
    calls.push_back(std::string(endpoint) + " " + std::string(op) + " " +
                    (error ? std::string(ErrorCodeName(*error)) : "ok"));
  }
  void OnRetry(std::string_view endpoint, std::string_view op) override {
    ++retries[std::string(endpoint) + " " + std::string(op)];
  }
  void OnThrottle(std::string_view endpoint, std::string_view op) override {
    ++throttles[std::string(endpoint) + " " + std::string(op)];
  }
  std::vector<std::string> calls;
  std::map<std::string, int> retries, throttles;
};

// A 401 is a rejected token: the auth step may refresh it.
ReplyError TokenDecoder(std::string_view op, const HttpReply& reply) {
  ReplyError e = DecodeHttpStatus(op, reply);
  e.auth_rejected = reply.status == 401;
  return e;
}

struct Fixture {
  FakeClock clock;
  testing::ConstantRandom random{0};  // full jitter draws 0: the waits are Retry-After's alone
  CountingAuth* auth = nullptr;
  ScriptedTransport* http = nullptr;
  RecordingObserver observer;
  std::unique_ptr<JsonClient> client;

  explicit Fixture(RetryPolicy retry = {}) {
    auto a = std::make_unique<CountingAuth>();
    auth = a.get();
    auto t = std::make_unique<ScriptedTransport>();
    http = t.get();
    JsonClientOptions options{"https://vault.example:8200/", retry, TokenDecoder, &observer};
    client = JsonClient::Create(std::move(options), std::move(a), std::move(t), clock, random).value();
  }
  Result<HttpReply> Get(std::string path = "/v1/sys/health") {
    JsonRequest r;
    r.op = "health";
    r.method = "GET";
    r.path = std::move(path);
    return client->Call(r);
  }
};

TEST(JsonClient, SendsAnyMethodPathAndQueryToTheEndpoint) {
  Fixture f;
  f.http->Then(200, R"({"keys":["a"]})");
  JsonRequest r;
  r.op = "kv.list";
  r.method = "LIST";
  r.path = "/v1/secret/metadata/dyad";
  r.query = "api-version=7.4";
  r.headers = {{"X-Vault-Namespace", "team"}};
  auto reply = f.client->Call(r);
  ASSERT_TRUE(reply.ok()) << reply.error().message;
  EXPECT_EQ(reply->body, R"({"keys":["a"]})");
  const HttpCall& call = f.http->calls.at(0);
  EXPECT_EQ(call.method, "LIST");
  EXPECT_EQ(call.url, "https://vault.example:8200/v1/secret/metadata/dyad?api-version=7.4");
  EXPECT_EQ(ScriptedTransport::HeaderOf(call, "Host"), "vault.example:8200");
  EXPECT_EQ(ScriptedTransport::HeaderOf(call, "X-Vault-Namespace"), "team");
  EXPECT_EQ(ScriptedTransport::HeaderOf(call, "Content-Type"), "");  // no body, no type
  EXPECT_EQ(ScriptedTransport::HeaderOf(call, "Authorization"), "Bearer token-1");
  // The auth step saw the request whole, as it is sent.
  const CloudRequest& seen = f.auth->seen.at(0);
  EXPECT_EQ(seen.method, "LIST");
  EXPECT_EQ(seen.host, "vault.example:8200");
  EXPECT_EQ(seen.path, "/v1/secret/metadata/dyad");
  EXPECT_EQ(seen.query, "api-version=7.4");

  r.method = "POST";
  r.query.clear();
  r.body = R"({"data":{}})";
  ASSERT_TRUE(f.client->Call(r).ok());
  EXPECT_EQ(f.http->calls.at(1).url, "https://vault.example:8200/v1/secret/metadata/dyad");
  EXPECT_EQ(ScriptedTransport::HeaderOf(f.http->calls.at(1), "Content-Type"), "application/json");
  EXPECT_EQ(f.http->calls.at(1).body, R"({"data":{}})");
  EXPECT_EQ(f.auth->seen.at(1).body, R"({"data":{}})");
}

TEST(JsonClient, RetriesServerErrorsThrottlingAndTransportFailuresWithAFreshAuthorizationEachTime) {
  Fixture f(RetryPolicy{4, std::chrono::milliseconds(100), std::chrono::seconds(5)});
  f.http->Then(503, "busy");
  f.http->Then(429, "slow down");
  f.http->ThenFail(MakeError(ErrorCode::kUnavailable, "Timeout was reached"));
  f.http->Then(200, "{}");
  auto r = f.Get();
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(f.http->calls.size(), 4u);
  EXPECT_EQ(f.auth->authorized, 4);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(ScriptedTransport::HeaderOf(f.http->calls[i], "Authorization"), "Bearer token-" + std::to_string(i + 1));
  }
  EXPECT_EQ(f.observer.calls, std::vector<std::string>{"vault.example:8200 health ok"});
  EXPECT_EQ(f.observer.retries["vault.example:8200 health"], 3);
  EXPECT_EQ(f.observer.throttles["vault.example:8200 health"], 1);
}

TEST(JsonClient, GivesUpAfterTheAttemptsAndSaysSo) {
  Fixture f;  // the default three attempts
  f.http->Then(500, "internal");
  auto r = f.Get();
  EXPECT_EQ(r.code(), ErrorCode::kUnavailable);
  EXPECT_EQ(r.error().message, "health: HTTP 500: internal (after 3 attempts)");
  EXPECT_EQ(f.http->calls.size(), 3u);
  EXPECT_EQ(f.observer.calls, std::vector<std::string>{"vault.example:8200 health UNAVAILABLE"});
  EXPECT_EQ(f.observer.retries["vault.example:8200 health"], 2);

  Fixture g;
  g.http->ThenFail(MakeError(ErrorCode::kUnavailable, "Couldn't connect to server"));
  EXPECT_EQ(g.Get().error().message, "health: Couldn't connect to server (after 3 attempts)");
}

TEST(JsonClient, DoesNotRetryClientErrors) {
  for (auto [status, code] : {std::pair{400, ErrorCode::kInvalidArgument}, std::pair{403, ErrorCode::kPermissionDenied},
                              std::pair{404, ErrorCode::kNotFound}, std::pair{409, ErrorCode::kConflict}}) {
    Fixture f;
    f.http->Then(status, "no");
    auto r = f.Get();
    EXPECT_EQ(r.code(), code) << status;
    EXPECT_EQ(f.http->calls.size(), 1u) << status;
    EXPECT_TRUE(f.observer.retries.empty());
    EXPECT_TRUE(f.observer.throttles.empty());
  }
}

TEST(JsonClient, RetryAfterIsAFloorOfTheBackoffCappedByThePolicy) {
  Fixture f;  // cap 5 s
  f.http->Then(429, "", {{"retry-after", "2"}});
  f.http->Then(503, "", {{"retry-after", FormatHttpDate(f.clock.WallNow() + std::chrono::seconds(2) +
                                                        std::chrono::seconds(3))}});  // 3 s after the first wait
  f.http->Then(200, "{}");
  ASSERT_TRUE(f.Get().ok());
  EXPECT_EQ(f.clock.Slept(), std::chrono::seconds(5));

  Fixture g;
  g.http->Then(503, "", {{"retry-after", "3600"}});
  g.http->Then(200, "{}");
  ASSERT_TRUE(g.Get().ok());
  EXPECT_EQ(g.clock.Slept(), std::chrono::seconds(5));  // the cap, not an hour

  Fixture h;  // unreadable, past, or on an answer that is not retried: no effect
  h.http->Then(503, "", {{"retry-after", "soon"}});
  h.http->Then(503, "", {{"retry-after", "Thu, 01 Jan 2015 00:00:00 GMT"}});
  h.http->Then(400, "", {{"retry-after", "60"}});
  EXPECT_EQ(h.Get().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(h.clock.Slept(), std::chrono::seconds(0));
}

TEST(JsonClient, AnAuthRejectionIsRetriedOnceWhenTheAuthStepCorrectsItself) {
  Fixture f;
  f.http->Then(401, "token expired");
  f.http->Then(200, "{}");
  ASSERT_TRUE(f.Get().ok());
  EXPECT_EQ(f.auth->rejections, 1);
  ASSERT_EQ(f.http->calls.size(), 2u);
  EXPECT_EQ(ScriptedTransport::HeaderOf(f.http->calls[1], "Authorization"), "Bearer token-2");
  EXPECT_EQ(f.clock.Slept(), std::chrono::seconds(0));  // at once
  EXPECT_EQ(f.observer.retries["vault.example:8200 health"], 1);

  Fixture g;  // refused again: no loop
  g.http->Then(401, "token expired");
  EXPECT_EQ(g.Get().code(), ErrorCode::kUnauthenticated);
  EXPECT_EQ(g.http->calls.size(), 2u);
  EXPECT_EQ(g.auth->rejections, 1);

  Fixture h;  // the step could not correct anything: no retry
  h.auth->corrects = false;
  h.http->Then(401, "token expired");
  EXPECT_EQ(h.Get().code(), ErrorCode::kUnauthenticated);
  EXPECT_EQ(h.http->calls.size(), 1u);
}

TEST(JsonClient, AuthFailuresAreRetriedOnlyWhenUnavailable) {
  Fixture f;
  f.auth->fail = MakeError(ErrorCode::kUnavailable, "metadata service down");
  EXPECT_EQ(f.Get().code(), ErrorCode::kUnavailable);
  EXPECT_EQ(f.auth->authorized, 3);
  EXPECT_TRUE(f.http->calls.empty());

  Fixture g;
  g.auth->fail = MakeError(ErrorCode::kFailedPrecondition, "no credentials found");
  auto r = g.Get();
  EXPECT_EQ(r.code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(r.error().message, "no credentials found");
  EXPECT_EQ(g.auth->authorized, 1);
  EXPECT_EQ(g.observer.calls, std::vector<std::string>{"vault.example:8200 health FAILED_PRECONDITION"});
}

TEST(JsonClient, RejectsBadEndpointsAndPaths) {
  FakeClock clock;
  testing::ConstantRandom random(1);
  for (const char* bad : {"vault:8200", "ftp://host", "https://", "https://host/v1", "https://user@host"}) {
    auto c = JsonClient::Create({bad, {}, nullptr, nullptr}, nullptr, std::make_unique<ScriptedTransport>(), clock,
                                random);
    EXPECT_EQ(c.code(), ErrorCode::kInvalidArgument) << bad;
  }
  Fixture f;
  EXPECT_EQ(f.Get("v1/sys/health").code(), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(f.http->calls.empty());
}

TEST(JsonClient, WorksWithoutAuthStepOrObserver) {
  FakeClock clock;
  testing::ConstantRandom random(1);
  auto t = std::make_unique<ScriptedTransport>();
  ScriptedTransport* http = t.get();
  http->Then(200, "{}");
  auto client = JsonClient::Create({"http://127.0.0.1:8200", {}, nullptr, nullptr}, nullptr, std::move(t), clock,
                                   random).value();
  JsonRequest r;
  r.op = "health";
  ASSERT_TRUE(client->Call(r).ok());
  EXPECT_EQ(ScriptedTransport::HeaderOf(http->calls.at(0), "Authorization"), "");
  EXPECT_EQ(http->calls.at(0).url, "http://127.0.0.1:8200/");
}

TEST(DecodeHttpStatus, MapsStatusesAndKeepsABoundedOneLineMessage) {
  struct Case {
    int status;
    ErrorCode code;
  } cases[] = {{400, ErrorCode::kInvalidArgument}, {401, ErrorCode::kUnauthenticated},
               {403, ErrorCode::kPermissionDenied}, {404, ErrorCode::kNotFound},
               {409, ErrorCode::kConflict},        {412, ErrorCode::kFailedPrecondition},
               {429, ErrorCode::kUnavailable},     {500, ErrorCode::kUnavailable},
               {501, ErrorCode::kUnimplemented},   {503, ErrorCode::kUnavailable}};
  for (const auto& c : cases) {
    ReplyError e = DecodeHttpStatus("op", HttpReply{c.status, {}, ""});
    EXPECT_EQ(e.error.code, c.code) << c.status;
    EXPECT_EQ(e.throttled, c.status == 429) << c.status;
    EXPECT_FALSE(e.auth_rejected);
  }
  ReplyError e = DecodeHttpStatus("kv.read", HttpReply{400, {}, "line one\nline two" + std::string(1000, 'x')});
  EXPECT_TRUE(e.error.message.starts_with("kv.read: HTTP 400: line one line two")) << e.error.message;
  EXPECT_LT(e.error.message.size(), 400u);
}

}  // namespace
}  // namespace dyad

namespace dyad {
namespace {

TEST(JsonObjectAnswer, ReadsAnObjectOrNothingAndRefusesAnyOtherJson) {
  HttpReply reply;
  reply.status = 200;
  reply.body = R"({"data":{"keys":["a"]}})";
  auto j = JsonObjectAnswer("kv.list", reply);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ((*j)["data"]["keys"][0], "a");
  reply.body.clear();
  ASSERT_TRUE(JsonObjectAnswer("kv.delete", reply).ok());
  EXPECT_TRUE(JsonObjectAnswer("kv.delete", reply)->empty());
  for (const char* body : {"[1]", "\"s\"", "{\"a\":", "null"}) {
    reply.status = 204;
    reply.body = body;
    auto bad = JsonObjectAnswer("keys.get", reply);
    ASSERT_FALSE(bad.ok()) << body;
    EXPECT_EQ(bad.code(), ErrorCode::kUnavailable);
    EXPECT_EQ(bad.error().message, "keys.get: the answer (HTTP 204) is not a JSON object");
  }
}

TEST(ServiceClientOptions, DropsTheEndpointsTrailingSlashes) {
  RetryPolicy retry;
  retry.max_attempts = 7;
  auto o = ServiceClientOptions("https://vault.example:8200//", retry, nullptr, nullptr);
  EXPECT_EQ(o.endpoint, "https://vault.example:8200");
  EXPECT_EQ(o.retry.max_attempts, 7);
  EXPECT_FALSE(o.decode_error);
}

}  // namespace
}  // namespace dyad
