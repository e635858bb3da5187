#include "secrets/aes_gcm.h"

#include <openssl/evp.h>

#include <climits>
#include <memory>

namespace dyad {
namespace {

struct CtxFree {
  void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};

// One context per thread, reset between uses: saves an allocation per call.
EVP_CIPHER_CTX* ThreadCtx() {
  thread_local std::unique_ptr<EVP_CIPHER_CTX, CtxFree> ctx(EVP_CIPHER_CTX_new());
  EVP_CIPHER_CTX_reset(ctx.get());
  return ctx.get();
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
  EVP_CIPHER_CTX* ctx = ThreadCtx();
  std::string out(plaintext.size() + kGcmTagSize, '\0');
  auto* o = reinterpret_cast<unsigned char*>(out.data());
  int len = 0;
  bool ok = EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, key.data(), U(nonce)) == 1 &&
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
  EVP_CIPHER_CTX* ctx = ThreadCtx();
  SecretBytes out(n);
  int len = 0;
  std::string tag(ciphertext_and_tag.substr(n));
  bool ok = EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, key.data(), U(nonce)) == 1 &&
            (aad.empty() || EVP_DecryptUpdate(ctx, nullptr, &len, U(aad), static_cast<int>(aad.size())) == 1) &&
            EVP_DecryptUpdate(ctx, out.data(), &len, U(ciphertext_and_tag), static_cast<int>(n)) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, kGcmTagSize, tag.data()) == 1 &&
            EVP_DecryptFinal_ex(ctx, out.data() + len, &len) == 1;
  if (!ok) {
    out.clear();
    return MakeError(ErrorCode::kDataLoss, "AES-GCM authentication failed");
  }
  return out;
}

}  // namespace dyad
