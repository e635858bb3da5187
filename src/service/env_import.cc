#include "service/env_import.h"

namespace dyad {

Result<std::vector<EnvImportItem>> ImportEnvironmentCredentials(ProviderRepository& rows, ProviderService& providers,
                                                                SecretsService& secrets, bool dry_run,
                                                                const Caller& caller) {
  std::vector<EnvImportItem> out;
  constexpr int64_t kPage = 500;
  for (int64_t offset = 0;; offset += kPage) {
    DYAD_ASSIGN_OR_RETURN(ProviderPage page, rows.List(offset, kPage));
    for (const Provider& p : page.items) {
      std::vector<std::string> variables = secrets.EnvironmentVariables(p);
      if (variables.empty()) continue;
      EnvImportItem item{p.id, p.slug, "", "", std::move(variables)};
      auto stored = secrets.ReadRaw(p.id);
      if (!stored.ok()) {
        item.outcome = "failed";
        item.detail = stored.error().message;
      } else if (*stored) {
        item.outcome = "already stored";
      } else if (dry_run) {
        item.outcome = "would store";
      } else if (auto written = providers.RotateCredentials(p.id, secrets.EnvironmentFields(p), caller);
                 written.ok()) {
        item.outcome = "stored";
      } else {
        item.outcome = "failed";
        item.detail = written.error().message;
      }
      out.push_back(std::move(item));
    }
    if (static_cast<int64_t>(page.items.size()) < kPage) break;
  }
  return out;
}

}  // namespace dyad
