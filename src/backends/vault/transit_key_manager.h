// The Vault Transit KeyManager (kind "vault-transit", key id
// "<mount>/<key>"): data keys made locally (32 bytes of the injected Random)
// and wrapped with `<mount>/encrypt/<key>`, unwrapped with `decrypt`, so the
// seed's policy (encrypt, decrypt, keys read+update) suffices. The wrapped
// key is Transit's ciphertext ("vault:vN:…"); the gateway's key version is
// Transit's N, and a ciphertext whose N is not the envelope's version is
// kDataLoss. The context (the secret's name) is bound inside the wrapped
// plaintext (DEK ‖ SHA-256(context)[0..16), the DEK alone for an empty
// context), checked after decrypt in constant time, so `rewrap`, which keeps
// the plaintext, keeps the binding; a mismatch is kDataLoss "wrapped key
// bound to another secret", as are Vault's "message authentication failed"
// and "invalid ciphertext".
//
// Versions: the registry (KeyVersionRepository, row "vault-transit:<mount>/
// <key>") holds one version per Transit version, primary = Vault's
// latest_version, those below min_decryption_version retired, so every
// instance agrees on states. Vault is read (`keys/<key>`) on first use, on
// Rotate, Probe, and Describe (at most once a second); a rotation made in
// Vault by someone else becomes new versions. Encrypt sends no key_version:
// Vault encrypts under its latest, and an answer under a newer version than
// the primary is learnt (recorded, then returned); an answer under an older
// version still usable (not retired, not below min_decryption_version, the
// key not re-created) raced another instance's rotation: GenerateDataKey
// asks once more, ReEncrypt's items fail kConflict. Decrypt of a version
// above the known primary (another instance with its own registry rotated)
// reads the key from Vault, at most once a second, before kNotFound. The
// primary is never
// 'retiring' (BeginRetire refuses it), so encrypting under Vault's latest
// never seals under a version being retired. A key whose latest version is
// below the registry's (deleted and created again) is kFailedPrecondition.
//
// ReEncrypt/ReEncryptMany → one `rewrap` call (batch_input for many) for
// the items that keep their context; the others, and all of them once rewrap
// was refused (403, logged once naming 'update' on <mount>/rewrap/<key>, not
// asked again), by one batch decrypt + one batch encrypt, the DEKs passing
// through this process and wiped after. DecryptMany is one batch decrypt.
// Per-item errors stay per item.
// Retire(v) stops the gateway using v; Vault still decrypts it (with
// VAULT_TRANSIT_RETIRE=true a warning, once, says why not). RetireEverywhere
// (v), which a rotation calls only when it listed the store itself (so no
// other instance's blob can be on v: the token has 'list' on <kv mount>/
// metadata/<prefix>/providers), also raises, only with VAULT_TRANSIT_RETIRE=
// true, `min_decryption_version` to the oldest version the registry has not
// retired (never past one still active or retiring; the key may be shared).
// A missing key is created (`keys/<key>` POST, aes256-gcm96) on
// first use, not at start, so the gateway starts while Vault is down.
// Probe reads the key (a 403 names 'read' on <mount>/keys/<key>).
// Thread-safe.
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
