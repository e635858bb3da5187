// libFuzzer: dotenv parsing and configuration validation never crash on any
// file content.
#include <cstdint>
#include <string_view>

#include "core/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto env = dyad::ParseDotenv(text);
  if (!env.ok()) return 0;
  (void)dyad::LoadConfig(*env, false);
  (void)dyad::LoadConfig(*env, true);
  return 0;
}
