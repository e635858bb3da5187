#include "core/secret_bytes.h"

#include <openssl/crypto.h>

#include <atomic>

namespace dyad {
namespace {

std::atomic<SecretFreeObserver> free_observer{nullptr};

}  // namespace

void SecureWipe(void* p, size_t n) {
  if (p && n) OPENSSL_cleanse(p, n);
}

void SetSecretFreeObserverForTesting(SecretFreeObserver observer) { free_observer.store(observer); }

void WipeAndObserve(void* p, size_t n) noexcept {
  SecureWipe(p, n);
  if (auto observer = free_observer.load()) observer(static_cast<const uint8_t*>(p), n);
}

void Cleanse(std::string& s) {
  // The whole capacity: bytes past size() may hold an earlier, longer value.
  s.resize(s.capacity());  // no reallocation
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}

void Cleanse(WipedString& s) {
  s.resize(s.capacity());  // as above
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}

SecretBytes& SecretBytes::operator=(const SecretBytes& other) {
  if (this != &other) {
    clear();
    data_ = other.data_;
  }
  return *this;
}

SecretBytes& SecretBytes::operator=(SecretBytes&& other) noexcept {
  if (this != &other) {
    clear();
    data_.swap(other.data_);  // `other` gets this empty buffer; the old one was wiped
  }
  return *this;
}

SecretBytes::~SecretBytes() { clear(); }

void SecretBytes::resize(size_t n) {
  if (n < data_.size()) SecureWipe(data_.data() + n, data_.size() - n);
  data_.resize(n);
}

void SecretBytes::clear() {
  SecureWipe(data_.data(), data_.size());
  data_.clear();
}

bool operator==(const SecretBytes& a, const SecretBytes& b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace dyad
