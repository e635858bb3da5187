// libFuzzer: request-body JSON handling (provider create/update bodies and
// the credentials rotate body) never crashes, an accepted body renders with
// no control character in its name or model ids (none but tabs and line
// breaks in its description), and accepted credentials (values and dynamic
// secret references) survive the payload's round trip unchanged.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "api/provider_json.h"
#include "secrets/credentials.h"

namespace {

bool HasControl(std::string_view s, bool lines) {
  for (unsigned char c : s) {
    if (lines && (c == '\t' || c == '\n' || c == '\r')) continue;
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view body(reinterpret_cast<const char*>(data), size);
  for (auto kind : {dyad::BodyKind::kCreate, dyad::BodyKind::kUpdate}) {
    auto patch = dyad::ParseProviderBody(body, kind);
    if (!patch.ok()) continue;
    if (patch->name && HasControl(*patch->name, false)) std::abort();
    if (patch->description && HasControl(*patch->description, true)) std::abort();
    if (patch->models_json) {
      for (const auto& m : nlohmann::json::parse(*patch->models_json)) {
        for (const char* id : {"dyadModelId", "adapterModelId"}) {
          if (HasControl(m.at(id).get_ref<const std::string&>(), false)) std::abort();
        }
      }
    }
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
