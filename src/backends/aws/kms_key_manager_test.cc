#include "testing/log_capture.h"
#include "backends/aws/kms_key_manager.h"

#include <gtest/gtest.h>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>
#include <sstream>

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

// What spdlog writes while it lives.
using testing::LogCapture;

// How moto (IAM policy checks on) refuses an action: 403 and a query-protocol
// XML body, not AWS's 400 AccessDeniedException JSON.
std::string MotoDenied(const std::string& action) {
  return R"(<?xml version="1.0" encoding="utf-8"?>
<ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>User: arn:aws:iam::123456789012:user/seed is not )"
         R"(authorized to perform: )" + action + R"(</Message><Type>Sender</Type></Error></Errors></ErrorResponse>)";
}

std::string AwsDenied(const std::string& action) {
  return R"({"__type":"AccessDeniedException","message":"User: arn:aws:iam::111122223333:user/seed is not )"
         R"(authorized to perform: )" + action + R"( on resource: )" + kArn + R"("})";
}

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
  static std::string Encrypted(const std::string& blob, const std::string& arn = kArn) {
    return R"({"KeyId":")" + arn + R"(","CiphertextBlob":")" + Base64Encode(blob) + R"(","EncryptionAlgorithm":"SYMMETRIC_DEFAULT"})";
  }
  static std::string Decrypted(const std::string& plain) {
    return R"({"KeyId":")" + kArn + R"(","Plaintext":")" + Base64Encode(plain) + "\"}";
  }
  static std::string Target(const testing::ScriptedTransport* http, size_t i) {
    return testing::ScriptedTransport::HeaderOf(http->calls.at(i), "X-Amz-Target");
  }
  static nlohmann::json Body(const testing::ScriptedTransport* http, size_t i) {
    return nlohmann::json::parse(http->calls.at(i).body);
  }

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
  LogCapture log;
  http->Then(400, AwsDenied("kms:ListKeyRotations"));
  clock_.Advance(std::chrono::seconds(1));
  EXPECT_EQ(km->Describe()->primary_version, 3u);  // not allowed to list: the registry's versions stand
  // Not asked again: the versions are the gateway's own rotations from now on.
  size_t before = http->calls.size();
  clock_.Advance(std::chrono::seconds(5));
  EXPECT_EQ(km->Describe()->primary_version, 3u);
  EXPECT_EQ(http->calls.size(), before);
  http->Then(200, "{}");  // RotateKeyOnDemand, and nothing after it
  EXPECT_EQ(*km->Rotate(), 4u);
  ASSERT_EQ(http->calls.size(), before + 1);
  EXPECT_EQ(Target(http, before), "TrentService.RotateKeyOnDemand");
  EXPECT_EQ(log.Count("kms:ListKeyRotations is not permitted"), 1u) << log.Text();
}

