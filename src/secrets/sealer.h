// Sealer: envelope encryption of credential payloads with a KeyManager.
//
// Seal() draws a fresh DEK per call, encrypts the payload with AES-256-GCM
// under a random 96-bit nonce and the envelope AAD, and returns the envelope
// document. Open() parses, unwraps and decrypts, failing with kDataLoss on
// any tampering. Rewrap() moves an envelope to the primary key version
// without touching the payload ciphertext, and checks the result opens.
// Thread-safe when its KeyManager and Random are.
#pragma once

#include "backends/key_manager.h"
#include "core/random.h"
#include "core/secret_bytes.h"
#include "secrets/envelope.h"

namespace dyad {

struct OpenedSecret {
  SecretBytes payload;
  int64_t credentials_version = 0;
  uint32_t key_version = 0;
};

class Sealer {
 public:
  Sealer(KeyManager& keys, Random& random) : keys_(keys), random_(random) {}

  Result<std::string> Seal(std::string_view secret_name, int64_t credentials_version, const SecretBytes& payload);
  Result<OpenedSecret> Open(std::string_view secret_name, std::string_view envelope_text);
  // Returns the rewrapped document, or kAlreadyExists when it already uses
  // the primary version and `force` is false.
  Result<std::string> Rewrap(std::string_view secret_name, std::string_view envelope_text, uint32_t primary, bool force);

 private:
  KeyManager& keys_;
  Random& random_;
};

}  // namespace dyad
