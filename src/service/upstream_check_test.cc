// ProviderService and the /v1 upstreams: adapterConfig checked at create and
// update (syntax, plain http, where the host resolves), validate before
// promote and live validate through a fake UpstreamClient.
#include <gtest/gtest.h>

#include <map>

#include "core/mutex.h"
#include "testing/service_fixture.h"

namespace dyad {
namespace {

using namespace std::chrono_literals;

class FakeResolver final : public HostResolver {
 public:
  Result<std::vector<std::string>> Resolve(std::string_view host) override {
    MutexLock lock(&mu_);
    asked_.emplace_back(host);
    auto it = answers_.find(std::string(host));
    if (it == answers_.end()) return MakeError(ErrorCode::kNotFound, "no such host");
    return it->second;
  }
  void Answer(const std::string& host, std::vector<std::string> addresses) {
    MutexLock lock(&mu_);
    answers_[host] = std::move(addresses);
  }
  std::vector<std::string> asked() {
    MutexLock lock(&mu_);
    return asked_;
  }

 private:
  Mutex mu_;
  std::map<std::string, std::vector<std::string>> answers_ DYAD_GUARDED_BY(mu_);
  std::vector<std::string> asked_ DYAD_GUARDED_BY(mu_);
};

// An upstream that answers 200 to the one header value it accepts, 401 to
// any other; or no answer at all (`down`).
class FakeUpstream final : public UpstreamClient {
 public:
  Status Send(const UpstreamRequest& request, UpstreamSink& sink) override {
    std::string header_value;
    {
      MutexLock lock(&mu_);
      requests_.push_back({request.method, request.url, request.headers});
      if (down_) return MakeError(ErrorCode::kUnavailable, "connection refused");
      for (const auto& [name, value] : request.headers) {
        if (name == header_) header_value = value;
      }
    }
    UpstreamHead head;
    head.status = header_value == Accepted() ? 200 : 401;
    if (!sink.OnHead(head)) return MakeError(ErrorCode::kCancelled, "cancelled");
    sink.OnBody("{\"data\":[]}");
    return OkStatus();
  }
  void Accept(std::string header, std::string value) {
    MutexLock lock(&mu_);
    header_ = std::move(header);
    accepted_ = std::move(value);
  }
  void SetDown(bool down) {
    MutexLock lock(&mu_);
    down_ = down;
  }
  struct Seen {
    std::string method, url;
    HttpHeaders headers;
  };
  std::vector<Seen> requests() {
    MutexLock lock(&mu_);
    return requests_;
  }

 private:
  std::string Accepted() {
    MutexLock lock(&mu_);
    return accepted_;
  }
  Mutex mu_;
  std::string header_ DYAD_GUARDED_BY(mu_) = "Authorization";
  std::string accepted_ DYAD_GUARDED_BY(mu_) = "Bearer sk-good";
  bool down_ DYAD_GUARDED_BY(mu_) = false;
  std::vector<Seen> requests_ DYAD_GUARDED_BY(mu_);
};

CredentialFields Key(const std::string& key) {
  CredentialFields f;
  f.emplace("api_key", SecretBytes(key));
  return f;
}

class UpstreamCheckTest : public testing::ServiceFixture {
 protected:
  void SetUp() override {
    ServiceFixture::SetUp();
    upstream_.resolver = &resolver_;
    upstream_.client = &client_;
    Build({});
  }
  Result<Provider> Create(const std::string& slug, const std::string& adapter_config, const std::string& type = "http-sdk",
                          const std::string& key = "sk-good") {
    ProviderPatch p;
    p.name = p.slug = slug;
    p.type = type;
    p.adapter_config_json = adapter_config;
    p.credentials = Key(key);
    return providers_->Create(p, caller_);
  }
  std::string StoredKey(const std::string& id) {
    secrets_->cache().Invalidate(id);
    auto read = secrets_->Get(id, caller_);
    EXPECT_TRUE(read.ok());
    return read.ok() ? std::string(read->credentials->fields.at("api_key").view()) : "";
  }
  AuditEvent LastAudit(const std::string& action) {
    auto events = audit_.events();
    for (auto it = events.rbegin(); it != events.rend(); ++it) {
      if (it->action == action) return *it;
    }
    ADD_FAILURE() << "no audit event " << action;
    return {};
  }

