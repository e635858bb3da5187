// libFuzzer: dotenv parsing and configuration validation (the core's and
// each built-in backend's settings) never crash on any file content.
#include <cstdint>
#include <string_view>

#include "app/backend.h"
#include "core/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto env = dyad::ParseDotenv(text);
  if (!env.ok()) return 0;
  auto check_backend = [](const dyad::Config& c) { return dyad::BuiltinBackends().Check(c); };
  (void)dyad::LoadConfig(*env, false, check_backend);
  (void)dyad::LoadConfig(*env, true, check_backend);
  return 0;
}
