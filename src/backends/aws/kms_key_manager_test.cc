#include "backends/aws/kms_key_manager.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/encoding.h"
#include "registry/sqlite_key_version_repository.h"
#include "testing/fakes.h"

namespace dyad {
namespace {

const std::string kArn = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

class StaticCredentials final : public AwsCredentialSource {
 public:
  Result<AwsCredentials> Get() override { return AwsCredentials{"AKID", SecretBytes("s"), ""}; }
  std::string SourceName() override { return "static"; }
};

class KmsTest : public ::testing::Test {
 protected:
  void SetUp() override { db_ = *SqliteDb::Open(dir_.File("k.db")); }

  std::unique_ptr<KeyManager> Open(testing::ScriptedTransport*& http) {
    auto t = std::make_unique<testing::ScriptedTransport>();
    http = t.get();
    auto client = std::move(AwsJsonClient::Create({"kms", "TrentService", "http://127.0.0.1:1", "us-east-1", {}},
                                                  creds_, std::move(t), clock_, random_))
                      .value();
    return std::move(NewKmsKeyManager("dyad-key", std::move(client),
                                      NewSqliteKeyVersionRepository(db_), clock_)).value();
  }

  static std::string Described() { return R"({"KeyMetadata":{"Arn":")" + kArn + R"(","KeyId":"1234"}})"; }

  testing::TempDir dir_;
  std::shared_ptr<SqliteDb> db_;
  FakeClock clock_;
  testing::ConstantRandom random_{7};
  StaticCredentials creds_;
};

TEST_F(KmsTest, DataKeysAndTheKeyIdCheck) {
  testing::ScriptedTransport* http;
  auto km = Open(http);
  EXPECT_EQ(KmsKeyReference("dyad-key"), "alias/dyad-key");
  EXPECT_EQ(KmsKeyReference(kArn), kArn);
  EXPECT_EQ(KmsKeyReference("1234abcd-12ab-34cd-56ef-1234567890ab"), "1234abcd-12ab-34cd-56ef-1234567890ab");
  std::string plain(32, 'p');
  http->Then(200, Described());
  http->Then(200, R"({"KeyId":")" + kArn + R"(","Plaintext":")" + Base64Encode(plain) +
                      R"(","CiphertextBlob":")" + Base64Encode("blob") + "\"}");
  auto dk = km->GenerateDataKey();
  ASSERT_TRUE(dk.ok()) << dk.error().message;
  EXPECT_EQ(dk->plaintext.view(), plain);
  EXPECT_EQ(dk->wrapped, "blob");
  EXPECT_EQ(dk->version, 1u);
  EXPECT_EQ(testing::ScriptedTransport::HeaderOf(http->calls[0], "X-Amz-Target"), "TrentService.DescribeKey");
  EXPECT_NE(http->calls[0].body.find("alias/dyad-key"), std::string::npos);

  // A ciphertext that another key decrypts is not ours.
  http->Then(200, R"({"KeyId":"arn:aws:kms:us-east-1:111122223333:key/other","Plaintext":")" + Base64Encode(plain) + "\"}");
  auto wrong = km->Decrypt(1, "blob");
  EXPECT_EQ(wrong.code(), ErrorCode::kDataLoss);
  EXPECT_NE(wrong.error().message.find("not the configured"), std::string::npos);
  EXPECT_EQ(km->Decrypt(9, "blob").code(), ErrorCode::kNotFound);
  http->Then(400, R"({"__type":"InvalidCiphertextException"})");
  EXPECT_EQ(km->Decrypt(1, "tampered").code(), ErrorCode::kDataLoss);
}

