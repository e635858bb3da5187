// libFuzzer: GetSecretValue's one-pass reader (backends/aws/secret_value_answer.h)
// must answer exactly as the general parser (nlohmann/json) does: whatever
// it accepts, the general parser accepts with the same SecretString and
// VersionId; and the combined parser always answers as the general one.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "backends/aws/secret_value_answer.h"

namespace {

bool Same(const dyad::SecretValueAnswer& a, const dyad::SecretValueAnswer& b) {
  return a.secret_string == b.secret_string && a.version_id == b.version_id;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto general = dyad::ParseSecretValueAnswerGeneralForTesting(text);
  if (auto fast = dyad::ScanSecretValueAnswerForTesting(text)) {
    if (!general.ok() || !Same(*fast, *general)) std::abort();
  }
  auto combined = dyad::ParseSecretValueAnswer(text);
  if (combined.ok() != general.ok()) std::abort();
  if (!combined.ok()) {
    if (combined.code() != general.code() || combined.error().message != general.error().message) std::abort();
    return 0;
  }
  if (!Same(*combined, *general)) std::abort();
  return 0;
}
