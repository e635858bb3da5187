// ProxyService: routing by model, the raw body, header filtering, the 401
// retry after another instance's rotation, streaming and upstream errors,
// against a fake UpstreamClient (the real one: tests/blackbox/test_v1_proxy.py).
#include "service/proxy_service.h"

#include <gtest/gtest.h>

#include <deque>
#include <functional>
#include <thread>
#include <utility>

#include "core/encoding.h"
#include "testing/gate.h"
#include "testing/log_capture.h"
#include "testing/service_fixture.h"

namespace dyad {
namespace {

using namespace std::chrono_literals;

// Records each call and plays scripted answers, in order (the last repeats).
class FakeUpstream final : public UpstreamClient {
 public:
  struct Answer {
    int status = 200;
    HttpHeaders headers = {{"content-type", "application/json"}};
    std::vector<std::string> pieces = {R"({"ok":true})"};
    Status error;  // returned after the pieces (an empty status: success)
    bool error_before_head = false;
    UpstreamFailure failure = UpstreamFailure::kNone;  // told to the sink before `error`
    // Answers 401 unless the request carries this Authorization value.
    std::string require_authorization;
  };
  struct Seen {
    std::string url;
    HttpHeaders headers;
    std::string body;
    UpstreamTimeouts timeouts;
    std::string Header(std::string_view name) const {
      for (const auto& [k, v] : headers) {
        if (k == name) return v;
      }
      return "<absent>";
    }
    bool Has(std::string_view lower) const {
      for (const auto& [k, v] : headers) {
        std::string l;
        for (char c : k) l.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
        if (l == lower) return true;
      }
      return false;
    }
  };

  Status Send(const UpstreamRequest& request, UpstreamSink& sink) override {
    seen.push_back({request.url, request.headers, std::string(request.body), request.timeouts});
    if (during_send) during_send();  // the time the call takes, a rotation meanwhile
    Answer a = answers.size() > 1 ? answers.front() : answers.back();
    if (answers.size() > 1) answers.pop_front();
    if (!a.error.ok() && a.failure != UpstreamFailure::kNone) sink.OnFailure(a.failure);
    if (a.error_before_head) return a.error;
    if (!a.require_authorization.empty() && seen.back().Header("Authorization") != a.require_authorization) {
      a.status = 401;
      a.pieces = {R"({"error":"bad key"})"};
    }
    if (!sink.OnHead(UpstreamHead{a.status, a.headers})) return MakeError(ErrorCode::kCancelled, "sink");
    for (size_t i = 0; i < a.pieces.size(); ++i) {  // each piece one read
      if (!sink.OnBody(a.pieces[i])) return MakeError(ErrorCode::kCancelled, "sink");
      const bool last = i + 1 == a.pieces.size() && a.error.ok();
      if (!sink.OnFlush(last) && !last) return MakeError(ErrorCode::kCancelled, "sink");
    }
    return a.error;
  }

  std::deque<Answer> answers = {Answer{}};
  std::vector<Seen> seen;
  std::function<void()> during_send;
};

// The client's side: records what was streamed; can go away after `fail_after` writes.
class RecordingOutput final : public ProxyOutput {
 public:
  bool Begin(int s, std::string_view ct, const HttpHeaders& h) override {
    begun = true;
    status = s;
    content_type = ct;
    headers = h;
    return true;
  }
  bool Write(std::string_view piece) override {
    if (writes++ >= fail_after) return false;
    pieces.emplace_back(piece);
    return true;
  }
  void Hold() override { held_before_begin = !begun; }
  bool Flush(bool last) override {
    flushes.push_back(std::to_string(pieces.size()) + (last ? ":last" : ""));
    return static_cast<int>(flushes.size()) <= flushes_ok;
  }
  int flushes_ok = 1 << 30;  // the Flush() calls that succeed; later ones find the client gone
  bool held_before_begin = false;
  std::vector<std::string> flushes;  // the pieces written by each Flush, ":last" for the end
  bool begun = false;
  int status = 0;
  std::string content_type;
  HttpHeaders headers;
  std::vector<std::string> pieces;
  int writes = 0;
  int fail_after = 1 << 30;
};

class ProxyServiceTest : public testing::ServiceFixture {
 protected:
  static FakeUpstream::Answer ThreeEvents() {
    FakeUpstream::Answer sse;
    sse.headers = {{"content-type", "text/event-stream"}};
    sse.pieces = {"data: 1\n\n", "data: 2\n\n", "data: 3\n\n"};
    return sse;
  }

  void SetUp() override {
    ServiceFixture::SetUp();
    Build(SecretsOptions{});
    ProxyOptions o;
    o.timeouts.connect = 123ms;
    proxy_ = std::make_unique<ProxyService>(o, *repo_, *secrets_, upstream_, metrics_, clock_);
  }
  void Rebuild(ProxyOptions o) {
    proxy_ = std::make_unique<ProxyService>(o, *repo_, *secrets_, upstream_, metrics_, clock_);
  }
  void TearDown() override {
    proxy_.reset();
    ServiceFixture::TearDown();
  }

  // Another instance (its own services over the same store and registry)
  // rotates the provider's api_key: this one's cache still holds the old.
  Status RotateElsewhere(const std::string& id, const std::string& key) {
    auto other_secrets_owner = SecretsService::Create(SecretsOptions{}, store_, *keys_, *repo_, audit_, metrics_,
                                                      clock_, DefaultRandom(), EnvMap{}).value();
    SecretsService& other_secrets = *other_secrets_owner;
    ProviderService other(*repo_, other_secrets, clock_, DefaultRandom(), audit_);
    auto rotated = other.RotateCredentials(id, {{"api_key", SecretBytes(key)}}, caller_);
    return rotated.ok() ? OkStatus() : Status(rotated.error());
  }
  // Another instance moves the provider to `base_url` (an admin fixing a
  // wrong one), then rotates its key (the old one went there).
  Status MoveAndRotateElsewhere(const std::string& id, const std::string& base_url, const std::string& key) {
    auto other_secrets_owner = SecretsService::Create(SecretsOptions{}, store_, *keys_, *repo_, audit_, metrics_,
                                                      clock_, DefaultRandom(), EnvMap{}).value();
    ProviderService other(*repo_, *other_secrets_owner, clock_, DefaultRandom(), audit_);
    ProviderPatch moved;
    moved.adapter_config_json = R"({"baseUrl":")" + base_url + R"("})";
    auto updated = other.Update(id, moved, caller_);
    if (!updated.ok()) return updated.error();
    auto rotated = other.RotateCredentials(id, {{"api_key", SecretBytes(key)}}, caller_);
    return rotated.ok() ? OkStatus() : Status(rotated.error());
  }
  // SECRETS_CACHE_ENABLED=false: every read is the store's.
  void BuildWithoutACache() {
    SecretsOptions no_cache;
    no_cache.cache_enabled = false;
    Build(no_cache);
    Rebuild(ProxyOptions{});
  }
  // The call's answer is the retry's 200: a first send with sk-old (its
  // 401 held back), a second with sk-new.
  void ExpectRetriedWithTheNewKey(const Result<ProxyAnswer>& a) {
    ASSERT_TRUE(a.ok()) << a.error().message;
    EXPECT_EQ(a->status, 200);
    ASSERT_EQ(upstream_.seen.size(), 2u);
    EXPECT_EQ(upstream_.seen[0].Header("Authorization"), "Bearer sk-old");
    EXPECT_EQ(upstream_.seen[1].Header("Authorization"), "Bearer sk-new");
  }
  // The upstream answers 200 to `authorization` only (401 otherwise); what it saw is forgotten.
  void UpstreamRequires(const std::string& authorization) {
    upstream_.answers = {FakeUpstream::Answer{}};
    upstream_.answers.back().require_authorization = authorization;
    upstream_.seen.clear();
  }

  std::string AddProvider(const std::string& slug, const std::string& models_json, const std::string& key,
                          const std::string& type = "http-sdk", bool enabled = true) {
    ProviderPatch p;
    p.name = slug;
    p.slug = slug;
    p.type = type;
    p.enabled = enabled;
    p.models_json = models_json;
    p.adapter_config_json = R"({"baseUrl":"http://127.0.0.1:9/)" + slug + R"(/v1"})";
    p.credentials = CredentialFields{{"api_key", SecretBytes(key)}};
    auto created = providers_->Create(p, caller_);
    EXPECT_TRUE(created.ok()) << created.error().message;
    proxy_->InvalidateCatalog();
    return created.ok() ? created->id : "";
  }

  Result<ProxyAnswer> Call(const std::string& body, const std::vector<std::string>* providers = nullptr,
                           const std::vector<std::string>* models = nullptr) {
    ProxyRequest r;
    r.endpoint = "chat/completions";
    r.body = body;
    r.headers = &client_headers_;
    r.allowed_providers = providers;
    r.allowed_models = models;
    r.caller = Caller{"app", "rid"};
    return proxy_->Forward(r, out_);
  }

  static std::string Models(std::initializer_list<std::pair<const char*, const char*>> m) {
    std::string out = "[";
    for (const auto& [dyad, adapter] : m) {
      out += std::string(out.size() > 1 ? "," : "") + R"({"dyadModelId":")" + dyad + R"(","adapterModelId":")" +
             adapter + R"("})";
    }
    return out + "]";
  }

  FakeUpstream upstream_;
  RecordingOutput out_;
  std::vector<std::pair<std::string, std::string>> client_headers_ = {
      {"Authorization", "Bearer gateway-client-token"}, {"Content-Type", "application/json"},
      {"Cookie", "session=1"},   {"Host", "gateway"},   {"Connection", "keep-alive, X-Hop"},
      {"X-Hop", "drop me"},      {"Proxy-Authorization", "Basic x"},  {"TE", "trailers"},
      {"Content-Length", "99"},  {"OpenAI-Beta", "assistants=v2"},     {"X-Api-Key", "client-set"},
      {"OpenAI-Organization", "org-of-the-client"}};
  std::unique_ptr<ProxyService> proxy_;
};

