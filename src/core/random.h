// Random: the source of randomness (keys, nonces, ids), injected for tests.
//
// SecureRandom draws from OpenSSL's CSPRNG (buffered per thread, reset in a
// forked child) and is thread-safe. Fill() fails
// only if the CSPRNG is unavailable, which callers treat as fatal for the
// operation at hand.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/result.h"

namespace dyad {

class Random {
 public:
  virtual ~Random() = default;
  virtual Status Fill(uint8_t* out, size_t n) = 0;
};

class SecureRandom final : public Random {
 public:
  Status Fill(uint8_t* out, size_t n) override;
};

// The process-wide SecureRandom.
Random& DefaultRandom();

// A random identifier: UUID version 4 text ("8-4-4-4-12" lower-case hex).
std::string NewUuid(Random& random);

}  // namespace dyad
