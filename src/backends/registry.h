// BackendRegistry: the secrets backends of this build, by SECRETS_PROVIDER
// name (Envoy's extension registry is the model).
//
// Registration is explicit (RegisterBuiltinBackends() in src/app, or a test
// adding its own), never a static initialiser: a static library drops
// objects nothing references. Register() refuses an empty or taken name
// (kInvalidArgument, kAlreadyExists). Find() of an unknown name is the
// start-up error naming SECRETS_PROVIDER and the accepted names, sorted.
// Fill it before sharing it: Register() is not thread-safe, the const
// member functions are.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "backends/backend.h"
#include "core/result.h"

namespace dyad {

class BackendRegistry {
 public:
  Status Register(std::unique_ptr<BackendFactory> factory);
  Result<const BackendFactory*> Find(std::string_view name) const;
  std::vector<std::string> Names() const;  // sorted

  // Find(config.secrets_provider), then its Check(): every settings error
  // of the configured backend, before anything is opened.
  Status Check(const Config& config) const;
  // Find and Check, then the factory's StoreLocation(): opens nothing.
  Result<std::string> StoreLocation(const Config& config) const;
  // Find, Check and Open the configured backend.
  Result<Backend> Open(const BackendContext& context) const;

 private:
  std::map<std::string, std::unique_ptr<BackendFactory>, std::less<>> factories_;
};

}  // namespace dyad