TEST(FindModel, TopLevelStringOnly) {
  const std::string body = R"( { "messages":[{"model":"inner"}], "model" : "gpt-4o" ,"n":1} )";
  auto f = FindModel(body);
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_EQ(f->value, "gpt-4o");
  EXPECT_EQ(body.substr(f->begin, f->end - f->begin), "\"gpt-4o\"");
  // A key spelled with an escape is the same key.
  f = FindModel(R"({"a":"}\"{","mod\u0065l":"x\/y"})");
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_EQ(f->value, "x/y");
  // Nesting elsewhere is no problem up to 256 levels, the root's included.
  auto nested = [](size_t levels) {
    return R"({"a":)" + std::string(levels - 1, '[') + std::string(levels - 1, ']') + R"(,"model":"m"})";
  };
  f = FindModel(nested(256));
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_EQ(f->value, "m");
  // Deeper is refused by name, before the parser's recursion could matter.
  for (size_t levels : {257, 100000}) {
    f = FindModel(nested(levels));
    ASSERT_FALSE(f.ok()) << levels;
    EXPECT_EQ(f.code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(f.error().message, "the request body is nested deeper than 256 levels");
  }
}

// Split string and key tokens (escapes make the parser hand them over in
// parts) are put together before they are compared or kept.
TEST(FindModel, EscapedKeysAndValuesArriveWhole) {
  auto f = FindModel(R"({"\u006dodel":"a\u0062c\n\"d"})");
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_EQ(f->value, "abc\n\"d");
  // A longer key that starts as "model" is another key.
  f = FindModel(R"({"model\u0078":"a","model":"b"})");
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_EQ(f->value, "b");
  f = FindModel(R"({"mode\u006c":"a","x":{"model":"c"},"y":"model"})");
  ASSERT_TRUE(f.ok()) << f.error().message;
  EXPECT_EQ(f->value, "a");
  EXPECT_FALSE(FindModel(R"({"mode\u006c":"a","model":"b"})").ok());
  // Where the parser stopped is said.
  auto bad = FindModel(R"({"model":"a",  "x":tru})");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message, "the request body is not valid JSON (at byte 19)");
}

TEST(FindModel, HostileBodiesRefused) {
  for (std::string body : std::vector<std::string>{"", "{", "[]", "\"model\"", R"({"model":1})", R"({"model":""})", R"({"model":null})",
                           R"({"model":"a","model":"b"})", R"({"model":"a","mod\u0065l":"b"})", R"({"messages":[]})",
                           R"({"model":"a"} trailing)", "{\"model\":\"\xff\xfe\"}", R"({"model":"a",})",
                           std::string(100000, '[')}) {
    auto f = FindModel(body);
    EXPECT_FALSE(f.ok()) << body.substr(0, 40);
    if (!f.ok()) {
      EXPECT_EQ(f.code(), ErrorCode::kInvalidArgument);
    }
  }
}

TEST(ReplaceModel, OnlyTheModelStringChanges) {
  std::string body = "{\"stream\":true,\n \"model\":\"acme/gpt\\u002d4\", \"x\":\"acme/gpt-4\"}";
  auto f = FindModel(body);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->value, "acme/gpt-4");
  EXPECT_EQ(ReplaceModel(body, *f, "gpt-4"), "{\"stream\":true,\n \"model\":\"gpt-4\", \"x\":\"acme/gpt-4\"}");
  EXPECT_EQ(ReplaceModel(body, *f, "a\"b"), "{\"stream\":true,\n \"model\":\"a\\\"b\", \"x\":\"acme/gpt-4\"}");
}

TEST(ForwardableHeaders, NeverTheGatewayTokenNorHopByHop) {
  std::vector<std::pair<std::string, std::string>> client = {
      {"authorization", "Bearer t"}, {"COOKIE", "c"},    {"Host", "h"},      {"Connection", "close, X-Named"},
      {"x-named", "1"},              {"Keep-Alive", "5"}, {"Proxy-Foo", "1"}, {"Transfer-Encoding", "chunked"},
      {"Upgrade", "h2c"},            {"Trailer", "x"},    {"TE", "trailers"}, {"Content-Length", "3"},
      {"Expect", "100-continue"},    {"X-Keep", "yes"},   {"x-api-key", "c"}, {"Accept", "text/event-stream"}};
  auto out = ForwardableHeaders(client, {{"X-Api-Key", "injected"}});
  EXPECT_EQ(out, (HttpHeaders{{"X-Keep", "yes"}, {"Accept", "text/event-stream"}}));
  // Names past the 32 bytes compared in a stack buffer: proxy-* still dropped, others kept.
  const std::string long_proxy = "Proxy-Authorization-" + std::string(40, 'X');
  const std::string long_kept = "X-" + std::string(40, 'K');
  EXPECT_EQ(ForwardableHeaders({{long_proxy, "1"}, {long_kept, "2"}}, {}), (HttpHeaders{{long_kept, "2"}}));
}

TEST(IsPassableUpstreamHeader, ComparesNamesWithoutCase) {
  const std::vector<std::string> refused = {"Set-Cookie", "STRICT-TRANSPORT-SECURITY", "Access-Control-Allow-Origin",
                                            "Access-Control-Expose-Headers-" + std::string(40, 'x'),
                                            "Proxy-Agent", "Keep-Alive", "TE"};
  for (const auto& name : refused) EXPECT_FALSE(IsPassableUpstreamHeader(name, "v")) << name;
  const std::vector<std::string> passed = {"X-Ratelimit-Limit-Requests", "Retry-After", "x-" + std::string(40, 'y')};
  for (const auto& name : passed) EXPECT_TRUE(IsPassableUpstreamHeader(name, "v")) << name;
}

TEST_F(ProxyServiceTest, RoutesByModelWithTheBodyUnchanged) {
  AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-alpha");
  AddProvider("beta", Models({{"gpt-b", "gpt-b"}}), "sk-beta");
  std::string body = R"({ "model": "gpt-b", "messages": [{"role":"user","content":"hi \u00e9"}] })";
  auto a = Call(body);
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->status, 200);
  EXPECT_EQ(a->body, R"({"ok":true})");
  EXPECT_FALSE(a->streamed);
  ASSERT_EQ(upstream_.seen.size(), 1u);
  const auto& seen = upstream_.seen[0];
  EXPECT_EQ(seen.url, "http://127.0.0.1:9/beta/v1/chat/completions");
  EXPECT_EQ(seen.body, body);  // byte for byte
  EXPECT_EQ(seen.Header("Authorization"), "Bearer sk-beta");
  EXPECT_EQ(seen.timeouts.connect, 123ms);
  EXPECT_EQ(seen.Header("OpenAI-Beta"), "assistants=v2");
  EXPECT_EQ(seen.Header("Content-Type"), "application/json");
  // openai-organization: the credentials have no 'organization' field, and
  // the header is the credential's to set, never the client's.
  for (const char* never : {"cookie", "host", "connection", "x-hop", "proxy-authorization", "te", "content-length",
                            "openai-organization"}) {
    EXPECT_FALSE(seen.Has(never)) << never;
  }
  int authorizations = 0;
  for (const auto& [k, v] : seen.headers) authorizations += k == "Authorization" || k == "authorization";
  EXPECT_EQ(authorizations, 1);  // the credential, never the client's token
}

TEST_F(ProxyServiceTest, ProviderPrefixIsStrippedUpstreamAndAdapterIdsSent) {
  AddProvider("alpha", Models({{"fast", "vendor-fast-2024"}}), "sk-alpha");
  AddProvider("beta", Models({{"gpt-b", "gpt-b"}}), "sk-beta");
  auto a = Call(R"({"model":"beta/anything-new","stream":false})");
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(upstream_.seen.back().url, "http://127.0.0.1:9/beta/v1/chat/completions");
  EXPECT_EQ(upstream_.seen.back().body, R"({"model":"anything-new","stream":false})");
  // A listed model goes upstream under its adapterModelId.
  a = Call(R"({"model":"fast", "n":2})");
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(upstream_.seen.back().body, R"({"model":"vendor-fast-2024", "n":2})");
  a = Call(R"({"model":"alpha/fast"})");
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(upstream_.seen.back().body, R"({"model":"vendor-fast-2024"})");
  // A slash that names no provider is part of the model's name.
  AddProvider("gamma", Models({{"meta/llama", "meta/llama"}}), "sk-gamma");
  a = Call(R"({"model":"meta/llama"})");
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(upstream_.seen.back().url, "http://127.0.0.1:9/gamma/v1/chat/completions");
  EXPECT_EQ(upstream_.seen.back().body, R"({"model":"meta/llama"})");
}

