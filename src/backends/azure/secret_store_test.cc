#include "testing/log_capture.h"
#include "backends/azure/secret_store.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <sstream>

#include "backends/azure/fake_key_vault.h"
#include "secrets/envelope.h"
#include "testing/fakes.h"

namespace dyad {
namespace {

using testing::FakeKeyVault;
using nlohmann::json;

using testing::LogCapture;

class AzureStoreTest : public ::testing::Test {
 protected:
  void Open(AzureSecretStoreOptions options = {}) {
    auto fake = std::make_unique<FakeKeyVault>();
    vault_ = fake.get();
    AzureClientOptions co;
    co.vault_url = FakeKeyVault::kUrl;
    client_ = std::move(AzureClient::Create(co, nullptr, std::move(fake), clock_, random_)).value();
    options.clock = &clock_;
    store_ = NewAzureSecretStore(options, *client_);
  }
  void SetUp() override { Open(); }

  json LatestTags(const std::string& name) {
    MutexLock lock(&vault_->mu());
    return vault_->secrets.at(name).versions.back().tags;
  }

  FakeClock clock_;
  testing::ConstantRandom random_{7};
  FakeKeyVault* vault_ = nullptr;
  std::unique_ptr<AzureClient> client_;
  std::unique_ptr<SecretStore> store_;
};

const std::string kName = "dyad-gateway--providers--openai";

TEST(AzureNaming, ProviderIdsMapReversiblyToKeyVaultNames) {
  EXPECT_EQ(KeyVaultNameOfId("openai"), "openai");
  const std::string uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
  EXPECT_EQ(KeyVaultNameOfId(uuid), uuid);
  // Upper case (Key Vault names compare case-insensitively), other
  // characters, and the escape marker itself are escaped.
  EXPECT_EQ(KeyVaultNameOfId("OpenAI"), "x--" + HexEncode("OpenAI"));
  EXPECT_EQ(KeyVaultNameOfId("a_b.c/d"), "x--" + HexEncode("a_b.c/d"));
  EXPECT_EQ(KeyVaultNameOfId("x--y"), "x--" + HexEncode("x--y"));
  EXPECT_EQ(KeyVaultNameOfId(""), "x--");
  for (std::string id : {"openai", "OpenAI", "a_b.c/d", "x--y", "é", uuid.c_str()}) {
    std::string part = KeyVaultNameOfId(id);
    EXPECT_TRUE(IsValidKeyVaultName(part)) << part;
    EXPECT_EQ(IdOfKeyVaultName(part), id);
  }
  // Parts no id maps to.
  for (std::string part : {"", "x--", "x--zz", "x--6", "x--4F", "x--6162" /* "ab": plain */, "ABC", "a_b"}) {
    EXPECT_FALSE(IdOfKeyVaultName(part)) << part;
  }
}

TEST(AzureNaming, KeyVaultNameRule) {
  EXPECT_TRUE(IsValidKeyVaultName("a-B-9"));
  EXPECT_TRUE(IsValidKeyVaultName(std::string(127, 'a')));
  EXPECT_FALSE(IsValidKeyVaultName(std::string(128, 'a')));
  EXPECT_FALSE(IsValidKeyVaultName(""));
  EXPECT_FALSE(IsValidKeyVaultName("a/b"));
  EXPECT_FALSE(IsValidKeyVaultName("a_b"));
  EXPECT_FALSE(IsValidKeyVaultName("a%2F"));
}

TEST_F(AzureStoreTest, NamesAndProbes) {
  EXPECT_EQ(store_->SecretName("openai"), kName);
  EXPECT_EQ(store_->ProviderIdOf(kName), "openai");
  EXPECT_EQ(store_->ProviderIdOf(store_->SecretName("Open_AI")), "Open_AI");
  EXPECT_EQ(store_->ProbeName("t1"), "dyad-gateway--probe--t1");
  EXPECT_FALSE(store_->ProviderIdOf("dyad-gateway--probe--t1"));
  EXPECT_FALSE(store_->ProviderIdOf("other--providers--openai"));
  EXPECT_FALSE(store_->ProviderIdOf("dyad-gateway--providers--"));
  EXPECT_FALSE(store_->HasConditionalWrites());
  EXPECT_EQ(store_->Name(), "azure");
}

TEST_F(AzureStoreTest, CreateTagsAndReadsBackTheLatestVersion) {
  auto v1 = store_->Create(kName, R"({"apiKey":"sk-1"})");
  ASSERT_TRUE(v1.ok()) << v1.error().message;
  EXPECT_EQ(*v1, FakeKeyVault::Version(1));
  auto got = store_->Get(kName);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->value, R"({"apiKey":"sk-1"})");
  EXPECT_EQ(got->version, *v1);
  EXPECT_EQ(LatestTags(kName), json({{"managed-by", "dyad-gateway"}, {"provider-id", "openai"}}));
  MutexLock lock(&vault_->mu());
  EXPECT_EQ(vault_->secrets.at(kName).versions.back().content_type, "application/json");
  EXPECT_EQ(vault_->calls[0].method, "GET");  // the look for a live secret first
  EXPECT_EQ(vault_->calls[1].method, "PUT");
  EXPECT_EQ(vault_->calls[1].url, std::string(FakeKeyVault::kUrl) + "/secrets/" + kName + "?api-version=7.5");
}

TEST_F(AzureStoreTest, AnEnvelopeIsTaggedWithItsCredentialsVersion) {
  Envelope e;
  e.kms = "azure-kv";
  e.key_id = "k";
  e.key_version = 2;
  e.credentials_version = 41;
  e.wrapped_dek = "w";
  e.nonce = std::string(12, 'n');
  e.ciphertext = std::string(20, 'c');
  ASSERT_TRUE(store_->Put(kName, SerializeEnvelope(e)).ok());
  EXPECT_EQ(LatestTags(kName)["credentials-version"], "41");
}

TEST_F(AzureStoreTest, CreateOfALiveOrDisabledSecretIsAlreadyExistsAndWritesNothing) {
  ASSERT_TRUE(store_->Create(kName, "a").ok());
  auto again = store_->Create(kName, "b");
  EXPECT_EQ(again.code(), ErrorCode::kAlreadyExists);
  {
    MutexLock lock(&vault_->mu());
    vault_->secrets.at(kName).enabled = false;
  }
  EXPECT_EQ(store_->Create(kName, "c").code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(vault_->CallsTo("PUT", "/secrets"), 1u);
  // A disabled secret reads as not there.
  EXPECT_EQ(store_->Get(kName).code(), ErrorCode::kNotFound);
  EXPECT_EQ(store_->Overwrite(kName, "d").code(), ErrorCode::kNotFound);
}

TEST_F(AzureStoreTest, ReplaceIsUnimplementedAndSendsNothing) {
  ASSERT_TRUE(store_->Create(kName, "a").ok());
  size_t before = vault_->calls.size();
  auto r = store_->Replace(kName, "b", FakeKeyVault::Version(1));
  EXPECT_EQ(r.code(), ErrorCode::kUnimplemented);
  EXPECT_EQ(vault_->calls.size(), before);
  auto many = store_->ReplaceMany({{kName, FakeKeyVault::Version(1), "b"}});
  EXPECT_EQ(many.code(), ErrorCode::kUnimplemented);
  EXPECT_EQ(store_->DeleteIfVersion(kName, FakeKeyVault::Version(1)).code(), ErrorCode::kUnimplemented);
  EXPECT_EQ(store_->Get(kName)->value, "a");
}

TEST_F(AzureStoreTest, OverwriteNeedsASecretAndWritesANewVersion) {
  EXPECT_EQ(store_->Overwrite(kName, "x").code(), ErrorCode::kNotFound);
  EXPECT_EQ(vault_->CallsTo("PUT", "/secrets"), 0u);
  ASSERT_TRUE(store_->Create(kName, "a").ok());
  auto v2 = store_->Overwrite(kName, "b");
  ASSERT_TRUE(v2.ok());
  EXPECT_EQ(*v2, FakeKeyVault::Version(2));
  EXPECT_EQ(store_->Get(kName)->value, "b");
}

TEST_F(AzureStoreTest, DeleteIsSoftAndAMissingSecretIsFine) {
  ASSERT_TRUE(store_->Create(kName, "a").ok());
  ASSERT_TRUE(store_->Delete(kName).ok());
  EXPECT_EQ(store_->Get(kName).code(), ErrorCode::kNotFound);
  EXPECT_TRUE(store_->Delete(kName).ok());
  MutexLock lock(&vault_->mu());
  EXPECT_EQ(vault_->deleted.count(kName), 1u);
}

TEST_F(AzureStoreTest, CreateOverASoftDeletedNameRecoversWaitsAndWritesANewVersion) {
  ASSERT_TRUE(store_->Create(kName, "old").ok());
  ASSERT_TRUE(store_->Delete(kName).ok());
  vault_->recover_lag = 3;  // the recovery completes after three looks
  auto v = store_->Create(kName, "new");
  ASSERT_TRUE(v.ok()) << v.error().message;
  EXPECT_EQ(store_->Get(kName)->value, "new");
  EXPECT_EQ(vault_->CallsTo("POST", "/deletedsecrets/" + kName + "/recover"), 1u);
  EXPECT_EQ(vault_->CallsTo("DELETE", "/deletedsecrets"), 0u);  // no purge without purge_on_delete
  EXPECT_GT(clock_.Slept(), Clock::Duration(0));
  MutexLock lock(&vault_->mu());
  EXPECT_EQ(vault_->secrets.at(kName).versions.size(), 2u);  // the old version is kept, the new one on top
}

TEST_F(AzureStoreTest, CreateRightAfterADeleteWaitsForTheDeleteThenRecovers) {
  ASSERT_TRUE(store_->Create(kName, "old").ok());
  vault_->delete_lag = 2;  // "currently being deleted" twice
  ASSERT_TRUE(store_->Delete(kName).ok());
  auto v = store_->Create(kName, "new");
  ASSERT_TRUE(v.ok()) << v.error().message;
  EXPECT_EQ(store_->Get(kName)->value, "new");
  EXPECT_EQ(vault_->CallsTo("PUT", "/secrets/" + kName), 5u);  // the first, two refused, one soft-deleted, the write
  EXPECT_EQ(vault_->CallsTo("POST", "/deletedsecrets/" + kName + "/recover"), 1u);
}

TEST_F(AzureStoreTest, ADeleteThatNeverCompletesGivesUpBounded) {
  ASSERT_TRUE(store_->Create(kName, "old").ok());
  vault_->delete_lag = 1000;
  ASSERT_TRUE(store_->Delete(kName).ok());
  EXPECT_EQ(store_->Put(kName, "new").code(), ErrorCode::kConflict);
  EXPECT_LT(vault_->CallsTo("PUT", "/secrets/"), 20u);
  EXPECT_LT(clock_.Slept(), std::chrono::minutes(1));
}

TEST_F(AzureStoreTest, ARecoveryThatNeverCompletesGivesUpBounded) {
  ASSERT_TRUE(store_->Create(kName, "old").ok());
  ASSERT_TRUE(store_->Delete(kName).ok());
  vault_->recover_lag = 1000;
  auto v = store_->Create(kName, "new");
  EXPECT_EQ(v.code(), ErrorCode::kUnavailable);
  EXPECT_NE(v.error().message.find("still not readable"), std::string::npos);
  EXPECT_LT(clock_.Slept(), std::chrono::minutes(1));
  EXPECT_LT(vault_->CallsTo("GET", "/secrets/"), 20u);
}

TEST_F(AzureStoreTest, WithPurgeOnDeleteASoftDeletedNameIsPurgedAndThePutRetried) {
  AzureSecretStoreOptions o;
  o.purge_on_delete = true;
  Open(o);
  ASSERT_TRUE(store_->Create(kName, "old").ok());
  ASSERT_TRUE(store_->Delete(kName).ok());
  vault_->purge_lag = 2;  // two PUTs refused while the purge completes
  auto v = store_->Put(kName, "new");
  ASSERT_TRUE(v.ok()) << v.error().message;
  EXPECT_EQ(store_->Get(kName)->value, "new");
  EXPECT_EQ(vault_->CallsTo("DELETE", "/deletedsecrets/" + kName), 1u);
  EXPECT_EQ(vault_->CallsTo("POST", "/deletedsecrets"), 0u);
  MutexLock lock(&vault_->mu());
  EXPECT_EQ(vault_->secrets.at(kName).versions.size(), 1u);
}

TEST_F(AzureStoreTest, DeleteNowPurgesOnlyWhenPermittedAndWaitsForTheDelete) {
  ASSERT_TRUE(store_->Create(kName, "a").ok());
  ASSERT_TRUE(store_->DeleteNow(kName).ok());
  EXPECT_EQ(vault_->CallsTo("DELETE", "/deletedsecrets"), 0u);

  AzureSecretStoreOptions o;
  o.purge_on_delete = true;
  Open(o);
  ASSERT_TRUE(store_->Create(kName, "a").ok());
  vault_->delete_lag = 2;  // "currently being deleted" twice
  ASSERT_TRUE(store_->DeleteNow(kName).ok());
  EXPECT_EQ(vault_->CallsTo("DELETE", "/deletedsecrets/" + kName), 3u);
  MutexLock lock(&vault_->mu());
  EXPECT_EQ(vault_->deleted.count(kName), 0u);
  EXPECT_EQ(vault_->secrets.count(kName), 0u);
}

TEST_F(AzureStoreTest, WithPurgeOnDeleteAPutRightAfterADeleteWaitsThenPurges) {
  AzureSecretStoreOptions o;
  o.purge_on_delete = true;
  Open(o);
  ASSERT_TRUE(store_->Create(kName, "old").ok());
  vault_->delete_lag = 2;
  ASSERT_TRUE(store_->Delete(kName).ok());
  ASSERT_TRUE(store_->Put(kName, "new").ok());
  EXPECT_EQ(store_->Get(kName)->value, "new");
  EXPECT_EQ(vault_->CallsTo("DELETE", "/deletedsecrets/" + kName), 1u);
  MutexLock lock(&vault_->mu());
  EXPECT_EQ(vault_->secrets.at(kName).versions.size(), 1u);
}

TEST_F(AzureStoreTest, DeleteNowOfANameWithNoSecretPurgesOnceAndDoesNotWait) {
  AzureSecretStoreOptions o;
  o.purge_on_delete = true;
  Open(o);
  ASSERT_TRUE(store_->DeleteNow(kName).ok());
  EXPECT_EQ(vault_->CallsTo("DELETE", "/deletedsecrets/" + kName), 1u);
  EXPECT_EQ(clock_.Slept(), Clock::Duration(0));
  // One already soft-deleted is purged.
  ASSERT_TRUE(store_->Create(kName, "a").ok());
  ASSERT_TRUE(store_->Delete(kName).ok());
  ASSERT_TRUE(store_->DeleteNow(kName).ok());
  MutexLock lock(&vault_->mu());
  EXPECT_EQ(vault_->deleted.count(kName), 0u);
}

TEST_F(AzureStoreTest, ARefusedPurgeIsLoggedOnceNamingTheRoleAndThePermission) {
  LogCapture log;
  AzureSecretStoreOptions o;
  o.purge_on_delete = true;
  Open(o);
  vault_->forbid_purge = true;
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(store_->Create(kName, "a").ok());
    ASSERT_TRUE(store_->DeleteNow(kName).ok());  // soft-deleted: done as far as it can be
    {
      MutexLock lock(&vault_->mu());
      vault_->deleted.clear();
    }
  }
  EXPECT_EQ(log.Count("purging deleted secrets is not permitted"), 1u);
  EXPECT_EQ(log.Count("secrets/purge/action"), 1u);
  EXPECT_GE(log.Count("Key Vault Secrets Officer"), 1u);
}

TEST_F(AzureStoreTest, ListFollowsNextLinkAndKeepsOnlyProviderSecretsUnderThePrefix) {
  for (std::string n : {kName, std::string("dyad-gateway--providers--b"), std::string("dyad-gateway--probe--t"),
                        std::string("other--providers--c"), std::string("dyad-gateway--providers--ABC"),
                        std::string("dyad-gateway--providers--x--zz")}) {
    ASSERT_TRUE(store_->Put(n, "v").ok()) << n;
  }
  auto listed = store_->List();
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].name, "dyad-gateway--providers--b");
  EXPECT_EQ((*listed)[1].name, kName);
  ASSERT_TRUE((*listed)[1].changed_at);
  EXPECT_EQ(std::chrono::duration_cast<std::chrono::seconds>((*listed)[1].changed_at->time_since_epoch()).count(),
            1767225601);
  EXPECT_EQ(vault_->CallsTo("GET", "/secrets"), 3u);  // six secrets, two a page
  EXPECT_NE(vault_->calls.back().url.find("$skiptoken=4"), std::string::npos);
}

