#include "api/provider_patch.h"

#include <algorithm>
#include <cctype>
#include <string>

#include "api/provider_json.h"

namespace dyad {

using nlohmann::json;

bool PatchTouchesCredentials(const json& patch) {
  auto it = patch.find("credentials");
  return it != patch.end() && !(it->is_object() && it->empty());
}

Result<ProviderPatch> MergeProviderPatch(const Provider& row, const CredentialFields& stored, const json& patch) {
  const bool touches = PatchTouchesCredentials(patch);
  json doc = ProviderToJson(row);
  for (const char* read_only : {"id", "createdAt", "updatedAt", "credentialsVersion"}) doc.erase(read_only);
  doc.erase("credentials");
  json change = patch;
  if (touches) {
    json creds = json::object();
    for (const auto& [field, value] : stored) {
      if (auto ref = DecodeReference(value)) {
        creds[field] = {{"vault", ref->path}, {"field", ref->field}};
      } else {
        creds[field] = std::string(value.view());  // kStoredValue: masked by the service
      }
    }
    doc["credentials"] = std::move(creds);
  } else {
    change.erase("credentials");  // {}: merging it would add an empty set
  }
  doc.merge_patch(change);
  if (touches && !doc.contains("credentials")) doc["credentials"] = json::object();  // "credentials": null
  DYAD_ASSIGN_OR_RETURN(ProviderPatch merged, ParseProviderJson(doc, BodyKind::kCreate));
  // A member the patch removed (null) goes back to its default: the whole
  // provider is written, not only the members present.
  const Provider defaults;
  if (!merged.description) merged.description = defaults.description;
  if (!merged.enabled) merged.enabled = defaults.enabled;
  if (!merged.models_json) merged.models_json = defaults.models_json;
  if (!merged.adapter_config_json) merged.adapter_config_json = defaults.adapter_config_json;
  return merged;
}

bool IsMergePatchMediaType(std::string_view content_type) {
  std::string_view type = content_type.substr(0, content_type.find(';'));
  while (!type.empty() && (type.back() == ' ' || type.back() == '\t')) type.remove_suffix(1);
  while (!type.empty() && (type.front() == ' ' || type.front() == '\t')) type.remove_prefix(1);
  auto equals = [&](std::string_view want) {
    return type.size() == want.size() && std::equal(type.begin(), type.end(), want.begin(), [](char a, char b) {
             return std::tolower(static_cast<unsigned char>(a)) == b;
           });
  };
  return equals("application/merge-patch+json") || equals("application/json");
}

}  // namespace dyad
