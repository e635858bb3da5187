// The Azure Key Vault SecretStore (REST, over AzureClient), secrets named
// `<prefix>--providers--<id>` and probes `<prefix>--probe--<tag>`.
//
// Key Vault names allow letters, digits and '-' only (at most 127 characters)
// and compare case-insensitively, so a provider id is mapped reversibly
// (KeyVaultNameOfId / IdOfKeyVaultName): an id of [a-z0-9-] not starting
// with "x--" is used as it is (the service's ids are lower-case UUIDs); any
// other id becomes "x--" followed by the lower-case hex of its UTF-8 bytes.
// A name longer than 127 characters is refused before it is sent.
//
// Set (Create, Overwrite, Put) → PUT /secrets/{name} {value, contentType,
// tags: provider-id, managed-by=dyad-gateway, credentials-version (the
// envelope's "cv" when the value is an envelope)}; Get → GET /secrets/{name}
// (the latest version): the version token is the last segment of the id; a
// disabled or missing secret reads as kNotFound. Key Vault has no conditional
// write: HasConditionalWrites() is false, Replace answers kUnimplemented and
// writes nothing (its writers hold the provider's lease, secret_store.h).
// Overwrite reads first and answers kNotFound when nothing is stored; Create
// answers kAlreadyExists for a live secret. A name held by a soft-deleted
// secret (PUT answers 409 "… is currently in a deleted but recoverable state",
// or GET /deletedsecrets/{name} finds it) is recovered (POST
// /deletedsecrets/{name}/recover, then polled until it reads, a bounded
// number of times with the clock's SleepFor) and a new version is written;
// with purge_on_delete it is purged instead (DELETE /deletedsecrets/{name}),
// the PUT retried on 409 a bounded number of times while the purge completes.
// Delete → DELETE /secrets/{name} (soft delete; a missing secret is OK);
// DeleteNow → Delete, then a purge when purge_on_delete permits it (a 403 on
// purge is logged once, naming the role and the permission). List → GET
// /secrets?maxresults=25, every page (nextLink), names under the prefix, with
// attributes.updated. Values over Key Vault's 25 KiB limit, or not valid
// UTF-8, are refused before they are sent. A 403 names the RBAC role "Key
// Vault Secrets Officer". GetMany fans out over `parallelism` calls.
// Thread-safe; `client` must outlive the store.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "backends/azure/azure_client.h"
#include "backends/secret_store.h"
#include "core/clock.h"

namespace dyad {

struct AzureSecretStoreOptions {
  std::string prefix = "dyad-gateway";  // SECRETS_PREFIX: letters, digits and '-' (IsValidKeyVaultName)
  bool purge_on_delete = false;         // needs secrets/purge (not in Key Vault Secrets Officer)
  size_t parallelism = 8;               // concurrent calls of one GetMany
  std::string content_type = "application/json";
  const Clock* clock = nullptr;         // waits while a recovery completes; null: the system clock
};

std::unique_ptr<SecretStore> NewAzureSecretStore(AzureSecretStoreOptions options, AzureClient& client);

// Key Vault's object name rule: 1–127 of letters, digits and '-'.
bool IsValidKeyVaultName(std::string_view name);

// The reversible mapping of a provider id to the last part of a Key Vault
// name (above); IdOfKeyVaultName is nullopt for a part no id maps to.
std::string KeyVaultNameOfId(std::string_view id);
std::optional<std::string> IdOfKeyVaultName(std::string_view part);

}  // namespace dyad
