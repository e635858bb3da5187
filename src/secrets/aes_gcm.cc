#include "secrets/aes_gcm.h"

#include <openssl/evp.h>

#include <climits>
#include <memory>

namespace dyad {
namespace {

struct CtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};

// Fetched once: EVP_aes_256_gcm() would look the implementation up in the
// provider on every init, which costs more than the encryption itself.
const EVP_CIPHER* Aes256Gcm() {
  static EVP_CIPHER* cipher = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
  return cipher;
}

// One context per thread and direction, bound to the cipher once; each call
// then only sets key and nonce (a full re-init costs more than the AES).
EVP_CIPHER_CTX* ThreadCtx(bool encrypt) {
  struct Ctx {
    std::unique_ptr<EVP_CIPHER_CTX, CtxFree> ctx{EVP_CIPHER_CTX_new()};
    bool ready = false;
  };
  thread_local Ctx enc, dec;
  Ctx& c = encrypt ? enc : dec;
  if (!c.ready) {
    c.ready = EVP_CipherInit_ex2(c.ctx.get(), Aes256Gcm(), nullptr, nullptr, encrypt ? 1 : 0, nullptr) == 1;
  }
  return c.ready ? c.ctx.get() : nullptr;
}

const unsigned char* U(std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); }

Status CheckSizes(const SecretBytes& key, std::string_view nonce, size_t a, size_t b) {
  if (key.size() != kAesKeySize) return MakeError(ErrorCode::kInvalidArgument, "AES-256-GCM key must be 32 bytes");
  if (nonce.size() != kGcmNonceSize) return MakeError(ErrorCode::kInvalidArgument, "AES-GCM nonce must be 12 bytes");
  if (a > INT_MAX / 2 || b > INT_MAX / 2) return MakeError(ErrorCode::kInvalidArgument, "AES-GCM input too large");
  return OkStatus();
}

}  // namespace

Result<std::string> AesGcmSeal(const SecretBytes& key, std::string_view nonce, std::string_view aad,
                               std::string_view plaintext) {
  DYAD_RETURN_IF_ERROR(CheckSizes(key, nonce, aad.size(), plaintext.size()));
  EVP_CIPHER_CTX* ctx = ThreadCtx(true);
  if (!ctx) return MakeError(ErrorCode::kInternal, "AES-GCM is not available");
  std::string out(plaintext.size() + kGcmTagSize, '\0');
  auto* o = reinterpret_cast<unsigned char*>(out.data());
  int len = 0;
  bool ok = EVP_EncryptInit_ex2(ctx, nullptr, key.data(), U(nonce), nullptr) == 1 &&
            (aad.empty() || EVP_EncryptUpdate(ctx, nullptr, &len, U(aad), static_cast<int>(aad.size())) == 1) &&
            EVP_EncryptUpdate(ctx, o, &len, U(plaintext), static_cast<int>(plaintext.size())) == 1 &&
            EVP_EncryptFinal_ex(ctx, o + len, &len) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, kGcmTagSize, o + plaintext.size()) == 1;
  if (!ok) return MakeError(ErrorCode::kInternal, "AES-GCM encryption failed");
  return out;
}

Result<SecretBytes> AesGcmOpen(const SecretBytes& key, std::string_view nonce, std::string_view aad,
                               std::string_view ciphertext_and_tag) {
  DYAD_RETURN_IF_ERROR(CheckSizes(key, nonce, aad.size(), ciphertext_and_tag.size()));
  if (ciphertext_and_tag.size() < kGcmTagSize) {
    return MakeError(ErrorCode::kDataLoss, "AES-GCM ciphertext shorter than its tag");
  }
  size_t n = ciphertext_and_tag.size() - kGcmTagSize;
  EVP_CIPHER_CTX* ctx = ThreadCtx(false);
  if (!ctx) return MakeError(ErrorCode::kInternal, "AES-GCM is not available");
  SecretBytes out(n);
  int len = 0;
  // OpenSSL takes the tag through a non-const pointer but only reads it.
  auto* tag = const_cast<char*>(ciphertext_and_tag.data() + n);
  bool ok = EVP_DecryptInit_ex2(ctx, nullptr, key.data(), U(nonce), nullptr) == 1 &&
            (aad.empty() || EVP_DecryptUpdate(ctx, nullptr, &len, U(aad), static_cast<int>(aad.size())) == 1) &&
            EVP_DecryptUpdate(ctx, out.data(), &len, U(ciphertext_and_tag), static_cast<int>(n)) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, kGcmTagSize, tag) == 1 &&
            EVP_DecryptFinal_ex(ctx, out.data() + len, &len) == 1;
  if (!ok) {
    out.clear();
    return MakeError(ErrorCode::kDataLoss, "AES-GCM authentication failed");
  }
  return out;
}

}  // namespace dyad
