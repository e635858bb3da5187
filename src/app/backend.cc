#include "app/backend.h"

#include <cstdio>
#include <cstdlib>

#include "backends/aws/factory.h"
#include "backends/azure/factory.h"
#include "backends/vault/factory.h"
#include "backends/environment/factory.h"

namespace dyad {

Status RegisterBuiltinBackends(BackendRegistry& registry) {
  DYAD_RETURN_IF_ERROR(RegisterEnvironmentBackend(registry));
  DYAD_RETURN_IF_ERROR(RegisterAwsBackend(registry));
  DYAD_RETURN_IF_ERROR(RegisterAzureBackend(registry));
  DYAD_RETURN_IF_ERROR(RegisterVaultBackend(registry));
  return OkStatus();
}

const BackendRegistry& BuiltinBackends() {
  static const BackendRegistry* registry = [] {
    auto* r = new BackendRegistry();
    if (Status s = RegisterBuiltinBackends(*r); !s.ok()) {
      std::fprintf(stderr, "fatal: %s\n", s.error().message.c_str());  // two backends with one name: a build bug
      std::abort();
    }
    return r;
  }();
  return *registry;
}

}  // namespace dyad
