// SecretBytes: the only home of plaintext secrets (credentials, keys).
//
// The buffer is zeroed (OPENSSL_cleanse) when destroyed or overwritten. It has
// no stream operator and no implicit conversion to string, so it cannot end up
// in a log line by accident: reading it takes an explicit view(). Not
// thread-safe for mutation; const access from many threads is fine.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace dyad {

class SecretBytes {
 public:
  SecretBytes() = default;
  explicit SecretBytes(size_t size) : data_(size, '\0') {}
  explicit SecretBytes(std::string_view bytes) : data_(bytes) {}
  SecretBytes(const SecretBytes&) = default;
  SecretBytes& operator=(const SecretBytes& other);
  SecretBytes(SecretBytes&& other) noexcept;
  SecretBytes& operator=(SecretBytes&& other) noexcept;
  ~SecretBytes();

  std::string_view view() const { return data_; }
  uint8_t* data() { return reinterpret_cast<uint8_t*>(data_.data()); }
  const uint8_t* data() const { return reinterpret_cast<const uint8_t*>(data_.data()); }
  size_t size() const { return data_.size(); }
  bool empty() const { return data_.empty(); }
  void resize(size_t n);  // zeroes what it drops
  void clear();

  friend bool operator==(const SecretBytes& a, const SecretBytes& b);

 private:
  std::string data_;
};

// Zeroes a std::string that held secret material (e.g. a JSON dump).
void Cleanse(std::string& s);

}  // namespace dyad
