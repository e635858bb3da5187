#include "backends/azure/key_manager.h"

#include <gtest/gtest.h>

#include <functional>

#include "backends/azure/base64url.h"
#include "backends/azure/fake_key_vault.h"
#include "registry/sqlite_key_version_repository.h"
#include "testing/fakes.h"

namespace dyad {
namespace {

using testing::FakeKeyVault;
using namespace std::string_literals;

class AzureKeyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = *SqliteDb::Open(dir_.File("k.db"));
    auto fake = std::make_unique<FakeKeyVault>();
    vault_ = fake.get();
    AzureClientOptions co;
    co.vault_url = FakeKeyVault::kUrl;
    client_ = std::move(AzureClient::Create(co, nullptr, std::move(fake), clock_, random_)).value();
  }

  std::unique_ptr<KeyManager> Open(AzureKeyOptions o = {}) {
    if (o.key_name.empty()) o.key_name = "dyad-key";
    auto km = NewAzureKeyManager(o, *client_, NewSqliteKeyVersionRepository(db_), clock_, DefaultRandom());
    EXPECT_TRUE(km.ok()) << km.error().message;
    return std::move(km).value();
  }

  static std::string KidVersionOf(const std::string& wrapped) { return wrapped.substr(0, wrapped.find(':')); }

  FakeClock clock_;
  testing::ConstantRandom random_{7};
  testing::TempDir dir_;
  std::shared_ptr<SqliteDb> db_;
  FakeKeyVault* vault_ = nullptr;
  std::unique_ptr<AzureClient> client_;
};

const std::string kCtx = "dyad-gateway--providers--openai";

TEST(AzureKeyId, BareNamesAndKeyIdUrls) {
  const std::string vault = "https://my-vault.vault.azure.net/";
  auto bare = ParseAzureKeyId("dyad-key", vault);
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare->key_name, "dyad-key");
  EXPECT_EQ(bare->key_version_pinned, "");
  auto url = ParseAzureKeyId("https://MY-VAULT.vault.azure.net/keys/k1/0123456789abcdef0123456789abcdef", vault);
  ASSERT_TRUE(url.ok()) << url.error().message;
  EXPECT_EQ(url->key_name, "k1");
  EXPECT_EQ(url->key_version_pinned, "0123456789abcdef0123456789abcdef");
  auto latest = ParseAzureKeyId("https://my-vault.vault.azure.net/keys/k1/", vault);
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(latest->key_version_pinned, "");
  for (std::string bad : {"", "a_b", "https://other.vault.azure.net/keys/k1", "https://my-vault.vault.azure.net/secrets/k1",
                          "https://my-vault.vault.azure.net/keys/k1/v1/x", "https://my-vault.vault.azure.net/keys/k1?x=1",
                          "https://my-vault.vault.azure.net/keys/", "https://my-vault.vault.azure.net/keys/k1/v-1",
                          "ftp://my-vault.vault.azure.net/keys/k1"}) {
    auto r = ParseAzureKeyId(bad, vault);
    EXPECT_EQ(r.code(), ErrorCode::kInvalidArgument) << bad;
  }
}

TEST(AzureKeyId, Base64UrlRoundTripsAndRefusesTheStandardAlphabet) {
  std::string bytes = "\xfb\xff\xfe\x00\x01"s;
  EXPECT_EQ(Base64UrlEncode(bytes), "-__-AAE");
  EXPECT_EQ(Base64UrlDecode("-__-AAE"), bytes);
  EXPECT_FALSE(Base64UrlDecode("+//+AAE"));
  EXPECT_FALSE(Base64UrlDecode("AAE="));
  EXPECT_FALSE(Base64UrlDecode("A"));
}

