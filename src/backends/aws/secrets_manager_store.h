// The AWS Secrets Manager SecretStore (JSON 1.1 API), secrets named
// `<prefix>/providers/<id>`.
//
// Get → GetSecretValue (AWSCURRENT); the version token is the VersionId. Its
// answer is read in one pass, without a JSON document (secret_value_answer.h).
// Create → CreateSecret with the `kms_key_id` (provider mode), a tag
// managed-by=dyad-gateway and an idempotency token, so a retried create
// cannot make two versions; Delete → DeleteSecret with the configured
// recovery window, DeleteNow → ForceDeleteWithoutRecovery (undoing a failed
// create, probes). AWS refuses to delete a secret that still has replicas:
// on that refusal (and no other) the store reads the replica regions
// (DescribeSecret), removes them all (RemoveRegionsFromReplication, which
// needs secretsmanager:RemoveRegionsFromReplication) and deletes once more.
// List → ListSecrets with a name-prefix filter, every page,
// each with the later of CreatedDate and LastChangedDate.
//
// Replace is a compare-and-swap on the AWSCURRENT label: the value becomes a
// new version labelled only "dyad-pending" (PutSecretValue), then AWSCURRENT
// moves to it only if it is still on `version` (UpdateSecretVersionStage
// with RemoveFromVersionId refuses otherwise). Under a policy without
// secretsmanager:PutSecretValue or UpdateSecretVersionStage (the seed's
// minimal one) the first refusal is logged once, naming the permission, and
// answered kUnimplemented; from then on the store has no conditional writes:
// Replace answers kUnimplemented at once and its writers Overwrite() with
// UpdateSecret under the provider's lease (Put uses UpdateSecret too). A refused ListSecrets names secretsmanager:ListSecrets. Values over
// the 64 KiB SecretString limit are refused before they are sent; a secret
// scheduled for deletion reads as kNotFound. Batch calls fan out over
// `parallelism` connections. Thread-safe.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backends/aws/aws_json_client.h"
#include "backends/secret_store.h"

namespace dyad {

struct SecretsManagerOptions {
  std::string prefix = "dyad-gateway";  // SECRETS_PREFIX
  std::string kms_key_id;               // "": the account's aws/secretsmanager key
  int recovery_window_days = 30;        // 7–30
  size_t parallelism = 8;               // concurrent calls of one GetMany or ReplaceMany
  // AWS_SECRETS_REPLICA_REGIONS: CreateSecret adds these replicas
  // (AddReplicaRegions, which also needs secretsmanager:ReplicateSecretToRegions);
  // CheckReplication() reads DescribeSecret's ReplicationStatus of the
  // secret this store created last, else of the newest one (one ListSecrets
  // call: MaxResults 1, SortOrder desc, which sorts by CreatedDate).
  std::vector<std::string> replica_regions;
};

std::unique_ptr<SecretStore> NewSecretsManagerStore(SecretsManagerOptions options,
                                                    std::unique_ptr<AwsJsonClient> client);

}  // namespace dyad
