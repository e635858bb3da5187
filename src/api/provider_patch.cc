#include "api/provider_patch.h"

#include <algorithm>
#include <cctype>
#include <string>

#include "api/provider_json.h"
#include "core/encoding.h"

namespace dyad {

using nlohmann::json;

bool PatchTouchesCredentials(const json& patch) {
  auto it = patch.find("credentials");
  return it != patch.end() && !(it->is_object() && it->empty());
}

std::optional<std::vector<std::string>> PatchCredentialNames(const json& patch) {
  if (!PatchTouchesCredentials(patch)) return std::nullopt;
  auto it = patch.find("credentials");
  std::vector<std::string> names;
  if (!it->is_object()) return names;
  for (auto f = it->begin(); f != it->end() && names.size() < kMaxCredentialFields; ++f) {
    names.push_back(f.key().substr(0, 64));
  }
  return names;
}

namespace {

// Object members in `j`, nested ones included (as the JSON limits count
// them). Its depth is within the limits: built from bodies that were.
size_t Members(const json& j) {
  size_t n = 0;
  if (j.is_object()) {
    for (const auto& [key, value] : j.items()) n += 1 + Members(value);
  } else if (j.is_array()) {
    for (const auto& value : j) n += Members(value);
  }
  return n;
}

// The top-level member of `doc` with the largest `measure`.
template <typename Measure>
std::string Largest(const json& doc, Measure measure) {
  std::string name;
  size_t most = 0;
  for (const auto& [key, value] : doc.items()) {
    if (size_t m = measure(key, value); name.empty() || m > most) {
      name = key;
      most = m;
    }
  }
  return name;
}

// `doc` (the merged provider, kept credentials as kStoredValue) against
// what a create or PUT body may hold, the kept values counted at their
// length. kInvalidArgument naming the member that holds the most.
Status CheckFitsABody(const json& doc, const StoredBytes& stored_bytes, size_t max_body_bytes) {
  json measured = doc;
  size_t kept_bytes = 0;
  if (auto creds = measured.find("credentials"); creds != measured.end() && creds->is_object()) {
    for (auto& [field, value] : creds->items()) {
      if (!value.is_string() || value.get_ref<const std::string&>() != kStoredValue) continue;
      value = "";  // kStoredValue is no UTF-8: measured as "" plus its length
      if (auto b = stored_bytes.find(field); b != stored_bytes.end()) kept_bytes += b->second;
    }
  }
  const std::string text = measured.dump();
  if (std::string crossed = JsonLimitCrossed(text); !crossed.empty()) {
    std::string field = Largest(measured, [](const std::string&, const json& v) { return Members(v); });
    return MakeError(ErrorCode::kInvalidArgument, "field '" + field + "' would leave the provider with " + crossed +
                                                      ", more than a create or PUT body may hold");
  }
  if (const size_t total = text.size() + kept_bytes; total > max_body_bytes) {
    std::string field = Largest(measured, [&](const std::string& key, const json& v) {
      return v.dump().size() + (key == "credentials" ? kept_bytes : 0);
    });
    return MakeError(ErrorCode::kInvalidArgument,
                     "field '" + field + "' would make the provider " + std::to_string(total) +
                         " bytes of JSON, more than the " + std::to_string(max_body_bytes) +
                         " a create or PUT body may hold (GATEWAY_MAX_BODY_BYTES)");
  }
  return OkStatus();
}

}  // namespace

Result<ProviderPatch> MergeProviderPatch(const Provider& row, const CredentialFields& stored,
                                         const StoredBytes& stored_bytes, const json& patch, size_t max_body_bytes) {
  if (auto enabled = patch.find("enabled"); enabled != patch.end() && enabled->is_null()) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "field 'enabled' cannot be removed (null): its default, true, would put the provider back in "
                     "service; send true or false");
  }
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
  DYAD_ASSIGN_OR_RETURN(ProviderPatch merged, ParseProviderJson(doc, BodyKind::kCreate, &patch));
  DYAD_RETURN_IF_ERROR(CheckFitsABody(doc, stored_bytes, max_body_bytes));
  // A member the patch removed (null) goes back to its default, which is
  // empty ("enabled", whose default is not, is refused above): the whole
  // provider is written, not only the members present.
  const Provider defaults;
  if (!merged.description) merged.description = defaults.description;
  if (!merged.enabled) merged.enabled = defaults.enabled;
  if (!merged.models_json) merged.models_json = defaults.models_json;
  if (!merged.adapter_config_json) merged.adapter_config_json = defaults.adapter_config_json;
  return merged;
}

bool IsMergePatchMediaType(std::string_view content_type) {
  return MediaTypeIs(content_type, "application/merge-patch+json") || MediaTypeIs(content_type, "application/json");
}

}  // namespace dyad
