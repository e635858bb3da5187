#include "backends/vault/dynamic_secrets.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/clock.h"
#include "testing/fakes.h"

namespace dyad {
namespace {

using namespace std::chrono_literals;

class VaultDynamicSecretsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = std::make_unique<testing::ScriptedTransport>();
    http_ = t.get();
    VaultClientOptions o;
    o.address = "http://127.0.0.1:1";
    o.retry.max_attempts = 1;
    client_ = std::move(VaultClient::Create(o, nullptr, std::move(t), clock_, random_)).value();
    VaultDynamicOptions d;
    d.allowed = {"database/creds/", "kv-shared/"};
    source_ = NewVaultDynamicSecrets(*client_, d);
  }
  nlohmann::json Body(size_t i) { return nlohmann::json::parse(http_->calls.at(i).body); }

  FakeClock clock_;
  testing::ConstantRandom random_{7};
  testing::ScriptedTransport* http_ = nullptr;
  std::unique_ptr<VaultClient> client_;
  std::unique_ptr<DynamicSecretSource> source_;
};

TEST_F(VaultDynamicSecretsTest, ReadsTheSecretAndItsLease) {
  http_->Then(200, R"({"request_id":"r","lease_id":"database/creds/readonly/AbC","renewable":true,
    "lease_duration":3600,"data":{"username":"v-token-readonly-x","password":"pw-1","n":5},"warnings":null})");
  auto s = source_->Read("database/creds/readonly");
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(http_->calls[0].method, "GET");
  EXPECT_EQ(http_->calls[0].url, "http://127.0.0.1:1/v1/database/creds/readonly");
  EXPECT_EQ(s->lease_id, "database/creds/readonly/AbC");
  EXPECT_EQ(s->lease_ttl, 3600s);
  EXPECT_TRUE(s->renewable);
  ASSERT_EQ(s->fields.size(), 2u);  // the number is not a string field
  EXPECT_EQ(s->fields.at("username").view(), "v-token-readonly-x");
  EXPECT_EQ(s->fields.at("password").view(), "pw-1");
}

TEST_F(VaultDynamicSecretsTest, AKvV2SecretHasItsFieldsOneLevelDownAndNoLease) {
  http_->Then(200, R"({"lease_id":"","renewable":false,"lease_duration":0,
    "data":{"data":{"api_key":"sk-1"},"metadata":{"version":3}}})");
  auto s = source_->Read("kv-shared/data/openai");
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->fields.at("api_key").view(), "sk-1");
  EXPECT_EQ(s->lease_id, "");
  EXPECT_EQ(s->lease_ttl, 0s);
}

TEST_F(VaultDynamicSecretsTest, MalformedAnswersAreDataLossWithoutValues) {
  for (const char* body : {R"({"data":"pw-secret"})", R"({"lease_id":"x"})", R"({"data":[],"lease_id":"x"})",
                           R"({"data":{"password":"pw-secret"},"lease_id":7})",
                           R"({"data":{"password":"pw-secret"},"lease_id":"l","lease_duration":"60"})",
                           R"({"data":{"password":"pw-secret"},"lease_id":"l","lease_duration":-1})",
                           R"({"data":{"password":"pw-secret"},"lease_id":"l","lease_duration":1e300})",
                           R"({"data":{"password":"pw-secret"},"lease_id":"l","lease_duration":99999999999999})",
                           R"({"data":{"password":"pw-secret"},"lease_id":"l","renewable":"yes"})"}) {
    http_->Then(200, body);
    auto s = source_->Read("database/creds/readonly");
    ASSERT_EQ(s.code(), ErrorCode::kDataLoss) << body;
    EXPECT_EQ(s.error().message.find("pw-secret"), std::string::npos);
    EXPECT_EQ(s.error().message.rfind("dynamic.read database/creds/readonly: the answer's", 0), 0u) << s.error().message;
  }
  http_->Then(200, "not json");
  EXPECT_EQ(source_->Read("database/creds/readonly").code(), ErrorCode::kUnavailable);
}

