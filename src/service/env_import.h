// `migrate import-env` (seed Migration Guide, step 5): stores each existing
// provider's DYAD_PROVIDER_<SLUG>_<FIELD> variables in the configured backend,
// then says which variables can go.
//
// A provider's variables are those the fallback reads for it (its
// credential fields and api_key, SecretsService::EnvironmentVariables). Those
// of fields with no stored value are added to its stored credentials (other
// stored fields kept) through ProviderService::ImportCredentials: sealed,
// written under the provider's lock and lease, conditional where the store
// can, audited as credentials.rotate. A stored value is never replaced: one
// that differs from its variable (rotated through the API since, say) is
// kept, and the variable is listed as a conflict, not as removable. A
// provider without variables is left alone; one with nothing to add is
// "unchanged" (nothing written); a variable of no provider's field is
// "unknown". `dry_run` writes nothing. The report holds variable names only,
// never a value. Thread-safe as the services are.
#pragma once

#include <string>
#include <vector>

#include "service/provider_service.h"
#include "service/secrets_service.h"

namespace dyad {

struct EnvImportItem {
  std::string provider_id, slug;
  std::string outcome;                 // stored | would store | unchanged | failed
  std::vector<std::string> variables;  // its DYAD_PROVIDER_* names, sorted
  std::vector<std::string> conflicts;  // variables whose field is stored with another value (kept), sorted
  std::string error;                   // when failed
};

struct EnvImportReport {
  bool dry_run = false;
  std::vector<EnvImportItem> items;    // providers with variables, in registry order
  std::vector<std::string> unknown;    // variables of no provider's field, sorted
  std::vector<std::string> removable;  // variables whose values are now stored, sorted
  int64_t stored = 0, would_store = 0, unchanged = 0, failed = 0;
  int64_t conflicts = 0;  // variables not imported: their field is stored with another value
};

// Fails only when the registry cannot be listed; a provider that fails is
// reported and the others go on.
Result<EnvImportReport> ImportEnvironmentCredentials(ProviderService& providers, SecretsService& secrets,
                                                     bool dry_run, const Caller& caller);

}  // namespace dyad
