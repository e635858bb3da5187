#include "service/env_import.h"

#include <algorithm>
#include <set>

#include "service/adapter_config.h"

namespace dyad {
namespace {

// The provider's stored credentials (none: empty), read outside its lock:
// ImportCredentials re-reads them under it and adds only absent fields.
Result<CredentialFields> Stored(SecretsService& secrets, const Provider& p) {
  if (p.credential_fields.empty()) return CredentialFields{};
  DYAD_ASSIGN_OR_RETURN(auto raw, secrets.ReadRaw(p.id));
  if (!raw) return CredentialFields{};
  return secrets.OpenRaw(p.id, *raw, p.credentials_version);
}

}  // namespace

Result<EnvImportReport> ImportEnvironmentCredentials(ProviderService& providers, SecretsService& secrets,
                                                     bool dry_run, const Caller& caller) {
  EnvImportReport report;
  report.dry_run = dry_run;
  std::set<std::string> claimed, removable;
  DYAD_RETURN_IF_ERROR(ForEachProvider(providers, [&](const Provider& p) {
    auto variables = secrets.EnvironmentVariables(p);
    if (variables.empty()) return true;
    EnvImportItem item;
    item.provider_id = p.id;
    item.slug = p.slug;
    for (const auto& [field, name] : variables) {
      item.variables.push_back(name);
      claimed.insert(name);
    }
    std::sort(item.variables.begin(), item.variables.end());
    // Fields with no stored value are filled; one stored with another value
    // is kept (it may have been rotated since) and its variable named.
    CredentialFields fill;
    std::vector<std::string> settled;  // variables whose value is stored as it is
    auto stored = Stored(secrets, p);
    if (stored.ok()) {
      for (auto& [field, value] : secrets.EnvironmentFields(variables)) {
        const std::string& name = variables.at(field);
        auto it = stored->find(field);
        if (it == stored->end()) fill.emplace(field, std::move(value));
        else if (it->second == value) settled.push_back(name);
        else item.conflicts.push_back(name);
      }
    }
    if (!stored.ok()) {
      item.outcome = "failed";
      item.error = stored.error().message;
    } else if (fill.empty()) {
      item.outcome = "unchanged";
    } else if (dry_run) {
      // Judged as the write would be (ImportCredentials): the stored fields and those added.
      CredentialFields merged = *stored;
      for (const auto& [field, value] : fill) merged.emplace(field, value);
      Status writable = CheckCredentialsWrite(p.type, p.adapter_config_json, &merged, FieldNames(merged));
      item.outcome = writable.ok() ? "would store" : "failed";
      if (!writable.ok()) item.error = writable.error().message;
    } else if (auto written = providers.ImportCredentials(p.id, fill, caller); written.ok()) {
      item.outcome = "stored";
      for (const auto& [field, value] : fill) settled.push_back(variables.at(field));
    } else {
      item.outcome = "failed";
      item.error = written.error().message;
    }
    if (item.outcome != "failed") removable.insert(settled.begin(), settled.end());
    std::sort(item.conflicts.begin(), item.conflicts.end());
    report.conflicts += static_cast<int64_t>(item.conflicts.size());
    report.stored += item.outcome == "stored";
    report.would_store += item.outcome == "would store";
    report.unchanged += item.outcome == "unchanged";
    report.failed += item.outcome == "failed";
    report.items.push_back(std::move(item));
    return true;
  }));
  for (const auto& name : secrets.EnvironmentVariableNames()) {
    if (!claimed.count(name)) report.unknown.push_back(name);
  }
  report.removable.assign(removable.begin(), removable.end());
  return report;
}

}  // namespace dyad
