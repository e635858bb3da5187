// The secrets backends built into the binary, registered by name
// (backends/registry.h): "environment" and "aws". Adding one is one line in
// RegisterBuiltinBackends(). A test builds its own registry (the built-in
// backends and its own) and hands it to App::Create.
#pragma once

#include "backends/registry.h"

namespace dyad {

Status RegisterBuiltinBackends(BackendRegistry& registry);

// A registry holding the built-in backends, filled on first use; thread-safe.
const BackendRegistry& BuiltinBackends();

}  // namespace dyad
