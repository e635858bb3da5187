// Binding a data key to the secret it protects, for a KMS whose wrap takes
// no label or associated data (Azure Key Vault's wrapKey; Vault Transit's
// encrypt without derived keys): the wrapped plaintext is the DEK followed
// by the first 16 bytes of SHA-256(context), checked in constant time after
// the unwrap. An empty context binds nothing (the DEK alone), so keys
// wrapped before contexts were bound still unwrap with an empty context.
// Pure functions; thread-safe.
#pragma once

#include <openssl/crypto.h>

#include <algorithm>
#include <string>
#include <string_view>

#include "core/encoding.h"
#include "core/result.h"
#include "core/secret_bytes.h"

namespace dyad {

inline constexpr size_t kBoundDekSize = 32;
inline constexpr size_t kBindingTagSize = 16;

// The first 16 bytes of SHA-256(context).
inline std::string BindingTag(std::string_view context) { return Sha256(context).substr(0, kBindingTagSize); }

// What the KMS wraps: the DEK, then the context's tag (none for "").
inline SecretBytes BindKey(const SecretBytes& dek, std::string_view context) {
  SecretBytes bound(dek.size() + (context.empty() ? 0 : kBindingTagSize));
  std::copy(dek.data(), dek.data() + dek.size(), bound.data());
  if (!context.empty()) {
    std::string tag = BindingTag(context);
    std::copy(tag.begin(), tag.end(), bound.data() + dek.size());
  }
  return bound;
}

// The DEK out of an unwrapped plaintext, its tag checked against `context`
// (kDataLoss "bound to another secret" for another context's, or none where
// one is expected); `kms` names the service in the other errors.
inline Result<SecretBytes> UnbindKey(const SecretBytes& plain, std::string_view context, std::string_view kms) {
  const size_t want = kBoundDekSize + (context.empty() ? 0 : kBindingTagSize);
  if (plain.size() != want) {
    if (plain.size() == kBoundDekSize || plain.size() == kBoundDekSize + kBindingTagSize) {
      return MakeError(ErrorCode::kDataLoss, "wrapped key bound to another secret");
    }
    return MakeError(ErrorCode::kDataLoss, std::string(kms) + " unwrapped a data key of " +
                                               std::to_string(plain.size()) + " bytes, not " + std::to_string(want));
  }
  if (!context.empty()) {
    std::string tag = BindingTag(context);
    if (CRYPTO_memcmp(plain.data() + kBoundDekSize, tag.data(), kBindingTagSize) != 0) {
      return MakeError(ErrorCode::kDataLoss, "wrapped key bound to another secret");
    }
  }
  return SecretBytes(plain.view().substr(0, kBoundDekSize));
}

}  // namespace dyad