TEST_F(AzureKeyTest, StartsWithoutKeyVaultAndRecordsVersionOneOnFirstUse) {
  const std::string v1 = vault_->AddKey("dyad-key");
  auto km = Open();
  EXPECT_TRUE(vault_->calls.empty());
  EXPECT_EQ(km->Kind(), "azure-kv");
  EXPECT_EQ(km->KeyId(), "vault.test/dyad-key");
  auto dk = km->GenerateDataKey(kCtx);
  ASSERT_TRUE(dk.ok()) << dk.error().message;
  EXPECT_EQ(dk->version, 1u);
  EXPECT_EQ(dk->plaintext.size(), 32u);
  EXPECT_EQ(KidVersionOf(dk->wrapped), v1);
  EXPECT_EQ(vault_->CallsTo("POST", "/keys/dyad-key/" + v1 + "/wrapkey"), 1u);
  auto dek = km->Decrypt(1, dk->wrapped, kCtx);
  ASSERT_TRUE(dek.ok()) << dek.error().message;
  EXPECT_EQ(dek->view(), dk->plaintext.view());
  EXPECT_EQ(vault_->CallsTo("POST", "/keys/dyad-key/" + v1 + "/unwrapkey"), 1u);
  auto state = km->KnownState();
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->primary_version, 1u);
  // What went to Key Vault is the DEK bound to its secret: 48 bytes.
  nlohmann::json sent;
  for (const auto& c : vault_->calls) {
    if (c.url.find("/wrapkey") != std::string::npos) sent = nlohmann::json::parse(c.body);
  }
  EXPECT_EQ(sent["alg"], "RSA-OAEP-256");
  EXPECT_EQ(Base64UrlDecode(sent["value"].get<std::string>())->size(), 48u);
}

TEST_F(AzureKeyTest, TheContextIsBound) {
  vault_->AddKey("dyad-key");
  auto km = Open();
  auto dk = km->GenerateDataKey(kCtx);
  ASSERT_TRUE(dk.ok());
  auto other = km->Decrypt(1, dk->wrapped, "dyad-gateway--providers--gemini");
  EXPECT_EQ(other.code(), ErrorCode::kDataLoss);
  EXPECT_NE(other.error().message.find("bound to another secret"), std::string::npos);
  EXPECT_EQ(km->Decrypt(1, dk->wrapped, "").code(), ErrorCode::kDataLoss);
  // Unbound keys (no context) unwrap with none only.
  auto unbound = km->GenerateDataKey();
  ASSERT_TRUE(unbound.ok());
  EXPECT_TRUE(km->Decrypt(1, unbound->wrapped).ok());
  EXPECT_EQ(km->Decrypt(1, unbound->wrapped, kCtx).code(), ErrorCode::kDataLoss);
}

TEST_F(AzureKeyTest, ALocalWrapUsesThePublicKeyAndKeyVaultUnwrapsIt) {
  const std::string v1 = vault_->AddKey("dyad-key");
  AzureKeyOptions o;
  o.wrap_locally = true;
  auto km = Open(o);
  for (int i = 0; i < 3; ++i) {
    auto dk = km->GenerateDataKey(kCtx);
    ASSERT_TRUE(dk.ok()) << dk.error().message;
    auto dek = km->Decrypt(1, dk->wrapped, kCtx);
    ASSERT_TRUE(dek.ok()) << dek.error().message;
    EXPECT_EQ(dek->view(), dk->plaintext.view());
  }
  EXPECT_EQ(vault_->CallsTo("POST", "/keys/dyad-key/" + v1 + "/wrapkey"), 0u);
  EXPECT_EQ(vault_->CallsTo("GET", "/keys/dyad-key"), 1u);  // the public key, once
  // A version disabled in Azure stops wrapping once its attributes are read again.
  vault_->SetKeyVersionEnabled("dyad-key", v1, false);
  clock_.Advance(std::chrono::minutes(2));
  EXPECT_EQ(km->GenerateDataKey(kCtx).code(), ErrorCode::kFailedPrecondition);
}

TEST_F(AzureKeyTest, AnOctKeyWrapsWithA256KWInKeyVault) {
  const std::string v1 = vault_->AddKey("hsm-key", "oct-HSM");
  AzureKeyOptions o;
  o.key_name = "hsm-key";
  o.wrap_locally = true;  // no public key: wrapped remotely all the same
  auto km = Open(o);
  auto dk = km->GenerateDataKey(kCtx);
  ASSERT_TRUE(dk.ok()) << dk.error().message;
  EXPECT_EQ(vault_->CallsTo("POST", "/keys/hsm-key/" + v1 + "/wrapkey"), 1u);
  auto dek = km->Decrypt(1, dk->wrapped, kCtx);
  ASSERT_TRUE(dek.ok()) << dek.error().message;
  EXPECT_EQ(dek->view(), dk->plaintext.view());
}