TEST_F(ProxyServiceTest, AmbiguousUnknownDisabledAndUnservedTypes) {
  AddProvider("alpha", Models({{"shared", "shared"}}), "sk-alpha");
  AddProvider("beta", Models({{"shared", "shared"}}), "sk-beta");
  AddProvider("off", Models({{"only-off", "only-off"}}), "sk-off", "http-sdk", false);
  AddProvider("cli", Models({{"cli-model", "cli-model"}}), "sk-cli", "spawn-cli");
  auto a = Call(R"({"model":"shared"})");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(a.error().message.find("alpha, beta"), std::string::npos) << a.error().message;
  EXPECT_TRUE(Call(R"({"model":"beta/shared"})").ok());
  EXPECT_EQ(Call(R"({"model":"nope"})").code(), ErrorCode::kNotFound);
  EXPECT_EQ(Call(R"({"model":"only-off"})").code(), ErrorCode::kNotFound);
  EXPECT_EQ(Call(R"({"model":"off/only-off"})").code(), ErrorCode::kNotFound);
  a = Call(R"({"model":"cli-model"})");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.code(), ErrorCode::kUnimplemented);
  EXPECT_NE(a.error().message.find("spawn-cli"), std::string::npos);
  EXPECT_EQ(Call(R"({"model":"shared","model":"x"})").code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(upstream_.seen.size(), 1u);  // only the prefixed call went upstream
}

TEST_F(ProxyServiceTest, AllowListsOfTheToken) {
  AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-alpha");
  AddProvider("beta", Models({{"gpt-b", "gpt-b"}}), "sk-beta");
  std::vector<std::string> only_alpha = {"alpha"}, only_gpt_a = {"gpt-a"};
  EXPECT_TRUE(Call(R"({"model":"gpt-a"})", &only_alpha).ok());
  // Outside the lists is as unknown (round 2, item 6: nothing to learn there).
  EXPECT_EQ(Call(R"({"model":"gpt-b"})", &only_alpha).code(), ErrorCode::kNotFound);
  EXPECT_EQ(Call(R"({"model":"beta/gpt-b"})", &only_alpha).code(), ErrorCode::kNotFound);
  EXPECT_TRUE(Call(R"({"model":"alpha/gpt-a"})", nullptr, &only_gpt_a).ok());
  EXPECT_EQ(Call(R"({"model":"alpha/other"})", nullptr, &only_gpt_a).code(), ErrorCode::kNotFound);
  auto listed = proxy_->Models(&only_alpha, nullptr);
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].id, "gpt-a");
  EXPECT_EQ((*listed)[0].owned_by, "alpha");
}

TEST_F(ProxyServiceTest, AStale401IsRetriedOnceWithAFreshRead) {
  std::string id = AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-old");
  ASSERT_TRUE(Call(R"({"model":"gpt-a"})").ok());  // the old key is now cached
  ASSERT_TRUE(RotateElsewhere(id, "sk-new").ok());  // another instance rotates
  UpstreamRequires("Bearer sk-new");
  auto a = Call(R"({"model":"gpt-a"})");
  ExpectRetriedWithTheNewKey(a);
  // A 401 to a fresh read is the answer: passed on, not retried again.
  upstream_.answers.back().require_authorization = "Bearer sk-other";
  upstream_.seen.clear();
  secrets_->cache().Invalidate(id);
  a = Call(R"({"model":"gpt-a"})");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->status, 401);
  EXPECT_EQ(upstream_.seen.size(), 1u);
}

TEST_F(ProxyServiceTest, EventStreamsArePassedOnPieceByPiece) {
  AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-alpha");
  FakeUpstream::Answer sse;
  sse.headers = {{"content-type", "text/event-stream"}, {"x-request-id", "up-1"}, {"cache-control", "no-cache"}};
  sse.pieces = {"data: {\"a\":1}\n\n", "data: {\"a\":2}\n\n", "data: [DONE]\n\n"};
  upstream_.answers = {sse};
  auto a = Call(R"({"model":"gpt-a","stream":true})");
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->streamed);
  EXPECT_FALSE(a->cut_short);
  EXPECT_TRUE(out_.begun);
  EXPECT_EQ(out_.content_type, "text/event-stream");
  EXPECT_EQ(out_.pieces, sse.pieces);
  EXPECT_EQ(out_.headers, (HttpHeaders{{"x-upstream-request-id", "up-1"}, {"cache-control", "no-cache"}}));
  // Held from its head, flushed after each read, the end at the last.
  EXPECT_TRUE(out_.held_before_begin);
  EXPECT_EQ(out_.flushes, (std::vector<std::string>{"1", "2", "3:last"}));
}

TEST_F(ProxyServiceTest, AnAnswerKeptWholeIsNeitherHeldNorFlushed) {
  AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-alpha");
  auto a = Call(R"({"model":"gpt-a"})");
  ASSERT_TRUE(a.ok());
  EXPECT_FALSE(a->streamed);
  EXPECT_FALSE(out_.held_before_begin);
  EXPECT_TRUE(out_.flushes.empty());
}

TEST_F(ProxyServiceTest, AClientThatGoesAwayCancelsTheUpstream) {
  AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-alpha");
  upstream_.answers = {ThreeEvents()};
  out_.fail_after = 1;
  auto a = Call(R"({"model":"gpt-a","stream":true})");
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->streamed);
  EXPECT_TRUE(a->cut_short);
  EXPECT_EQ(out_.pieces.size(), 1u);
  EXPECT_EQ(out_.writes, 2);  // the failed write cancelled the call: the third piece was never offered
}

// A client found gone at a flush cancels the call as a failed write does,
// and the request counts as the client's hang-up (499), not the upstream's 200.
TEST_F(ProxyServiceTest, AClientGoneAtAFlushCancelsTheUpstream) {
  AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-alpha");
  upstream_.answers = {ThreeEvents()};
  out_.flushes_ok = 1;
  auto a = Call(R"({"model":"gpt-a","stream":true})");
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->cut_short);
  EXPECT_EQ(out_.flushes, (std::vector<std::string>{"1", "2"}));  // the third piece was never offered
  const std::string text = metrics_.Render();
  EXPECT_NE(text.find(R"(dyad_v1_requests_total{model="gpt-a",provider="alpha",status="499"} 1)"), std::string::npos)
      << text;
  EXPECT_EQ(text.find(R"(status="200")"), std::string::npos) << text;
}

TEST_F(ProxyServiceTest, UpstreamErrorsRedirectsAndCutBodies) {
  AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-alpha");
  FakeUpstream::Answer down;
  down.error_before_head = true;
  down.error = MakeError(ErrorCode::kUnavailable, "connection refused");
  upstream_.answers = {down};
  EXPECT_EQ(Call(R"({"model":"gpt-a"})").code(), ErrorCode::kUnavailable);
  down.error = MakeError(ErrorCode::kDeadlineExceeded, "first byte");
  upstream_.answers = {down};
  EXPECT_EQ(Call(R"({"model":"gpt-a"})").code(), ErrorCode::kDeadlineExceeded);
  FakeUpstream::Answer redirect;
  redirect.status = 302;
  redirect.headers = {{"location", "http://elsewhere/"}};
  redirect.pieces = {};
  upstream_.answers = {redirect};
  auto a = Call(R"({"model":"gpt-a"})");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->status, 302);
  EXPECT_EQ(a->headers, (HttpHeaders{{"location", "http://elsewhere/"}}));
  // A buffered body cut short is an error, never a short 200.
  FakeUpstream::Answer cut;
  cut.error = MakeError(ErrorCode::kDeadlineExceeded, "idle");
  upstream_.answers = {cut};
  EXPECT_EQ(Call(R"({"model":"gpt-a"})").code(), ErrorCode::kDeadlineExceeded);
}

// B6: the client's message names the provider and the kind of failure; the
// upstream's words (its URL, curl's host, port and address) go to the log
// only, with the request id.
TEST_F(ProxyServiceTest, UpstreamErrorsTellTheClientTheKindNotTheAddress) {
  AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-alpha");
  const std::string where = "POST http://10.9.8.7:8443/alpha/v1/chat/completions: ";
  struct Case {
    ErrorCode code;
    UpstreamFailure kind;
    std::string detail;
    std::string want;
  };
  const std::vector<Case> cases = {
      {ErrorCode::kUnavailable, UpstreamFailure::kConnect,
       "Failed to connect to 10.9.8.7 port 8443 after 0 ms: Couldn't connect to server",
       "upstream 'alpha' unreachable: could not connect"},
      {ErrorCode::kUnavailable, UpstreamFailure::kResolve, "Could not resolve host: up.internal.example",
       "upstream 'alpha' unreachable: its host name could not be resolved (DNS)"},
      {ErrorCode::kUnavailable, UpstreamFailure::kTls, "SSL certificate problem: unable to get local issuer certificate",
       "upstream 'alpha' unreachable: TLS failure (the handshake or the certificate check failed)"},
      {ErrorCode::kUnavailable, UpstreamFailure::kConnectionLost, "Connection reset by peer",
       "upstream 'alpha' unreachable: connection reset or closed"},
      {ErrorCode::kUnavailable, UpstreamFailure::kRefusedAddress,
       "refused to connect to 169.254.169.254, a link-local or cloud metadata address",
       "upstream 'alpha' unreachable: its address is link-local or cloud metadata, which is refused"},
      {ErrorCode::kDeadlineExceeded, UpstreamFailure::kConnectTimeout, "the connect timeout (123 ms) passed",
       "upstream 'alpha' timed out: the connect timeout (123 ms) passed"},
      {ErrorCode::kDeadlineExceeded, UpstreamFailure::kIdleTimeout, "the idle timeout (60000 ms) passed",
       "upstream 'alpha' timed out: the idle timeout (60000 ms) passed"},
      {ErrorCode::kUnavailable, UpstreamFailure::kNone, "something new at 10.9.8.7",
       "upstream 'alpha' unreachable: the call failed"},
      {ErrorCode::kInvalidArgument, UpstreamFailure::kInvalidRequest, "header Authorization has a CR, LF or NUL",
       "upstream 'alpha' was not called: the request cannot be sent as HTTP (a header or the query)"},
  };
  for (const Case& c : cases) {
    testing::LogCapture log;
    FakeUpstream::Answer down;
    down.error_before_head = true;
    down.failure = c.kind;
    down.error = MakeError(c.code, where + c.detail);
    upstream_.answers = {down};
    auto a = Call(R"({"model":"gpt-a"})");
    ASSERT_FALSE(a.ok()) << c.want;
    EXPECT_EQ(a.code(), c.code) << c.want;
    EXPECT_EQ(a.error().message, c.want);
    EXPECT_EQ(log.Count("request rid: the call to provider alpha failed: " + where + c.detail), 1u) << log.Text();
    EXPECT_NE(log.Text().find("[warning]"), std::string::npos) << log.Text();
  }
}

