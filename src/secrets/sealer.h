// Sealer: envelope encryption of credential payloads with a KeyManager.
//
// Seal() draws a fresh DEK per call, encrypts the payload with AES-256-GCM
// under a random 96-bit nonce and the envelope AAD, and returns the envelope
// document; the DEK is bound to the secret name as its KMS context. Open()
// parses, unwraps and decrypts, failing with kDataLoss on any tampering.
// Rewrap() moves an envelope to the primary key version, and an envelope
// written before names were bound to its name's context, without touching
// the payload ciphertext, and checks the result opens. RewrapMany() does the
// same for many envelopes with one KeyManager::ReEncryptMany and checks them
// with one DecryptMany (a KMS batch call each where there is one), the rest
// on up to `parallelism` threads.
//
// In provider mode (SECRETS_ENCRYPTION_MODE=provider) the store's own
// encryption is relied on: Seal() and Open() pass the payload (the
// credentials JSON) through unchanged, and Rewrap() returns it as it is, so
// that a rotation rewrites it and the store re-encrypts it under its key's
// current material. Thread-safe when its KeyManager and Random are.
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

enum class SealMode { kEnvelope, kProvider };

class Sealer {
 public:
  Sealer(KeyManager& keys, Random& random, SealMode mode = SealMode::kEnvelope)
      : keys_(keys), random_(random), mode_(mode) {}
  SealMode mode() const { return mode_; }

  Result<std::string> Seal(std::string_view secret_name, int64_t credentials_version, const SecretBytes& payload);
  Result<OpenedSecret> Open(std::string_view secret_name, std::string_view envelope_text);
  // Returns the rewrapped document, or kAlreadyExists when it already uses
  // the primary version and its name's context and `force` is false.
  Result<std::string> Rewrap(std::string_view secret_name, std::string_view envelope_text, uint32_t primary, bool force);
  struct RewrapItem {
    std::string_view secret_name;
    std::string_view envelope_text;
  };
  // Rewrap() of each item, one result per item in order.
  std::vector<Result<std::string>> RewrapMany(const std::vector<RewrapItem>& items, uint32_t primary, bool force,
                                              size_t parallelism);

 private:
  // The envelope was sealed by the configured key.
  Status CheckKey(const Envelope& e) const;

  KeyManager& keys_;
  Random& random_;
  SealMode mode_;
};

}  // namespace dyad
