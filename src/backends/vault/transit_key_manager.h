// The Vault Transit KeyManager: data keys made locally (32 random bytes)
// and wrapped with `<mount>/encrypt/<key>`, unwrapped with `decrypt`, so the
// seed's policy (encrypt, decrypt, keys read+update) suffices. The wrapped
// key is Transit's ciphertext ("vault:vN:…"); the gateway's key version is
// Transit's N. The context (the secret's name) is bound inside the wrapped
// plaintext (DEK ‖ SHA-256(context)[0..16), checked after decrypt), so
// `rewrap`, which keeps the plaintext, keeps the binding.
//
// Rotate → `keys/<key>/rotate`; Describe → `keys/<key>` (latest_version,
// min_decryption_version), recorded in the registry (KeyVersionRepository,
// key id "vault-transit:<mount>/<key>") so that every instance agrees on
// states. ReEncrypt → `rewrap` (batch_input for many at once when the
// policy allows it), else decrypt + encrypt; a refused rewrap is logged once
// and not asked again. Retire(v) stops the gateway using v and, only with
// VAULT_TRANSIT_RETIRE=true, raises `min_decryption_version` past it (the
// key may be shared). A missing key is created (`keys/<key>` POST) on first
// use. Probe reads the key. Thread-safe.
#pragma once

#include <memory>
#include <string>

#include "backends/key_manager.h"
#include "backends/vault/vault_client.h"
#include "core/clock.h"
#include "core/random.h"
#include "registry/key_version_repository.h"

namespace dyad {

struct TransitOptions {
  std::string mount = "transit";  // VAULT_TRANSIT_MOUNT
  std::string key;                // ENCRYPTION_KEY_ID
  bool retire_in_vault = false;   // VAULT_TRANSIT_RETIRE
};

// `client` must outlive the key manager.
Result<std::unique_ptr<KeyManager>> NewTransitKeyManager(TransitOptions options, VaultClient& client,
                                                         std::shared_ptr<KeyVersionRepository> versions,
                                                         const Clock& clock, Random& random);

}  // namespace dyad