// Issue 10: under the seed's policy (no kms:ReEncrypt*), a data key moves to
// the primary version by Decrypt + Encrypt; the denial is said once and not
// asked for again.
TEST_F(KmsTest, ReEncryptDeniedFallsBackToDecryptAndEncrypt) {
  LogCapture log;
  testing::ScriptedTransport* http;
  auto km = Open(http);
  const std::string plain(32, 'd');
  http->Then(200, Described());
  http->Then(403, MotoDenied("kms:ReEncrypt"));
  http->Then(200, Decrypted(plain));
  http->Then(200, Encrypted("rewrapped"));
  auto moved = km->ReEncrypt(1, "blob", "dyad/providers/a", "dyad/providers/b");
  ASSERT_TRUE(moved.ok()) << moved.error().message;
  EXPECT_EQ(moved->wrapped, "rewrapped");
  EXPECT_EQ(moved->version, 1u);
  ASSERT_EQ(http->calls.size(), 4u);
  EXPECT_EQ(Target(http, 1), "TrentService.ReEncrypt");
  EXPECT_EQ(Target(http, 2), "TrentService.Decrypt");
  EXPECT_EQ(Target(http, 3), "TrentService.Encrypt");
  EXPECT_EQ(Body(http, 2)["EncryptionContext"], nlohmann::json({{"secret", "dyad/providers/a"}}));
  EXPECT_EQ(Body(http, 2)["CiphertextBlob"], Base64Encode("blob"));
  EXPECT_EQ(Body(http, 3)["EncryptionContext"], nlohmann::json({{"secret", "dyad/providers/b"}}));
  EXPECT_EQ(Body(http, 3)["KeyId"], "alias/dyad-key");
  EXPECT_EQ(Body(http, 3)["Plaintext"], Base64Encode(plain));

  // Remembered: straight to Decrypt + Encrypt; an empty context stays out.
  http->Then(200, Decrypted(plain));
  http->Then(200, Encrypted("again"));
  auto again = km->ReEncrypt(1, "blob", "", "dyad/providers/a");
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(again->wrapped, "again");
  ASSERT_EQ(http->calls.size(), 6u);
  EXPECT_EQ(Target(http, 4), "TrentService.Decrypt");
  EXPECT_FALSE(Body(http, 4).contains("EncryptionContext"));
  EXPECT_EQ(Target(http, 5), "TrentService.Encrypt");

  // Every answer is checked: the key that encrypted, the data key's length.
  http->Then(200, Decrypted(plain));
  http->Then(200, Encrypted("theirs", "arn:aws:kms:us-east-1:111122223333:key/other"));
  auto other = km->ReEncrypt(1, "blob", "", "x");
  EXPECT_EQ(other.code(), ErrorCode::kDataLoss);
  EXPECT_NE(other.error().message.find("Encrypt: answered by KMS key"), std::string::npos) << other.error().message;
  http->Then(200, Decrypted(std::string(16, 'd')));
  EXPECT_EQ(km->ReEncrypt(1, "blob", "", "x").code(), ErrorCode::kDataLoss);
  http->Then(200, Decrypted(plain));
  http->Then(200, R"({"KeyId":")" + kArn + R"("})");
  EXPECT_EQ(km->ReEncrypt(1, "blob", "", "x").code(), ErrorCode::kUnavailable);  // no CiphertextBlob
  http->Then(400, R"({"__type":"InvalidCiphertextException"})");
  EXPECT_EQ(km->ReEncrypt(1, "tampered", "", "x").code(), ErrorCode::kDataLoss);
  EXPECT_EQ(km->ReEncrypt(7, "blob", "", "x").code(), ErrorCode::kNotFound);

  EXPECT_EQ(log.Count("kms:ReEncrypt* is not permitted"), 1u) << log.Text();
  EXPECT_NE(log.Text().find("not authorized to perform: kms:ReEncrypt"), std::string::npos);  // AWS's words
  EXPECT_EQ(log.Text().find(Base64Encode(plain)), std::string::npos);
}

TEST_F(KmsTest, OnlyAPolicyDenialOfReEncryptFallsBack) {
  testing::ScriptedTransport* http;
  auto km = Open(http);
  http->Then(200, Described());
  http->Then(400, R"({"__type":"InvalidSignatureException","message":"bad signature"})");
  EXPECT_EQ(km->ReEncrypt(1, "blob").code(), ErrorCode::kPermissionDenied);  // credentials, not the policy
  http->Then(400, R"({"__type":"KMSInvalidStateException","message":"pending deletion"})");
  EXPECT_EQ(km->ReEncrypt(1, "blob").code(), ErrorCode::kFailedPrecondition);
  http->Then(200, Encrypted("moved"));
  auto moved = km->ReEncrypt(1, "blob");
  ASSERT_TRUE(moved.ok()) << moved.error().message;
  EXPECT_EQ(Target(http, http->calls.size() - 1), "TrentService.ReEncrypt");  // still asked for ReEncrypt
}