// Prepare/Finish: Forward in two halves for the I/O threads. Prepare makes
// no upstream call and waits on nothing: with the catalog as held and the
// credential cached it returns the call to drive, else null ("Forward it").
class PreparedCallTest : public ProxyServiceTest {
 protected:
  void SetUp() override {
    ProxyServiceTest::SetUp();
    ProxyOptions o;
    o.prepare = true;
    Rebuild(o);
  }
  ProxyRequest Request(const std::string& body) {
    ProxyRequest r;
    r.endpoint = "chat/completions";
    r.body = body;
    r.headers = &client_headers_;
    r.caller = Caller{"app", "rid"};
    return r;
  }
};

TEST_F(PreparedCallTest, NullUntilTheCatalogAndTheCredentialAreAtHandThenTheCallForwardWouldMake) {
  const std::string id = AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-alpha");
  const std::string body = R"({"model":"gpt-a"})";
  auto early = proxy_->Prepare(Request(body), out_);  // the catalog is due: read it on the pool
  ASSERT_TRUE(early.ok()) << early.error().message;
  EXPECT_EQ(*early, nullptr);
  ASSERT_TRUE(Call(body).ok());  // Forward reads the catalog and caches the credential
  upstream_.seen.clear();
  auto call = proxy_->Prepare(Request(body), out_);
  ASSERT_TRUE(call.ok()) << call.error().message;
  ASSERT_NE(*call, nullptr);
  EXPECT_TRUE(upstream_.seen.empty());  // Prepare sends nothing
  const UpstreamRequest& up = (*call)->request();
  EXPECT_EQ(up.url, "http://127.0.0.1:9/alpha/v1/chat/completions");
  EXPECT_EQ(up.body, body);
  int authorizations = 0;
  for (const auto& [k, v] : up.headers) {
    if (AsciiLower(k) == "authorization") {
      ++authorizations;
      EXPECT_EQ(v, "Bearer sk-alpha");
    }
    EXPECT_NE(AsciiLower(k), "cookie");
  }
  EXPECT_EQ(authorizations, 1);  // the credential, never the client's token
  // The caller drives the exchange into the call's sink, then Finish answers.
  UpstreamSink& sink = (*call)->sink();
  ASSERT_TRUE(sink.OnHead(UpstreamHead{200, {{"content-type", "application/json"}}}));
  ASSERT_TRUE(sink.OnBody(R"({"ok":)"));
  ASSERT_TRUE(sink.OnBody("true}"));
  ASSERT_TRUE(sink.OnFlush(true));
  auto a = proxy_->Finish(**call, OkStatus());
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->status, 200);
  EXPECT_EQ(a->body, R"({"ok":true})");
  // A credential no longer cached: null again (Forward reads it, on the pool).
  ASSERT_TRUE(RotateElsewhere(id, "sk-new").ok());
  secrets_->cache().Clear();
  auto uncached = proxy_->Prepare(Request(body), out_);
  ASSERT_TRUE(uncached.ok());
  EXPECT_EQ(*uncached, nullptr);
}

// A cached key read from the store after the (fresh) catalog: not
// prepared; Forward reads the catalog again before sending it.
TEST_F(PreparedCallTest, AKeyReadAfterTheCatalogIsLeftToForward) {
  const std::string id = AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-old");
  const std::string body = R"({"model":"gpt-a"})";
  ASSERT_TRUE(Call(body).ok());  // the catalog read, the key cached
  clock_.Advance(1ms);
  ASSERT_TRUE(MoveAndRotateElsewhere(id, "http://127.0.0.1:9/fixed/v1", "sk-new").ok());
  secrets_->cache().Invalidate(id);
  ASSERT_TRUE(secrets_->Get(id, caller_).ok());  // sk-new cached; the catalog still fresh, with the old baseUrl
  auto call = proxy_->Prepare(Request(body), out_);
  ASSERT_TRUE(call.ok()) << call.error().message;
  EXPECT_EQ(*call, nullptr);
  upstream_.seen.clear();
  ASSERT_TRUE(Call(body).ok());
  ASSERT_EQ(upstream_.seen.size(), 1u);
  EXPECT_EQ(upstream_.seen[0].url, "http://127.0.0.1:9/fixed/v1/chat/completions");
}

TEST_F(PreparedCallTest, NoCallWithoutTheOptionOrForAnAfter401Retry) {
  AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-alpha");
  const std::string body = R"({"model":"gpt-a"})";
  ASSERT_TRUE(Call(body).ok());
  ProxyRequest retry = Request(body);
  retry.after_401 = ProxyRequest::HeldAttempt{clock_.Now(), clock_.Now() + std::chrono::seconds(600)};
  auto after = proxy_->Prepare(retry, out_);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(*after, nullptr);
  Rebuild(ProxyOptions{});  // prepare off (GATEWAY_UPSTREAM_PROXY, GATEWAY_V1_EVENTED=false)
  ASSERT_TRUE(Call(body).ok());
  auto off = proxy_->Prepare(Request(body), out_);
  ASSERT_TRUE(off.ok());
  EXPECT_EQ(*off, nullptr);
  // Its errors are Forward's: an unknown model is refused at once.
  Rebuild([] { ProxyOptions o; o.prepare = true; return o; }());
  ASSERT_TRUE(Call(body).ok());
  auto unknown = proxy_->Prepare(Request(R"({"model":"nope"})"), out_);
  EXPECT_EQ(unknown.code(), ErrorCode::kNotFound);
}

TEST_F(PreparedCallTest, FinishTellsTheClientTheKindNotTheAddress) {
  AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-alpha");
  const std::string body = R"({"model":"gpt-a"})";
  ASSERT_TRUE(Call(body).ok());
  auto call = proxy_->Prepare(Request(body), out_);
  ASSERT_TRUE(call.ok() && *call);
  testing::LogCapture log;
  (*call)->sink().OnFailure(UpstreamFailure::kConnect);
  const std::string detail = "POST http://127.0.0.1:9/alpha/v1/chat/completions: cannot connect: Connection refused";
  auto a = proxy_->Finish(**call, MakeError(ErrorCode::kUnavailable, detail));
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.code(), ErrorCode::kUnavailable);
  EXPECT_EQ(a.error().message, "upstream 'alpha' unreachable: could not connect");
  EXPECT_EQ(log.Count("request rid: the call to provider alpha failed: " + detail), 1u) << log.Text();
}

// Two prepared calls meet a revoked key's 401 together: the first claims
// the forced read (the cache entry dropped), the second finds the window
// used and the cache empty while that read is under way. A newer credential
// is coming, so the second's 401 is held too (retried on the pool, where
// Forward waits for the read), not passed on to its client: a client failed
// in the middle of a rotation (test_a_rotation_through_another_instance_
// with_the_old_key_revoked_at_once, once, on a loaded machine). A third,
// after the cache holds the same key again, is passed on.
TEST_F(PreparedCallTest, A401WhileAnotherCallsForcedReadIsUnderWayIsHeldToo) {
  AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-old");
  const std::string body = R"({"model":"gpt-a"})";
  ASSERT_TRUE(Call(body).ok());  // sk-old cached
  auto first = proxy_->Prepare(Request(body), out_);
  auto second = proxy_->Prepare(Request(body), out_);
  auto third = proxy_->Prepare(Request(body), out_);
  ASSERT_TRUE(first.ok() && *first && second.ok() && *second && third.ok() && *third);
  const UpstreamHead refused{401, {{"content-type", "application/json"}}};
  EXPECT_FALSE((*first)->sink().OnHead(refused));
  EXPECT_TRUE((*first)->retry());  // claimed the window: the entry dropped
  EXPECT_FALSE((*second)->sink().OnHead(refused));
  EXPECT_TRUE((*second)->retry());  // the cache empty: held too
  ASSERT_TRUE(Call(body).ok());     // the read done: the same key cached again (nothing rotated here)
  EXPECT_TRUE((*third)->sink().OnHead(refused));
  EXPECT_FALSE((*third)->retry());  // the same key: the 401 is the answer
}

