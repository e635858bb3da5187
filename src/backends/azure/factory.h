// The "azure" backend: Key Vault secrets as the SecretStore and a Key Vault
// key as the KeyManager, authenticated with Entra ID (entra_auth.h). Its
// settings are AzureSettings (azure_settings.h); it takes
// SECRETS_ENCRYPTION_MODE=provider (Key Vault encrypts the stored JSON) and
// SECRETS_PREFIX within Key Vault's name rules. Opening reads the client
// certificate (when that method is used) but calls nothing: the vault may be
// down at start-up. Registering it twice in one registry is kAlreadyExists.
#pragma once

#include "backends/registry.h"

namespace dyad {

Status RegisterAzureBackend(BackendRegistry& registry);

}  // namespace dyad
