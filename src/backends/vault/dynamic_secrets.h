// Vault's dynamic secrets as a DynamicSecretSource (backends/
// dynamic_secrets.h), over the backend's VaultClient.
//
// Read(path) is GET /v1/<path> (e.g. database/creds/readonly): the string
// fields of `data` (of `data.data` for a KV v2 read, which has no lease),
// `lease_id`, `lease_duration` and `renewable`. Renew is PUT
// sys/leases/renew {lease_id, increment}, answering the granted
// `lease_duration`; Revoke is PUT sys/leases/revoke {lease_id}. Vault's
// `default` policy allows renew; revoke needs `update` on sys/leases/revoke
// (the 403 says so). Errors are VaultClient's (Vault's message, the path and
// capability of a 403); an answer of the wrong shape is kDataLoss. Values
// are copied into SecretBytes and wiped from the parsed answer. Thread-safe.
#pragma once

#include <memory>

#include "backends/dynamic_secrets.h"
#include "backends/vault/vault_client.h"

namespace dyad {

// `client` must outlive the source.
std::unique_ptr<DynamicSecretSource> NewVaultDynamicSecrets(VaultClient& client);

}  // namespace dyad