// A prepared call's held 401 is retried by Forward on the pool within what
// is left of the call's total deadline, as Forward's own retry is
// (helper-159: the retry began a new total, twice the total in all).
TEST_F(PreparedCallTest, TheRetryOfAHeld401KeepsTheCallsTotalDeadline) {
  ProxyOptions o;
  o.prepare = true;
  o.timeouts.total = 10s;
  Rebuild(o);
  const std::string id = AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-old");
  const std::string body = R"({"model":"gpt-a"})";
  ASSERT_TRUE(Call(body).ok());  // sk-old cached
  auto call = proxy_->Prepare(Request(body), out_);
  ASSERT_TRUE(call.ok() && *call);
  EXPECT_EQ((*call)->request().timeouts.total, 10s);
  ASSERT_TRUE(RotateElsewhere(id, "sk-new").ok());
  clock_.Advance(7s);  // the 401 took 7 of the 10 s
  EXPECT_FALSE((*call)->sink().OnHead(UpstreamHead{401, {}}));
  ASSERT_TRUE((*call)->retry());
  UpstreamRequires("Bearer sk-new");
  upstream_.seen.clear();
  ProxyRequest retry = Request(body);
  retry.after_401 = (*call)->held();
  auto a = proxy_->Forward(retry, out_);
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->status, 200);
  ASSERT_EQ(upstream_.seen.size(), 1u);
  EXPECT_EQ(upstream_.seen[0].timeouts.total, 3s);  // what is left, not 10 s again
  // A retry that times out names the total as configured, not what was left
  // (helper-164: "the total timeout (97 ms) passed" with 2000 ms set).
  FakeUpstream::Answer late;
  late.error_before_head = true;
  late.failure = UpstreamFailure::kTotalTimeout;
  late.error = MakeError(ErrorCode::kDeadlineExceeded, "the total timeout (3000 ms) passed");
  upstream_.answers = {late};
  auto timed_out = proxy_->Forward(retry, out_);
  ASSERT_FALSE(timed_out.ok());
  EXPECT_EQ(timed_out.error().message, "upstream 'alpha' timed out: the total timeout (10000 ms) passed");
}

// A held 401's retry counts as one call in /metrics: the held attempt's
// wait is upstream time, the time between the two attempts is overhead
// (helper-168: the retry was counted alone, from its own start).
TEST_F(PreparedCallTest, AHeld401sRetryCountsBothAttemptsUpstreamTimeAndTheGapAsOverhead) {
  ProxyOptions o;
  o.prepare = true;
  Rebuild(o);
  const std::string id = AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-old");
  const std::string body = R"({"model":"gpt-a"})";
  ASSERT_TRUE(Call(body).ok());  // sk-old cached; counted: no upstream or overhead time on this clock
  auto call = proxy_->Prepare(Request(body), out_);
  ASSERT_TRUE(call.ok() && *call);
  ASSERT_TRUE(RotateElsewhere(id, "sk-new").ok());
  clock_.Advance(7s);  // the upstream's 401 took 7 s
  EXPECT_FALSE((*call)->sink().OnHead(UpstreamHead{401, {}}));
  ASSERT_TRUE((*call)->retry());
  clock_.Advance(1s);  // the hand-over to the pool
  UpstreamRequires("Bearer sk-new");
  upstream_.during_send = [this] { clock_.Advance(2s); };  // the retry's answer takes 2 s
  ProxyRequest retry = Request(body);
  retry.after_401 = (*call)->held();
  auto a = proxy_->Forward(retry, out_);
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->status, 200);
  const std::string text = metrics_.Render();
  EXPECT_NE(text.find(R"(dyad_v1_requests_total{model="gpt-a",provider="alpha",status="200"} 2)"), std::string::npos)
      << text;
  EXPECT_NE(text.find(R"(dyad_v1_upstream_seconds_sum{provider="alpha"} 9)"), std::string::npos) << text;
  EXPECT_NE(text.find("dyad_v1_overhead_seconds_sum 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("dyad_v1_overhead_seconds_count 2\n"), std::string::npos) << text;
  // A retry that fails before its head still counts the held attempt's 7 s (helper-169).
  FakeUpstream::Answer down;
  down.error_before_head = true;
  down.error = MakeError(ErrorCode::kUnavailable, "connection refused");
  upstream_.answers = {down};
  upstream_.during_send = nullptr;
  EXPECT_EQ(proxy_->Forward(retry, out_).code(), ErrorCode::kUnavailable);
  const std::string after = metrics_.Render();
  EXPECT_NE(after.find(R"(dyad_v1_upstream_seconds_sum{provider="alpha"} 16)"), std::string::npos) << after;
}

TEST_F(ProxyServiceTest, CatalogFollowsTheRegistry) {
  std::string id = AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-alpha");
  ASSERT_TRUE(Call(R"({"model":"gpt-a"})").ok());
  ProviderPatch off;
  off.enabled = false;
  ASSERT_TRUE(providers_->Update(id, off, caller_).ok());
  // Another instance's change is seen within the catalog's lifetime.
  clock_.Advance(2s);
  EXPECT_EQ(Call(R"({"model":"gpt-a"})").code(), ErrorCode::kNotFound);
}

// The upstream URL follows a changed baseUrl (nothing of the old one kept,
// here or in the client's per-URL targets), and two providers on one
// origin keep their own paths.
TEST_F(ProxyServiceTest, AChangedBaseUrlIsCalledAtOnceAndProvidersOnOneOriginKeepTheirPaths) {
  std::string id = AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-alpha");
  AddProvider("beta", Models({{"gpt-b", "gpt-b"}}), "sk-beta");
  ASSERT_TRUE(Call(R"({"model":"gpt-a"})").ok());
  ASSERT_TRUE(Call(R"({"model":"gpt-b"})").ok());
  ASSERT_EQ(upstream_.seen.size(), 2u);
  EXPECT_EQ(upstream_.seen[0].url, "http://127.0.0.1:9/alpha/v1/chat/completions");
  EXPECT_EQ(upstream_.seen[1].url, "http://127.0.0.1:9/beta/v1/chat/completions");
  ProviderPatch moved;
  moved.adapter_config_json = R"({"baseUrl":"http://127.0.0.1:10/alpha2/v1"})";
  ASSERT_TRUE(providers_->Update(id, moved, caller_).ok());
  proxy_->InvalidateCatalog();  // as this instance's provider writes do
  upstream_.seen.clear();
  ASSERT_TRUE(Call(R"({"model":"gpt-a"})").ok());
  ASSERT_TRUE(Call(R"({"model":"gpt-b"})").ok());
  ASSERT_EQ(upstream_.seen.size(), 2u);
  EXPECT_EQ(upstream_.seen[0].url, "http://127.0.0.1:10/alpha2/v1/chat/completions");
  EXPECT_EQ(upstream_.seen[1].url, "http://127.0.0.1:9/beta/v1/chat/completions");
}

}  // namespace
}  // namespace dyad

namespace dyad {
namespace {

// Issue 16 review, item 3: a body with a UTF-8 byte order mark, and other
// hostile bodies, are the client's error (kInvalidArgument: 400), never an
// internal one (500).
TEST(FindModel, AByteOrderMarkAndOtherOddBodiesAreTheClientsError) {
  auto f = FindModel("\xEF\xBB\xBF{\"model\":\"gpt-a\"}");
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(f.error().message.find("byte order mark"), std::string::npos) << f.error().message;
  EXPECT_NE(FindModel("  \r\n").error().message.find("empty"), std::string::npos);
  for (std::string body : std::vector<std::string>{
           "", " ", "\xEF\xBB\xBF", "\xEF\xBB\xBF{}", "\xFE\xFF{\"model\":\"a\"}", std::string("\0{\"model\":\"a\"}", 14),
           std::string("{\"model\":\"a\"}\0", 14), "\"str\"", "42", "null", "true", R"([{"model":"a"}])", R"({"model":["a"]})",
           R"({"model":{"a":1}})", R"({"model":true})", R"({"model":"a","model":"a"})", R"({"model":"a" "x":1})",
           "{\"model\":\"a\"\x0b}", "{\"\xEF\xBB\xBFmodel\":\"a\"}", std::string(1 << 20, ' '),
           "{\"model\":\"a\",\"x\":\"" + std::string(1 << 20, 'y'), std::string(200000, '{')}) {
    auto r = FindModel(body);
    if (r.ok()) {  // accepted: then the model's token really is where it says
      EXPECT_EQ(body.substr(r->begin, 1), "\"") << body.substr(0, 40);
      continue;
    }
    EXPECT_EQ(r.code(), ErrorCode::kInvalidArgument) << body.substr(0, 40) << ": " << r.error().message;
  }
  // A BOM-prefixed key is another key, not `model`: refused as missing.
  EXPECT_EQ(FindModel("{\"\xEF\xBB\xBFmodel\":\"a\"}").error().message, "model: required");
}

// Issue 16 review, item 4: what an upstream's answer head may pass to the client.
TEST(PassableUpstreamHeaders, NoHopByHopCookiesCorsHstsOrControlCharacters) {
  // These pass as they are, in the upstream's order.
  const HttpHeaders passed = {
      {"openai-organization", "org-1"},
      {"openai-processing-ms", "12"},
      {"openai-version", "2020-10-01"},
      {"x-ratelimit-limit-requests", "500"},
      {"x-ratelimit-remaining-tokens", "999"},
      {"retry-after", "3"},
      {"content-encoding", "gzip"},
      {"cache-control", "no-cache"},
  };
  HttpHeaders upstream = {{"content-type", "application/json"}, {"x-request-id", "req-1"}};
  upstream.insert(upstream.end(), passed.begin(), passed.end());
  upstream.insert(upstream.end(), {
      {"connection", "keep-alive"},
      {"keep-alive", "timeout=5"},
      {"transfer-encoding", "chunked"},
      {"content-length", "10"},
      {"Upgrade", "h2c"},
      {"te", "trailers"},
      {"trailer", "x"},
      {"proxy-authenticate", "Basic"},
      {"Set-Cookie", "__cf_bm=abc; HttpOnly"},
      {"set-cookie2", "x=1"},
      {"access-control-allow-origin", "*"},
      {"Access-Control-Allow-Credentials", "true"},
      {"strict-transport-security", "max-age=31536000; includeSubDomains"},
      {"alt-svc", "h3=\":443\""},
      {"clear-site-data", "\"*\""},
      {"x-evil", "a\r\nSet-Cookie: s=1"},
      {"x-nul", std::string("a\0b", 3)},
      {"x-del", "a\x7f"},
      {"x-tab", "a\tb"},
      {"x-utf8", "caf\xC3\xA9"},
      {"bad name", "1"},
      {"bad\r\nname", "1"},
      {"", "empty"},
  });
  HttpHeaders expected = {{"x-upstream-request-id", "req-1"}};
  expected.insert(expected.end(), passed.begin(), passed.end());
  expected.insert(expected.end(), {{"x-tab", "a\tb"}, {"x-utf8", "caf\xC3\xA9"}});
  EXPECT_EQ(PassableUpstreamHeaders(upstream), expected);
  EXPECT_TRUE(IsPassableUpstreamHeader("content-type", "text/event-stream"));
  EXPECT_FALSE(IsPassableUpstreamHeader("content-type", "text/html\r\nX-Injected: 1"));
  // Headers the upstream's own Connection header names are its hop's, not the client's.
  EXPECT_EQ(PassableUpstreamHeaders(HttpHeaders{{"Connection", "close, X-Hop-Secret"},
                                                {"x-hop-secret", "internal"},
                                                {"x-kept", "1"}}),
            (HttpHeaders{{"x-kept", "1"}}));
}

TEST_F(ProxyServiceTest, AnswerHeadersAreFilteredStreamedOrNot) {
  AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-alpha");
  FakeUpstream::Answer whole;
  whole.headers = {{"content-type", "application/json"}, {"set-cookie", "s=1"}, {"x-ratelimit-remaining-requests", "9"},
                   {"access-control-allow-origin", "*"}, {"x-bad", "a\nb"}};
  upstream_.answers = {whole};
  auto a = Call(R"({"model":"gpt-a"})");
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->content_type, "application/json");
  EXPECT_EQ(a->headers, (HttpHeaders{{"x-ratelimit-remaining-requests", "9"}}));
  FakeUpstream::Answer sse;
  sse.headers = {{"content-type", "text/event-stream"}, {"strict-transport-security", "max-age=1"},
                 {"openai-processing-ms", "5"}};
  sse.pieces = {"data: [DONE]\n\n"};
  upstream_.answers = {sse};
  a = Call(R"({"model":"gpt-a","stream":true})");
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->streamed);
  EXPECT_EQ(out_.headers, (HttpHeaders{{"openai-processing-ms", "5"}}));
  // An unusable content type is not passed on (the response's default stands).
  FakeUpstream::Answer bad_type;
  bad_type.headers = {{"content-type", "application/json\r\nX-Injected: 1"}};
  upstream_.answers = {bad_type};
  a = Call(R"({"model":"gpt-a"})");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->content_type, "");
}

