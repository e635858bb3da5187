// libFuzzer: the envelope parser must reject or accept any input without
// crashing, and whatever it accepts must serialize and parse back the same.
// ParseEnvelope's in-place reader of the canonical document must answer
// exactly as the general (Boost.JSON) parser does: both accept with the same
// fields, or both refuse with the same message.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "secrets/envelope.h"

namespace {

bool Same(const dyad::Envelope& a, const dyad::Envelope& b) {
  return a.format_version == b.format_version && a.kms == b.kms && a.key_id == b.key_id &&
         a.key_version == b.key_version && a.credentials_version == b.credentials_version &&
         a.wrapped_dek == b.wrapped_dek && a.nonce == b.nonce && a.ciphertext == b.ciphertext &&
         a.context_bound == b.context_bound;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto e = dyad::ParseEnvelope(text);
  auto general = dyad::ParseEnvelopeGeneralForTesting(text);
  if (e.ok() != general.ok()) std::abort();
  if (!e.ok()) {
    if (e.error().message != general.error().message || e.code() != general.code()) std::abort();
    return 0;
  }
  if (!Same(*e, *general)) std::abort();
  std::string written = dyad::SerializeEnvelope(*e);
  auto again = dyad::ParseEnvelope(written);
  if (!again.ok() || !Same(*again, *e)) std::abort();
  // What this build writes, the general parser reads the same way.
  auto again_general = dyad::ParseEnvelopeGeneralForTesting(written);
  if (!again_general.ok() || !Same(*again_general, *e)) std::abort();
  return 0;
}
