#include "service/env_import.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "backends/environment/local_keyring.h"
#include "registry/sqlite_key_version_repository.h"
#include "registry/sqlite_provider_repository.h"
#include "testing/fakes.h"
#include "testing/service_fixture.h"

namespace dyad {
namespace {

using namespace std::chrono_literals;

constexpr char kOld[] = "sk-OLD-CANARY-1b2c";
constexpr char kEnvKey[] = "sk-ENV-CANARY-9f8e";
constexpr char kEnvOrg[] = "org-ENV-CANARY-77aa";

class EnvImportTest : public testing::ServiceFixture {
 protected:
  void SetUp() override {
    ServiceFixture::SetUp();
    caller_ = Caller{"cli", ""};
    Build({});
  }
  // The services as a process started with `env` sees them.
  void Build(const EnvMap& env, bool env_is_source = false) {
    SecretsOptions o;
    o.cache.ttl = 300s;
    o.env_is_source = env_is_source;
    ServiceFixture::Build(o, env);
  }
  Provider Create(const std::string& slug, std::optional<CredentialFields> credentials) {
    ProviderPatch p;
    p.name = slug;
    p.slug = slug;
    p.type = "http-sdk";
    // A write without auth.template's fields is refused: a provider stored
    // without an api_key sends a field it has.
    const std::string sent = credentials && !credentials->empty() && !credentials->contains("api_key")
                                 ? credentials->begin()->first
                                 : "api_key";
    p.adapter_config_json = R"({"baseUrl":"http://127.0.0.1:9","auth":{"template":"Bearer {)" + sent + R"(}"}})";
    p.credentials = std::move(credentials);
    auto r = providers_->Create(p, caller_);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    return *r;
  }
  static CredentialFields Fields(std::initializer_list<std::pair<const char*, const char*>> kv) {
    CredentialFields out;
    for (auto [k, v] : kv) out.emplace(k, SecretBytes(v));
    return out;
  }
  // What a process started without any DYAD_PROVIDER_* variable reads.
  std::map<std::string, std::string> ReadWithoutVariables(const std::string& id) {
    Build({});
    auto r = secrets_->Get(id, caller_);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    std::map<std::string, std::string> out;
    if (!r.ok()) return out;
    EXPECT_EQ(r->source, "store");
    for (const auto& [k, v] : r->credentials->fields) out.emplace(k, std::string(v.view()));
    return out;
  }
  static std::string Text(const EnvImportReport& r) {
    std::string all;
    for (const auto& i : r.items) {
      all += i.provider_id + i.slug + i.outcome + i.error;
      for (const auto& v : i.variables) all += v;
    }
    for (const auto& v : r.unknown) all += v;
    for (const auto& v : r.removable) all += v;
    return all;
  }
  const EnvImportItem* Item(const EnvImportReport& r, const std::string& slug) {
    auto it = std::find_if(r.items.begin(), r.items.end(), [&](const EnvImportItem& i) { return i.slug == slug; });
    return it == r.items.end() ? nullptr : &*it;
  }
};

// A stored value is never replaced by its variable: it may have been rotated
// through the API since the variable was set.
TEST_F(EnvImportTest, StoresTheVariablesOfFieldsNotStoredAndKeepsTheStoredOnes) {
  Provider p = Create("open-ai", Fields({{"org_id", kOld}, {"base", "kept"}}));
  Build({{"DYAD_PROVIDER_OPEN_AI_API_KEY", kEnvKey}, {"DYAD_PROVIDER_OPEN_AI_ORG_ID", kEnvOrg}});
  auto r = ImportEnvironmentCredentials(*providers_, *secrets_, false, caller_);
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->items.size(), 1u);
  EXPECT_EQ(r->items[0].outcome, "stored");
  EXPECT_EQ(r->stored, 1);
  EXPECT_EQ(r->items[0].conflicts, (std::vector<std::string>{"DYAD_PROVIDER_OPEN_AI_ORG_ID"}));
  EXPECT_EQ(r->conflicts, 1);
  EXPECT_EQ(r->removable, (std::vector<std::string>{"DYAD_PROVIDER_OPEN_AI_API_KEY"}));
  auto read = ReadWithoutVariables(p.id);
  EXPECT_EQ(read["api_key"], kEnvKey);
  EXPECT_EQ(read["org_id"], kOld);  // stored: kept
  EXPECT_EQ(read["base"], "kept");  // a field with no variable keeps its stored value
  auto row = repo_->Get(p.id);
  ASSERT_TRUE(row.ok());
  EXPECT_EQ(row->credentials_version, p.credentials_version + 1);
  // Audited as a credential write, fields named, no value anywhere.
  bool audited = false;
  for (const auto& e : audit_.events()) {
    if (e.action == "credentials.rotate" && e.resource == p.id && e.outcome == "success") audited = true;
  }
  EXPECT_TRUE(audited);
  for (const auto& [name, value] : store_.data()) EXPECT_EQ(value.find(kEnvKey), std::string::npos) << "sealed";
  EXPECT_EQ(Text(*r).find("CANARY"), std::string::npos);
}

// Under the provider's lock too: a field stored by the time the write runs
// (a rotation since import-env read it) is not replaced.
TEST_F(EnvImportTest, ImportCredentialsNeverReplacesAStoredField) {
  Provider p = Create("open-ai", Fields({{"api_key", kOld}}));
  auto written = providers_->ImportCredentials(p.id, Fields({{"api_key", kEnvKey}, {"org_id", kEnvOrg}}), caller_);
  ASSERT_TRUE(written.ok()) << written.error().message;
  auto read = ReadWithoutVariables(p.id);
  EXPECT_EQ(read["api_key"], kOld);
  EXPECT_EQ(read["org_id"], kEnvOrg);
}

TEST_F(EnvImportTest, DryRunWritesNothingAndSaysWhatItWouldStore) {
  Provider p = Create("gemini", Fields({{"org_id", kOld}}));  // api_key not stored: would be filled
  auto before = store_.data();
  Build({{"DYAD_PROVIDER_GEMINI_API_KEY", kEnvKey}});
  auto r = ImportEnvironmentCredentials(*providers_, *secrets_, true, caller_);
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->items.size(), 1u);
  EXPECT_EQ(r->items[0].outcome, "would store");
  EXPECT_EQ(r->would_store, 1);
  EXPECT_EQ(r->stored, 0);
  EXPECT_TRUE(r->removable.empty());
  EXPECT_EQ(store_.data(), before);
  EXPECT_EQ(repo_->Get(p.id)->credentials_version, p.credentials_version);
  EXPECT_EQ(ReadWithoutVariables(p.id), (std::map<std::string, std::string>{{"org_id", kOld}}));
  EXPECT_EQ(Text(*r).find("CANARY"), std::string::npos);
}