TEST_F(ProxyServiceTest, HostileBodiesAreRefusedBeforeAnyUpstreamCall) {
  AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-alpha");
  for (std::string body : std::vector<std::string>{"\xEF\xBB\xBF{\"model\":\"gpt-a\"}", "", "[]", "\"gpt-a\"",
                                                   R"({"model":7})", R"({"model":"gpt-a","model":"gpt-a"})"}) {
    auto a = Call(body);
    ASSERT_FALSE(a.ok()) << body;
    EXPECT_EQ(a.code(), ErrorCode::kInvalidArgument) << body << ": " << a.error().message;
  }
  EXPECT_TRUE(upstream_.seen.empty());
}

// Issue 16 review, item 5: a credential the upstream keeps refusing forces
// at most one fresh read per provider per interval, not one per request.
TEST_F(ProxyServiceTest, A401ForcesAtMostOneFreshReadPerProviderPerInterval) {
  AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-alpha");
  AddProvider("beta", Models({{"gpt-b", "gpt-b"}}), "sk-beta");
  ASSERT_TRUE(Call(R"({"model":"gpt-a"})").ok());  // both keys now cached
  ASSERT_TRUE(Call(R"({"model":"gpt-b"})").ok());
  UpstreamRequires("Bearer sk-revoked-by-the-upstream");
  const int gets = store_.gets;
  auto a = Call(R"({"model":"gpt-a"})");  // the first 401: dropped, read again: the same key, passed on
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->status, 401);
  EXPECT_EQ(upstream_.seen.size(), 1u);  // not sent again: it would only earn a second 401
  EXPECT_EQ(store_.gets, gets + 1);
  for (int i = 0; i < 10; ++i) {  // within the interval: the 401 is the answer, the store is not read
    clock_.Advance(400ms);
    a = Call(R"({"model":"gpt-a"})");
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->status, 401);
  }
  EXPECT_EQ(upstream_.seen.size(), 11u);
  EXPECT_EQ(store_.gets, gets + 1);
  // Another provider has its own window (it was not refreshed).
  a = Call(R"({"model":"gpt-b"})");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(store_.gets, gets + 2);
  EXPECT_EQ(upstream_.seen.size(), 12u);
  // Past the interval, one more forced read for alpha's credential.
  clock_.Advance(1s);
  a = Call(R"({"model":"gpt-a"})");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(store_.gets, gets + 3);
  EXPECT_EQ(upstream_.seen.size(), 13u);
}

}  // namespace
}  // namespace dyad

namespace dyad {
namespace {

// Issue 16 review round 2, item 1: one total deadline per client call, the
// 401 retry included (it restarted on the retry: twice the total).
TEST_F(ProxyServiceTest, TheTotalDeadlineSpansThe401Retry) {
  ProxyOptions o;
  o.timeouts.total = 10s;
  Rebuild(o);
  std::string id = AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-old");
  ASSERT_TRUE(Call(R"({"model":"gpt-a"})").ok());  // sk-old cached
  ASSERT_TRUE(RotateElsewhere(id, "sk-new").ok());  // another instance rotates
  UpstreamRequires("Bearer sk-new");
  upstream_.during_send = [this] { clock_.Advance(7s); };  // the 401 took 7 of the 10 s
  auto a = Call(R"({"model":"gpt-a"})");
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->status, 200);
  ASSERT_EQ(upstream_.seen.size(), 2u);
  EXPECT_EQ(upstream_.seen[0].timeouts.total, 10s);
  EXPECT_EQ(upstream_.seen[1].timeouts.total, 3s);  // what is left, not 10 s again
  // A 401 that took the whole total: no retry, a timeout (504).
  ASSERT_TRUE(RotateElsewhere(id, "sk-newer").ok());
  UpstreamRequires("Bearer sk-newer");
  upstream_.during_send = [this] { clock_.Advance(10s); };
  clock_.Advance(10s);  // past the forced-read window of sk-new
  a = Call(R"({"model":"gpt-a"})");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.code(), ErrorCode::kDeadlineExceeded);
  EXPECT_NE(a.error().message.find("total timeout (10000 ms)"), std::string::npos) << a.error().message;
  EXPECT_EQ(upstream_.seen.size(), 1u);
}

// Issue 16 review round 2, item 2: the forced read's window is per provider
// AND credential: a 401 provoked on one credential does not keep a real
// rotation (a newer credential refused) from being picked up.
TEST_F(ProxyServiceTest, TheForcedReadWindowIsPerCredential) {
  std::string id = AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-1");
  ASSERT_TRUE(Call(R"({"model":"gpt-a"})").ok());  // sk-1 cached
  ASSERT_TRUE(RotateElsewhere(id, "sk-2").ok());  // another instance rotates
  UpstreamRequires("Bearer sk-3");  // refuses sk-1 and sk-2
  auto a = Call(R"({"model":"gpt-a"})");  // 401 to cached sk-1: read again (sk-2), refused: passed on
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->status, 401);
  ASSERT_EQ(upstream_.seen.size(), 2u);
  EXPECT_EQ(upstream_.seen[1].Header("Authorization"), "Bearer sk-2");
  // The real rotation, 1 s later (within the 5 s window of sk-1's 401).
  ASSERT_TRUE(RotateElsewhere(id, "sk-3").ok());
  clock_.Advance(1s);
  upstream_.seen.clear();
  a = Call(R"({"model":"gpt-a"})");  // 401 to cached sk-2: its own window: read again, sk-3
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->status, 200);
  ASSERT_EQ(upstream_.seen.size(), 2u);
  EXPECT_EQ(upstream_.seen[1].Header("Authorization"), "Bearer sk-3");
  // The upstream now refuses sk-3 too: one forced read for sk-3, then its
  // 401s are passed on without reading the store, within the window.
  upstream_.answers.back().require_authorization = "Bearer sk-4";
  clock_.Advance(1s);
  const int gets = store_.gets;
  a = Call(R"({"model":"gpt-a"})");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->status, 401);
  EXPECT_EQ(store_.gets, gets + 1);
  upstream_.seen.clear();
  for (int i = 0; i < 5; ++i) {
    clock_.Advance(500ms);
    a = Call(R"({"model":"gpt-a"})");
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->status, 401);
  }
  EXPECT_EQ(upstream_.seen.size(), 5u);
  EXPECT_EQ(store_.gets, gets + 1);
}

// A 401 to a credential whose window is used, while the cache already holds
// its replacement (rotated on this instance during the call): retried once
// with the replacement, not passed on.
TEST_F(ProxyServiceTest, A401ToAnAlreadyReplacedCredentialIsRetriedWithTheNewOne) {
  std::string id = AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-old");
  ASSERT_TRUE(Call(R"({"model":"gpt-a"})").ok());
  upstream_.answers = {FakeUpstream::Answer{}};
  upstream_.answers.back().require_authorization = "Bearer sk-new";
  auto a = Call(R"({"model":"gpt-a"})");  // uses sk-old's window
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->status, 401);
  clock_.Advance(1s);
  upstream_.seen.clear();
  bool rotated = false;
  upstream_.during_send = [&] {
    if (rotated) return;
    rotated = true;
    ASSERT_TRUE(providers_->RotateCredentials(id, {{"api_key", SecretBytes("sk-new")}}, caller_).ok());
  };
  a = Call(R"({"model":"gpt-a"})");
  ExpectRetriedWithTheNewKey(a);
}

