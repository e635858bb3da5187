// The service side of dynamic secrets: references resolved through a fake
// DynamicSecretSource, one read per path, the cache capped by the lease,
// renewals, re-reads, revocation, and refusal without a source.
#include <gtest/gtest.h>

#include "backends/environment/local_keyring.h"
#include "registry/sqlite_key_version_repository.h"
#include "registry/sqlite_provider_repository.h"
#include "service/provider_service.h"
#include "service/secrets_service.h"
#include "testing/fake_dynamic_secrets.h"
#include "testing/fakes.h"
#include "testing/service_fixture.h"

namespace dyad {
namespace {

using namespace std::chrono_literals;
using testing::kDynamicCanary;

constexpr char kPath[] = "database/creds/readonly";

SecretBytes Ref(const std::string& path, const std::string& field) { return EncodeReference({path, field}); }

class DynamicSecretsTest : public testing::ServiceFixture {
 protected:
  void SetUp() override {
    ServiceFixture::SetUp();
    Build(&source_);
  }
  void Build(DynamicSecretSource* source, const EnvMap& env = {}) {
    SecretsOptions o;
    o.cache.ttl = 300s;
    o.dynamic = source;
    ServiceFixture::Build(o, env);
  }
  // A provider whose username and password both come from kPath, and a
  // plain field beside them.
  Result<Provider> CreateDb(const std::string& slug = "db") {
    ProviderPatch p;
    p.name = p.slug = slug;
    p.type = "http-sdk";
    p.adapter_config_json = R"({"baseUrl":"http://127.0.0.1:9"})";
    p.credentials = CredentialFields{};
    p.credentials->emplace("api_key", Ref(kPath, "password"));
    p.credentials->emplace("user", Ref(kPath, "username"));
    p.credentials->emplace("org", SecretBytes("org-1"));
    return providers_->Create(p, caller_);
  }
  std::string Field(const std::string& id, const std::string& field) {
    auto r = secrets_->Get(id, caller_);
    EXPECT_TRUE(r.ok()) << r.error().message;
    if (!r.ok()) return "";
    return std::string(r->credentials->fields.at(field).view());
  }
  std::string Source(const std::string& id) { return secrets_->Get(id, caller_)->source; }
  std::vector<AuditEvent> Events(const std::string& action) {
    std::vector<AuditEvent> out;
    for (auto& e : audit_.events()) {
      if (e.action == action) out.push_back(e);
    }
    return out;
  }

  testing::FakeDynamicSecrets source_;
};

TEST_F(DynamicSecretsTest, FieldsOfOnePathShareOneReadAndTheReferenceIsWhatIsStored) {
  auto p = CreateDb();
  ASSERT_TRUE(p.ok()) << p.error().message;
  EXPECT_TRUE(source_.reads().empty());  // read on use, not on write
  auto r = secrets_->Get(p->id, caller_);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->source, "store");
  EXPECT_EQ(std::string(r->credentials->fields.at("api_key").view()), std::string(kDynamicCanary) + "-p1");
  EXPECT_EQ(std::string(r->credentials->fields.at("user").view()), "u1");  // the same lease: they match
  EXPECT_EQ(std::string(r->credentials->fields.at("org").view()), "org-1");
  EXPECT_EQ(source_.reads(), std::vector<std::string>{kPath});
  EXPECT_EQ(Source(p->id), "cache");
  EXPECT_EQ(source_.reads().size(), 1u);
  // The sealed payload holds the reference, never a resolved value.
  auto raw = secrets_->ReadRaw(p->id);
  auto opened = secrets_->sealer().Open(secrets_->SecretName(p->id), (*raw)->value);
  ASSERT_TRUE(opened.ok());
  EXPECT_EQ(std::string(opened->payload.view()),
            R"({"api_key":{"field":"password","vault":"database/creds/readonly"},"org":"org-1",)"
            R"("user":{"field":"username","vault":"database/creds/readonly"}})");
  // No value in the audit log.
  for (const auto& e : audit_.events()) EXPECT_EQ(e.detail.find(kDynamicCanary), std::string::npos) << e.action;
}

TEST_F(DynamicSecretsTest, TheCacheKeepsThemUntilTheLeasesLastThirdThenRenews) {
  source_.ttl = 60s;  // shorter than the cache's 300 s
  auto p = CreateDb();
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(Field(p->id, "api_key"), std::string(kDynamicCanary) + "-p1");
  clock_.Advance(39s);
  EXPECT_EQ(Source(p->id), "cache");
  EXPECT_TRUE(source_.renewals().empty());
  clock_.Advance(1s);  // 40 s: the last third of the lease
  EXPECT_EQ(Source(p->id), "store");
  EXPECT_EQ(source_.renewals(), std::vector<std::string>{std::string(kPath) + "/1"});
  EXPECT_EQ(source_.reads().size(), 1u);  // renewed, not read again
  EXPECT_EQ(Field(p->id, "api_key"), std::string(kDynamicCanary) + "-p1");
  // Renewed for 60 s from t=40: the next renewal at t=80.
  clock_.Advance(39s);
  EXPECT_EQ(Source(p->id), "cache");
  clock_.Advance(1s);
  EXPECT_EQ(Source(p->id), "store");
  EXPECT_EQ(source_.renewals().size(), 2u);
  EXPECT_EQ(source_.reads().size(), 1u);
}

TEST_F(DynamicSecretsTest, ALeaseLongerThanTheCacheTtlIsReusedAfterTheCacheExpires) {
  source_.ttl = 3600s;
  auto p = CreateDb();
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(Field(p->id, "user"), "u1");
  clock_.Advance(301s);
  EXPECT_EQ(Source(p->id), "store");  // the cache TTL ran out: the store is read again
  EXPECT_EQ(Field(p->id, "user"), "u1");  // … but the lease is still good: no new database role
  EXPECT_EQ(source_.reads().size(), 1u);
  EXPECT_TRUE(source_.renewals().empty());
  auto report = providers_->Validate(p->id, caller_);
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->valid);
  std::map<std::string, int64_t> ttl{{"api_key", 3299}, {"user", 3299}};
  EXPECT_EQ(report->lease_ttl_seconds, ttl);
}

