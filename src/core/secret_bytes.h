// SecretBytes: the only home of plaintext secrets (credentials, keys).
//
// The bytes live in a vector whose allocator zeroes (OPENSSL_cleanse) every
// buffer before it is freed, as Tink's SecretData does: growth, shrinking,
// copies, moves and destruction leave no copy behind in freed memory, and the
// object itself holds only pointers (no small-string buffer that a move would
// copy and leave behind). It has no stream operator and no implicit
// conversion to string, so it cannot end up in a log line by accident:
// reading it takes an explicit view(). Not thread-safe for mutation; const
// access from many threads is fine. No errors: allocation failure aborts as
// in the rest of the standard library.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace dyad {

// Zeroes `n` bytes that cannot be optimised away.
void SecureWipe(void* p, size_t n);

// For tests: called with every buffer a SecretBytes frees, after it was
// wiped and before it goes back to the heap. nullptr (the default) turns it off.
using SecretFreeObserver = void (*)(const uint8_t* p, size_t n);
void SetSecretFreeObserverForTesting(SecretFreeObserver observer);

// A std::allocator that wipes what it frees.
template <typename T>
struct WipingAllocator {
  using value_type = T;
  WipingAllocator() noexcept = default;
  template <typename U>
  WipingAllocator(const WipingAllocator<U>&) noexcept {}
  T* allocate(size_t n) { return std::allocator<T>().allocate(n); }
  void deallocate(T* p, size_t n) noexcept;
  template <typename U>
  bool operator==(const WipingAllocator<U>&) const noexcept { return true; }
};

void WipeAndObserve(void* p, size_t n) noexcept;

template <typename T>
void WipingAllocator<T>::deallocate(T* p, size_t n) noexcept {
  WipeAndObserve(p, n * sizeof(T));
  std::allocator<T>().deallocate(p, n);
}

class SecretBytes {
 public:
  SecretBytes() = default;
  explicit SecretBytes(size_t size) : data_(size, 0) {}
  explicit SecretBytes(std::string_view bytes) : data_(bytes.begin(), bytes.end()) {}
  SecretBytes(const SecretBytes&) = default;
  SecretBytes& operator=(const SecretBytes& other);
  SecretBytes(SecretBytes&& other) noexcept = default;  // takes the buffer; `other` is left empty
  SecretBytes& operator=(SecretBytes&& other) noexcept;
  ~SecretBytes();

  std::string_view view() const { return {reinterpret_cast<const char*>(data_.data()), data_.size()}; }
  uint8_t* data() { return data_.data(); }
  const uint8_t* data() const { return data_.data(); }
  size_t size() const { return data_.size(); }
  bool empty() const { return data_.empty(); }
  void resize(size_t n);  // zeroes what it drops
  void clear();

  friend bool operator==(const SecretBytes& a, const SecretBytes& b);

 private:
  std::vector<uint8_t, WipingAllocator<uint8_t>> data_;
};

// Zeroes a std::string that held secret material (e.g. a JSON dump).
void Cleanse(std::string& s);

// A string whose freed buffers are wiped (and seen by the observer above):
// for a buffer that holds a secret for a while, so that no path out of its
// owner, an exception's included, frees it unwiped. Cleanse wipes it in
// place (its capacity kept).
using WipedString = std::basic_string<char, std::char_traits<char>, WipingAllocator<char>>;
void Cleanse(WipedString& s);

}  // namespace dyad
