#include <gtest/gtest.h>

#include "backends/environment/local_keyring.h"
#include "registry/sqlite_provider_repository.h"
#include "service/provider_service.h"
#include "service/secrets_service.h"
#include "testing/fakes.h"

namespace dyad {
namespace {

using namespace std::chrono_literals;
constexpr char kCanary[] = "sk-CANARY-7f3a9b";

class ServicesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = *SqliteDb::Open(dir_.File("t.db"));
    repo_ = NewSqliteProviderRepository(db_);
    keys_ = std::move(NewLocalKeyring({"k", SecretBytes(std::string(32, 'm')), {}}, db_, DefaultRandom(), clock_)).value();
    Build({});
  }
  void Build(EnvMap env) {
    providers_.reset();
    secrets_.reset();
    SecretsOptions o;
    o.cache.ttl = 300s;
    secrets_ = std::make_unique<SecretsService>(o, store_, *keys_, *repo_, audit_, metrics_, clock_, DefaultRandom(), env);
    providers_ = std::make_unique<ProviderService>(*repo_, *secrets_, clock_, DefaultRandom(), audit_);
  }
  Provider Create(const std::string& slug, const std::string& key = kCanary) {
    ProviderPatch p;
    p.name = slug;
    p.slug = slug;
    p.type = "http-sdk";
    p.credentials = CredentialFields{};
    p.credentials->emplace("api_key", SecretBytes(key));
    auto r = providers_->Create(p, caller_);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    return *r;
  }
  std::string ApiKey(const CredentialRead& r) { return std::string(r.credentials->fields.at("api_key").view()); }

  testing::TempDir dir_;
  FakeClock clock_;
  std::shared_ptr<SqliteDb> db_;
  std::unique_ptr<ProviderRepository> repo_;
  std::unique_ptr<KeyManager> keys_;
  testing::MemoryStore store_;
  testing::MemoryAudit audit_;
  Metrics metrics_;
  Caller caller_{"tester", "rid-1"};
  std::unique_ptr<SecretsService> secrets_;
  std::unique_ptr<ProviderService> providers_;
};

TEST_F(ServicesTest, CreateStoresSealedSecretAndPlaceholderRow) {
  Provider p = Create("openai");
  EXPECT_EQ(p.credential_fields, std::vector<std::string>{"api_key"});
  EXPECT_EQ(p.credentials_version, 1);
  auto data = store_.data();
  ASSERT_EQ(data.size(), 1u);
  EXPECT_EQ(data.begin()->first, "dyad-gateway/providers/" + p.id);
  EXPECT_EQ(data.begin()->second.find(kCanary), std::string::npos);
  auto r = secrets_->Get(p.id, caller_);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(ApiKey(*r), kCanary);
  EXPECT_EQ(r->source, "store");
  EXPECT_EQ(secrets_->Get(p.id, caller_)->source, "cache");
}

TEST_F(ServicesTest, FailedCreateLeavesNoSecretBehind) {
  Create("openai");
  ProviderPatch dup;
  dup.name = "again";
  dup.slug = "openai";
  dup.type = "proxy";
  dup.credentials = CredentialFields{};
  dup.credentials->emplace("api_key", SecretBytes("x"));
  auto r = providers_->Create(dup, caller_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(store_.size(), 1u);
}

TEST_F(ServicesTest, FailedStoreWriteLeavesNoRow) {
  store_.Fail(MakeError(ErrorCode::kUnavailable, "down"));
  ProviderPatch p;
  p.name = p.slug = "x";
  p.type = "proxy";
  p.credentials = CredentialFields{};
  p.credentials->emplace("api_key", SecretBytes("v"));
  EXPECT_EQ(providers_->Create(p, caller_).code(), ErrorCode::kUnavailable);
  store_.Fail(std::nullopt);
  EXPECT_EQ(repo_->List(0, 10)->total, 0);
}

TEST_F(ServicesTest, FailedRowUpdateRestoresTheOldSecret) {
  Create("a");
  Provider b = Create("b", "old-b");
  ProviderPatch patch;
  patch.slug = "a";  // taken: the row update fails after the secret write
  patch.credentials = CredentialFields{};
  patch.credentials->emplace("api_key", SecretBytes("new-b"));
  EXPECT_EQ(providers_->Update(b.id, patch, caller_).code(), ErrorCode::kAlreadyExists);
  auto r = secrets_->Get(b.id, caller_);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(ApiKey(*r), "old-b");
  EXPECT_EQ(repo_->Get(b.id)->credentials_version, 1);
}

TEST_F(ServicesTest, RotateInvalidatesTheCacheAndBumpsVersion) {
  Provider p = Create("openai", "v1");
  EXPECT_EQ(ApiKey(*secrets_->Get(p.id, caller_)), "v1");
  CredentialFields next;
  next.emplace("api_key", SecretBytes("v2"));
  auto rotated = providers_->RotateCredentials(p.id, next, caller_);
  ASSERT_TRUE(rotated.ok());
  EXPECT_EQ(rotated->credentials_version, 2);
  auto r = secrets_->Get(p.id, caller_);
  EXPECT_EQ(ApiKey(*r), "v2");
  EXPECT_EQ(r->credentials->version, 2);
}

TEST_F(ServicesTest, DeleteRemovesRowAndSecret) {
  Provider p = Create("openai");
  ASSERT_TRUE(providers_->Delete(p.id, caller_).ok());
  EXPECT_EQ(store_.size(), 0u);
  EXPECT_EQ(providers_->Delete(p.id, caller_).code(), ErrorCode::kNotFound);
}

TEST_F(ServicesTest, HealthProbesTheBackendAtMostOncePerSecond) {
  int before = store_.gets.load();
  for (int i = 0; i < 50; ++i) EXPECT_EQ(secrets_->Health().status, "healthy");
  EXPECT_EQ(store_.gets.load() - before, 1);
  store_.Fail(MakeError(ErrorCode::kPermissionDenied, "AccessDenied"));
  EXPECT_EQ(secrets_->Health().status, "healthy");  // the probe of a moment ago still stands
  clock_.Advance(std::chrono::seconds(1));
  auto h = secrets_->Health();
  EXPECT_EQ(h.status, "unhealthy");
  EXPECT_EQ(h.store_error, "AccessDenied");
  EXPECT_EQ(store_.gets.load() - before, 2);
}

TEST_F(ServicesTest, FallbackOnUnavailabilityOnly) {
  Provider p = Create("open-ai");
  Build({{"DYAD_PROVIDER_OPEN_AI_API_KEY", "from-env"}});
  store_.Fail(MakeError(ErrorCode::kUnavailable, "connection refused"));
  auto r = secrets_->Get(p.id, caller_);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->source, "fallback");
  EXPECT_EQ(ApiKey(*r), "from-env");
  EXPECT_EQ(secrets_->Health().fallback_reads, 1u);
  EXPECT_EQ(secrets_->Health().status, "unhealthy");

  store_.Fail(MakeError(ErrorCode::kPermissionDenied, "AccessDenied"));
  EXPECT_EQ(secrets_->Get(p.id, caller_).code(), ErrorCode::kPermissionDenied);
  store_.Fail(MakeError(ErrorCode::kNotFound, "gone"));
  EXPECT_EQ(secrets_->Get(p.id, caller_).code(), ErrorCode::kNotFound);
  bool audited = false;
  for (const auto& e : audit_.events()) audited = audited || (e.action == "secret.get" && e.source == "fallback");
  EXPECT_TRUE(audited);
}