  FakeResolver resolver_;
  FakeUpstream client_;
};

TEST_F(UpstreamCheckTest, CreateNeedsAValidBaseUrlForUpstreamTypesOnly) {
  auto none = Create("a", "{}");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(none.error().message.rfind("adapterConfig.baseUrl: is required", 0), 0u) << none.error().message;
  auto proxy = Create("b", R"({"baseUrl":"ftp://x"})", "proxy");
  ASSERT_FALSE(proxy.ok());
  EXPECT_EQ(proxy.error().message.rfind("adapterConfig.baseUrl: ", 0), 0u);
  EXPECT_EQ(repo_->List(0, 10)->total, 0);  // nothing written
  EXPECT_TRUE(store_.data().empty());
  EXPECT_EQ(LastAudit("provider.create").outcome, "failure");
  // spawn-cli and local need none.
  EXPECT_TRUE(Create("c", "{}", "local").ok());
  EXPECT_TRUE(Create("d", R"({"command":"x"})", "spawn-cli").ok());
  EXPECT_TRUE(Create("e", R"({"baseUrl":"https://api.openai.com/v1"})").ok());
}

TEST_F(UpstreamCheckTest, PlainHttpNeedsLoopbackOrThePolicy) {
  auto plain = Create("a", R"({"baseUrl":"http://api.openai.com/v1"})");
  ASSERT_FALSE(plain.ok());
  EXPECT_NE(plain.error().message.find("GATEWAY_ALLOW_PLAINTEXT_UPSTREAM"), std::string::npos);
  EXPECT_TRUE(Create("b", R"({"baseUrl":"http://localhost:8080/v1"})").ok());
  upstream_.policy.allow_plaintext = true;
  Build({});
  EXPECT_TRUE(Create("c", R"({"baseUrl":"http://api.openai.com/v1"})").ok());
}

TEST_F(UpstreamCheckTest, RefusesAHostThatResolvesToAMetadataAddress) {
  resolver_.Answer("evil.test", {"93.184.216.34", "169.254.169.254"});
  resolver_.Answer("evil6.test", {"fd00:ec2::254"});
  resolver_.Answer("mapped.test", {"::ffff:169.254.169.254"});
  resolver_.Answer("ll.test", {"fe80::1"});
  resolver_.Answer("fine.test", {"93.184.216.34", "2606:2800:220:1::"});
  for (const char* host : {"evil.test", "evil6.test", "mapped.test", "ll.test"}) {
    auto r = Create(std::string("p-") + host[0] + host[1], std::string(R"({"baseUrl":"https://)") + host + R"(/v1"})");
    ASSERT_FALSE(r.ok()) << host;
    EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
    EXPECT_NE(r.error().message.find("adapterConfig.baseUrl: host '" + std::string(host) + "' resolves to"),
              std::string::npos) << r.error().message;
  }
  EXPECT_TRUE(Create("fine", R"({"baseUrl":"https://fine.test:8443/v1"})").ok());
  // No answer names no forbidden address: the connection is checked again.
  EXPECT_TRUE(Create("unknown", R"({"baseUrl":"https://unknown.test/v1"})").ok());
  // A literal is checked by the parse and never looked up.
  size_t asked = resolver_.asked().size();
  EXPECT_TRUE(Create("lit", R"({"baseUrl":"https://93.184.216.34/v1"})").ok());
  EXPECT_FALSE(Create("lit2", R"({"baseUrl":"https://0xA9FEA9FE/v1"})").ok());
  EXPECT_EQ(resolver_.asked().size(), asked);
}

TEST_F(UpstreamCheckTest, UpdateChecksOnlyAChangedTypeOrAdapterConfig) {
  // A provider stored before baseUrl was required keeps working.
  Provider legacy;
  legacy.id = "legacy-1";
  legacy.name = legacy.slug = "legacy";
  legacy.type = "http-sdk";
  legacy.adapter_config_json = R"({"headers":{"a":"1"}})";
  ASSERT_TRUE(repo_->Insert(legacy).ok());
  ProviderPatch rename;
  rename.description = "still here";
  ASSERT_TRUE(providers_->Update("legacy-1", rename, caller_).ok());
  ASSERT_TRUE(providers_->RotateCredentials("legacy-1", Key("sk-1"), caller_).ok());
  ProviderPatch config;
  config.adapter_config_json = R"({"headers":{"a":"2"}})";
  auto changed = providers_->Update("legacy-1", config, caller_);
  ASSERT_FALSE(changed.ok());
  EXPECT_EQ(changed.error().message.rfind("adapterConfig.baseUrl: is required", 0), 0u);
  resolver_.Answer("meta.test", {"169.254.169.254"});
  config.adapter_config_json = R"({"baseUrl":"https://meta.test"})";
  EXPECT_FALSE(providers_->Update("legacy-1", config, caller_).ok());
  EXPECT_EQ(repo_->Get("legacy-1")->adapter_config_json, R"({"headers":{"a":"1"}})");
  config.adapter_config_json = R"({"baseUrl":"https://api.example.test"})";
  EXPECT_TRUE(providers_->Update("legacy-1", config, caller_).ok());

  auto local = Create("loc", "{}", "local");
  ASSERT_TRUE(local.ok());
  ProviderPatch retype;
  retype.type = "proxy";
  auto r = providers_->Update(local->id, retype, caller_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message.rfind("adapterConfig.baseUrl: is required", 0), 0u);
}

TEST_F(UpstreamCheckTest, ValidateBeforePromoteWritesOnlyWhatTheUpstreamTakes) {
  auto p = Create("openai", R"({"baseUrl":"https://api.openai.com/v1/"})", "http-sdk", "sk-old");
  ASSERT_TRUE(p.ok()) << p.error().message;
  UpstreamProbe bad;
  auto refused = providers_->RotateCredentials(p->id, Key("sk-bad"), caller_, &bad);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_TRUE(bad.attempted);
  EXPECT_EQ(bad.status, 401);
  EXPECT_EQ(refused.error().message.find("sk-bad"), std::string::npos);
  EXPECT_NE(refused.error().message.find("GET https://api.openai.com/v1/models answered HTTP 401"), std::string::npos);
  EXPECT_EQ(StoredKey(p->id), "sk-old");
  EXPECT_EQ(repo_->Get(p->id)->credentials_version, 1);
  AuditEvent e = LastAudit("credentials.rotate");
  EXPECT_EQ(e.outcome, "failure");
  EXPECT_EQ(e.fields, std::vector<std::string>{"api_key"});
  ASSERT_EQ(client_.requests().size(), 1u);
  auto seen = client_.requests()[0];
  EXPECT_EQ(seen.method, "GET");
  EXPECT_EQ(seen.url, "https://api.openai.com/v1/models");
  EXPECT_EQ(seen.headers[0], std::make_pair(std::string("Authorization"), std::string("Bearer sk-bad")));

  UpstreamProbe good;
  auto promoted = providers_->RotateCredentials(p->id, Key("sk-good"), caller_, &good);
  ASSERT_TRUE(promoted.ok()) << promoted.error().message;
  EXPECT_EQ(good.status, 200);
  EXPECT_EQ(promoted->credentials_version, 2);
  EXPECT_EQ(StoredKey(p->id), "sk-good");
  // Without validate, nothing is probed.
  ASSERT_TRUE(providers_->RotateCredentials(p->id, Key("sk-unchecked"), caller_).ok());
  EXPECT_EQ(client_.requests().size(), 2u);
}

// A credential no header can carry is refused when it is written (create,
// replace, rotate with or without validate), not found broken on traffic;
// nothing is stored and nothing reaches the upstream.
TEST_F(UpstreamCheckTest, ACredentialNoHeaderCanCarryIsRefusedWhenWritten) {
  const std::string bad = "sk-SECRET\r\nX-Evil: 1";
  auto created = Create("a", R"({"baseUrl":"https://api.openai.com/v1"})", "http-sdk", bad);
  ASSERT_FALSE(created.ok());
  EXPECT_EQ(created.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(created.error().message.find("'credentials.api_key'"), std::string::npos) << created.error().message;
  EXPECT_EQ(created.error().message.find("SECRET"), std::string::npos);
  EXPECT_EQ(repo_->List(0, 10)->total, 0);
  EXPECT_TRUE(store_.data().empty());
  EXPECT_EQ(LastAudit("provider.create").outcome, "failure");
  // A type that sends no header keeps the value as given.
  EXPECT_TRUE(Create("loc", "{}", "local", bad).ok());

  auto p = Create("openai", R"({"baseUrl":"https://api.openai.com/v1"})", "http-sdk", "sk-old");
  ASSERT_TRUE(p.ok()) << p.error().message;
  ProviderPatch replace;
  replace.credentials = Key(bad);
  auto put = providers_->Update(p->id, replace, caller_);
  ASSERT_FALSE(put.ok());
  EXPECT_EQ(put.error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(providers_->RotateCredentials(p->id, Key(bad), caller_).code(), ErrorCode::kInvalidArgument);
  UpstreamProbe probe;
  auto validated = providers_->RotateCredentials(p->id, Key(bad), caller_, &probe);
  ASSERT_FALSE(validated.ok());
  EXPECT_EQ(validated.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(validated.error().message.find("'credentials.api_key'"), std::string::npos);
  EXPECT_FALSE(probe.attempted);
  EXPECT_TRUE(client_.requests().empty());
  EXPECT_EQ(StoredKey(p->id), "sk-old");
  EXPECT_EQ(repo_->Get(p->id)->credentials_version, 1);
}

TEST_F(UpstreamCheckTest, ProbeUsesTheConfiguredHeaderAndPath) {
  auto p = Create("anthropic", R"({"baseUrl":"https://api.anthropic.test","auth":{"header":"x-api-key",
    "template":"{api_key}"},"credentialHeaders":{"project":"X-Project"},"validatePath":"/v1/models?limit=1"})");
  ASSERT_TRUE(p.ok()) << p.error().message;
  client_.Accept("x-api-key", "sk-new");
  CredentialFields f = Key("sk-new");
  f.emplace("project", SecretBytes("proj-1"));
  UpstreamProbe probe;
  ASSERT_TRUE(providers_->RotateCredentials(p->id, f, caller_, &probe).ok());
  auto seen = client_.requests().back();
  EXPECT_EQ(seen.url, "https://api.anthropic.test/v1/models?limit=1");
  EXPECT_EQ(seen.headers, (HttpHeaders{{"x-api-key", "sk-new"}, {"X-Project", "proj-1"}, {"Accept", "application/json"}}));
}

TEST_F(UpstreamCheckTest, ValidateBeforePromoteRefusals) {
  auto p = Create("openai", R"({"baseUrl":"https://api.openai.com/v1"})", "http-sdk", "sk-old");
  ASSERT_TRUE(p.ok());
  // Unreachable: no status, nothing written.
  client_.SetDown(true);
  UpstreamProbe down;
  auto r = providers_->RotateCredentials(p->id, Key("sk-good"), caller_, &down);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(down.attempted);
  EXPECT_EQ(down.status, 0);
  EXPECT_NE(r.error().message.find("connection refused"), std::string::npos);
  EXPECT_EQ(StoredKey(p->id), "sk-old");
  client_.SetDown(false);
  // A credential without the field the template names.
  CredentialFields other;
  other.emplace("token", SecretBytes("sk-good"));
  UpstreamProbe unused;
  auto missing = providers_->RotateCredentials(p->id, other, caller_, &unused);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.code(), ErrorCode::kInvalidArgument);  // the input's fault, as for a write without validate
  EXPECT_NE(missing.error().message.find("sends credential field 'api_key'"), std::string::npos)
      << missing.error().message;
  EXPECT_FALSE(unused.attempted);
  // A header-splitting value never reaches the upstream.
  size_t sent = client_.requests().size();
  EXPECT_FALSE(providers_->RotateCredentials(p->id, Key("sk-good\r\nX-Evil: 1"), caller_, &unused).ok());
  EXPECT_EQ(client_.requests().size(), sent);
  // A reference cannot be probed before it is stored.
  CredentialFields ref;
  ref.emplace("api_key", EncodeReference({"database/creds/readonly", "password"}));
  auto refd = providers_->RotateCredentials(p->id, ref, caller_, &unused);
  ASSERT_FALSE(refd.ok());
  EXPECT_EQ(refd.error().code, ErrorCode::kInvalidArgument);
  // A type without upstream; an unknown provider.
  auto local = Create("loc", "{}", "local");
  ASSERT_TRUE(local.ok());
  EXPECT_EQ(providers_->RotateCredentials(local->id, Key("k"), caller_, &unused).code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(providers_->RotateCredentials("nope", Key("k"), caller_, &unused).code(), ErrorCode::kNotFound);
  EXPECT_EQ(StoredKey(p->id), "sk-old");
  EXPECT_EQ(repo_->Get(p->id)->credentials_version, 1);
}

TEST_F(UpstreamCheckTest, WithoutAClientProbesAreUnimplemented) {
  upstream_.client = nullptr;
  Build({});
  auto p = Create("openai", R"({"baseUrl":"https://api.openai.com/v1"})", "http-sdk", "sk-old");
  ASSERT_TRUE(p.ok());
  UpstreamProbe probe;
  EXPECT_EQ(providers_->RotateCredentials(p->id, Key("sk-good"), caller_, &probe).code(), ErrorCode::kUnimplemented);
  EXPECT_EQ(StoredKey(p->id), "sk-old");
}

TEST_F(UpstreamCheckTest, LiveValidateProbesTheCurrentCredentials) {
  auto p = Create("openai", R"({"baseUrl":"https://api.openai.com/v1"})", "http-sdk", "sk-good");
  ASSERT_TRUE(p.ok());
  auto plain = providers_->Validate(p->id, caller_);
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(plain->valid);
  EXPECT_FALSE(plain->probe.attempted);
  EXPECT_TRUE(client_.requests().empty());

  auto live = providers_->Validate(p->id, caller_, true);
  ASSERT_TRUE(live.ok());
  EXPECT_TRUE(live->valid);
  EXPECT_EQ(live->probe.status, 200);
  EXPECT_EQ(live->checks.back().name, "upstream");
  EXPECT_TRUE(live->checks.back().ok);

  ASSERT_TRUE(providers_->RotateCredentials(p->id, Key("sk-revoked"), caller_).ok());
  auto revoked = providers_->Validate(p->id, caller_, true);
  ASSERT_TRUE(revoked.ok());
  EXPECT_FALSE(revoked->valid);
  EXPECT_EQ(revoked->probe.status, 401);
  EXPECT_FALSE(revoked->checks.back().ok);
  EXPECT_EQ(revoked->checks.back().message.find("sk-revoked"), std::string::npos);
  EXPECT_EQ(client_.requests().back().headers[0].second, "Bearer sk-revoked");

  client_.SetDown(true);
  auto down = providers_->Validate(p->id, caller_, true);
  ASSERT_TRUE(down.ok());
  EXPECT_FALSE(down->valid);
  EXPECT_EQ(down->probe.status, 0);
  EXPECT_NE(down->checks.back().message.find("connection refused"), std::string::npos);

  auto local = Create("loc", "{}", "local");
  ASSERT_TRUE(local.ok());
  auto none = providers_->Validate(local->id, caller_, true);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->valid);
  EXPECT_NE(none->checks.back().message.find("no upstream to probe"), std::string::npos);
}

}  // namespace
}  // namespace dyad
