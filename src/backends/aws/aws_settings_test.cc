#include "backends/aws/aws_settings.h"

#include <gtest/gtest.h>

#include <fstream>

#include "backends/aws/factory.h"
#include "testing/fakes.h"

namespace dyad {
namespace {

std::string ErrorFor(const EnvMap& env) {
  auto s = ReadAwsSettings(env, {});
  EXPECT_FALSE(s.ok());
  return s.ok() ? "" : s.error().message;
}

TEST(AwsSettings, NeedARegionAndTakeEndpointOverrides) {
  EnvMap env = {{"HOME", "/nonexistent"}};
  EXPECT_NE(ErrorFor(env).find("AWS_REGION: is required"), std::string::npos);
  env["AWS_DEFAULT_REGION"] = "eu-west-1";
  auto s = ReadAwsSettings(env, {});
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->region, "eu-west-1");
  EXPECT_EQ(s->endpoint_kms, "https://kms.eu-west-1.amazonaws.com");
  EXPECT_EQ(s->endpoint_secrets_manager, "https://secretsmanager.eu-west-1.amazonaws.com");
  EXPECT_EQ(s->endpoint_sts, "https://sts.eu-west-1.amazonaws.com");
  EXPECT_EQ(s->recovery_window_days, 30);
  EXPECT_EQ(s->max_attempts, 3);
  EXPECT_EQ(s->timeout_ms, 10000);
  EXPECT_EQ(s->concurrency, 8);
  env["AWS_REGION"] = "us-east-2";
  env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:4566/";
  env["AWS_ENDPOINT_URL_KMS"] = "http://127.0.0.1:8080";
  s = ReadAwsSettings(env, {});
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->region, "us-east-2");
  EXPECT_EQ(s->endpoint_secrets_manager, "http://127.0.0.1:4566");
  EXPECT_EQ(s->endpoint_kms, "http://127.0.0.1:8080");
  env["AWS_ENDPOINT_URL_KMS"] = "kms.local:8080";
  EXPECT_NE(ErrorFor(env).find("AWS_ENDPOINT_URL_KMS: 'kms.local:8080' is not an endpoint URL"), std::string::npos);
  // Plain http only to a loopback host, unless the network is said to be trusted.
  env["AWS_ENDPOINT_URL_KMS"] = "http://kms.internal:8080";
  EXPECT_NE(ErrorFor(env).find("AWS_ENDPOINT_URL_KMS: 'http://kms.internal:8080' is plain http to a host that is not "
                               "loopback"),
            std::string::npos);
  env["SECRETS_ALLOW_PLAINTEXT_BACKEND"] = "true";
  s = ReadAwsSettings(env, {});
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->endpoint_kms, "http://kms.internal:8080");
  env.erase("SECRETS_ALLOW_PLAINTEXT_BACKEND");
  env.erase("AWS_ENDPOINT_URL_KMS");
  env["AWS_SECRETS_RECOVERY_WINDOW_DAYS"] = "3";
  EXPECT_NE(ErrorFor(env).find("AWS_SECRETS_RECOVERY_WINDOW_DAYS"), std::string::npos);
  env.erase("AWS_SECRETS_RECOVERY_WINDOW_DAYS");
  env["AWS_MAX_ATTEMPTS"] = "0";
  EXPECT_NE(ErrorFor(env).find("AWS_MAX_ATTEMPTS: '0' is not valid; use an integer from 1 to 10"), std::string::npos);
  env.erase("AWS_MAX_ATTEMPTS");
  env["AWS_REGION"] = "us east";
  EXPECT_NE(ErrorFor(env).find("AWS_REGION: 'us east' is not a region"), std::string::npos);
}

TEST(AwsSettings, RegionFromTheProfileConfigFile) {
  testing::TempDir dir;
  std::ofstream(dir.File("config")) << "[default]\nregion = ap-south-1\n[profile dev]\nregion = sa-east-1\n";
  EnvMap env = {{"AWS_CONFIG_FILE", dir.File("config")}};
  EXPECT_EQ(ReadAwsSettings(env, {})->region, "ap-south-1");
  env["AWS_PROFILE"] = "dev";
  EXPECT_EQ(ReadAwsSettings(env, {})->region, "sa-east-1");
}