TEST_F(ServicesTest, FallbackCanBeSwitchedOff) {
  Provider p = Create("openai");
  SecretsOptions o;
  o.fallback_to_env = false;
  SecretsService s(o, store_, *keys_, *repo_, audit_, metrics_, clock_, DefaultRandom(),
                   EnvMap{{"DYAD_PROVIDER_OPENAI_API_KEY", "from-env"}});
  store_.Fail(MakeError(ErrorCode::kUnavailable, "down"));
  EXPECT_EQ(s.Get(p.id, caller_).code(), ErrorCode::kUnavailable);
}

TEST_F(ServicesTest, StaleServedWhenStoreDownAfterTtl) {
  Provider p = Create("openai", "cached");
  ASSERT_TRUE(secrets_->Get(p.id, caller_).ok());
  store_.Fail(MakeError(ErrorCode::kUnavailable, "down"));
  clock_.Advance(301s);
  auto r = secrets_->Get(p.id, caller_);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->source, "stale");
  EXPECT_EQ(ApiKey(*r), "cached");
  EXPECT_EQ(secrets_->Health().stale_serves, 1u);
}

TEST_F(ServicesTest, CacheDisabledReadsTheStoreEveryTime) {
  Provider p = Create("openai");
  SecretsOptions o;
  o.cache_enabled = false;
  SecretsService s(o, store_, *keys_, *repo_, audit_, metrics_, clock_, DefaultRandom(), {});
  int before = store_.gets;
  ASSERT_TRUE(s.Get(p.id, caller_).ok());
  ASSERT_TRUE(s.Get(p.id, caller_).ok());
  EXPECT_EQ(store_.gets - before, 2);
  EXPECT_EQ(s.Health().cache_size, 0u);
}

TEST_F(ServicesTest, ValidateChecksRequiredFields) {
  ProviderPatch p;
  p.name = p.slug = "proxy-one";
  p.type = "proxy";
  p.credentials = CredentialFields{};
  p.credentials->emplace("token", SecretBytes("t"));
  auto created = providers_->Create(p, caller_);
  ASSERT_TRUE(created.ok());
  auto report = providers_->Validate(created->id, caller_);
  ASSERT_TRUE(report.ok());
  EXPECT_FALSE(report->valid);
  EXPECT_EQ(report->checks.back().message, "missing: api_key");
  EXPECT_EQ(providers_->Validate("nope", caller_).code(), ErrorCode::kNotFound);
  Provider good = Create("good");
  EXPECT_TRUE(providers_->Validate(good.id, caller_)->valid);
}

TEST_F(ServicesTest, TestConnectionRunsEveryStepAndCleansUp) {
  auto steps = secrets_->TestConnection(caller_);
  ASSERT_EQ(steps.size(), 5u);
  for (const auto& s : steps) EXPECT_TRUE(s.ok) << s.name << ": " << s.error;
  EXPECT_EQ(store_.size(), 0u);
  store_.Fail(MakeError(ErrorCode::kUnavailable, "down"));
  steps = secrets_->TestConnection(caller_);
  EXPECT_FALSE(steps.back().ok);
  EXPECT_EQ(steps.back().name, "store.write");
}

TEST_F(ServicesTest, CanaryNeverInAuditEvents) {
  Provider p = Create("openai");
  ASSERT_TRUE(secrets_->Get(p.id, caller_).ok());
  ASSERT_TRUE(providers_->Validate(p.id, caller_).ok());
  for (const auto& e : audit_.events()) {
    for (const auto& s : {e.actor, e.action, e.resource, e.source, e.detail, e.error_code}) {
      EXPECT_EQ(s.find(kCanary), std::string::npos);
    }
  }
  EXPECT_EQ(metrics_.Render().find(kCanary), std::string::npos);
}

}  // namespace
}  // namespace dyad