TEST_F(DynamicSecretsTest, ARefusedRenewalReadsTheSecretAgain) {
  auto p = CreateDb();
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(Field(p->id, "user"), "u1");
  source_.renew_error = MakeError(ErrorCode::kInvalidArgument, "lease.renew: HTTP 400: lease not found");
  clock_.Advance(40s);
  EXPECT_EQ(Field(p->id, "user"), "u2");
  EXPECT_EQ(Field(p->id, "api_key"), std::string(kDynamicCanary) + "-p2");
  EXPECT_EQ(source_.reads().size(), 2u);
  // The old lease is revoked, not left live until its max TTL.
  EXPECT_EQ(source_.revoked(), std::vector<std::string>{std::string(kPath) + "/1"});
}

TEST_F(DynamicSecretsTest, AReplacedLeaseIsRevokedQuietlyEvenWhenTheRevokeFailsButNotOnceItHasEnded) {
  auto p = CreateDb();
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(Field(p->id, "user"), "u1");
  source_.renew_error = MakeError(ErrorCode::kInvalidArgument, "lease.renew: HTTP 400: lease not found");
  source_.revoke_error = MakeError(ErrorCode::kPermissionDenied, "lease.revoke: HTTP 403: permission denied");
  clock_.Advance(40s);
  EXPECT_EQ(Field(p->id, "user"), "u2");  // the failed revoke does not fail the read
  EXPECT_EQ(source_.revoked(), std::vector<std::string>{std::string(kPath) + "/1"});
  EXPECT_EQ(secrets_->leased()->LeaseCount(p->id), 1u);
  // A lease found after its end is gone already: read again, nothing to revoke.
  source_.revoke_error.reset();
  clock_.Advance(61s);
  EXPECT_EQ(Field(p->id, "user"), "u3");
  EXPECT_EQ(source_.revoked().size(), 1u);
}

TEST_F(DynamicSecretsTest, ARenewalCutShortByTheMaxTtlReadsAgain) {
  auto p = CreateDb();
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(Field(p->id, "user"), "u1");
  source_.renew_grant = 29s;  // less than half of the 60 s asked for
  clock_.Advance(40s);
  EXPECT_EQ(Field(p->id, "user"), "u2");
  EXPECT_EQ(source_.renewals().size(), 1u);
  EXPECT_EQ(source_.revoked(), std::vector<std::string>{std::string(kPath) + "/1"});
}

TEST_F(DynamicSecretsTest, ANonRenewableLeaseIsReadAgainInItsLastThird) {
  source_.renewable = false;
  auto p = CreateDb();
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(Field(p->id, "user"), "u1");
  clock_.Advance(40s);
  EXPECT_EQ(Field(p->id, "user"), "u2");
  EXPECT_TRUE(source_.renewals().empty());
  EXPECT_EQ(source_.revoked(), std::vector<std::string>{std::string(kPath) + "/1"});
}

