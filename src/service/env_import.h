// `dyad-gateway migrate import-env` (the seed's "From Environment
// Variables", steps 2 and 5): stores the DYAD_PROVIDER_<SLUG>_<FIELD> values
// of every existing provider that has no stored secret in the configured
// backend (through ProviderService::RotateCredentials: sealed, versioned and
// audited as any credentials write), and names the variables that can then
// be removed. A provider whose secret is stored already is left alone (its
// variables are only its fallback). `dry_run` writes nothing. Items carry
// provider ids, variable names and the backend's errors, never a value.
#pragma once

#include <string>
#include <vector>

#include "registry/provider_repository.h"
#include "service/provider_service.h"
#include "service/secrets_service.h"

namespace dyad {

struct EnvImportItem {
  std::string provider_id, slug;
  std::string outcome;  // stored | would store | already stored | failed
  std::string detail;
  std::vector<std::string> variables;  // the DYAD_PROVIDER_* variables of the provider that are set
};

Result<std::vector<EnvImportItem>> ImportEnvironmentCredentials(ProviderRepository& rows, ProviderService& providers,
                                                                SecretsService& secrets, bool dry_run,
                                                                const Caller& caller);

}  // namespace dyad
