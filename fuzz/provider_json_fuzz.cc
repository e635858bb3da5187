// libFuzzer: request-body JSON handling (provider create/update bodies and
// the credentials rotate body) never crashes, an accepted body renders, and
// accepted credentials (values and dynamic secret references) survive the
// payload's round trip unchanged.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <nlohmann/json.hpp>

#include "api/provider_json.h"
#include "secrets/credentials.h"

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
  auto creds = dyad::ParseCredentialsBody(body);
  if (creds.ok()) {
    auto back = dyad::CredentialsFromJson(dyad::CredentialsToJson(*creds).view());
    if (!back.ok() || back->size() != creds->size()) std::abort();
    for (const auto& [name, value] : *creds) {
      if (!(back->at(name) == value)) std::abort();
    }
  }
  return 0;
}
