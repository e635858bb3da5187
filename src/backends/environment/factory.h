// The "environment" backend (the embedded default): secrets sealed in the
// registry's SQLite database under the local keyring, whose master is
// ENCRYPTION_KEY (required outside --dev, where the key is generated), and
// the DYAD_PROVIDER_* variables as the read-only source of a provider with
// no stored secret. It has no encryption of its own, so it refuses
// SECRETS_ENCRYPTION_MODE=provider. Registering it twice in one registry is
// kAlreadyExists.
#pragma once

#include "backends/registry.h"

namespace dyad {

Status RegisterEnvironmentBackend(BackendRegistry& registry);

}  // namespace dyad
