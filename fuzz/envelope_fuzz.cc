// libFuzzer: the envelope parser must reject or accept any input without
// crashing, and whatever it accepts must serialize and parse back the same.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "secrets/envelope.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto e = dyad::ParseEnvelope(text);
  if (!e.ok()) return 0;
  auto again = dyad::ParseEnvelope(dyad::SerializeEnvelope(*e));
  if (!again.ok() || again->wrapped_dek != e->wrapped_dek || again->nonce != e->nonce ||
      again->ciphertext != e->ciphertext || again->key_version != e->key_version ||
      again->credentials_version != e->credentials_version || again->key_id != e->key_id || again->kms != e->kms) {
    std::abort();
  }
  return 0;
}