TEST_F(DynamicSecretsTest, ARenewalThatCannotReachTheBackendKeepsTheLeaseUntilItEnds) {
  auto p = CreateDb();
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(Field(p->id, "user"), "u1");
  source_.renew_error = MakeError(ErrorCode::kUnavailable, "lease.renew: HTTP 503: Vault is sealed");
  clock_.Advance(40s);
  EXPECT_EQ(Field(p->id, "user"), "u1");
  EXPECT_EQ(source_.renewals().size(), 1u);
  EXPECT_EQ(Source(p->id), "cache");  // not asked again on every read: (60-40)/4 = 5 s later
  clock_.Advance(5s);
  source_.renew_error.reset();
  EXPECT_EQ(Field(p->id, "user"), "u1");
  EXPECT_EQ(source_.renewals().size(), 2u);
  EXPECT_EQ(source_.reads().size(), 1u);
}

TEST_F(DynamicSecretsTest, AnUnreachableSourceFallsBackLikeAnUnreachableStore) {
  Build(&source_, EnvMap{{"DYAD_PROVIDER_DB_API_KEY", "from-env"}});
  auto p = CreateDb();
  ASSERT_TRUE(p.ok());
  source_.read_error = MakeError(ErrorCode::kUnavailable, "dynamic.read: HTTP 503: Vault is sealed");
  auto r = secrets_->Get(p->id, caller_);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->source, "fallback");
  EXPECT_EQ(std::string(r->credentials->fields.at("api_key").view()), "from-env");
  // Permission denied never falls back, and names the fields and the path.
  source_.read_error = MakeError(ErrorCode::kPermissionDenied, "dynamic.read: HTTP 403: permission denied");
  auto denied = secrets_->Get(p->id, caller_);
  ASSERT_EQ(denied.code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(denied.error().message, "credentials.api_key, credentials.user (dynamic secret database/creds/readonly): "
                                    "dynamic.read: HTTP 403: permission denied");
}

TEST_F(DynamicSecretsTest, AFieldTheSecretDoesNotHaveIsNamedWithoutAnyValue) {
  ProviderPatch patch;
  patch.name = patch.slug = "typo";
  patch.type = "http-sdk";
  patch.adapter_config_json = R"({"baseUrl":"http://127.0.0.1:9"})";
  patch.credentials = CredentialFields{};
  patch.credentials->emplace("api_key", Ref(kPath, "passwd"));
  auto p = providers_->Create(patch, caller_);
  ASSERT_TRUE(p.ok());
  auto r = secrets_->Get(p->id, caller_);
  ASSERT_EQ(r.code(), ErrorCode::kFailedPrecondition);
  // The field asked for only: not the names of the secret's others.
  EXPECT_EQ(r.error().message, "credentials.api_key: the dynamic secret database/creds/readonly has no string field "
                               "'passwd'");
  auto report = providers_->Validate(p->id, caller_);
  ASSERT_TRUE(report.ok());
  EXPECT_FALSE(report->valid);
}

TEST_F(DynamicSecretsTest, DeletingTheProviderRevokesItsLeaseEvenWhenTheRevokeFails) {
  auto p = CreateDb();
  ASSERT_TRUE(p.ok());
  Field(p->id, "user");
  ASSERT_EQ(secrets_->leased()->LeaseCount(p->id), 1u);
  ASSERT_TRUE(providers_->Delete(p->id, caller_).ok());
  EXPECT_EQ(source_.revoked(), std::vector<std::string>{std::string(kPath) + "/1"});
  EXPECT_EQ(secrets_->leased()->LeaseCount(p->id), 0u);
  auto revokes = Events("lease.revoke");
  ASSERT_EQ(revokes.size(), 1u);
  EXPECT_EQ(revokes[0].outcome, "success");
  EXPECT_EQ(revokes[0].actor, "tester");
  // A failing revoke never blocks the delete; it is audited.
  auto q = CreateDb("db2");
  ASSERT_TRUE(q.ok());
  Field(q->id, "user");
  source_.revoke_error = MakeError(ErrorCode::kPermissionDenied, "lease.revoke: HTTP 403: permission denied");
  EXPECT_TRUE(providers_->Delete(q->id, caller_).ok());
  EXPECT_EQ(repo_->Get(q->id).code(), ErrorCode::kNotFound);
  revokes = Events("lease.revoke");
  ASSERT_EQ(revokes.size(), 2u);
  EXPECT_EQ(revokes[1].outcome, "failure");
  EXPECT_NE(revokes[1].detail.find("lease.revoke: HTTP 403: permission denied"), std::string::npos);
}

TEST_F(DynamicSecretsTest, ReplacingTheCredentialsRevokesTheOldLeaseAndReadsAgain) {
  auto p = CreateDb();
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(Field(p->id, "user"), "u1");
  CredentialFields next;
  next.emplace("api_key", Ref(kPath, "password"));
  ASSERT_TRUE(providers_->RotateCredentials(p->id, next, caller_).ok());
  EXPECT_EQ(source_.revoked(), std::vector<std::string>{std::string(kPath) + "/1"});
  EXPECT_EQ(Field(p->id, "api_key"), std::string(kDynamicCanary) + "-p2");
  // Replaced by plain values: the lease goes too, and nothing is read.
  CredentialFields plain;
  plain.emplace("api_key", SecretBytes("sk-plain"));
  ASSERT_TRUE(providers_->RotateCredentials(p->id, plain, caller_).ok());
  EXPECT_EQ(source_.revoked().size(), 2u);
  EXPECT_EQ(Field(p->id, "api_key"), "sk-plain");
  EXPECT_EQ(source_.reads().size(), 2u);
}

