// The Azure Key Vault KeyManager: data keys are 32 random bytes made here,
// wrapped under a Key Vault key and unwrapped by Key Vault.
//
// An RSA key (RSA, RSA-HSM) wraps with RSA-OAEP-256 by POST
// /keys/{name}/{version}/wrapkey, or with `wrap_locally` here with the public
// key of GET /keys/{name}/{version} (OpenSSL, OAEP with SHA-256 and
// MGF1-SHA-256, as the SDK's CryptographyClient does; the version's
// attributes read again after a minute, so a version disabled in Azure stops
// wrapping). Remote is the default: credential writes are rare, and Key Vault
// then refuses a disabled or expired version at write time instead of a
// blob being written that nobody can unwrap. An `oct`/`oct-HSM` key (Managed
// HSM) wraps remotely with A256KW. Unwrap is always remote: POST
// /keys/{name}/{version}/unwrapkey. Azure has no rewrap: ReEncrypt is unwrap
// + wrap.
//
// Context binding: Key Vault's wrap takes no label or AAD, so the context
// (the secret's name) is bound inside the wrapped plaintext, as the Vault
// Transit key manager does (backends/key_binding.h): DEK ‖ the first 16
// bytes of SHA-256(context), checked in constant time after the unwrap
// (kDataLoss "bound to another secret" otherwise).
//
// Versions: the gateway's ordinals, kept in the registry database (a
// KeyVersionRepository, key id "azure-kv:<vault host>/<key name>"), each
// version's material the Key Vault key version (the kid's last segment, 32
// hex). Ordinal 1 is the key as first used (the pinned version if
// `key_version_pinned` is set); Rotate() is POST /keys/{name}/rotate and
// records the new kid version as the next ordinal; Describe() (at most once a
// second) reads GET /keys/{name} and makes its current version, when not
// recorded, the next ordinal (a rotation made in Azure: a rotation policy's,
// the portal's). The wrapped
// form stored in an envelope names its Key Vault version as well, so it is
// self-describing: "<kid version>:<base64url of the wrapped key>"; Decrypt
// refuses one whose kid version is not its ordinal's (kDataLoss). An unwrap
// Key Vault refuses because the version is disabled is kFailedPrecondition
// naming the version. Retire() marks the ordinal retired in the registry only
// (the key may be shared: nothing is disabled in Azure). A 403 names the RBAC
// role "Key Vault Crypto Officer". Probe() is GET /keys/{name}.
//
// A pinned version (ENCRYPTION_KEY_ID https://VAULT/keys/NAME/VERSION) is
// the one that wraps: Describe() never makes another Azure version primary,
// and Rotate() is refused (kFailedPrecondition naming ENCRYPTION_KEY_ID).
// Rotate() records its new kid version only while the registry's latest is
// the version before the rotation, never a kid version twice, and returns
// the primary after it.
//
// Ordinals live in the registry: every instance on one vault key must share
// ONE registry database. Instances with separate registries number the same
// Key Vault versions differently, and an envelope written by one may not
// decrypt on another (Decrypt refuses a kid version that is not its
// ordinal's, kDataLoss). Thread-safe;
// `client` must outlive the key manager.
#pragma once

#include <memory>
#include <string>

#include "backends/azure/azure_client.h"
#include "backends/key_manager.h"
#include "core/clock.h"
#include "core/random.h"
#include "registry/key_version_repository.h"

namespace dyad {

struct AzureKeyOptions {
  std::string key_name;            // ENCRYPTION_KEY_ID: the key's name in the vault
  std::string key_version_pinned;  // from a full key id URL (…/keys/NAME/VERSION); "" for the latest
  bool wrap_locally = false;       // RSA keys: wrap with the cached public key, not by a wrapkey call
};

Result<std::unique_ptr<KeyManager>> NewAzureKeyManager(AzureKeyOptions options, AzureClient& client,
                                                       std::shared_ptr<KeyVersionRepository> versions,
                                                       const Clock& clock, Random& random);

// The key options for ENCRYPTION_KEY_ID: a bare name, or a key id URL
// https://VAULT/keys/NAME[/VERSION] (kInvalidArgument for anything else, or
// a URL on a host other than `vault_url`'s).
Result<AzureKeyOptions> ParseAzureKeyId(const std::string& key_id, const std::string& vault_url);

}  // namespace dyad
