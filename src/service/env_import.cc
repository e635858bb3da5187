#include "service/env_import.h"

#include <algorithm>
#include <set>

namespace dyad {
namespace {

// Whether every value of `env` is stored for `p` as it is (read outside the
// provider's lock: the write re-reads under it).
Result<bool> AlreadyStored(SecretsService& secrets, const Provider& p, const CredentialFields& env) {
  if (p.credential_fields.empty()) return false;
  DYAD_ASSIGN_OR_RETURN(auto raw, secrets.ReadRaw(p.id));
  if (!raw) return false;
  DYAD_ASSIGN_OR_RETURN(CredentialFields stored, secrets.OpenRaw(p.id, *raw, p.credentials_version));
  for (const auto& [field, value] : env) {
    auto it = stored.find(field);
    if (it == stored.end() || !(it->second == value)) return false;
  }
  return true;
}

}  // namespace

Result<EnvImportReport> ImportEnvironmentCredentials(ProviderService& providers, SecretsService& secrets,
                                                     bool dry_run, const Caller& caller) {
  EnvImportReport report;
  report.dry_run = dry_run;
  std::set<std::string> claimed, removable;
  constexpr int64_t kPage = 200;
  for (int64_t offset = 0;; offset += kPage) {
    DYAD_ASSIGN_OR_RETURN(ProviderPage page, providers.List(offset, kPage));
    for (const Provider& p : page.items) {
      auto variables = secrets.EnvironmentVariables(p);
      if (variables.empty()) continue;
      EnvImportItem item{p.id, p.slug, "", {}, ""};
      for (const auto& [field, name] : variables) {
        item.variables.push_back(name);
        claimed.insert(name);
      }
      std::sort(item.variables.begin(), item.variables.end());
      CredentialFields env = secrets.EnvironmentFields(p);
      auto same = AlreadyStored(secrets, p, env);
      if (!same.ok()) {
        item.outcome = "failed";
        item.error = same.error().message;
      } else if (*same) {
        item.outcome = "unchanged";
      } else if (dry_run) {
        item.outcome = "would store";
      } else if (auto written = providers.ImportCredentials(p.id, env, caller); written.ok()) {
        item.outcome = "stored";
      } else {
        item.outcome = "failed";
        item.error = written.error().message;
      }
      if (item.outcome == "stored" || item.outcome == "unchanged") removable.insert(item.variables.begin(), item.variables.end());
      report.stored += item.outcome == "stored";
      report.would_store += item.outcome == "would store";
      report.unchanged += item.outcome == "unchanged";
      report.failed += item.outcome == "failed";
      report.items.push_back(std::move(item));
    }
    if (page.items.size() < static_cast<size_t>(kPage) || offset + kPage >= page.total) break;
  }
  for (const auto& name : secrets.EnvironmentVariableNames()) {
    if (!claimed.count(name)) report.unknown.push_back(name);
  }
  report.removable.assign(removable.begin(), removable.end());
  return report;
}

}  // namespace dyad