TEST_F(AzureStoreTest, ListRefusesANextLinkOnAnotherHostAndAMalformedPage) {
  vault_->inject.push_back({200, R"({"value":[],"nextLink":"https://evil.test/secrets?$skiptoken=1"})"});
  auto listed = store_->List();
  EXPECT_EQ(listed.code(), ErrorCode::kUnavailable);
  EXPECT_EQ(vault_->calls.size(), 1u);
  vault_->inject.push_back({200, R"({"value":{"id":"x"}})"});
  EXPECT_EQ(store_->List().code(), ErrorCode::kUnavailable);
}

TEST_F(AzureStoreTest, ValuesOverTheLimitOrNotUtf8AreRefusedBeforeSending) {
  EXPECT_TRUE(store_->Put(kName, std::string(25 * 1024, 'a')).ok());
  size_t before = vault_->calls.size();
  auto big = store_->Create("dyad-gateway--providers--b", std::string(25 * 1024 + 1, 'a'));
  EXPECT_EQ(big.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(big.error().message.find("25600"), std::string::npos);
  EXPECT_EQ(store_->Put(kName, "\xff\xfe").code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(store_->Overwrite(kName, std::string(1 << 20, 'a')).code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(vault_->calls.size(), before);
}

TEST_F(AzureStoreTest, NamesKeyVaultDoesNotAllowAreRefusedBeforeSending) {
  for (const std::string& n : std::vector<std::string>{"../keys/k", "a/b", "", std::string(128, 'a'), "a?x=1"}) {
    EXPECT_EQ(store_->Get(n).code(), ErrorCode::kInvalidArgument) << n;
    EXPECT_EQ(store_->Put(n, "v").code(), ErrorCode::kInvalidArgument) << n;
    EXPECT_EQ(store_->Delete(n).code(), ErrorCode::kInvalidArgument) << n;
  }
  EXPECT_TRUE(vault_->calls.empty());
}

TEST_F(AzureStoreTest, AForbiddenCallNamesTheRole) {
  vault_->forbidden.insert("GET /secrets");
  auto got = store_->Get(kName);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(got.error().message.find("Key Vault Secrets Officer"), std::string::npos);
  EXPECT_EQ(store_->List().code(), ErrorCode::kPermissionDenied);
}

TEST_F(AzureStoreTest, MalformedAnswersAreUnavailableNotValues) {
  vault_->inject.push_back({200, "not json"});
  EXPECT_EQ(store_->Get(kName).code(), ErrorCode::kUnavailable);
  vault_->inject.push_back({200, R"({"value":5,"id":"https://vault.test/secrets/n/1"})"});
  EXPECT_EQ(store_->Get(kName).code(), ErrorCode::kUnavailable);
  vault_->inject.push_back({200, R"({"value":"v"})"});
  EXPECT_EQ(store_->Get(kName).code(), ErrorCode::kUnavailable);
  vault_->inject.push_back({200, R"({"value":"v","id":"https://vault.test/secrets/n/1","attributes":{"enabled":false}})"});
  EXPECT_EQ(store_->Get(kName).code(), ErrorCode::kNotFound);
  vault_->inject.push_back({200, R"({"value":"v","id":"https://vault.test/secrets/n/1","attributes":{"enabled":"no"}})"});
  EXPECT_TRUE(store_->Get(kName).ok());  // a wrong type is not a disabled secret, and throws nothing
  vault_->inject.push_back({200, R"({"value":[],"nextLink":5})"});
  EXPECT_TRUE(store_->List().ok());
  vault_->inject.push_back({200, R"({"value":[{"id":"https://vault.test/secrets/dyad-gateway--providers--a",
                                     "attributes":{"updated":1e300,"created":"x"}}, 7, {"id":3}]})"});
  auto listed = store_->List();
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_FALSE((*listed)[0].changed_at);
  vault_->inject.push_back({200, R"([1,2])"});
  EXPECT_EQ(store_->Get(kName).code(), ErrorCode::kUnavailable);
  // A PUT answered without an id.
  vault_->inject.push_back({404, R"({"error":{"code":"SecretNotFound","message":"no"}})"});
  vault_->inject.push_back({200, R"({"value":"v"})"});
  EXPECT_EQ(store_->Create(kName, "v").code(), ErrorCode::kUnavailable);
}

TEST_F(AzureStoreTest, GetManyFansOutAndKeepsEachSlotsAnswer) {
  AzureSecretStoreOptions o;
  o.parallelism = 4;
  Open(o);
  std::vector<std::string> names;
  for (int i = 0; i < 9; ++i) {
    names.push_back("dyad-gateway--providers--p" + std::to_string(i));
    if (i != 5) ASSERT_TRUE(store_->Put(names.back(), "v" + std::to_string(i)).ok());
  }
  auto many = store_->GetMany(names);
  ASSERT_TRUE(many.ok());
  for (int i = 0; i < 9; ++i) {
    if (i == 5) {
      EXPECT_EQ((*many)[i].code(), ErrorCode::kNotFound);
    } else {
      ASSERT_TRUE((*many)[i].ok());
      EXPECT_EQ((*many)[i]->value, "v" + std::to_string(i));
    }
  }
}

}  // namespace
}  // namespace dyad

namespace dyad {
namespace {

TEST_F(AzureStoreTest, ARecoveryWhoseWriteFailsIsDeletedAgainNotLeftLive) {
  ASSERT_TRUE(store_->Create(kName, "OLD-deleted-on-purpose").ok());
  ASSERT_TRUE(store_->Delete(kName).ok());
  {
    MutexLock lock(&vault_->mu());
    vault_->fail_puts_after_recover = 1;
  }
  auto created = store_->Create(kName, "NEW");
  ASSERT_FALSE(created.ok());
  EXPECT_NE(created.error().message.find("deleted again"), std::string::npos) << created.error().message;
  auto old = store_->Get(kName);
  ASSERT_FALSE(old.ok()) << "the deleted value is live again";
  EXPECT_EQ(old.code(), ErrorCode::kNotFound);
  MutexLock lock(&vault_->mu());
  EXPECT_EQ(vault_->secrets.count(kName), 0u);
  ASSERT_EQ(vault_->deleted.count(kName), 1u);
}

TEST_F(AzureStoreTest, WithPurgeOnDeleteAPurgeProtectedVaultRecoversInstead) {
  AzureSecretStoreOptions o;
  o.purge_on_delete = true;
  Open(o);
  {
    MutexLock lock(&vault_->mu());
    vault_->forbid_purge = true;
  }
  ASSERT_TRUE(store_->Create(kName, "v1").ok());
  ASSERT_TRUE(store_->DeleteNow(kName).ok());
  auto again = store_->Create(kName, "v2");
  ASSERT_TRUE(again.ok()) << again.error().message;
  auto read = store_->Get(kName);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read->value, "v2");
}

TEST_F(AzureStoreTest, AFirewall403IsAnErrorNotADisabledSecret) {
  const std::string firewall =
      R"({"error":{"code":"Forbidden","message":"Public network access is disabled and request is not from a trusted )"
      R"(service nor via an approved private link.","innererror":{"code":"ForbiddenByConnection"}}})";
  {
    MutexLock lock(&vault_->mu());
    vault_->inject.push_back({403, firewall});
  }
  auto got = store_->Get(kName);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(got.error().message.find("[inner ForbiddenByConnection]"), std::string::npos) << got.error().message;
  // The inner code in free text (the message) decides nothing either.
  {
    MutexLock lock(&vault_->mu());
    vault_->inject.push_back(
        {403, R"({"error":{"code":"Forbidden","message":"[inner SecretDisabled] disabled secret"}})"});
  }
  EXPECT_EQ(store_->Get(kName).code(), ErrorCode::kPermissionDenied);
  // Create of a name behind the firewall is not "already exists (disabled)".
  {
    MutexLock lock(&vault_->mu());
    vault_->inject.push_back({403, firewall});
  }
  auto behind = store_->Create(kName, "v");
  ASSERT_FALSE(behind.ok());
  EXPECT_EQ(behind.code(), ErrorCode::kPermissionDenied);
  // Key Vault's own disabled secret still reads as not there.
  ASSERT_TRUE(store_->Create(kName, "v").ok());
  {
    MutexLock lock(&vault_->mu());
    vault_->secrets[kName].enabled = false;
  }
  EXPECT_EQ(store_->Get(kName).code(), ErrorCode::kNotFound);
}

TEST_F(AzureStoreTest, ListStopsOnARepeatedNextLinkAndCapsPages) {
  const std::string link = std::string(FakeKeyVault::kUrl) + "/secrets?api-version=7.5&$skiptoken=1";
  const std::string page = R"({"value":[],"nextLink":")" + link + R"("})";
  {
    MutexLock lock(&vault_->mu());
    for (int i = 0; i < 3; ++i) vault_->inject.push_back({200, page});
  }
  auto listed = store_->List();
  ASSERT_FALSE(listed.ok());
  EXPECT_NE(listed.error().message.find("repeats"), std::string::npos) << listed.error().message;
  {
    MutexLock lock(&vault_->mu());
    EXPECT_EQ(vault_->calls.size(), 2u);
    vault_->inject.clear();
    vault_->calls.clear();
    for (int i = 0; i < 1005; ++i) {
      vault_->inject.push_back(
          {200, R"({"value":[],"nextLink":")" + link + std::to_string(i) + R"("})"});
    }
  }
  listed = store_->List();
  ASSERT_FALSE(listed.ok());
  EXPECT_NE(listed.error().message.find("1000 pages"), std::string::npos) << listed.error().message;
  MutexLock lock(&vault_->mu());
  EXPECT_EQ(vault_->calls.size(), 1000u);
}

}  // namespace
}  // namespace dyad
