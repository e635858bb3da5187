// AES-256-GCM through OpenSSL: 32-byte key, 12-byte nonce, 16-byte tag.
//
// Seal returns ciphertext ‖ tag. Open checks the tag before returning any
// plaintext and fails with kDataLoss ("authentication failed") on any
// mismatch of key, nonce, AAD, ciphertext or tag. Thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "core/result.h"
#include "core/secret_bytes.h"

namespace dyad {

inline constexpr size_t kAesKeySize = 32;
inline constexpr size_t kGcmNonceSize = 12;
inline constexpr size_t kGcmTagSize = 16;

Result<std::string> AesGcmSeal(const SecretBytes& key, std::string_view nonce, std::string_view aad,
                               std::string_view plaintext);
Result<SecretBytes> AesGcmOpen(const SecretBytes& key, std::string_view nonce, std::string_view aad,
                               std::string_view ciphertext_and_tag);

}  // namespace dyad