TEST(AwsSettings, SecretKeysComeFromTheSecretVariables) {
  SecretEnv secrets;
  secrets.emplace("AWS_SECRET_ACCESS_KEY", SecretBytes(std::string_view("aws-secret-canary")));
  secrets.emplace("AWS_SESSION_TOKEN", SecretBytes(std::string_view("aws-token-canary")));
  auto s = ReadAwsSettings({{"AWS_REGION", "us-east-1"}}, secrets);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->secret_access_key.view(), "aws-secret-canary");
  EXPECT_EQ(s->session_token.view(), "aws-token-canary");
}

TEST(AwsSettings, SecretsPrefixTakesEveryCharacterOfAwsNamesUpToTheNameLimit) {
  EXPECT_TRUE(CheckAwsSecretsPrefix("a/b_c+d=e.f@g-h").ok());
  auto bad = CheckAwsSecretsPrefix("has space");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("SECRETS_PREFIX: use letters, digits and /_+=.@-"), std::string::npos);
  EXPECT_FALSE(CheckAwsSecretsPrefix("").ok());
  // 465 + "/providers/" + a 36-character id = 512.
  EXPECT_TRUE(CheckAwsSecretsPrefix(std::string(465, 'p')).ok());
  auto long_one = CheckAwsSecretsPrefix(std::string(466, 'p'));
  ASSERT_FALSE(long_one.ok());
  EXPECT_NE(long_one.error().message.find("SECRETS_PREFIX: use at most 465 characters"), std::string::npos);
}

// The factory checks through the registry, as start-up does: its settings,
// its prefix rule, and provider mode (which Secrets Manager can do).
TEST(AwsFactory, ChecksItsSettingsBeforeOpeningAnything) {
  BackendRegistry registry;
  ASSERT_TRUE(RegisterAwsBackend(registry).ok());
  auto config = LoadConfig({{"SECRETS_PROVIDER", "aws"}, {"GATEWAY_ADMIN_API_KEY", "0123456789abcdef-admin"},
                            {"HOME", "/nonexistent"}}, false);
  ASSERT_TRUE(config.ok()) << config.error().message;  // no ENCRYPTION_KEY needed: KMS holds the key
  auto missing = registry.Check(*config);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("AWS_REGION: is required"), std::string::npos);
  config->env["AWS_REGION"] = "us-east-1";
  config->encryption_mode = "provider";
  EXPECT_TRUE(registry.Check(*config).ok());
  config->secrets_prefix = std::string(200, 'x') + " y";
  auto prefix = registry.Check(*config);
  ASSERT_FALSE(prefix.ok());
  EXPECT_EQ(prefix.error().message.rfind("SECRETS_PREFIX:", 0), 0u);
}

TEST(AwsSettings, ReplicaRegionsAreRegionNamesOtherThanAwsRegion) {
  EnvMap env = {{"HOME", "/nonexistent"}, {"AWS_REGION", "eu-central-1"}};
  env["AWS_SECRETS_REPLICA_REGIONS"] = "eu-west-1, eu-north-1";
  auto s = ReadAwsSettings(env, {});
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->replica_regions, (std::vector<std::string>{"eu-west-1", "eu-north-1"}));
  for (std::string bad : {"eu-west-1,", "EU-WEST-1", "eu-west-1,eu-west-1", "eu-central-1", "https://x", "eu west 1"}) {
    env["AWS_SECRETS_REPLICA_REGIONS"] = bad;
    EXPECT_EQ(ErrorFor(env).rfind("AWS_SECRETS_REPLICA_REGIONS: ", 0), 0u) << bad;
  }
}