TEST_F(AzureKeyTest, RotateMakesTheNextVersionPrimaryAndReEncryptMovesKeysToIt) {
  const std::string v1 = vault_->AddKey("dyad-key");
  auto km = Open();
  auto old = km->GenerateDataKey(kCtx);
  ASSERT_TRUE(old.ok());
  auto rotated = km->Rotate();
  ASSERT_TRUE(rotated.ok()) << rotated.error().message;
  EXPECT_EQ(*rotated, 2u);
  std::string v2;
  {
    MutexLock lock(&vault_->mu());
    v2 = vault_->keys.at("dyad-key").versions.back().version;
  }
  ASSERT_NE(v1, v2);
  auto fresh = km->GenerateDataKey(kCtx);
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(fresh->version, 2u);
  EXPECT_EQ(KidVersionOf(fresh->wrapped), v2);
  EXPECT_TRUE(km->Decrypt(1, old->wrapped, kCtx).ok());
  auto moved = km->ReEncrypt(1, old->wrapped, kCtx, "dyad-gateway--providers--b");
  ASSERT_TRUE(moved.ok()) << moved.error().message;
  EXPECT_EQ(moved->version, 2u);
  EXPECT_EQ(KidVersionOf(moved->wrapped), v2);
  auto dek = km->Decrypt(2, moved->wrapped, "dyad-gateway--providers--b");
  ASSERT_TRUE(dek.ok());
  EXPECT_EQ(dek->view(), old->plaintext.view());
  // The ordinal and the kid version in the blob must agree.
  EXPECT_EQ(km->Decrypt(1, moved->wrapped, "dyad-gateway--providers--b").code(), ErrorCode::kDataLoss);
}

TEST_F(AzureKeyTest, DescribeMakesARotationDoneInAzureTheNextVersion) {
  vault_->AddKey("dyad-key");
  auto km = Open();
  ASSERT_TRUE(km->Probe().ok());
  vault_->RotateKey("dyad-key");
  const std::string v3 = vault_->RotateKey("dyad-key");  // two rotations: only the current one is used
  const size_t before = vault_->calls.size();
  auto state = km->Describe();
  ASSERT_TRUE(state.ok()) << state.error().message;
  EXPECT_EQ(state->primary_version, 2u);
  ASSERT_EQ(state->versions.size(), 2u);
  EXPECT_EQ(vault_->calls.size(), before + 1);  // one GET /keys/dyad-key
  auto dk = km->GenerateDataKey(kCtx);
  ASSERT_TRUE(dk.ok());
  EXPECT_EQ(dk->version, 2u);
  EXPECT_EQ(KidVersionOf(dk->wrapped), v3);
  // At most once a second; and nothing new makes no version.
  ASSERT_TRUE(km->Describe().ok());
  EXPECT_EQ(vault_->CallsTo("GET", "/keys/dyad-key"), 3u);
  clock_.Advance(std::chrono::seconds(2));
  EXPECT_EQ(km->Describe()->versions.size(), 2u);
  // A current version that is disabled makes no version either.
  const std::string v4 = vault_->RotateKey("dyad-key");
  vault_->SetKeyVersionEnabled("dyad-key", v4, false);
  clock_.Advance(std::chrono::seconds(2));
  EXPECT_EQ(km->Describe()->versions.size(), 2u);
}

TEST_F(AzureKeyTest, AnotherInstanceOnTheRegistryLearnsTheNewPrimary) {
  vault_->AddKey("dyad-key");
  auto a = Open();
  auto b = Open();
  ASSERT_TRUE(a->GenerateDataKey(kCtx).ok());
  ASSERT_EQ(b->GenerateDataKey(kCtx)->version, 1u);
  auto from_a = a->GenerateDataKey(kCtx);
  ASSERT_TRUE(a->Rotate().ok());
  clock_.Advance(std::chrono::seconds(1));
  auto dk = b->GenerateDataKey(kCtx);
  ASSERT_TRUE(dk.ok());
  EXPECT_EQ(dk->version, 2u);
  EXPECT_TRUE(a->Decrypt(2, dk->wrapped, kCtx).ok());
  EXPECT_TRUE(b->Decrypt(1, from_a->wrapped, kCtx).ok());
}