// Issue 10: without kms:DescribeKey the key's ARN comes from an Encrypt
// answer, and the health probe is an Encrypt of a constant.
TEST_F(KmsTest, DescribeKeyDeniedArnFromEncryptAndProbeByEncrypt) {
  LogCapture log;
  testing::ScriptedTransport* http;
  auto km = Open(http);
  const std::string plain(32, 'p');
  http->Then(400, AwsDenied("kms:DescribeKey"));
  http->Then(200, Encrypted("probe"));
  http->Then(200, R"({"KeyId":")" + kArn + R"(","Plaintext":")" + Base64Encode(plain) +
                      R"(","CiphertextBlob":")" + Base64Encode("blob") + "\"}");
  auto dk = km->GenerateDataKey("dyad/providers/a");
  ASSERT_TRUE(dk.ok()) << dk.error().message;
  EXPECT_EQ(dk->wrapped, "blob");
  ASSERT_EQ(http->calls.size(), 3u);
  EXPECT_EQ(Target(http, 0), "TrentService.DescribeKey");
  EXPECT_EQ(Target(http, 1), "TrentService.Encrypt");
  EXPECT_EQ(Body(http, 1)["KeyId"], "alias/dyad-key");
  EXPECT_FALSE(Body(http, 1).contains("EncryptionContext"));
  EXPECT_EQ(Target(http, 2), "TrentService.GenerateDataKey");

  // The ARN so learnt checks every answer.
  http->Then(200, R"({"KeyId":"arn:aws:kms:us-east-1:111122223333:key/other","Plaintext":")" + Base64Encode(plain) + "\"}");
  EXPECT_EQ(km->Decrypt(1, "blob", "dyad/providers/a").code(), ErrorCode::kDataLoss);

  // Probe: no DescribeKey again, an Encrypt answered by the key resolved.
  http->Then(200, Encrypted("probe"));
  EXPECT_TRUE(km->Probe().ok());
  EXPECT_EQ(Target(http, http->calls.size() - 1), "TrentService.Encrypt");
  http->Then(200, Encrypted("probe", "arn:aws:kms:us-east-1:111122223333:key/moved"));
  Status moved = km->Probe();  // the alias now points at another key
  EXPECT_EQ(moved.code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(moved.error().message.find("key/moved"), std::string::npos);
  http->Then(400, R"({"__type":"DisabledException","message":")" + kArn + R"( is disabled."})");
  Status disabled = km->Probe();
  EXPECT_EQ(disabled.code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(disabled.error().message.find("disabled"), std::string::npos);
  http->ThenFail(MakeError(ErrorCode::kUnavailable, "connection refused"));
  EXPECT_EQ(km->Probe().code(), ErrorCode::kUnavailable);
  for (const auto& call : http->calls) {
    if (&call != &http->calls.front()) EXPECT_NE(testing::ScriptedTransport::HeaderOf(call, "X-Amz-Target"), "TrentService.DescribeKey");
  }
  EXPECT_EQ(log.Count("kms:DescribeKey is not permitted"), 1u) << log.Text();
}

TEST_F(KmsTest, ProbeFindsDescribeKeyDeniedAndTheArnMustNameTheConfiguredKey) {
  LogCapture log;
  testing::ScriptedTransport* http;
  auto km = Open(http);
  http->Then(403, MotoDenied("kms:DescribeKey"));  // the first look is the health probe's
  http->Then(200, Encrypted("probe"));
  EXPECT_TRUE(km->Probe().ok());
  EXPECT_EQ(http->calls.size(), 2u);
  EXPECT_EQ(log.Count("kms:DescribeKey is not permitted"), 1u) << log.Text();

  // A key id (not an alias) names one key: an answer for another is refused.
  auto t = std::make_unique<testing::ScriptedTransport>();
  auto* by_id_http = t.get();
  auto client = std::move(AwsJsonClient::Create({"kms", "TrentService", "http://127.0.0.1:1", "us-east-1", {}}, creds_,
                                                std::move(t), clock_, random_)).value();
  auto by_id = std::move(NewKmsKeyManager("1234abcd-12ab-34cd-56ef-1234567890ff", std::move(client), NewSqliteKeyVersionRepository(db_), clock_)).value();
  by_id_http->Then(400, AwsDenied("kms:DescribeKey"));
  by_id_http->Then(200, Encrypted("probe"));  // kArn ends in …890ab, not …890ff
  EXPECT_EQ(by_id->GenerateDataKey().code(), ErrorCode::kDataLoss);
  by_id_http->Then(200, Encrypted("probe", "arn:aws:kms:us-east-1:111122223333:alias/dyad-key"));
  EXPECT_EQ(by_id->GenerateDataKey().code(), ErrorCode::kDataLoss);  // an alias is not a key
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