TEST_F(VaultDynamicSecretsTest, ErrorsKeepVaultsMessageAndNameThePathAndCapability) {
  http_->Then(403, R"({"errors":["1 error occurred:\n\t* permission denied\n\n"]})");
  auto s = source_->Read("database/creds/readonly");
  ASSERT_EQ(s.code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(s.error().message, "dynamic.read: HTTP 403: permission denied (the token's policy needs 'read' on "
                               "'database/creds/readonly')");
  http_->Then(404, R"({"errors":[]})");
  EXPECT_EQ(source_->Read("database/creds/nope").code(), ErrorCode::kNotFound);
  http_->Then(503, R"({"errors":["Vault is sealed"]})");
  EXPECT_EQ(source_->Read("database/creds/readonly").code(), ErrorCode::kUnavailable);
}

TEST_F(VaultDynamicSecretsTest, OnlyAllowListedPathsOutsideTheGatewaysOwnMountsAreReadOrRenewed) {
  EXPECT_TRUE(source_->CheckPath("database/creds/readonly").ok());
  EXPECT_TRUE(source_->CheckPath("kv-shared/data/openai").ok());
  const std::string outside = "references a Vault secret outside VAULT_DYNAMIC_PATHS";
  // Prefixes match whole segments; the token's own secrets never, at any depth.
  for (const char* path : {"database/credsX/r", "database/creds", "aws/creds/r", "ns1/auth/token/lookup-self",
                           "secret/data/dyad-gateway/providers/victim", ""}) {
    Status ok = source_->CheckPath(path);
    ASSERT_EQ(ok.code(), ErrorCode::kInvalidArgument) << path;
    EXPECT_EQ(ok.error().message, outside) << path;
  }
  // Even when a broad allowlist covers them.
  VaultDynamicOptions broad;
  broad.allowed = {"ns1/", "secret/", "secretive/", "transit/", "database/"};
  broad.kv_mount = "secret";
  auto wide = NewVaultDynamicSecrets(*client_, broad);
  auto why = [&](const char* path) {
    Status ok = wide->CheckPath(path);
    EXPECT_EQ(ok.code(), ErrorCode::kInvalidArgument) << path;
    return ok.ok() ? std::string() : ok.error().message;
  };
  EXPECT_EQ(why("ns1/auth/token/lookup-self"), "references a Vault secret with a 'auth' segment (the token's own "
                                               "secrets and settings), whatever VAULT_DYNAMIC_PATHS allows");
  for (const char* path : {"ns1/sys/wrapping/unwrap", "ns1/identity/oidc/token/x", "ns1/cubbyhole/x",
                           "database/creds/sys"}) {
    EXPECT_NE(why(path).find("segment (the token's own secrets"), std::string::npos) << path;
  }
  EXPECT_EQ(why("secret/data/dyad-gateway/providers/victim"),
            "references a Vault secret under the gateway's own KV mount secret/ (VAULT_MOUNT_PATH: every provider's "
            "credentials), whatever VAULT_DYNAMIC_PATHS allows");
  EXPECT_NE(why("transit/export/encryption-key/dyad-gateway-k").find("own Transit mount transit/ (VAULT_TRANSIT_MOUNT)"),
            std::string::npos);
  EXPECT_TRUE(wide->CheckPath("secretive/data/x").ok());  // a mount is a whole segment too
  EXPECT_TRUE(wide->CheckPath("ns1/secret/data/x").ok());  // a child namespace's KV is not the gateway's
  // None allowed: references are off.
  auto off = NewVaultDynamicSecrets(*client_, VaultDynamicOptions{});
  EXPECT_EQ(off->CheckPath("database/creds/readonly").error().message,
            "references a Vault secret outside VAULT_DYNAMIC_PATHS (unset: dynamic secrets are off)");
  // Read and Renew enforce it themselves, before any call.
  auto r = source_->Read("secret/data/dyad-gateway/providers/victim");
  ASSERT_EQ(r.code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(r.error().message, "dynamic.read secret/data/dyad-gateway/providers/victim: " + outside);
  EXPECT_EQ(wide->Read("ns1/auth/token/lookup-self").code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(wide->Read("secret/data/dyad-gateway/providers/victim").code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(off->Read("database/creds/readonly").code(), ErrorCode::kFailedPrecondition);
  auto renew = source_->Renew("auth/token/create/abc", 60s);
  ASSERT_EQ(renew.code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(renew.error().message, "lease.renew: " + outside);
  EXPECT_TRUE(http_->calls.empty());
}

TEST_F(VaultDynamicSecretsTest, RenewAndRevoke) {
  http_->Then(200, R"({"lease_id":"database/creds/readonly/AbC","renewable":true,"lease_duration":1800})");
  auto ttl = source_->Renew("database/creds/readonly/AbC", 3600s);
  ASSERT_TRUE(ttl.ok()) << ttl.error().message;
  EXPECT_EQ(*ttl, 1800s);  // Vault may grant less (its max TTL)
  EXPECT_EQ(http_->calls[0].method, "PUT");
  EXPECT_EQ(http_->calls[0].url, "http://127.0.0.1:1/v1/sys/leases/renew");
  EXPECT_EQ(Body(0), (nlohmann::json{{"lease_id", "database/creds/readonly/AbC"}, {"increment", 3600}}));
  http_->Then(400, R"({"errors":["lease not found"]})");
  auto refused = source_->Renew("database/creds/readonly/gone", 3600s);
  ASSERT_EQ(refused.code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(refused.error().message, "lease.renew: HTTP 400: lease not found");
  http_->Then(200, R"({"lease_id":"x","renewable":true})");
  EXPECT_EQ(source_->Renew("database/creds/readonly/x", 60s).code(), ErrorCode::kDataLoss);
  http_->Then(204, "");
  ASSERT_TRUE(source_->Revoke("database/creds/readonly/AbC").ok());
  EXPECT_EQ(http_->calls.back().url, "http://127.0.0.1:1/v1/sys/leases/revoke");
  EXPECT_EQ(Body(http_->calls.size() - 1), (nlohmann::json{{"lease_id", "database/creds/readonly/AbC"}}));
  http_->Then(403, R"({"errors":["permission denied"]})");
  auto denied = source_->Revoke("database/creds/readonly/AbC");
  ASSERT_EQ(denied.code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(denied.error().message.find("needs 'update' on 'sys/leases/revoke'"), std::string::npos);
}

}  // namespace
}  // namespace dyad