// helper-164: with an empty cache, the key read from the store just before
// another instance's rotation met the upstream's 401, passed on (only a
// cached key's 401 was held): a failed call in the middle of a rotation.
TEST_F(ProxyServiceTest, A401ToAKeyJustReadFromTheStoreIsRetriedWhenTheStoreNowHoldsAnother) {
  std::string id = AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-old");
  secrets_->cache().Invalidate(id);  // nothing cached: the call reads the store
  UpstreamRequires("Bearer sk-new");
  bool rotated = false;
  int gets = 0;
  upstream_.during_send = [&] {
    if (rotated) return;
    rotated = true;
    ASSERT_TRUE(RotateElsewhere(id, "sk-new").ok());  // after this call's read, before its answer
    gets = store_.gets;
  };
  auto a = Call(R"({"model":"gpt-a"})");
  ExpectRetriedWithTheNewKey(a);
  EXPECT_EQ(store_.gets, gets + 1);  // the 401's read; the retry is served by the cache
  // A key the store still holds is refused: one forced read, the same key,
  // the 401 passed on, the upstream called once.
  secrets_->cache().Invalidate(id);
  clock_.Advance(10s);
  UpstreamRequires("Bearer sk-other");
  gets = store_.gets;
  a = Call(R"({"model":"gpt-a"})");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->status, 401);
  EXPECT_EQ(upstream_.seen.size(), 1u);
  EXPECT_EQ(store_.gets, gets + 2);  // the call's read and the 401's
}

// A key served while the store does not answer (stale, or the environment's
// fallback) is not held: a fresh read cannot find another one.
TEST_F(ProxyServiceTest, A401ToAStaleKeyIsPassedOnWithoutAnotherRead) {
  std::string id = AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-a");
  ASSERT_TRUE(Call(R"({"model":"gpt-a"})").ok());  // cached
  clock_.Advance(10min);  // past the cache's lifetime (5 min), within stale-if-error (1 h)
  store_.Fail(MakeError(ErrorCode::kUnavailable, "the store is down"));
  UpstreamRequires("Bearer sk-never");
  const int gets = store_.gets;
  auto a = Call(R"({"model":"gpt-a"})");
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->status, 401);
  EXPECT_EQ(upstream_.seen.size(), 1u);
  EXPECT_EQ(store_.gets, gets + 1);  // the call's read only
  store_.Fail(std::nullopt);
}

// helper-165 (high): the retry of a held 401 reused the first attempt's
// route, so while an upstream held its 401, an admin who moved the provider
// to a new baseUrl and rotated its key had the new key sent to the old one.
TEST_F(ProxyServiceTest, TheRetryOfAHeld401GoesWhereTheCatalogSaysNow) {
  std::string id = AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-old");
  secrets_->cache().Invalidate(id);  // read from the store (the case this change holds too)
  UpstreamRequires("Bearer sk-new");
  bool moved = false;
  upstream_.during_send = [&] {
    if (moved) return;
    moved = true;
    clock_.Advance(1ms);  // within catalog_ttl: this instance's catalog still has the old baseUrl
    ASSERT_TRUE(MoveAndRotateElsewhere(id, "http://127.0.0.1:9/fixed/v1", "sk-new").ok());
    clock_.Advance(1ms);
  };
  auto a = Call(R"({"model":"gpt-a"})");
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a->status, 200);
  ASSERT_EQ(upstream_.seen.size(), 2u);
  EXPECT_EQ(upstream_.seen[0].url, "http://127.0.0.1:9/alpha/v1/chat/completions");
  EXPECT_EQ(upstream_.seen[0].Header("Authorization"), "Bearer sk-old");
  EXPECT_EQ(upstream_.seen[1].url, "http://127.0.0.1:9/fixed/v1/chat/completions");
  EXPECT_EQ(upstream_.seen[1].Header("Authorization"), "Bearer sk-new");
}

// The same without a 401: the catalog (read up to catalog_ttl ago) still
// has the old baseUrl when the call reads the new key from the store; the
// key was read after the catalog, so the catalog is read again first.
TEST_F(ProxyServiceTest, AKeyReadAfterTheCatalogGoesWhereACatalogReadAfterItSays) {
  std::string id = AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-old");
  ASSERT_TRUE(Call(R"({"model":"gpt-a"})").ok());  // the catalog is read (fresh for 1 s on this clock)
  clock_.Advance(1ms);
  ASSERT_TRUE(MoveAndRotateElsewhere(id, "http://127.0.0.1:9/fixed/v1", "sk-new").ok());
  secrets_->cache().Invalidate(id);  // as another instance's change, through the change feed
  upstream_.seen.clear();
  auto a = Call(R"({"model":"gpt-a"})");
  ASSERT_TRUE(a.ok()) << a.error().message;
  ASSERT_EQ(upstream_.seen.size(), 1u);
  EXPECT_EQ(upstream_.seen[0].url, "http://127.0.0.1:9/fixed/v1/chat/completions");
  EXPECT_EQ(upstream_.seen[0].Header("Authorization"), "Bearer sk-new");
}

// Runs `during_get` (once) inside the next Get, before the read.
class HookedStore final : public testing::ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;
  Result<StoredSecret> Get(const std::string& name) override {
    if (auto hook = std::exchange(during_get, nullptr)) hook();
    return inner_.Get(name);
  }
  std::function<void()> during_get;
};

// helper-166 (high): the catalog read again was chosen by epoch, so a
// catalog another call read while this one's key was being read (after an
// unrelated provider write moved the epoch), but before the baseUrl moved,
// passed for a newer one: the rotated key went to the old baseUrl. The
// catalog must have begun its read after the key's.
TEST_F(ProxyServiceTest, ACatalogReadWhileTheKeyWasReadIsNotNewEnough) {
  HookedStore hooked(store_);
  Build(SecretsOptions{}, {}, &hooked);
  Rebuild(ProxyOptions{});
  std::string id = AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-old");
  ASSERT_TRUE(Call(R"({"model":"gpt-a"})").ok());
  secrets_->cache().Invalidate(id);  // the next call reads the store
  clock_.Advance(1ms);
  hooked.during_get = [&] {
    proxy_->InvalidateCatalog();  // an unrelated provider write on this instance
    ASSERT_TRUE(proxy_->Models(nullptr, nullptr).ok());  // another call reads the catalog: the old baseUrl
    clock_.Advance(1ms);
    ASSERT_TRUE(MoveAndRotateElsewhere(id, "http://127.0.0.1:9/fixed/v1", "sk-new").ok());
    clock_.Advance(1ms);
  };
  upstream_.seen.clear();
  auto a = Call(R"({"model":"gpt-a"})");
  ASSERT_TRUE(a.ok()) << a.error().message;
  ASSERT_EQ(upstream_.seen.size(), 1u);
  EXPECT_EQ(upstream_.seen[0].Header("Authorization"), "Bearer sk-new");
  EXPECT_EQ(upstream_.seen[0].url, "http://127.0.0.1:9/fixed/v1/chat/completions");
  // Later calls: the key (cached) was read before the catalog now held.
  const int gets = store_.gets;
  upstream_.seen.clear();
  ASSERT_TRUE(Call(R"({"model":"gpt-a"})").ok());
  EXPECT_EQ(upstream_.seen.size(), 1u);
  EXPECT_EQ(store_.gets, gets);
}

// helper-167 (high): the call resolved again read the key again, unchecked:
// a key rotated once more meanwhile (the entry dropped or expired, or no
// cache) went with the catalog read before it. The key the new catalog was
// read after is the one sent. Without a cache, every call is resolved again
// (its key is always read after the catalog): one store read each still.
TEST_F(ProxyServiceTest, ACallResolvedAgainSendsTheKeyItsCatalogWasReadAfter) {
  BuildWithoutACache();
  AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-a");
  ASSERT_TRUE(Call(R"({"model":"gpt-a"})").ok());
  for (int i = 0; i < 3; ++i) {
    clock_.Advance(1ms);
    const int gets = store_.gets;
    upstream_.seen.clear();
    ASSERT_TRUE(Call(R"({"model":"gpt-a"})").ok());
    EXPECT_EQ(store_.gets, gets + 1);
    ASSERT_EQ(upstream_.seen.size(), 1u);
    EXPECT_EQ(upstream_.seen[0].Header("Authorization"), "Bearer sk-a");
  }
}

// helper-165 (medium): without a cache, the hold read the store on every
// 401, the window's limit notwithstanding (two reads per refused call).
TEST_F(ProxyServiceTest, WithoutACacheA401ReadsTheStoreAtMostOncePerWindow) {
  BuildWithoutACache();
  AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-a");
  UpstreamRequires("Bearer sk-never");
  const int gets = store_.gets;
  for (int i = 0; i < 5; ++i) {
    auto a = Call(R"({"model":"gpt-a"})");
    ASSERT_TRUE(a.ok()) << a.error().message;
    EXPECT_EQ(a->status, 401);
  }
  EXPECT_EQ(upstream_.seen.size(), 5u);  // the same key found again: never sent twice
  EXPECT_EQ(store_.gets, gets + 5 + 1);  // each call's read, and one for the window's claim
}

