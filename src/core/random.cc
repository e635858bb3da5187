#include "core/random.h"

#include <openssl/rand.h>

#include <climits>

#include "core/encoding.h"

namespace dyad {

Status SecureRandom::Fill(uint8_t* out, size_t n) {
  if (n > INT_MAX || RAND_bytes(out, static_cast<int>(n)) != 1) {
    return MakeError(ErrorCode::kInternal, "the system random source failed");
  }
  return OkStatus();
}

Random& DefaultRandom() {
  static SecureRandom random;
  return random;
}

std::string NewUuid(Random& random) {
  uint8_t b[16];
  if (!random.Fill(b, sizeof b).ok()) std::abort();  // no safe way to go on
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  std::string hex = HexEncode(std::string_view(reinterpret_cast<char*>(b), sizeof b));
  return hex.substr(0, 8) + "-" + hex.substr(8, 4) + "-" + hex.substr(12, 4) + "-" +
         hex.substr(16, 4) + "-" + hex.substr(20);
}

}  // namespace dyad
