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
//
// CheckPath allows a path only under one of `allowed` (VAULT_DYNAMIC_PATHS,
// whole-segment prefixes ending in '/'; none: every reference is refused),
// and never under the gateway's own KV or Transit mount (where the sealed
// credentials of every provider and the encryption key live), nor with a
// sys, auth, identity or cubbyhole segment (the token's own secrets, in any
// namespace) — even when an allowed prefix covers them. Read checks the
// path and Renew the lease id (a lease id is its path, then an id) before
// any call, kFailedPrecondition when refused; Revoke is not checked (it
// only ends what a read made).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backends/dynamic_secrets.h"
#include "backends/vault/vault_client.h"

namespace dyad {

struct VaultDynamicOptions {
  std::vector<std::string> allowed;  // VaultSettings::dynamic_paths
  std::string kv_mount = "secret";   // VAULT_MOUNT_PATH
  std::string transit_mount = "transit";  // VAULT_TRANSIT_MOUNT
};

// `client` must outlive the source.
std::unique_ptr<DynamicSecretSource> NewVaultDynamicSecrets(VaultClient& client, VaultDynamicOptions options);

}  // namespace dyad
