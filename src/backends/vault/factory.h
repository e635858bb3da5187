// The "vault" backend: HashiCorp Vault (or OpenBao) KV v2 as the SecretStore
// and Transit as the KeyManager, authenticated by a token or a login method
// (vault_auth.h). Its settings are VaultSettings (vault_settings.h); it takes
// both encryption modes (in provider mode the credentials are stored as
// plain JSON in KV, which Vault's barrier encrypts; the Transit key manager
// is still built, as AWS builds KMS), SECRETS_PREFIX as a KV path and
// ENCRYPTION_KEY_ID as a Transit key name. Registering it twice in one
// registry is kAlreadyExists.
#pragma once

#include "backends/registry.h"

namespace dyad {

Status RegisterVaultBackend(BackendRegistry& registry);

}  // namespace dyad