TEST_F(AzureKeyTest, AnUnwrapUnderADisabledVersionNamesTheVersion) {
  const std::string v1 = vault_->AddKey("dyad-key");
  auto km = Open();
  auto dk = km->GenerateDataKey(kCtx);
  ASSERT_TRUE(dk.ok());
  vault_->SetKeyVersionEnabled("dyad-key", v1, false);
  auto dek = km->Decrypt(1, dk->wrapped, kCtx);
  EXPECT_EQ(dek.code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(dek.error().message.find(v1), std::string::npos);
  EXPECT_NE(dek.error().message.find("disabled"), std::string::npos);
  // A fresh process (the version not in memory) says the same.
  auto other = Open();
  EXPECT_EQ(other->Decrypt(1, dk->wrapped, kCtx).code(), ErrorCode::kFailedPrecondition);
  // Writing under it is refused too.
  EXPECT_EQ(other->GenerateDataKey(kCtx).code(), ErrorCode::kFailedPrecondition);
}

TEST_F(AzureKeyTest, RetireIsTheRegistrysOnly) {
  vault_->AddKey("dyad-key");
  auto km = Open();
  auto old = km->GenerateDataKey(kCtx);
  ASSERT_TRUE(old.ok());
  EXPECT_EQ(km->Retire(1).code(), ErrorCode::kFailedPrecondition);  // the primary
  ASSERT_TRUE(km->Rotate().ok());
  ASSERT_TRUE(km->BeginRetire(1).ok());
  EXPECT_EQ(*km->CurrentState(1), "retiring");
  EXPECT_TRUE(km->Decrypt(1, old->wrapped, kCtx).ok());
  ASSERT_TRUE(km->Retire(1).ok());
  ASSERT_TRUE(km->BeginRetire(1).ok());
  EXPECT_EQ(*km->CurrentState(1), "retired");
  auto refused = km->Decrypt(1, old->wrapped, kCtx);
  EXPECT_EQ(refused.code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(refused.error().message.find("retired"), std::string::npos);
  EXPECT_EQ(km->CurrentState(7).code(), ErrorCode::kNotFound);
  EXPECT_EQ(vault_->CallsTo("PATCH", "/keys"), 0u);
}

TEST_F(AzureKeyTest, MalformedOrTamperedWrappedKeysAreDataLoss) {
  const std::string v1 = vault_->AddKey("dyad-key");
  auto km = Open();
  auto dk = km->GenerateDataKey(kCtx);
  ASSERT_TRUE(dk.ok());
  std::string flipped = dk->wrapped;
  flipped[v1.size() + 5] = flipped[v1.size() + 5] == 'A' ? 'B' : 'A';
  for (const std::string& bad :
       std::vector<std::string>{"", "nocolon", v1 + ":", v1 + ":!!!", v1 + ":AAAA=", "v-1:AAAA", ":AAAA",
                                v1 + ":" + std::string(5000, 'A'), FakeKeyVault::Version(9) + ":AAAA", flipped}) {
    auto r = km->Decrypt(1, bad, kCtx);
    EXPECT_EQ(r.code(), ErrorCode::kDataLoss) << bad.substr(0, 60) << ": " << r.error().message;
  }
  EXPECT_EQ(km->Decrypt(9, dk->wrapped, kCtx).code(), ErrorCode::kNotFound);
}

TEST_F(AzureKeyTest, AnotherKeysDataKeyIsDataLossEvenBeforeFirstUse) {
  vault_->AddKey("dyad-key");
  vault_->AddKey("other-key");
  AzureKeyOptions other;
  other.key_name = "other-key";
  auto theirs = Open(other)->GenerateDataKey(kCtx);
  ASSERT_TRUE(theirs.ok());
  // A separate registry, as another deployment would have.
  auto db = *SqliteDb::Open(dir_.File("mine.db"));
  AzureKeyOptions mine;
  mine.key_name = "dyad-key";
  auto km = std::move(NewAzureKeyManager(mine, *client_, NewSqliteKeyVersionRepository(db), clock_, random_)).value();
  auto opened = km->Decrypt(theirs->version, theirs->wrapped, kCtx);
  EXPECT_EQ(opened.code(), ErrorCode::kDataLoss);
}

TEST_F(AzureKeyTest, AForbiddenCallNamesTheRole) {
  vault_->AddKey("dyad-key");
  vault_->forbidden.insert("POST /keys");
  auto km = Open();
  auto dk = km->GenerateDataKey(kCtx);
  EXPECT_EQ(dk.code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(dk.error().message.find("Key Vault Crypto Officer"), std::string::npos);
}

TEST_F(AzureKeyTest, APinnedVersionIsVersionOne) {
  const std::string v1 = vault_->AddKey("dyad-key");
  vault_->RotateKey("dyad-key");
  AzureKeyOptions o;
  o.key_version_pinned = v1;
  auto km = Open(o);
  auto dk = km->GenerateDataKey(kCtx);
  ASSERT_TRUE(dk.ok()) << dk.error().message;
  EXPECT_EQ(dk->version, 1u);
  EXPECT_EQ(KidVersionOf(dk->wrapped), v1);
}

TEST_F(AzureKeyTest, ProbeAsksKeyVault) {
  auto km = Open();
  EXPECT_EQ(km->Probe().code(), ErrorCode::kNotFound);  // no such key
  const std::string v1 = vault_->AddKey("dyad-key");
  EXPECT_TRUE(km->Probe().ok());
  vault_->SetKeyVersionEnabled("dyad-key", v1, false);
  EXPECT_EQ(km->Probe().code(), ErrorCode::kFailedPrecondition);
  vault_->inject.assign(3, {503, R"({"error":{"code":"ServiceUnavailable","message":"busy"}})"});
  EXPECT_EQ(km->Probe().code(), ErrorCode::kUnavailable);
}

TEST_F(AzureKeyTest, HostileAnswersAreRefused) {
  vault_->AddKey("dyad-key");
  auto km = Open();
  auto bundle = [](const std::string& kid, const std::string& kty, const std::string& ops) {
    return R"({"key":{"kid":")" + kid + R"(","kty":")" + kty + R"(","key_ops":)" + ops + R"(},"attributes":{"enabled":true}})";
  };
  const std::string ours = std::string(FakeKeyVault::kUrl) + "/keys/dyad-key/" + FakeKeyVault::Version(5);
  vault_->inject.push_back({200, bundle(ours, "EC", R"(["sign"])")});
  EXPECT_EQ(km->Probe().code(), ErrorCode::kFailedPrecondition);
  vault_->inject.push_back({200, bundle("https://evil.test/keys/dyad-key/" + FakeKeyVault::Version(5), "RSA", "[]")});
  EXPECT_EQ(km->Probe().code(), ErrorCode::kUnavailable);
  vault_->inject.push_back({200, bundle(ours, "RSA", R"(["encrypt"])")});
  EXPECT_EQ(km->Probe().code(), ErrorCode::kFailedPrecondition);  // cannot wrap
  vault_->inject.push_back({200, R"({"key":"nope"})"});
  EXPECT_EQ(km->Probe().code(), ErrorCode::kUnavailable);
  // A wrap answered by another key, or with no value.
  auto dk = km->GenerateDataKey(kCtx);  // version 1 recorded and read
  ASSERT_TRUE(dk.ok());
  vault_->inject.push_back({200, R"({"kid":"https://vault.test/keys/other/)" + FakeKeyVault::Version(1) +
                                     R"(","value":"AAAA"})"});
  EXPECT_EQ(km->GenerateDataKey(kCtx).code(), ErrorCode::kDataLoss);
  vault_->inject.push_back({200, R"({"kid":"x"})"});
  EXPECT_EQ(km->GenerateDataKey(kCtx).code(), ErrorCode::kUnavailable);
  vault_->inject.push_back({200, R"({"value":"not base64url!"})"});
  EXPECT_EQ(km->Decrypt(1, dk->wrapped, kCtx).code(), ErrorCode::kUnavailable);
  vault_->inject.push_back({200, R"({"value":"AAAA"})"});  // 3 bytes: not a bound DEK
  EXPECT_EQ(km->Decrypt(1, dk->wrapped, kCtx).code(), ErrorCode::kDataLoss);
}

TEST_F(AzureKeyTest, FactoryRefusesBadOptions) {
  AzureKeyOptions o;
  o.key_name = "bad/name";
  EXPECT_EQ(NewAzureKeyManager(o, *client_, NewSqliteKeyVersionRepository(db_), clock_, random_).code(),
            ErrorCode::kInvalidArgument);
  o.key_name = "k";
  o.key_version_pinned = "../x";
  EXPECT_EQ(NewAzureKeyManager(o, *client_, NewSqliteKeyVersionRepository(db_), clock_, random_).code(),
            ErrorCode::kInvalidArgument);
  o.key_version_pinned = "";
  EXPECT_EQ(NewAzureKeyManager(o, *client_, nullptr, clock_, random_).code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace dyad

namespace dyad {
namespace {

// Forwards to the fixture's fake; `after` runs between Key Vault's commit and the answer.
class AfterTap final : public HttpTransport {
 public:
  explicit AfterTap(FakeKeyVault* v) : v_(v) {}
  std::function<void(const HttpCall&)> after;
  Result<HttpReply> Send(const HttpCall& call) override {
    auto r = v_->Send(call);
    if (after) after(call);
    return r;
  }

 private:
  FakeKeyVault* v_;
};

TEST_F(AzureKeyTest, ARotationRacingASyncGivesEachKidVersionOneOrdinalAndReturnsThePrimary) {
  vault_->AddKey("dyad-key");
  auto tap = std::make_unique<AfterTap>(vault_);
  AfterTap* tap_ptr = tap.get();
  AzureClientOptions co;
  co.vault_url = FakeKeyVault::kUrl;
  auto client_a = std::move(AzureClient::Create(co, nullptr, std::move(tap), clock_, random_)).value();
  AzureKeyOptions o;
  o.key_name = "dyad-key";
  auto ka = std::move(NewAzureKeyManager(o, *client_a, NewSqliteKeyVersionRepository(db_), clock_, DefaultRandom()))
                .value();
  auto kb = Open();  // another instance on the same registry
  ASSERT_TRUE(ka->GenerateDataKey(kCtx).ok());
  std::string v3;
  bool once = true;
  tap_ptr->after = [&](const HttpCall& c) {
    if (once && c.method == "POST" && c.url.find("/rotate") != std::string::npos) {
      once = false;
      EXPECT_TRUE(kb->Describe().ok());  // records A's new version as 2
      v3 = vault_->RotateKey("dyad-key");
      clock_.Advance(std::chrono::seconds(2));
      EXPECT_TRUE(kb->Describe().ok());  // records the policy's as 3
    }
  };
  auto v = ka->Rotate();
  ASSERT_TRUE(v.ok()) << v.error().message;
  auto st = ka->KnownState();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->versions.size(), 3u);
  EXPECT_EQ(st->primary_version, 3u);
  EXPECT_EQ(*v, 3u);
  clock_.Advance(std::chrono::seconds(1));
  auto dk = ka->GenerateDataKey(kCtx);
  ASSERT_TRUE(dk.ok());
  EXPECT_EQ(KidVersionOf(dk->wrapped), v3);
}

TEST_F(AzureKeyTest, APinnedVersionIsNeverMovedBySyncAndRefusesRotate) {
  const std::string v1 = vault_->AddKey("dyad-key");
  AzureKeyOptions o;
  o.key_name = "dyad-key";
  o.key_version_pinned = v1;
  auto km = Open(o);
  ASSERT_TRUE(km->GenerateDataKey(kCtx).ok());
  vault_->RotateKey("dyad-key");  // a rotation policy in Azure
  clock_.Advance(std::chrono::seconds(5));
  auto st = km->Describe();
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->versions.size(), 1u);
  EXPECT_EQ(st->primary_version, 1u);
  auto dk = km->GenerateDataKey(kCtx);
  ASSERT_TRUE(dk.ok());
  EXPECT_EQ(KidVersionOf(dk->wrapped), v1);
  const size_t rotations = vault_->CallsTo("POST", "/keys/dyad-key/rotate");
  auto r = km->Rotate();
  ASSERT_FALSE(r.ok()) << "rotated a pinned key to gateway version " << *r;
  EXPECT_EQ(r.code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE((r.ok() ? std::string() : r.error().message).find("ENCRYPTION_KEY_ID"), std::string::npos);
  EXPECT_EQ(vault_->CallsTo("POST", "/keys/dyad-key/rotate"), rotations);  // nothing sent
}

TEST_F(AzureKeyTest, AFirewall403IsNotADisabledKey) {
  vault_->AddKey("dyad-key");
  auto km = Open();
  {
    MutexLock lock(&vault_->mu());
    vault_->inject.push_back(
        {403, R"({"error":{"code":"Forbidden","message":"Public network access is disabled; operation on a disabled )"
              R"(key is not the reason","innererror":{"code":"ForbiddenByConnection"}}})"});
  }
  Status p = km->Probe();
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.code(), ErrorCode::kPermissionDenied) << (p.ok() ? "ok" : p.error().message);
}

}  // namespace
}  // namespace dyad
