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
// Any other text (the seam's values are any text), an object that would
// read as the wrapper or a tombstone, and one nested deeper than 32 levels
// are kept whole as {"dyad_gateway_text": "<value>"} and read back byte for
// byte; an answer nested deeper than that is kUnavailable (nothing recurses
// over a depth Vault chooses). Values over 1 MiB or not UTF-8 are
// kInvalidArgument, never echoed. Request bodies and parsed answers are
// wiped after use.
//
// Writes: Create writes with cas=0; a name whose latest version is
// deleted (a tombstone, KV's soft delete, or destroyed: a 404 naming that
// version, vault_client.h) is written again with cas=<that version>, so
// versions keep counting; any other taken name is kAlreadyExists. Replace
// writes with cas=<version> (Vault's "check-and-set parameter did not
// match" is kConflict, or kNotFound when the name then reads as deleted or
// absent). Overwrite (a live version) and Put (anything) read the current
// version and write with its cas, reading again on a conflict a couple of
// times. A write whose cas conflicts is read back: when the latest
// version is exactly our document at cas+1 (the first version after the
// deleted one, for a create), it is our own write whose answer was lost
// and that the client retried, and the write succeeds with that version;
// a tombstone likewise (a deleted version at cas+1). The same plain value
// written twice over one version reads as such a retry (idempotent); a
// sealed value never repeats (the envelope's nonce). Get reads the latest
// version; a tombstone, a soft-deleted or a destroyed one is kNotFound. Answers without data.data as an object or
// without an integer data.metadata.version are kUnavailable, never echoed.
//
// Deletes bury: a tombstone {"dyad_gateway_deleted":true} is written with
// cas=<the version read>, then it and that version are soft-deleted by
// number where delete/ is permitted; without delete/ the tombstone stands
// (it reads as deleted, and List leaves it out). Never KV's unversioned
// DELETE of the latest version: it could soft-delete a version another
// writer wrote over the tombstone just before. KV's cas
// compares with the latest version number, deleted or not: after a plain
// soft delete a token read before it would write the secret back (a
// re-encryption racing a provider's delete); after a tombstone that token
// conflicts and the name reads as deleted. DeleteIfVersion is the tombstone
// with cas=<version> (a newer live version: kConflict), atomic under the
// seed's policy. Delete of a missing name is fine. DeleteNow removes a
// probe with its history (metadata/ DELETE) and buries a provider's secret,
// then destroys the version it held: never metadata/ DELETE for a provider,
// which restarts versions at 1 so that an old token would match the name
// written again (ABA). Without delete/ and destroy/ (the seed's policy) the
// buried version stays in KV's history, readable by its number, as every
// replaced version does.
//
// Optional paths (metadata/ write, read and delete; delete/; destroy/): the
// first 403 is logged once, naming the path and capability, and the path
// is not asked again; nothing fails for want of one.
//
// List: metadata/ LIST of the providers' folder (a refusal is
// kPermissionDenied naming `list` on the path and `secrets gc`), then each
// key's metadata (data/ where metadata/ read is refused) to leave out
// deleted secrets and date the others by their latest version's
// created_time (undated through data/). Custom metadata after a write:
// provider_id, managed_by=dyad-gateway, credentials_version (the
// envelope's "cv"), once per name and cv in a process (a re-encryption
// adds no call). GetMany/ReplaceMany fan out over `parallelism`.
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