TEST_F(EnvImportTest, EqualStoredCredentialsAreUnchangedAndNotWritten) {
  Provider p = Create("anthropic", Fields({{"api_key", kEnvKey}}));
  auto before = store_.data();
  Build({{"DYAD_PROVIDER_ANTHROPIC_API_KEY", kEnvKey}});
  auto r = ImportEnvironmentCredentials(*providers_, *secrets_, false, caller_);
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->items.size(), 1u);
  EXPECT_EQ(r->items[0].outcome, "unchanged");
  EXPECT_EQ(r->unchanged, 1);
  EXPECT_EQ(store_.data(), before);
  EXPECT_EQ(repo_->Get(p.id)->credentials_version, p.credentials_version);
  EXPECT_EQ(r->removable, (std::vector<std::string>{"DYAD_PROVIDER_ANTHROPIC_API_KEY"}));
}

TEST_F(EnvImportTest, ProvidersWithoutVariablesAreLeftAloneAndStrayVariablesAreUnknown) {
  Provider quiet = Create("quiet", Fields({{"api_key", kOld}}));
  Provider p = Create("openai", Fields({{"org_id", kOld}}));  // api_key not stored: filled
  auto quiet_before = store_.data().at(store_.SecretName(quiet.id));
  Build({{"DYAD_PROVIDER_OPENAI_API_KEY", kEnvKey},
         {"DYAD_PROVIDER_OPENAI_REGION", "x"},  // no such field of openai
         {"DYAD_PROVIDER_NOBODY_API_KEY", kEnvKey},
         {"DYAD_PROVIDER_QUIET_API_KEY", ""}});  // empty: as unset
  auto r = ImportEnvironmentCredentials(*providers_, *secrets_, false, caller_);
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->items.size(), 1u);
  EXPECT_EQ(r->items[0].slug, "openai");
  EXPECT_EQ(Item(*r, "quiet"), nullptr);
  EXPECT_EQ(store_.data().at(store_.SecretName(quiet.id)), quiet_before);
  EXPECT_EQ(r->unknown, (std::vector<std::string>{"DYAD_PROVIDER_NOBODY_API_KEY", "DYAD_PROVIDER_OPENAI_REGION"}));
  EXPECT_EQ(r->removable, (std::vector<std::string>{"DYAD_PROVIDER_OPENAI_API_KEY"}));
  EXPECT_EQ(Text(*r).find("CANARY"), std::string::npos);
}

TEST_F(EnvImportTest, AProviderReadingTheEnvironmentGetsItsVariablesStored) {
  // SECRETS_PROVIDER=environment: a provider created without credentials
  // reads them from its variables; import-env stores that set.
  Build({}, /*env_is_source=*/true);
  Provider p = Create("local", std::nullopt);
  Build({{"DYAD_PROVIDER_LOCAL_API_KEY", kEnvKey}}, true);
  ASSERT_EQ(secrets_->Get(p.id, caller_)->source, "environment");
  auto r = ImportEnvironmentCredentials(*providers_, *secrets_, false, caller_);
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->items.size(), 1u);
  EXPECT_EQ(r->items[0].outcome, "stored") << r->items[0].error;
  EXPECT_EQ(ReadWithoutVariables(p.id)["api_key"], kEnvKey);
}

