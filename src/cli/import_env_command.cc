#include "cli/import_env_command.h"

#include <cstdio>

#include "service/env_import.h"

namespace dyad {

int RunImportEnv(ProviderService& providers, SecretsService& secrets, bool dry_run) {
  auto report = ImportEnvironmentCredentials(providers, secrets, dry_run, Caller{"cli", ""});
  if (!report.ok()) {
    std::fprintf(stderr, "dyad-gateway: migrate import-env: %s\n", report.error().message.c_str());
    return 2;
  }
  for (const auto& item : report->items) {
    std::string names;
    for (const auto& v : item.variables) names += (names.empty() ? "" : ", ") + v;
    std::string kept;
    for (const auto& v : item.conflicts) kept += (kept.empty() ? "" : ", ") + v;
    std::printf("%s (%s)  %s  [%s]%s%s%s%s\n", item.slug.c_str(), item.provider_id.c_str(), item.outcome.c_str(),
                names.c_str(), kept.empty() ? "" : "  stored value differs, kept: ", kept.c_str(),
                item.error.empty() ? "" : "  error: ", item.error.c_str());
  }
  for (const auto& name : report->unknown) {
    std::printf("unknown: %s (names no field of an existing provider; not imported)\n", name.c_str());
  }
  std::printf("%zu provider(s) with DYAD_PROVIDER_* variables: %lld stored, %lld unchanged, %lld failed",
              report->items.size(), static_cast<long long>(report->stored), static_cast<long long>(report->unchanged),
              static_cast<long long>(report->failed));
  if (dry_run) std::printf(", %lld would be stored", static_cast<long long>(report->would_store));
  std::printf("; %zu unknown variable(s); %lld not imported (stored value differs)%s\n", report->unknown.size(),
              static_cast<long long>(report->conflicts), dry_run ? "; dry run, nothing written" : "");
  if (!report->removable.empty()) {
    std::printf("stored in %s, these variables can now be removed (they are then no fallback either):\n",
                secrets.store().Name().c_str());
    for (const auto& name : report->removable) std::printf("  %s\n", name.c_str());
  }
  return report->failed == 0 ? 0 : 1;
}

}  // namespace dyad