// Found by review: the European Sovereign Cloud's eusc-de-east-1 (an area of
// four letters) was refused as "not a region name".
TEST(AwsSettings, ReplicaRegionsOfEveryPartitionAndNoGarbage) {
  EnvMap env = {{"HOME", "/nonexistent"}, {"AWS_REGION", "eusc-de-east-1"}};
  env["AWS_SECRETS_REPLICA_REGIONS"] = "eusc-de-east-2,us-gov-west-1,cn-north-1,us-iso-east-1,us-isob-east-1,ap-southeast-5";
  auto s = ReadAwsSettings(env, {});
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->replica_regions, (std::vector<std::string>{"eusc-de-east-2", "us-gov-west-1", "cn-north-1",
                                                          "us-iso-east-1", "us-isob-east-1", "ap-southeast-5"}));
  for (std::string bad : {"eusc-de-east-1a", "euscx-de-east-1", "us-east-01", "us-gov--west-1", "us-iso-east-1x",
                          "us-east-1.evil", "cn-north-1\t"}) {
    env["AWS_SECRETS_REPLICA_REGIONS"] = bad;
    std::string e = ErrorFor(env);
    EXPECT_EQ(e.rfind("AWS_SECRETS_REPLICA_REGIONS: '", 0), 0u) << bad << ": " << e;
    EXPECT_NE(e.find("is not a region name"), std::string::npos) << e;
  }
}

std::string ResidencyError(EnvMap env, const std::string& key_id = "alias/dyad") {
  env["HOME"] = "/nonexistent";
  Config c;
  c.env = env;
  c.encryption_key_id = key_id;
  auto allowed = ReadAllowedRegions(env);
  EXPECT_TRUE(allowed.ok());
  c.allowed_regions = *allowed;
  auto aws = ReadAwsSettings(env, {});
  EXPECT_TRUE(aws.ok()) << aws.error().message;
  Status s = CheckAwsResidency(*aws, c);
  return s.ok() ? "" : s.error().message;
}

TEST(AwsSettings, ResidencyHoldsStoreKmsAndReplicasToTheList) {
  EnvMap env = {{"AWS_REGION", "eu-central-1"}, {"SECRETS_ALLOWED_REGIONS", "eu-central-1,eu-west-1"}};
  EXPECT_EQ(ResidencyError(env), "");
  env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:5000";  // a private endpoint: in AWS_REGION
  EXPECT_EQ(ResidencyError(env), "");
  env["AWS_SECRETS_REPLICA_REGIONS"] = "eu-west-1";
  EXPECT_EQ(ResidencyError(env), "");

  EnvMap other = env;
  other["AWS_REGION"] = "us-east-1";
  other.erase("AWS_SECRETS_REPLICA_REGIONS");
  std::string e = ResidencyError(other);
  EXPECT_NE(e.find("SECRETS_ALLOWED_REGIONS"), std::string::npos) << e;
  EXPECT_NE(e.find("(AWS_REGION)"), std::string::npos) << e;
  EXPECT_NE(e.find("us-east-1"), std::string::npos) << e;

  EnvMap replica = env;
  replica["AWS_SECRETS_REPLICA_REGIONS"] = "eu-west-1,us-west-2";
  e = ResidencyError(replica);
  EXPECT_NE(e.find("AWS_SECRETS_REPLICA_REGIONS"), std::string::npos) << e;
  EXPECT_NE(e.find("us-west-2"), std::string::npos) << e;

  EnvMap kms = env;
  kms["AWS_ENDPOINT_URL_KMS"] = "https://kms.us-east-1.amazonaws.com";
  e = ResidencyError(kms);
  EXPECT_NE(e.find("(AWS_ENDPOINT_URL_KMS)"), std::string::npos) << e;
  EXPECT_NE(e.find("us-east-1"), std::string::npos) << e;

  EnvMap sm = env;
  sm["AWS_ENDPOINT_URL"] = "https://secretsmanager.ap-south-1.amazonaws.com";
  e = ResidencyError(sm);
  EXPECT_NE(e.find("(AWS_ENDPOINT_URL)"), std::string::npos) << e;

  e = ResidencyError(env, "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab");
  EXPECT_NE(e.find("(ENCRYPTION_KEY_ID)"), std::string::npos) << e;
  EXPECT_NE(e.find("us-east-1"), std::string::npos) << e;
  EXPECT_EQ(ResidencyError(env, "arn:aws:kms:eu-west-1:123456789012:alias/dyad"), "");
}

}  // namespace
}  // namespace dyad