TEST_F(KmsTest, VersionsLiveInTheRegistryAndSurviveAnEndpointWithoutOnDemandRotation) {
  testing::ScriptedTransport* http;
  auto km = Open(http);
  http->Then(200, Described());
  http->Then(501, "Passed X-Amz-Target (TrentService.RotateKeyOnDemand) is not implemented");
  auto v = km->Rotate();
  ASSERT_TRUE(v.ok()) << v.error().message;
  EXPECT_EQ(*v, 2u);

  testing::ScriptedTransport* other_http;
  auto other = Open(other_http);  // a second instance on the same database
  EXPECT_EQ(other->Describe()->primary_version, 2u);

  http->Then(400, R"({"__type":"AccessDeniedException","message":"not allowed to rotate"})");
  EXPECT_EQ(km->Rotate().code(), ErrorCode::kPermissionDenied);  // denial is not ignored
  EXPECT_EQ(km->Describe()->primary_version, 2u);

  EXPECT_EQ(km->Retire(2).code(), ErrorCode::kFailedPrecondition);  // never the primary
  ASSERT_TRUE(km->Retire(1).ok());
  EXPECT_EQ(other->Describe()->versions.at(0).state, "retired");  // seen by the other instance on its next look
  EXPECT_EQ(other->Decrypt(1, "blob").code(), ErrorCode::kFailedPrecondition);
}

TEST_F(KmsTest, RotationsKmsMakesOnItsOwnBecomeVersions) {
  testing::ScriptedTransport* http;
  auto km = Open(http);
  auto rotations = [](int n) {
    std::string list;
    for (int i = 0; i < n; ++i) list += std::string(i ? "," : "") + R"({"RotationType":"AUTOMATIC"})";
    return R"({"Rotations":[)" + list + R"(],"Truncated":false})";
  };
  http->Then(200, Described());
  http->Then(200, rotations(0));
  EXPECT_EQ(km->Describe()->primary_version, 1u);
  http->Then(200, rotations(2));
  EXPECT_EQ(km->Describe()->primary_version, 1u);  // asked a moment ago: KMS is not asked again yet
  clock_.Advance(std::chrono::seconds(1));  // KMS rotated twice on its own: one new version for the material now in use
  EXPECT_EQ(km->Describe()->primary_version, 2u);
  http->Then(200, "{}");            // RotateKeyOnDemand
  http->Then(200, rotations(2));  // the listing lags behind the rotation just made
  EXPECT_EQ(*km->Rotate(), 3u);
  http->Then(200, rotations(3));  // caught up: not another version
  clock_.Advance(std::chrono::seconds(1));
  auto state = km->Describe();
  EXPECT_EQ(state->primary_version, 3u);
  EXPECT_EQ(state->versions.size(), 3u);
  http->Then(400, R"({"__type":"AccessDeniedException","message":"kms:ListKeyRotations"})");
  clock_.Advance(std::chrono::seconds(1));
  EXPECT_EQ(km->Describe()->primary_version, 3u);  // not allowed to list: the registry's versions stand
}

TEST_F(KmsTest, TheSecretNameIsTheEncryptionContext) {
  testing::ScriptedTransport* http;
  auto km = Open(http);
  std::string plain(32, 'p');
  http->Then(200, Described());
  http->Then(200, R"({"KeyId":")" + kArn + R"(","Plaintext":")" + Base64Encode(plain) +
                      R"(","CiphertextBlob":")" + Base64Encode("blob") + "\"}");
  ASSERT_TRUE(km->GenerateDataKey("dyad/providers/a").ok());
  auto sent = [&](size_t i) { return nlohmann::json::parse(http->calls.at(i).body); };
  const nlohmann::json context = {{"secret", "dyad/providers/a"}};
  EXPECT_EQ(sent(1)["EncryptionContext"], context);

  http->Then(200, R"({"KeyId":")" + kArn + R"(","Plaintext":")" + Base64Encode(plain) + "\"}");
  ASSERT_TRUE(km->Decrypt(1, "blob", "dyad/providers/a").ok());
  EXPECT_EQ(sent(2)["EncryptionContext"], context);
  ASSERT_TRUE(km->Decrypt(1, "blob").ok());  // written before names were bound: no context
  EXPECT_FALSE(sent(3).contains("EncryptionContext"));

  // A rewrap moves such a key to its name.
  http->Then(200, R"({"KeyId":")" + kArn + R"(","CiphertextBlob":")" + Base64Encode("moved") + "\"}");
  ASSERT_TRUE(km->ReEncrypt(1, "blob", "", "dyad/providers/a").ok());
  EXPECT_FALSE(sent(4).contains("SourceEncryptionContext"));
  EXPECT_EQ(sent(4)["DestinationEncryptionContext"], context);
  ASSERT_TRUE(km->ReEncrypt(1, "blob", "dyad/providers/a", "dyad/providers/a").ok());
  EXPECT_EQ(sent(5)["SourceEncryptionContext"], context);
}

