#include "backends/registry.h"

namespace dyad {

Status BackendRegistry::Register(std::unique_ptr<BackendFactory> factory) {
  if (!factory || factory->Name().empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "a backend factory needs a name");
  }
  std::string name = factory->Name();
  if (factories_.count(name)) {
    return MakeError(ErrorCode::kAlreadyExists, "a backend named '" + name + "' is already registered");
  }
  factories_.emplace(std::move(name), std::move(factory));
  return OkStatus();
}

Result<const BackendFactory*> BackendRegistry::Find(std::string_view name) const {
  if (auto it = factories_.find(name); it != factories_.end()) return it->second.get();
  std::string names;
  for (const auto& n : Names()) names += (names.empty() ? "" : ", ") + n;
  return MakeError(ErrorCode::kInvalidArgument, "SECRETS_PROVIDER: '" + std::string(name) +
                                                    "' is not a backend of this build; use one of: " + names);
}

std::vector<std::string> BackendRegistry::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, factory] : factories_) names.push_back(name);  // a std::map: sorted
  return names;
}

Status BackendRegistry::Check(const Config& config) const {
  DYAD_ASSIGN_OR_RETURN(const BackendFactory* factory, Find(config.secrets_provider));
  return factory->Check(config);
}

Result<std::string> BackendRegistry::StoreLocation(const Config& config) const {
  DYAD_ASSIGN_OR_RETURN(const BackendFactory* factory, Find(config.secrets_provider));
  DYAD_RETURN_IF_ERROR(factory->Check(config));
  return factory->StoreLocation(config);
}

Result<Backend> BackendRegistry::Open(const BackendContext& context) const {
  DYAD_ASSIGN_OR_RETURN(const BackendFactory* factory, Find(context.config.secrets_provider));
  DYAD_RETURN_IF_ERROR(factory->Check(context.config));
  return factory->Open(context);
}

}  // namespace dyad
