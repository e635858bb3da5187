// Provider: one upstream model provider as the registry keeps it.
//
// Models and adapter configuration are kept as validated JSON text (the
// registry does not interpret them). Credentials never live here: only their
// field names, shown as "[STORED_EXTERNALLY]", and a version counter that
// grows with every credentials write.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dyad {

struct Provider {
  std::string id;
  std::string name;
  std::string slug;
  std::string type;  // spawn-cli | http-sdk | proxy | local
  std::string description;
  bool enabled = true;
  std::string models_json = "[]";
  std::string adapter_config_json = "{}";
  std::vector<std::string> credential_fields;  // sorted
  int64_t credentials_version = 0;
  // Grows with every update of the row: an update is conditional on the
  // revision it read, so a writer that lost its lease cannot overwrite.
  int64_t revision = 0;
  std::string created_at;
  std::string updated_at;
};

struct ProviderPage {
  std::vector<Provider> items;
  int64_t total = 0;
};

// credential_fields as the registry stores them: one comma-separated column.
inline std::string JoinCredentialFields(const std::vector<std::string>& fields) {
  std::string out;
  for (const auto& f : fields) out += (out.empty() ? "" : ",") + f;
  return out;
}

inline std::vector<std::string> SplitCredentialFields(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < s.size()) {
    size_t comma = s.find(',', start);
    if (comma == std::string::npos) comma = s.size();
    out.push_back(s.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

}  // namespace dyad