// A dry run judges the write as the real run does: the same refusal. The
// other fields auth.template sends are not read from the environment: a
// slug and a field can spell another provider's variable.
TEST_F(EnvImportTest, ADryRunIsJudgedAsTheWriteAndOnlyApiKeyIsReadForATemplate) {
  Build({}, /*env_is_source=*/true);
  ProviderPatch patch;
  patch.name = patch.slug = "userkey";
  patch.type = "http-sdk";
  patch.adapter_config_json = R"({"baseUrl":"http://127.0.0.1:9","auth":{"template":"{user}:{api_key}"}})";
  auto p = providers_->Create(patch, caller_);
  ASSERT_TRUE(p.ok()) << p.error().message;
  Build({{"DYAD_PROVIDER_USERKEY_API_KEY", kEnvKey}}, true);
  std::string refusal;
  for (bool dry_run : {true, false}) {
    auto r = ImportEnvironmentCredentials(*providers_, *secrets_, dry_run, caller_);
    ASSERT_TRUE(r.ok()) << r.error().message;
    ASSERT_EQ(r->items.size(), 1u);
    EXPECT_EQ(r->items[0].outcome, "failed") << dry_run;
    EXPECT_NE(r->items[0].error.find("sends credential field 'user'"), std::string::npos) << r->items[0].error;
    if (dry_run) refusal = r->items[0].error;
    else EXPECT_EQ(r->items[0].error, refusal);
  }
  Build({{"DYAD_PROVIDER_USERKEY_API_KEY", kEnvKey}, {"DYAD_PROVIDER_USERKEY_USER", "u-1"}}, true);
  EXPECT_EQ(secrets_->Get(p->id, caller_)->credentials->fields.size(), 1u) << "{user}'s variable is not read";
  auto r = ImportEnvironmentCredentials(*providers_, *secrets_, false, caller_);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->items.at(0).outcome, "failed");
  EXPECT_EQ(r->unknown, (std::vector<std::string>{"DYAD_PROVIDER_USERKEY_USER"}));
}

// "google-api"'s field key and "google"'s api_key are both
// DYAD_PROVIDER_GOOGLE_API_KEY: read for neither, never one's sent as the
// other's (nor stored for it by import-env).
TEST_F(EnvImportTest, AVariableTwoProvidersSpellIsReadForNeither) {
  Build({}, /*env_is_source=*/true);
  Provider google = Create("google", std::nullopt);
  Provider other = Create("google-api", Fields({{"key", kOld}}));
  Build({{"DYAD_PROVIDER_GOOGLE_API_KEY", kEnvKey}, {"DYAD_PROVIDER_GOOGLE_API_API_KEY", "sk-own-canary"}}, true);
  EXPECT_TRUE(secrets_->EnvironmentVariables(google).empty());
  EXPECT_EQ(secrets_->EnvironmentVariables(other),
            (std::map<std::string, std::string>{{"api_key", "DYAD_PROVIDER_GOOGLE_API_API_KEY"}}));
  EXPECT_EQ(secrets_->Get(google.id, caller_).code(), ErrorCode::kNotFound);
  store_.Fail(MakeError(ErrorCode::kUnavailable, "store down"));
  auto fallback = secrets_->Get(other.id, caller_);
  store_.Fail(std::nullopt);
  ASSERT_TRUE(fallback.ok()) << fallback.error().message;
  EXPECT_EQ(fallback->credentials->fields.count("key"), 0u) << "google's key is not google-api's";
  auto r = ImportEnvironmentCredentials(*providers_, *secrets_, false, caller_);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->unknown, (std::vector<std::string>{"DYAD_PROVIDER_GOOGLE_API_KEY"}));
  EXPECT_EQ(ReadWithoutVariables(other.id).count("key"), 1u);
  EXPECT_NE(ReadWithoutVariables(other.id)["key"], kEnvKey);
  EXPECT_EQ(Text(*r).find(kEnvKey), std::string::npos);
}

TEST_F(EnvImportTest, AFailedProviderIsReportedAndTheOthersGoOn) {
  Create("first", Fields({{"api_key", kOld}}));
  Create("second", Fields({{"api_key", kOld}}));
  Build({{"DYAD_PROVIDER_FIRST_API_KEY", kEnvKey}, {"DYAD_PROVIDER_SECOND_API_KEY", kEnvKey}});
  store_.Fail(MakeError(ErrorCode::kUnavailable, "store down"));
  auto r = ImportEnvironmentCredentials(*providers_, *secrets_, false, caller_);
  store_.Fail(std::nullopt);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->failed, 2);
  EXPECT_TRUE(r->removable.empty());
  for (const auto& i : r->items) EXPECT_NE(i.error.find("store down"), std::string::npos);
}

}  // namespace
}  // namespace dyad
