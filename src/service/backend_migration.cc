#include "service/backend_migration.h"

#include "secrets/credentials.h"

namespace dyad {
namespace {

constexpr char kCopying[] = "copying";
constexpr char kCopied[] = "copied";

Result<std::vector<Provider>> AllProviders(ProviderRepository& providers) {
  std::vector<Provider> out;
  DYAD_RETURN_IF_ERROR(ForEachProvider(providers, [&](const Provider& p) {
    out.push_back(p);
    return true;
  }));
  return out;
}

MigrationItem Item(const std::string& id, std::string outcome, std::string detail = "") {
  return MigrationItem{id, std::move(outcome), std::move(detail)};
}

}  // namespace

BackendMigration::BackendMigration(SecretsService& source, ProviderRepository& providers,
                                   MigrationProgressRepository& records, MigrationTarget target)
    : source_(source), providers_(providers), records_(records), target_(target),
      target_sealer_(target.keys, target.random, target.mode) {}

std::string BackendMigration::Name() const {
  auto side = [](SecretStore& store, KeyManager& keys, SealMode mode) {
    return store.Name() + ":" + store.SecretName("") + ":" + keys.Kind() + ":" + keys.KeyId() + ":" +
           (mode == SealMode::kProvider ? "provider" : "envelope");
  };
  return side(source_.store(), source_.keys(), source_.sealer().mode()) + " -> " +
         side(target_.store, target_.keys, target_.mode);
}

Result<BackendMigration::SourceValue> BackendMigration::ReadSource(const Provider& p) {
  DYAD_ASSIGN_OR_RETURN(std::optional<StoredSecret> raw, source_.ReadRaw(p.id));
  if (!raw) return MakeError(ErrorCode::kNotFound, "the source holds no secret for it");
  SourceValue v;
  v.raw = std::move(*raw);
  DYAD_ASSIGN_OR_RETURN(OpenedSecret opened, source_.sealer().Open(source_.SecretName(p.id), v.raw.value));
  if (opened.credentials_version != 0 && opened.credentials_version < p.credentials_version) {
    return MakeError(ErrorCode::kDataLoss, "the source's value is credentials version " +
                                               std::to_string(opened.credentials_version) + ", older than the registry's " +
                                               std::to_string(p.credentials_version) + " (a rollback): not copied");
  }
  v.credentials_version = std::max(opened.credentials_version, p.credentials_version);
  DYAD_ASSIGN_OR_RETURN(v.fields, CredentialsFromJson(opened.payload.view()));
  v.fingerprint = source_.Fingerprint(v.fields);
  return v;
}

Result<std::pair<std::string, int64_t>> BackendMigration::ReadTarget(const std::string& provider_id,
                                                                      std::string* version) {
  const std::string name = target_.store.SecretName(provider_id);
  DYAD_ASSIGN_OR_RETURN(StoredSecret stored, target_.store.Get(name));
  if (version) *version = stored.version;
  DYAD_ASSIGN_OR_RETURN(OpenedSecret opened, target_sealer_.Open(name, stored.value));
  DYAD_ASSIGN_OR_RETURN(CredentialFields fields, CredentialsFromJson(opened.payload.view()));
  return std::make_pair(source_.Fingerprint(fields), opened.credentials_version);
}

Result<std::string> BackendMigration::WriteTarget(const std::string& name, const std::string& sealed) {
  auto created = target_.store.Create(name, sealed);
  if (created.ok() || created.code() != ErrorCode::kAlreadyExists) return created;
  // Left by an earlier run (killed before it recorded the copy) or copied
  // before the source changed: replaced. Nothing but this run writes the
  // target (it is not yet serving).
  DYAD_ASSIGN_OR_RETURN(StoredSecret current, target_.store.Get(name));
  auto replaced = target_.store.Replace(name, sealed, current.version);
  if (replaced.ok() || replaced.code() != ErrorCode::kUnimplemented) return replaced;
  return target_.store.Overwrite(name, sealed);
}

bool BackendMigration::MovedAndSourceDeleted(const Provider& p, const std::map<std::string, MigrationRecord>& done) {
  auto record = done.find(p.id);
  if (record == done.end() || record->second.state != kCopied) return false;
  auto target = ReadTarget(p.id);
  return target.ok() && target->first == record->second.fingerprint &&
         target->second == record->second.credentials_version;
}

MigrationItem BackendMigration::CopyOne(const Provider& p, const MigrationOptions& options,
                                        const std::map<std::string, MigrationRecord>& done) {
  if (p.credential_fields.empty()) return Item(p.id, "no credentials");
  // Writers of this provider on the source wait while it is copied.
  auto held = source_.locks().Hold(p.id);
  if (!held.ok()) return Item(p.id, "failed", "cannot hold the provider's lease: " + held.error().message);
  const std::string target_name = target_.store.SecretName(p.id);
  for (int attempt = 0; attempt < options.max_attempts; ++attempt) {
    auto source = ReadSource(p);
    if (!source.ok() && source.code() == ErrorCode::kNotFound && MovedAndSourceDeleted(p, done)) {
      // A delete pass already removed the source's copy of what this
      // migration copied (a killed or partly failed --delete-source run).
      return Item(p.id, options.dry_run ? "would skip" : "skipped", "copied; the source's copy is deleted");
    }
    if (!source.ok()) {
      std::string why = source.error().message;
      if (source.code() == ErrorCode::kNotFound && !source_.EnvironmentSource(p).empty()) {
        why += " (its credentials come from " + source_.EnvironmentSource(p) + "* variables: store them first)";
      }
      return Item(p.id, "failed", "source: " + why);
    }
    auto record = done.find(p.id);
    if (record != done.end() && record->second.state == kCopied && record->second.fingerprint == source->fingerprint &&
        record->second.credentials_version == source->credentials_version) {
      auto target = ReadTarget(p.id);
      if (target.ok() && target->first == source->fingerprint && target->second == record->second.credentials_version) {
        return Item(p.id, options.dry_run ? "would skip" : "skipped", "already copied");
      }
    }
    if (options.dry_run) return Item(p.id, "would copy");
    MigrationRecord rec{p.id, kCopying, source->raw.version, "", source->fingerprint, source->credentials_version};
    if (Status s = records_.Put(Name(), rec); !s.ok()) return Item(p.id, "failed", "registry: " + s.error().message);
    auto sealed = target_sealer_.Seal(target_name, source->credentials_version, CredentialsToJson(source->fields));
    if (!sealed.ok()) return Item(p.id, "failed", "target key: " + sealed.error().message);
    auto written = WriteTarget(target_name, *sealed);
    if (!written.ok()) return Item(p.id, "failed", "target store: " + written.error().message);
    // The value copied must still be the source's: another writer (one
    // without the lease) or a key rotation may have changed it meanwhile.
    auto again = source_.ReadRaw(p.id);
    if (!again.ok()) return Item(p.id, "failed", "source: " + again.error().message);
    if (!*again || (*again)->version != source->raw.version) continue;
    rec.state = kCopied;
    rec.target_version = *written;
    if (Status s = records_.Put(Name(), rec); !s.ok()) return Item(p.id, "failed", "registry: " + s.error().message);
    return Item(p.id, "copied");
  }
  return Item(p.id, "failed", "the source changed during each of " + std::to_string(options.max_attempts) +
                                  " copies; run migrate again");
}

MigrationItem BackendMigration::VerifyOne(const Provider& p, const std::map<std::string, MigrationRecord>& done) {
  if (p.credential_fields.empty()) return Item(p.id, "verified");
  auto source = ReadSource(p);
  if (!source.ok() && source.code() == ErrorCode::kNotFound && MovedAndSourceDeleted(p, done)) {
    return Item(p.id, "verified");  // against what was copied: the source's copy is deleted
  }
  if (!source.ok()) return Item(p.id, "failed", "source: " + source.error().message);
  auto target = ReadTarget(p.id);
  if (!target.ok()) return Item(p.id, "failed", "target: " + target.error().message);
  if (target->first != source->fingerprint) {
    return Item(p.id, "failed", "the target's value differs from the source's (fingerprint " + target->first +
                                    ", source " + source->fingerprint + ")");
  }
  if (target_.mode == SealMode::kEnvelope && target->second != source->credentials_version) {
    return Item(p.id, "failed", "the target's credentials version is " + std::to_string(target->second) +
                                    ", the source's " + std::to_string(source->credentials_version));
  }
  verified_versions_[p.id] = source->raw.version;
  return Item(p.id, "verified");
}

MigrationItem BackendMigration::DeleteOne(const Provider& p, const Caller& caller) {
  auto verified = verified_versions_.find(p.id);
  if (verified == verified_versions_.end()) return Item(p.id, "kept");
  auto held = source_.locks().Hold(p.id);
  if (!held.ok()) return Item(p.id, "failed", "cannot hold the provider's lease: " + held.error().message);
  auto raw = source_.ReadRaw(p.id);
  if (!raw.ok()) return Item(p.id, "failed", "source: " + raw.error().message);
  if (!*raw) return Item(p.id, "deleted");
  if ((*raw)->version != verified->second) {
    return Item(p.id, "failed", "the source changed after it was verified: kept; run migrate again");
  }
  if (Status s = source_.DeleteIfUnchanged(p.id, **raw, caller, **held); !s.ok()) {
    return Item(p.id, "failed", "source: " + s.error().message);
  }
  return Item(p.id, "deleted");
}

Result<MigrationReport> BackendMigration::Run(const MigrationOptions& options, const Progress& progress,
                                              const Caller& caller) {
  if (source_.store().Name() == target_.store.Name() && source_.SecretName("x") == target_.store.SecretName("x")) {
    return MakeError(ErrorCode::kInvalidArgument, "the target stores credentials where the source does (backend " +
                                                      target_.store.Name() + ", secret names " +
                                                      target_.store.SecretName("<id>") +
                                                      "): choose another backend or SECRETS_PREFIX");
  }
  MigrationReport report;
  report.migration = Name();
  DYAD_ASSIGN_OR_RETURN(std::vector<Provider> all, AllProviders(providers_));
  DYAD_ASSIGN_OR_RETURN(auto done, records_.Load(report.migration));
  const auto tell = [&](std::string_view pass, size_t n) {
    if (progress) progress(pass, n, all.size());
  };
  tell("copy", 0);
  for (size_t i = 0; i < all.size(); ++i) {
    MigrationItem item = CopyOne(all[i], options, done);
    if (item.outcome == "copied" || item.outcome == "would copy") ++report.copied;
    else if (item.outcome == "failed") ++report.failed;
    else ++report.skipped;
    report.items.push_back(std::move(item));
    tell("copy", i + 1);
  }
  const bool verify = !options.dry_run && (options.verify || options.delete_source);
  if (verify) {
    report.verified = true;
    tell("verify", 0);
    for (size_t i = 0; i < all.size(); ++i) {
      MigrationItem item = VerifyOne(all[i], done);
      if (item.outcome == "verified") ++report.verify_ok;
      else ++report.verify_failed, report.verify_failures.push_back(std::move(item));
      tell("verify", i + 1);
    }
  }
  if (options.delete_source && !options.dry_run) {
    if (report.failed || report.verify_failed) {
      report.delete_refused = "the source was kept: " + std::to_string(report.failed) + " provider(s) failed to copy, " +
                              std::to_string(report.verify_failed) + " failed verification";
    } else {
      tell("delete", 0);
      for (size_t i = 0; i < all.size(); ++i) {
        MigrationItem item = DeleteOne(all[i], caller);
        if (item.outcome == "deleted") ++report.source_deleted;
        else if (item.outcome == "failed") report.delete_failures.push_back(std::move(item));
        tell("delete", i + 1);
      }
    }
  }
  return report;
}

}  // namespace dyad