TEST_F(KmsTest, ProbeAsksKmsEveryTime) {
  testing::ScriptedTransport* http;
  auto km = Open(http);
  http->Then(200, Described());
  EXPECT_TRUE(km->Probe().ok());
  http->ThenFail(MakeError(ErrorCode::kUnavailable, "connection refused"));
  Status down = km->Probe();
  EXPECT_EQ(down.code(), ErrorCode::kUnavailable);
  EXPECT_TRUE(km->Describe().ok());  // the versions are the registry's: no answer from KMS in them
  http->Then(200, R"({"KeyMetadata":{"Arn":")" + kArn + R"(","KeyState":"PendingDeletion"}})");
  Status pending = km->Probe();
  EXPECT_EQ(pending.code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(pending.error().message.find("PendingDeletion"), std::string::npos);
  size_t before = http->calls.size();
  http->Then(200, R"({"KeyMetadata":{"Arn":")" + kArn + R"(","KeyState":"Enabled"}})");
  EXPECT_TRUE(km->Probe().ok());
  EXPECT_EQ(http->calls.size(), before + 1);
  EXPECT_EQ(testing::ScriptedTransport::HeaderOf(http->calls.back(), "X-Amz-Target"), "TrentService.DescribeKey");
  clock_.Advance(std::chrono::seconds(5));
  before = http->calls.size();
  auto known = km->KnownState();  // for health: never waits on KMS
  ASSERT_TRUE(known.ok());
  EXPECT_EQ(known->primary_version, 1u);
  EXPECT_EQ(http->calls.size(), before);
}

// Issue 9 item 3: an instance labels new data keys with a version another
// instance made within a second, and reads a version's state from the
// registry, not from memory.
TEST_F(KmsTest, AnotherInstancesNewVersionIsUsedWithinASecond) {
  const std::string plain(32, 'p');
  const std::string data_key = R"({"KeyId":")" + kArn + R"(","Plaintext":")" + Base64Encode(plain) +
                               R"(","CiphertextBlob":")" + Base64Encode("blob") + "\"}";
  testing::ScriptedTransport* b_http;
  auto b = Open(b_http);
  b_http->Then(200, Described());
  b_http->Then(200, data_key);
  ASSERT_EQ(b->GenerateDataKey()->version, 1u);

  testing::ScriptedTransport* a_http;
  auto a = Open(a_http);
  a_http->Then(200, Described());
  a_http->Then(501, "Passed X-Amz-Target (TrentService.RotateKeyOnDemand) is not implemented");
  ASSERT_EQ(*a->Rotate(), 2u);
  clock_.Advance(std::chrono::seconds(1));  // B is not restarted and decrypts nothing new
  b_http->Then(200, data_key);
  auto dk = b->GenerateDataKey();
  ASSERT_TRUE(dk.ok()) << dk.error().message;
  EXPECT_EQ(dk->version, 2u);

  ASSERT_TRUE(a->BeginRetire(1).ok());
  EXPECT_EQ(*b->CurrentState(1), "retiring");  // no time passes: read from the registry
  EXPECT_EQ(a->BeginRetire(2).code(), ErrorCode::kFailedPrecondition);
}

}  // namespace
}  // namespace dyad
