// Envelope format v1 (DESIGN.md §5): the self-describing JSON document that
// holds one sealed credential payload.
//
//   {"v":1,"kms":"local","kid":"<key id>","kver":3,"cv":7,
//    "dek":"<b64 wrapped DEK>","iv":"<b64 12 bytes>","ct":"<b64 ciphertext‖tag>","ctx":1}
//
// kver is the KMS key version that wrapped the DEK; cv the credentials
// version. ctx (optional, absent in envelopes written before it existed)
// says the DEK was wrapped with the secret name as its KMS context, so it
// is unwrapped with that context; without it, with none. The AAD binds format version ‖ secret name ‖ cv, so a blob moved
// to another name or replayed under another version fails to open.
// ParseEnvelope is bounded (kMaxEnvelopeBytes) and names the field at fault.
// It reads the document as SerializeEnvelope writes it in place, and any
// other valid JSON through a general parser, with the same checks and the
// same errors either way. Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/result.h"

namespace dyad {

inline constexpr size_t kMaxEnvelopeBytes = 256 * 1024;
inline constexpr size_t kMaxWrappedKeyBytes = 4096;

struct Envelope {
  int format_version = 1;
  std::string kms;     // key manager kind
  std::string key_id;
  uint32_t key_version = 0;
  int64_t credentials_version = 0;
  std::string wrapped_dek;  // raw bytes
  std::string nonce;        // raw 12 bytes
  std::string ciphertext;   // raw ciphertext ‖ tag
  bool context_bound = false;  // "ctx":1 — the DEK is bound to the secret name
};

std::string SerializeEnvelope(const Envelope& e);
Result<Envelope> ParseEnvelope(std::string_view text);
// The same into `e`, reusing its buffers (a caller that parses many keeps
// one); `e` is unspecified after an error.
Status ParseEnvelopeInto(std::string_view text, Envelope& e);
// The general parser alone (Boost.JSON, core Base64Decode), for the fuzz
// target that checks ParseEnvelope answers exactly as it does.
Result<Envelope> ParseEnvelopeGeneralForTesting(std::string_view text);

// Length-prefixed: "dyad-envelope-v1" ‖ len(name) ‖ name ‖ cv (8 bytes BE).
std::string EnvelopeAad(std::string_view secret_name, int64_t credentials_version);
// The same, appended to `aad` (a buffer the caller reuses).
void AppendEnvelopeAad(std::string& aad, std::string_view secret_name, int64_t credentials_version);

}  // namespace dyad
