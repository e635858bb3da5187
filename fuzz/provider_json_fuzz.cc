// libFuzzer: request-body JSON handling (provider create/update bodies and
// the credentials rotate body) never crashes, and an accepted body renders.
#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "api/provider_json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view body(reinterpret_cast<const char*>(data), size);
  for (auto kind : {dyad::BodyKind::kCreate, dyad::BodyKind::kUpdate}) {
    auto patch = dyad::ParseProviderBody(body, kind);
    if (!patch.ok()) continue;
    dyad::Provider p;
    if (patch->models_json) p.models_json = *patch->models_json;
    if (patch->adapter_config_json) p.adapter_config_json = *patch->adapter_config_json;
    (void)dyad::ProviderToJson(p).dump();
  }
  (void)dyad::ParseCredentialsBody(body);
  return 0;
}
