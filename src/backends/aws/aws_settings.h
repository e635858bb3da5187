// AwsSettings: the settings of SECRETS_PROVIDER=aws, read from the
// environment.
//
// ReadAwsSettings() parses and validates them; an error is kInvalidArgument
// naming the variable and the accepted form, never a secret value. The AWS
// credential chain reads the rest of its variables (AWS_PROFILE,
// AWS_ROLE_ARN, …) from the plain environment when it needs them. A pure
// function but for reading the AWS config file (the profile's region).
#pragma once

#include <string>
#include <vector>

#include "core/config.h"
#include "core/environment.h"
#include "core/result.h"
#include "core/secret_bytes.h"

namespace dyad {

struct AwsSettings {
  SecretBytes secret_access_key{};  // AWS_SECRET_ACCESS_KEY
  SecretBytes session_token{};      // AWS_SESSION_TOKEN
  std::string region;  // AWS_REGION, AWS_DEFAULT_REGION, or the profile's region
  std::string endpoint_secrets_manager;  // AWS_ENDPOINT_URL_SECRETS_MANAGER, AWS_ENDPOINT_URL, or AWS's
  std::string endpoint_kms;              // AWS_ENDPOINT_URL_KMS, AWS_ENDPOINT_URL, or AWS's
  std::string endpoint_sts;              // AWS_ENDPOINT_URL_STS, AWS_ENDPOINT_URL, or AWS's
  std::string ca_bundle;                 // AWS_CA_BUNDLE
  int max_attempts = 3;                  // AWS_MAX_ATTEMPTS
  int recovery_window_days = 30;         // AWS_SECRETS_RECOVERY_WINDOW_DAYS (7–30)
  int timeout_ms = 10000;                // AWS_REQUEST_TIMEOUT_MS
  int concurrency = 8;                   // AWS_CONCURRENCY: calls at once of a batch (key rotation)
  // AWS_SECRETS_REPLICA_REGIONS: regions a new secret is replicated to
  // (CreateSecret's AddReplicaRegions); region names, not AWS_REGION, no repeats.
  std::vector<std::string> replica_regions;
};

// `env`: the plain variables; `secrets`: the secret ones (Config::secret_env).
Result<AwsSettings> ReadAwsSettings(const EnvMap& env, const SecretEnv& secrets);

// SECRETS_ALLOWED_REGIONS (Config::allowed_regions) against where the
// settings put the store (AWS_REGION, or the region of an
// AWS_ENDPOINT_URL[_SECRETS_MANAGER] host `…REGION.amazonaws.com`), the KMS
// key (AWS_ENDPOINT_URL[_KMS]'s region, an ENCRYPTION_KEY_ID ARN's region)
// and each replica: kFailedPrecondition naming the variable and the region.
// An endpoint on another host (a VPC endpoint, a test server) is taken to
// be in AWS_REGION, the region its requests are signed for.
Status CheckAwsResidency(const AwsSettings& aws, const Config& config);

// SECRETS_PREFIX as the start of Secrets Manager names
// (`<prefix>/providers/<id>`): letters, digits and /_+=.@-, the whole name
// at most 512 characters.
Status CheckAwsSecretsPrefix(const std::string& prefix);

}  // namespace dyad