TEST_F(DynamicSecretsTest, ASecretWithoutALeaseIsReadOnEachLoadAndNeverRevoked) {
  source_.leased = false;  // a KV secret
  auto p = CreateDb();
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(Field(p->id, "user"), "u1");
  EXPECT_EQ(Source(p->id), "cache");
  clock_.Advance(301s);  // the cache TTL bounds it
  EXPECT_EQ(Field(p->id, "user"), "u2");
  EXPECT_EQ(secrets_->leased()->LeaseCount(p->id), 0u);
  auto report = providers_->Validate(p->id, caller_);
  EXPECT_TRUE(report->lease_ttl_seconds.empty());
  ASSERT_TRUE(providers_->Delete(p->id, caller_).ok());
  EXPECT_TRUE(source_.revoked().empty());
}

TEST_F(DynamicSecretsTest, WithoutASourceAReferenceIsRefusedNamingTheField) {
  Build(nullptr);
  auto p = CreateDb();
  ASSERT_EQ(p.code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(p.error().message,
            "credentials.api_key: references a Vault secret, but SECRETS_PROVIDER=memory has no dynamic secrets");
  EXPECT_EQ(store_.size(), 0u);
  EXPECT_EQ(repo_->List(0, 10)->total, 0);
  // Stored under another configuration: a read says so, and does not serve
  // the reference as a value.
  Build(&source_);
  auto made = CreateDb();
  ASSERT_TRUE(made.ok());
  Build(nullptr);
  auto r = secrets_->Get(made->id, caller_);
  ASSERT_EQ(r.code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(r.error().message.find("refer to dynamic secrets, but SECRETS_PROVIDER=memory has none"),
            std::string::npos);
}

TEST_F(DynamicSecretsTest, APathTheSourceRefusesIsA400NamingTheFieldAndNothingIsStored) {
  source_.refused_prefix = "secret/";
  ProviderPatch patch;
  patch.name = patch.slug = "victim-reader";
  patch.type = "http-sdk";
  patch.adapter_config_json = R"({"baseUrl":"http://127.0.0.1:9","auth":{"template":"Bearer {token}"}})";
  patch.credentials = CredentialFields{};
  patch.credentials->emplace("org", SecretBytes("org-1"));
  patch.credentials->emplace("token", Ref("secret/data/dyad-gateway/providers/victim", "api_key"));
  auto p = providers_->Create(patch, caller_);
  ASSERT_EQ(p.code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(p.error().message, "credentials.token: references a Vault secret outside VAULT_DYNAMIC_PATHS");
  EXPECT_EQ(store_.size(), 0u);
  EXPECT_EQ(repo_->List(0, 10)->total, 0);
  EXPECT_TRUE(source_.reads().empty());
  // A rotation to such a reference is refused the same way.
  auto made = CreateDb();
  ASSERT_TRUE(made.ok());
  CredentialFields next;
  next.emplace("api_key", Ref("secret/data/x", "api_key"));
  auto rotated = providers_->RotateCredentials(made->id, next, caller_);
  ASSERT_EQ(rotated.code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(rotated.error().message, "credentials.api_key: references a Vault secret outside VAULT_DYNAMIC_PATHS");
  EXPECT_EQ(Field(made->id, "user"), "u1");
}

TEST_F(DynamicSecretsTest, ReferencesChangedBehindTheGatewayDropTheLeasesNoLongerReferredTo) {
  auto p = CreateDb();
  ASSERT_TRUE(p.ok());
  Field(p->id, "user");
  // Another instance rotated the credentials (a new version, another path):
  // this one learns it on its next load and revokes what it held.
  Credentials next;
  next.version = 2;
  next.fields.emplace("api_key", Ref("database/creds/other", "password"));
  ASSERT_TRUE(secrets_->leased()->Resolve(p->id, next).ok());
  EXPECT_EQ(source_.revoked(), std::vector<std::string>{std::string(kPath) + "/1"});
  EXPECT_EQ(std::string(next.fields.at("api_key").view()), std::string(kDynamicCanary) + "-p2");
  EXPECT_EQ(next.lease_ends.size(), 1u);
  EXPECT_EQ(next.usable_until, clock_.Now() + 60s);
  EXPECT_EQ(next.refresh_by, clock_.Now() + 40s);
}

}  // namespace
}  // namespace dyad
