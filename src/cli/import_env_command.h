// `dyad-gateway migrate import-env [--dry-run]`: the report of
// ImportEnvironmentCredentials (service/env_import.h) on stdout, names only.
#pragma once

#include "service/provider_service.h"
#include "service/secrets_service.h"

namespace dyad {

// The exit status: 0 when every provider's variables are stored (or would
// be), 1 when one failed.
int RunImportEnv(ProviderService& providers, SecretsService& secrets, bool dry_run);

}  // namespace dyad
