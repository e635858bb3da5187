#include "app/backend.h"

#include "backends/aws/aws_json_client.h"
#include "backends/aws/kms_key_manager.h"
#include "backends/aws/secrets_manager_store.h"
#include "backends/environment/local_keyring.h"
#include "backends/environment/sqlite_secret_store.h"
#include "core/random.h"
#include "registry/sqlite_key_version_repository.h"
#include "transport/curl_transport.h"

namespace dyad {
namespace {

Status OpenAws(const Config& config, std::shared_ptr<SqliteDb> db, const Clock& clock, CloudCallObserver* observer,
               Backend& b) {
  const AwsSettings& aws = config.aws;
  CurlOptions curl;
  curl.ca_file = aws.ca_bundle;
  curl.request_timeout = std::chrono::milliseconds(aws.timeout_ms);
  b.credentials_http = NewCurlTransport(curl);
  AwsChainOptions chain{config.env, aws.region, aws.endpoint_sts};
  chain.secret_access_key = aws.secret_access_key;
  chain.session_token = aws.session_token;
  b.aws_credentials = NewAwsCredentialChain(std::move(chain), *b.credentials_http, clock);
  RetryPolicy retry;
  retry.max_attempts = aws.max_attempts;
  auto client = [&](const char* service, const char* target, const std::string& endpoint) {
    return AwsJsonClient::Create({service, target, endpoint, aws.region, retry, observer}, *b.aws_credentials,
                                 NewCurlTransport(curl), clock, DefaultRandom());
  };
  DYAD_ASSIGN_OR_RETURN(auto kms, client("kms", "TrentService", aws.endpoint_kms));
  DYAD_ASSIGN_OR_RETURN(b.keys, NewKmsKeyManager(config.encryption_key_id, std::move(kms),
                                                   NewSqliteKeyVersionRepository(std::move(db)), clock));
  DYAD_ASSIGN_OR_RETURN(auto sm, client("secretsmanager", "secretsmanager", aws.endpoint_secrets_manager));
  SecretsManagerOptions so;
  so.prefix = config.secrets_prefix;
  if (config.encryption_mode == "provider") so.kms_key_id = KmsKeyReference(config.encryption_key_id);
  so.recovery_window_days = aws.recovery_window_days;
  so.parallelism = static_cast<size_t>(aws.concurrency);
  b.rotation_parallelism = so.parallelism;
  b.store = NewSecretsManagerStore(std::move(so), std::move(sm));
  return OkStatus();
}

}  // namespace

Result<Backend> OpenBackend(const Config& config, std::shared_ptr<SqliteDb> db, const Clock& clock,
                            CloudCallObserver* observer) {
  Backend b;
  if (config.secrets_provider == "aws") {
    DYAD_RETURN_IF_ERROR(OpenAws(config, std::move(db), clock, observer, b));
    return b;
  }
  if (!config.encryption_key) return MakeError(ErrorCode::kInvalidArgument, "ENCRYPTION_KEY: is required");
  LocalKeyringOptions ko{config.encryption_key_id, *config.encryption_key, config.encryption_key_previous};
  DYAD_ASSIGN_OR_RETURN(b.keys, NewLocalKeyring(std::move(ko),
                                                NewSqliteKeyVersionRepository(db), DefaultRandom(), clock));
  b.store = NewSqliteSecretStore(db, clock, config.secrets_prefix);
  return b;
}

}  // namespace dyad
