#include "core/random.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>

#include <atomic>
#include <climits>
#include <cstring>

#include "core/encoding.h"

namespace dyad {

namespace {

// Bumped in a forked child, so that no two processes hand out the same
// buffered bytes (a repeated GCM nonce would be fatal).
std::atomic<uint64_t> g_fork_generation{0};

// A per-thread buffer of CSPRNG output. OpenSSL 3's RAND_bytes costs about a
// microsecond per call here (provider dispatch, fork check), more than an
// AES-GCM seal of a credential; drawing 4 KiB at a time makes the nonces and
// keys of one seal cost tens of nanoseconds. Bytes are wiped as they are
// handed out and when the thread ends.
struct RandomBuffer {
  static constexpr size_t kSize = 4096;
  uint8_t bytes[kSize];
  size_t pos = kSize;
  uint64_t generation = ~uint64_t{0};
  ~RandomBuffer() { OPENSSL_cleanse(bytes, sizeof bytes); }
};

bool Draw(uint8_t* out, size_t n) {
  if (n > RandomBuffer::kSize / 4) return n <= INT_MAX && RAND_bytes(out, static_cast<int>(n)) == 1;
  static const bool registered = [] {
    return pthread_atfork(nullptr, nullptr, [] { g_fork_generation.fetch_add(1); }) == 0;
  }();
  (void)registered;
  thread_local RandomBuffer buf;
  uint64_t gen = g_fork_generation.load(std::memory_order_relaxed);
  if (buf.generation != gen || buf.pos + n > RandomBuffer::kSize) {
    if (RAND_bytes(buf.bytes, RandomBuffer::kSize) != 1) return false;
    buf.pos = 0;
    buf.generation = gen;
  }
  std::memcpy(out, buf.bytes + buf.pos, n);
  OPENSSL_cleanse(buf.bytes + buf.pos, n);
  buf.pos += n;
  return true;
}

}  // namespace

Status SecureRandom::Fill(uint8_t* out, size_t n) {
  if (!Draw(out, n)) return MakeError(ErrorCode::kInternal, "the system random source failed");
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
