#include "backends/aws/factory.h"

#include <algorithm>

#include "backends/aws/aws_credentials.h"
#include "backends/aws/aws_json_client.h"
#include "backends/aws/aws_settings.h"
#include "backends/aws/kms_key_manager.h"
#include "backends/aws/secrets_manager_store.h"
#include "core/residency.h"
#include "transport/curl_transport.h"

namespace dyad {
namespace {

class AwsBackendFactory final : public BackendFactory {
 public:
  const std::string& Name() const override { return name_; }

  Status Check(const Config& config) const override {
    DYAD_RETURN_IF_ERROR(CheckAwsSecretsPrefix(config.secrets_prefix));
    DYAD_ASSIGN_OR_RETURN(AwsSettings aws, ReadAwsSettings(config.env, config.secret_env));
    DYAD_RETURN_IF_ERROR(CheckAwsResidency(aws, config));
    return OkStatus();
  }

  // The endpoint and the region (a custom endpoint keeps the secrets of each
  // signing region apart, as AWS's own do).
  Result<std::string> StoreLocation(const Config& config) const override {
    DYAD_ASSIGN_OR_RETURN(AwsSettings aws, ReadAwsSettings(config.env, config.secret_env));
    return "aws Secrets Manager at " + CanonicalUrl(aws.endpoint_secrets_manager).value_or(aws.endpoint_secrets_manager) +
           ", region " + aws.region + ", SECRETS_PREFIX '" + config.secrets_prefix + "'";
  }

  Result<Backend> Open(const BackendContext& context) const override {
    const Config& config = context.config;
    DYAD_ASSIGN_OR_RETURN(AwsSettings aws, ReadAwsSettings(config.env, config.secret_env));
    Backend b;
    CurlOptions curl;
    curl.ca_file = aws.ca_bundle;
    curl.request_timeout = std::chrono::milliseconds(aws.timeout_ms);
    HttpTransport& credentials_http = b.resources.Add(NewCurlTransport(curl));
    AwsChainOptions chain{config.env, aws.region, aws.endpoint_sts};
    chain.secret_access_key = aws.secret_access_key;
    chain.session_token = aws.session_token;
    AwsCredentialSource& credentials =
        b.resources.Add(NewAwsCredentialChain(std::move(chain), credentials_http, context.clock));
    RetryPolicy retry;
    retry.max_attempts = aws.max_attempts;
    auto client = [&](const char* service, const char* target, const std::string& endpoint) {
      return AwsJsonClient::Create({service, target, endpoint, aws.region, retry, context.observer}, credentials,
                                   NewCurlTransport(curl), context.clock, context.random);
    };
    DYAD_ASSIGN_OR_RETURN(auto kms, client("kms", "TrentService", aws.endpoint_kms));
    DYAD_ASSIGN_OR_RETURN(b.keys, NewKmsKeyManager(config.encryption_key_id, std::move(kms),
                                                   context.db->NewKeyVersionRepository(), context.clock));
    DYAD_ASSIGN_OR_RETURN(auto sm, client("secretsmanager", "secretsmanager", aws.endpoint_secrets_manager));
    SecretsManagerOptions so;
    so.prefix = config.secrets_prefix;
    if (config.encryption_mode == "provider") so.kms_key_id = KmsKeyReference(config.encryption_key_id);
    so.recovery_window_days = aws.recovery_window_days;
    so.parallelism = static_cast<size_t>(aws.concurrency);
    so.replica_regions = aws.replica_regions;
    b.traits.rotation_parallelism = so.parallelism;
    // Every attempt of a create at its timeout, and the backoff between them.
    b.traits.longest_write = std::chrono::seconds(aws.max_attempts * (aws.timeout_ms / 1000 + 5));
    b.store = NewSecretsManagerStore(std::move(so), std::move(sm));
    return b;
  }

 private:
  const std::string name_ = "aws";
};

}  // namespace

Status RegisterAwsBackend(BackendRegistry& registry) {
  return registry.Register(std::make_unique<AwsBackendFactory>());
}

}  // namespace dyad
