// The Vault KV v2 SecretStore: a provider's secret is the KV secret
// `<prefix>/providers/<id>` under the mount (VAULT_MOUNT_PATH; probes
// `<prefix>/probe/<tag>`), its version token the KV version in decimal.
// Names are '/'-separated segments of [A-Za-z0-9-_.~:@] with no empty, "."
// or ".." segment (kInvalidArgument otherwise, before anything is sent).
//
// Values: a JSON object (the envelope document, or in provider mode the
// credentials object) is the KV `data` as it is, so hvac and the Vault CLI
// read and write the same thing; Get returns it as Vault serialises it
// (compact, keys sorted), which ParseEnvelope and CredentialsFromJson take.
// Any other text (the seam's values are any text) and an object that would
// read as the wrapper are kept whole as {"dyad_gateway_text": "<value>"}
// and read back byte for byte. Values over 1 MiB or not UTF-8 are
// kInvalidArgument, never echoed. Request bodies and parsed answers are
// wiped after use.
//
// Writes: Create writes with cas=0; a name whose latest version is
// soft-deleted or destroyed (a 404 naming that version, vault_client.h) is
// written again with cas=<that version>, so versions keep counting; any
// other taken name is kAlreadyExists. Replace writes with cas=<version>
// (Vault's "check-and-set parameter did not match" is kConflict, or
// kNotFound when the name then reads as deleted or absent). Overwrite (a
// live version) and Put (anything) read the current version and write with
// its cas, reading again on a conflict a couple of times. KV v2's cas
// compares with the latest version number whether or not it is deleted: a
// Replace with the token of a version deleted since writes a new version
// (an orphan `secrets gc` reports), as no conditional write can tell.
// Get reads the latest version; a soft-deleted or destroyed one is
// kNotFound. Answers without data.data as an object or without an integer
// data.metadata.version are kUnavailable, never echoed.
//
// Deletes: Delete is KV's soft delete of the latest version (a missing name
// is fine). DeleteNow removes a probe with its history (metadata/ DELETE)
// and soft-deletes a provider's secret, then destroys the version read:
// never metadata/ DELETE for a provider, which restarts versions at 1 so
// that a token read before would match the name written again (ABA).
// DeleteIfVersion deletes just that version (delete/) and reads: a newer
// live version is kConflict. Optional paths (metadata/ write, read and
// delete; delete/; destroy/): the first 403 is logged once, naming the path
// and capability, and the path is not asked again — custom metadata and
// destroy are skipped (a write never fails for them), DeleteNow soft-deletes,
// DeleteIfVersion is kUnimplemented (its callers then delete under the
// lease). Under the seed's policy only data/ is permitted.
//
// List: metadata/ LIST of the providers' folder (a refusal is
// kPermissionDenied naming `list` on the path and `secrets gc`), then each
// key's metadata (data/ where metadata/ read is refused) to leave out
// deleted secrets and date the others by their latest version's
// created_time (undated through data/). Custom metadata after each write:
// provider_id, managed_by=dyad-gateway, credentials_version (the
// envelope's "cv"). GetMany/ReplaceMany fan out over `parallelism`.
// HasConditionalWrites() is always true. Thread-safe.
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
