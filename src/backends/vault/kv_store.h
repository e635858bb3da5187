// The Vault KV v2 SecretStore: a provider's secret is the KV secret
// `<prefix>/providers/<id>` under the mount (VAULT_MOUNT_PATH), its data the
// value's JSON object as it is (the envelope document, or in provider mode
// the credentials object, so hvac and the Vault CLI read and write the same
// thing), its version token the KV version.
//
// Create writes with cas=0; a name whose latest version is soft-deleted (or
// destroyed) is written again with cas=<that version>, any other taken name
// is kAlreadyExists. Replace writes with cas=<version> (the seam's
// conditional write; Vault's "check-and-set parameter did not match" is
// kConflict). Overwrite reads the current version and writes with its cas.
// Get reads the latest version; a soft-deleted or destroyed one reads as
// kNotFound. Delete is KV's soft delete of the latest version; DeleteNow and
// DeleteIfVersion use `delete/` and `metadata/` paths when the policy allows
// them and say so (kUnimplemented / Delete) when it does not. Custom metadata
// (provider id, credentials version) is written through `metadata/` when the
// policy allows it; a refusal is logged once, naming the path and
// capability, and not asked again. List pages `metadata/` LIST; a refusal is
// kPermissionDenied naming the capability (secrets gc says so). Thread-safe.
#pragma once

#include <memory>
#include <string>

#include "backends/secret_store.h"
#include "backends/vault/vault_client.h"

namespace dyad {

struct KvStoreOptions {
  std::string mount = "secret";         // VAULT_MOUNT_PATH
  std::string prefix = "dyad-gateway";  // SECRETS_PREFIX
  size_t parallelism = 8;               // concurrent calls of one GetMany or ReplaceMany
};

// `client` must outlive the store.
std::unique_ptr<SecretStore> NewVaultKvStore(KvStoreOptions options, VaultClient& client);

}  // namespace dyad