TEST_F(ProxyServiceTest, TheForcedReadIntervalIsTheOptions) {
  ProxyOptions o;
  o.forced_refresh_interval = 0s;  // GATEWAY_V1_REFRESH_INTERVAL_MS=0
  Rebuild(o);
  AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-a");
  ASSERT_TRUE(Call(R"({"model":"gpt-a"})").ok());
  upstream_.answers = {FakeUpstream::Answer{}};
  upstream_.answers.back().require_authorization = "Bearer sk-never";
  const int gets = store_.gets;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Call(R"({"model":"gpt-a"})").ok());
  EXPECT_EQ(store_.gets, gets + 3);  // each 401 read again
}

// A ProviderRepository whose List calls pass a gate (counted; held while it is closed).
class GatedRepository final : public ProviderRepository {
 public:
  explicit GatedRepository(ProviderRepository& inner) : inner_(inner) {}
  Status Insert(const Provider& p) override { return inner_.Insert(p); }
  Result<Provider> Get(const std::string& id) override { return inner_.Get(id); }
  Status Update(const Provider& p) override { return inner_.Update(p); }
  Status Delete(const std::string& id) override { return inner_.Delete(id); }
  Status Ping() override { return inner_.Ping(); }
  Result<ProviderPage> List(int64_t offset, int64_t limit) override {
    gate_.Pass();
    {
      MutexLock lock(&mu_);
      if (fail_) return MakeError(ErrorCode::kUnavailable, "registry down");
    }
    return inner_.List(offset, limit);
  }
  // Lets the held List calls (and later ones) go, failing when `fail`.
  void Open(bool fail = false) {
    {
      MutexLock lock(&mu_);
      fail_ = fail;
    }
    gate_.Open();
  }
  testing::Gate& gate() { return gate_; }

 private:
  ProviderRepository& inner_;
  testing::Gate gate_{/*open=*/true};
  Mutex mu_;
  bool fail_ DYAD_GUARDED_BY(mu_) = false;
};

// Issue 16 review round 2, item 4: after an invalidation, concurrent
// requests read the catalog once (one reader; the others wait for it).
TEST_F(ProxyServiceTest, TheCatalogIsReadOnceByConcurrentRequests) {
  AddProvider("alpha", Models({{"gpt-a", "gpt-a"}}), "sk-a");
  GatedRepository gated(*repo_);
  ProxyService proxy(ProxyOptions{}, gated, *secrets_, upstream_, metrics_, clock_);
  for (bool fail : {false, true}) {
    proxy.InvalidateCatalog();
    gated.gate().Close();
    const int before = gated.gate().arrived();
    constexpr int kThreads = 8;
    std::vector<std::thread> threads;
    std::vector<int> found(kThreads, -1);
    threads.emplace_back([&] {
      auto m = proxy.Models(nullptr, nullptr);
      found[0] = m.ok() ? static_cast<int>(m->size()) : -2;
    });
    ASSERT_TRUE(gated.gate().WaitArrived(before + 1));  // the first reader is in the registry
    for (int i = 1; i < kThreads; ++i) {
      threads.emplace_back([&, i] {
        auto m = proxy.Models(nullptr, nullptr);
        found[i] = m.ok() ? static_cast<int>(m->size()) : -2;
      });
    }
    // Without single flight each of them would be in List too (never
    // waiting, so this loop would not end): wait until all are waiting.
    while (proxy.CatalogWaiters() < kThreads - 1 && gated.gate().arrived() == before + 1) std::this_thread::yield();
    gated.Open(fail);
    for (auto& t : threads) t.join();
    EXPECT_EQ(gated.gate().arrived(), before + 1) << (fail ? "failing" : "ok");
    for (int f : found) EXPECT_EQ(f, fail ? -2 : 1);  // the reader's result, its error too
  }
  // After the failure the next request reads again.
  gated.Open();
  auto m = proxy.Models(nullptr, nullptr);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->size(), 1u);
}

// Issue 16 review round 2, item 5: GET /v1/models/{model}.
TEST_F(ProxyServiceTest, OneModelByIdWithinTheAllowLists) {
  AddProvider("alpha", Models({{"gpt-a", "gpt-a"}, {"meta/llama", "llama"}}), "sk-a");
  AddProvider("beta", Models({{"gpt-b", "gpt-b"}, {"gpt-a", "gpt-a"}}), "sk-b");
  AddProvider("off", Models({{"gpt-off", "gpt-off"}}), "sk-o", "http-sdk", false);
  auto m = proxy_->Model("gpt-a", nullptr, nullptr);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->id, "gpt-a");
  EXPECT_EQ(m->owned_by, "alpha");  // as the list has it: the first provider's
  m = proxy_->Model("meta/llama", nullptr, nullptr);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->owned_by, "alpha");
  std::vector<std::string> only_beta = {"beta"}, only_gpt_b = {"gpt-b"};
  m = proxy_->Model("gpt-a", &only_beta, nullptr);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->owned_by, "beta");
  const std::string unknown = proxy_->Model("nope", nullptr, nullptr).error().message;
  for (auto [id, providers, models] : std::vector<std::tuple<std::string, const std::vector<std::string>*,
                                                             const std::vector<std::string>*>>{
           {"nope", nullptr, nullptr},
           {"gpt-off", nullptr, nullptr},
           {"", nullptr, nullptr},
           {"..", nullptr, nullptr},
           {"meta%2Fllama", nullptr, nullptr},
           {"alpha/gpt-a", nullptr, nullptr},
           {"GPT-A", nullptr, nullptr},
           {"gpt-a ", nullptr, nullptr},
           {"meta/llama", &only_beta, nullptr},
           {"gpt-a", nullptr, &only_gpt_b}}) {
    auto r = proxy_->Model(id, providers, models);
    ASSERT_FALSE(r.ok()) << id;
    EXPECT_EQ(r.code(), ErrorCode::kNotFound) << id;
    EXPECT_EQ(r.error().message, "model '" + id + "' does not exist");  // only what the client sent
  }
  EXPECT_EQ(unknown, "model 'nope' does not exist");
}

// Issue 16 review round 2, item 6: a scoped client learns no provider or
// model name outside its lists from any /v1 error.
TEST_F(ProxyServiceTest, AScopedClientsErrorsNameNothingOutsideItsLists) {
  AddProvider("alpha", Models({{"shared", "shared"}, {"gpt-a", "gpt-a"}}), "sk-a");
  AddProvider("secretco", Models({{"shared", "shared"}, {"hidden-model", "hidden-model"}}), "sk-s");
  AddProvider("offco", Models({{"off-model", "off-model"}}), "sk-o", "http-sdk", false);
  AddProvider("clico", Models({{"cli-model", "cli-model"}}), "sk-c", "spawn-cli");
  std::vector<std::string> only_alpha = {"alpha"};
  // The ambiguity is not one for it: routed to the one provider it may use.
  auto a = Call(R"({"model":"shared"})", &only_alpha);
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(upstream_.seen.back().url, "http://127.0.0.1:9/alpha/v1/chat/completions");
  const std::string unknown = Call(R"({"model":"no-such-model"})", &only_alpha).error().message;
  for (const char* body : {R"({"model":"hidden-model"})", R"({"model":"secretco/hidden-model"})",
                           R"({"model":"secretco/"})", R"({"model":"offco/off-model"})", R"({"model":"off-model"})",
                           R"({"model":"cli-model"})", R"({"model":"clico/cli-model"})", R"({"model":"secretco/x"})"}) {
    a = Call(body, &only_alpha);
    ASSERT_FALSE(a.ok()) << body;
    EXPECT_EQ(a.code(), ErrorCode::kNotFound) << body << ": " << a.error().message;
    for (const char* name : {"secretco", "offco", "clico", "hidden-model", "off-model", "cli-model", "shared"}) {
      // Only what the client itself sent may come back.
      if (std::string(body).find(name) != std::string::npos) continue;
      EXPECT_EQ(a.error().message.find(name), std::string::npos) << body << ": " << a.error().message;
    }
    EXPECT_EQ(a.error().message.find("disabled"), std::string::npos) << a.error().message;
    EXPECT_EQ(a.error().message.find("spawn-cli"), std::string::npos) << a.error().message;
  }
  // The same answer as for a model that does not exist, but for the model's name.
  EXPECT_EQ(Call(R"({"model":"secretco/x"})", &only_alpha).error().message,
            "model 'secretco/x' is not offered by any enabled provider");
  EXPECT_EQ(unknown, "model 'no-such-model' is not offered by any enabled provider");
  // A client scoped by model: the ambiguity names only providers it may use,
  // and a model outside its list is unknown.
  std::vector<std::string> only_shared = {"shared"};
  a = Call(R"({"model":"shared"})", nullptr, &only_shared);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.code(), ErrorCode::kInvalidArgument);  // both providers are in its (absent) provider list
  a = Call(R"({"model":"gpt-a"})", nullptr, &only_shared);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.code(), ErrorCode::kNotFound);
  EXPECT_EQ(a.error().message.find("alpha"), std::string::npos) << a.error().message;
  // A model outside its list that two providers offer: the same 404 as a
  // model that does not exist, not the ambiguity's 400 (which would tell it
  // the model exists).
  std::vector<std::string> only_gpt_a = {"gpt-a"};
  a = Call(R"({"model":"shared"})", nullptr, &only_gpt_a);
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.code(), ErrorCode::kNotFound) << a.error().message;
  EXPECT_EQ(a.error().message, "model 'shared' is not offered by any enabled provider");
  // Unscoped, the ambiguity still names every provider.
  a = Call(R"({"model":"shared"})");
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.error().message.find("alpha, secretco"), std::string::npos) << a.error().message;
}

}  // namespace
}  // namespace dyad
