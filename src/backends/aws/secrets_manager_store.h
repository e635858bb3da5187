// The AWS Secrets Manager SecretStore (JSON 1.1 API).
//
// Get → GetSecretValue (AWSCURRENT); Create → CreateSecret with the
// `kms_key_id` (provider mode), a tag managed-by=dyad-gateway and an
// idempotency token, so a retried create cannot make two versions; Put →
// PutSecretValue (the previous value stays as AWSPREVIOUS), creating the
// secret when it is absent; Delete → DeleteSecret with the configured
// recovery window, DeleteNow → ForceDeleteWithoutRecovery (undoing a failed
// create, probes); List → ListSecrets with a name-prefix filter, every page
// (ListWithTimes: with the later of CreatedDate and LastChangedDate); ReplaceIfUnchanged → a compare-and-swap on the AWSCURRENT
// label; both batch calls fan out over `parallelism` connections. Values over
// the 64 KiB SecretString limit are refused before they
// are sent; a secret scheduled for deletion reads as kNotFound. Thread-safe.
#pragma once

#include <memory>
#include <string>

#include "backends/aws/aws_json_client.h"
#include "backends/secret_store.h"

namespace dyad {

struct SecretsManagerOptions {
  std::string kms_key_id;       // "": the account's aws/secretsmanager key
  int recovery_window_days = 30;  // 7–30
  size_t parallelism = 8;         // concurrent calls of one GetMany or ReplaceIfUnchanged
};

std::unique_ptr<SecretStore> NewSecretsManagerStore(SecretsManagerOptions options,
                                                    std::unique_ptr<AwsJsonClient> client);

}  // namespace dyad
