#include "service/backend_migration.h"

#include "core/encoding.h"
#include "secrets/credentials.h"
#include "service/adapter_config.h"

namespace dyad {
namespace {

constexpr char kCopying[] = "copying";
constexpr char kCopied[] = "copied";
// The target held the source's credentials already, in a value this
// migration did not write (another tool, an earlier migration elsewhere, or
// the source itself seen through a replica or another address): the source
// is never deleted on its strength.
constexpr char kHeld[] = "held";

Result<std::vector<Provider>> AllProviders(ProviderRepository& providers) {
  std::vector<Provider> out;
  DYAD_RETURN_IF_ERROR(ForEachProvider(providers, [&](const Provider& p) {
    out.push_back(p);
    return true;
  }));
  return out;
}

MigrationItem Item(const std::string& id, std::string outcome, std::string detail = "",
                   ErrorCode code = ErrorCode::kInternal) {
  return MigrationItem{id, std::move(outcome), std::move(detail), code};
}

MigrationItem Failed(const std::string& id, const std::string& what, const Error& error) {
  return Item(id, "failed", what + error.message, error.code);
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
         side(target_.store, target_.keys, target_.mode) + (target_.route.empty() ? "" : " @ " + target_.route);
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

Result<std::optional<BackendMigration::TargetValue>> BackendMigration::ReadTarget(const std::string& provider_id) {
  const std::string name = target_.store.SecretName(provider_id);
  auto stored = target_.store.Get(name);
  if (!stored.ok() && stored.code() == ErrorCode::kNotFound) return std::optional<TargetValue>();
  if (!stored.ok()) return stored.error();
  TargetValue t;
  t.version = stored->version;
  auto opened = target_sealer_.Open(name, stored->value);
  auto fields = opened.ok() ? CredentialsFromJson(opened->payload.view()) : Result<CredentialFields>(opened.error());
  if (fields.ok()) {
    t.fingerprint = source_.Fingerprint(*fields);
    t.credentials_version = opened->credentials_version;
  } else {
    t.open_error = fields.error().message;
  }
  return std::optional<TargetValue>(std::move(t));
}

bool BackendMigration::Holds(const TargetValue& t, const std::string& fingerprint, int64_t credentials_version) const {
  return t.fingerprint && !fingerprint.empty() && *t.fingerprint == fingerprint &&
         (target_.mode == SealMode::kProvider || t.credentials_version == credentials_version);
}

bool BackendMigration::Ours(const TargetValue& t, const MigrationRecord* record) const {
  if (!record || record->state == kHeld) return false;
  if (!record->target_version.empty() && t.version == record->target_version) return true;
  return Holds(t, record->fingerprint, record->credentials_version);
}

Result<std::string> BackendMigration::WriteTarget(const std::string& provider_id, const std::string& sealed,
                                                  const std::optional<std::string>& replacing,
                                                  const CredentialFields& fields, const Caller& caller) {
  const std::string name = target_.store.SecretName(provider_id);
  const auto taken = [&](const char* how) {
    return MakeError(ErrorCode::kConflict, "provider " + provider_id + ": another writer " + how + " its secret in "
                                           "the target while it was being copied: kept; run migrate again");
  };
  Result<std::string> written = [&]() -> Result<std::string> {
    if (!replacing) {
      auto created = target_.store.Create(name, sealed);
      if (created.ok() || created.code() != ErrorCode::kAlreadyExists) return created;
      return taken("created");
    }
    auto replaced = target_.store.Replace(name, sealed, *replacing);
    if (!replaced.ok() && replaced.code() == ErrorCode::kConflict) return taken("replaced");
    if (replaced.ok() || replaced.code() != ErrorCode::kUnimplemented) return replaced;
    // No conditional write: the version read last is checked right before.
    DYAD_ASSIGN_OR_RETURN(StoredSecret current, target_.store.Get(name));
    if (current.version != *replacing) return taken("replaced");
    return target_.store.Overwrite(name, sealed);
  }();
  AuditEvent e;
  e.action = "migration.copy";
  e.resource = provider_id;
  for (const auto& [field, value] : fields) e.fields.push_back(field);
  e.detail = std::string(replacing ? "replaced" : "created") + " in the target " + target_.store.Name() + " (" +
             name + ")";
  if (!written.ok()) SetFailure(e, written.error());
  source_.Audit(std::move(e), caller);
  return written;
}

bool BackendMigration::MovedAndSourceDeleted(const Provider& p, const Records& done) {
  auto record = done.find(p.id);
  if (record == done.end() || record->second.state != kCopied) return false;
  auto target = ReadTarget(p.id);
  return target.ok() && *target && Ours(**target, &record->second);
}

MigrationItem BackendMigration::CopyOne(const Provider& p, const MigrationOptions& options, Records& done,
                                        const Caller& caller) {
  if (p.credential_fields.empty()) {
    // Nothing stored. The environment's variables, read while nothing is,
    // do not move with a migration (TARGET.env is read alone, and the
    // switch block names its variables only): a provider that sends
    // credentials upstream would have none on the target. One that sends
    // none (local, spawn-cli) loses nothing.
    if (const std::string prefix = source_.EnvironmentSource(p); UsesUpstream(p.type) && !prefix.empty()) {
      return Item(p.id, "failed",
                  "source: nothing stored (its credentials come from " + prefix +
                      "* variables: store them first, with `migrate import-env`)",
                  ErrorCode::kFailedPrecondition);
    }
    return Item(p.id, "no credentials");
  }
  // Writers of this provider on the source wait while it is copied (not
  // for a dry run, which writes nothing, not even a lease row).
  Result<std::unique_ptr<ProviderLocks::Held>> held = std::unique_ptr<ProviderLocks::Held>();
  if (!options.dry_run) held = source_.locks().Hold(p.id);
  if (!held.ok()) return Failed(p.id, "cannot hold the provider's lease: ", held.error());
  const std::string target_name = target_.store.SecretName(p.id);
  const auto found = done.find(p.id);
  const MigrationRecord* record = found == done.end() ? nullptr : &found->second;
  bool wrote = false;
  for (int attempt = 0; attempt < options.max_attempts; ++attempt) {
    auto source = ReadSource(p);
    if (!source.ok() && source.code() == ErrorCode::kNotFound && MovedAndSourceDeleted(p, done)) {
      // A delete pass already removed the source's copy of what this
      // migration copied (a killed or partly failed --delete-source run).
      return Item(p.id, options.dry_run ? "would skip" : "skipped", "copied; the source's copy is deleted");
    }
    if (!source.ok()) {
      Error why = source.error();
      if (source.code() == ErrorCode::kNotFound) {
        if (const std::string prefix = source_.EnvironmentSource(p); !prefix.empty()) {
          why.message += " (its credentials come from " + prefix + "* variables: store them first, with `migrate "
                         "import-env`)";
        }
      }
      return Failed(p.id, "source: ", why);
    }
    auto target = ReadTarget(p.id);
    if (!target.ok()) return Failed(p.id, "target store: ", target.error());
    if (*target && Holds(**target, source->fingerprint, source->credentials_version)) {
      const bool recorded = record && record->state == kCopied && record->target_version == (*target)->version &&
                            record->source_version == source->raw.version;
      if (!options.dry_run && !recorded) {
        MigrationRecord rec{p.id, wrote || Ours(**target, record) ? kCopied : kHeld, source->raw.version,
                            (*target)->version, source->fingerprint, source->credentials_version};
        if (Status s = records_.Put(Name(), rec); !s.ok()) return Failed(p.id, "registry: ", s.error());
        record = &(done[p.id] = rec);
      }
      if (wrote) return Item(p.id, "copied");  // an earlier attempt's write holds what the source holds now
      return Item(p.id, options.dry_run ? "would skip" : "skipped", recorded ? "already copied" : "the target holds it");
    }
    if (*target && !Ours(**target, record)) {
      // Never replaced: written there by someone else — a credential rotated
      // on a target that already serves, another tool.
      return Item(p.id, "failed",
                  "the target holds a secret for provider " + p.id + " that this migration did not write" +
                      ((*target)->fingerprint ? "" : " (it does not open under the target's key: " +
                                                         (*target)->open_error + ")") +
                      ": kept, not replaced. If it is the current value, this provider needs no copy; otherwise "
                      "delete it from the target and run migrate again",
                  ErrorCode::kConflict);
    }
    if (options.dry_run) return Item(p.id, "would copy");
    // What is about to be written, before it is: a run killed after the
    // write finds it by its fingerprint.
    MigrationRecord rec{p.id, kCopying, source->raw.version, *target ? (*target)->version : "", source->fingerprint,
                        source->credentials_version};
    if (Status s = records_.Put(Name(), rec); !s.ok()) return Failed(p.id, "registry: ", s.error());
    record = &(done[p.id] = rec);
    auto sealed = target_sealer_.Seal(target_name, source->credentials_version, CredentialsToJson(source->fields));
    if (!sealed.ok()) return Failed(p.id, "target key: ", sealed.error());
    auto written = WriteTarget(p.id, *sealed, *target ? std::optional((*target)->version) : std::nullopt,
                               source->fields, caller);
    if (!written.ok()) return Failed(p.id, "target store: ", written.error());
    rec.target_version = *written;
    wrote = true;
    record = &(done[p.id] = rec);  // in memory: the next attempt replaces what this one wrote
    // The value copied must still be the source's: another writer (one
    // without the lease) or a key rotation may have changed it meanwhile.
    auto again = source_.ReadRaw(p.id);
    if (!again.ok()) return Failed(p.id, "source: ", again.error());
    if (!*again || (*again)->version != source->raw.version) continue;
    rec.state = kCopied;
    if (Status s = records_.Put(Name(), rec); !s.ok()) return Failed(p.id, "registry: ", s.error());
    done[p.id] = rec;
    return Item(p.id, "copied");
  }
  return Item(p.id, "failed", "the source changed during each of " + std::to_string(options.max_attempts) +
                                  " copies; run migrate again", ErrorCode::kConflict);
}

MigrationItem BackendMigration::VerifyOne(const Provider& p, const Records& done) {
  if (p.credential_fields.empty()) return Item(p.id, "verified");
  auto source = ReadSource(p);
  if (!source.ok() && source.code() == ErrorCode::kNotFound && MovedAndSourceDeleted(p, done)) {
    return Item(p.id, "verified");  // against what was copied: the source's copy is deleted
  }
  if (!source.ok()) return Failed(p.id, "source: ", source.error());
  auto target = ReadTarget(p.id);
  if (!target.ok()) return Failed(p.id, "target: ", target.error());
  if (!*target) return Item(p.id, "failed", "target: it holds no secret for it", ErrorCode::kNotFound);
  if (!(*target)->fingerprint) {
    return Item(p.id, "failed", "target: " + (*target)->open_error, ErrorCode::kDataLoss);
  }
  if (*(*target)->fingerprint != source->fingerprint) {
    return Item(p.id, "failed", "the target's value differs from the source's (fingerprint " +
                                    *(*target)->fingerprint + ", source " + source->fingerprint + ")");
  }
  if (target_.mode == SealMode::kEnvelope && (*target)->credentials_version != source->credentials_version) {
    return Item(p.id, "failed", "the target's credentials version is " +
                                    std::to_string((*target)->credentials_version) + ", the source's " +
                                    std::to_string(source->credentials_version));
  }
  verified_versions_[p.id] = source->raw.version;
  return Item(p.id, "verified");
}

MigrationItem BackendMigration::DeleteOne(const Provider& p, const Records& done, const Caller& caller) {
  auto verified = verified_versions_.find(p.id);
  if (verified == verified_versions_.end()) return Item(p.id, "kept");
  if (auto record = done.find(p.id); record == done.end() || record->second.state != kCopied) {
    return Item(p.id, "failed",
                "the target's copy was not written by this migration (it held these credentials already): the "
                "source's is kept; delete it with the source backend's own tools once you know the target is "
                "another store (not the source seen through a replica region or another address)");
  }
  auto held = source_.locks().Hold(p.id);
  if (!held.ok()) return Item(p.id, "failed", "cannot hold the provider's lease: " + held.error().message);
  auto raw = source_.ReadRaw(p.id);
  if (!raw.ok()) return Item(p.id, "failed", "source: " + raw.error().message);
  if (!*raw) return Item(p.id, "deleted");
  if ((*raw)->version != verified->second) {
    return Item(p.id, "failed", "the source changed after it was verified: kept; run migrate again");
  }
  if (Status s = source_.DeleteIfUnchanged(p.id, **raw, caller, **held); !s.ok()) {
    return Failed(p.id, "source: ", s.error());
  }
  return Item(p.id, "deleted");
}

Result<bool> BackendMigration::OneStoreSpelledTwice() {
  uint8_t bytes[8];
  DYAD_RETURN_IF_ERROR(target_.random.Fill(bytes, sizeof bytes));
  const std::string tag = "migrate-same-" + HexEncode(std::string_view(reinterpret_cast<char*>(bytes), sizeof bytes));
  const std::string name = target_.store.ProbeName(tag);
  if (name != source_.store().ProbeName(tag)) return false;  // named apart: a delete cannot reach the target's
  if (auto made = target_.store.Create(name, "{}"); !made.ok()) {
    return MakeError(made.code(), "cannot write a probe through the target: " + made.error().message);
  }
  auto seen = source_.store().Get(name);
  (void)target_.store.DeleteNow(name);
  if (seen.ok()) return true;
  if (seen.code() == ErrorCode::kNotFound) return false;
  return MakeError(seen.code(), "cannot read the probe through the source: " + seen.error().message);
}

Result<MigrationReport> BackendMigration::Run(const MigrationOptions& options, const Progress& progress,
                                              const Caller& caller) {
  // Where each store keeps its secrets (region, address, prefix) is the
  // caller's check (LoadTargetConfig, before either is opened): the same
  // backend and prefix in another region is another place. Here only the
  // source's own store object is refused.
  if (&source_.store() == &target_.store) {
    return MakeError(ErrorCode::kInvalidArgument, "the target is the source's own store (backend " +
                                                      target_.store.Name() + ", secret names " +
                                                      target_.store.SecretName("<id>") + ")");
  }
  MigrationReport report;
  report.migration = Name();
  // One cheap read first (a name no provider has): a target that does not
  // answer costs one timeout, not one per provider.
  auto probe = target_.store.Get(target_.store.ProbeName("migrate-preflight"));
  if (!probe.ok() && (probe.code() == ErrorCode::kUnavailable || probe.code() == ErrorCode::kUnauthenticated)) {
    return MakeError(probe.code(), "the target store (" + target_.store.Name() + ") did not answer its first read, "
                                   "so nothing was copied: " + probe.error().message);
  }
  if (options.delete_source && !options.dry_run) {
    DYAD_ASSIGN_OR_RETURN(bool same, OneStoreSpelledTwice());
    if (same) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "the target is the source's store under another name (a secret written through the target "
                       "is read through the source): --delete-source would delete the only copy; nothing was copied");
    }
  }
  DYAD_ASSIGN_OR_RETURN(std::vector<Provider> all, AllProviders(providers_));
  DYAD_ASSIGN_OR_RETURN(Records done, records_.Load(report.migration));
  // Provider id -> its item's index; a provider copied is "handled".
  std::map<std::string, size_t> handled;
  const auto needs_copy = [&](const Provider& p) {
    auto h = handled.find(p.id);
    return h == handled.end() ? true : report.items[h->second].outcome == "no credentials" &&
                                          !p.credential_fields.empty();
  };
  int unavailable_in_a_row = 0;
  size_t copy_done = 0;
  const auto copy = [&](const std::vector<const Provider*>& batch, size_t total) {
    for (size_t i = 0; i < batch.size(); ++i) {
      const Provider& p = *batch[i];
      MigrationItem item = CopyOne(p, options, done, caller);
      if (item.outcome == "failed" && item.code == ErrorCode::kUnavailable) ++unavailable_in_a_row;
      else if (item.outcome != "no credentials") unavailable_in_a_row = 0;
      const std::string detail = item.detail;
      auto h = handled.find(p.id);
      if (h != handled.end()) report.items[h->second] = std::move(item);
      else handled.emplace(p.id, report.items.size()), report.items.push_back(std::move(item));
      if (progress) progress("copy", ++copy_done, total);
      if (unavailable_in_a_row >= kMaxUnavailableInARow && i + 1 < batch.size()) {
        report.stopped = "the copy pass stopped: " + std::to_string(unavailable_in_a_row) +
                         " providers in a row failed with a backend unavailable (last: " + detail +
                         "); " + std::to_string(batch.size() - i - 1) +
                         " provider(s) not attempted: run migrate again once it answers";
        return;
      }
    }
  };
  std::vector<const Provider*> first;
  for (const Provider& p : all) first.push_back(&p);
  if (progress) progress("copy", 0, all.size());
  copy(first, first.size());
  // Providers created (or given credentials) during the copy pass.
  std::vector<Provider> listed;
  if (report.stopped.empty()) {
    DYAD_ASSIGN_OR_RETURN(listed, AllProviders(providers_));
    std::vector<const Provider*> more;
    for (const Provider& p : listed) {
      if (needs_copy(p)) more.push_back(&p);
    }
    if (!more.empty()) copy(more, first.size() + more.size());
    all = std::move(listed);
  }
  for (const MigrationItem& item : report.items) {
    if (item.outcome == "copied" || item.outcome == "would copy") ++report.copied;
    else if (item.outcome == "failed") ++report.failed;
    else if (item.outcome == "no credentials") ++report.without_credentials;
    else ++report.skipped;
  }
  const auto tell = [&](std::string_view pass, size_t n) {
    if (progress) progress(pass, n, all.size());
  };
  const bool verify = !options.dry_run && (options.verify || options.delete_source) && report.stopped.empty();
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
    if (report.failed || report.verify_failed || !report.stopped.empty()) {
      report.delete_refused = "the source was kept: " + std::to_string(report.failed) + " provider(s) failed to copy, " +
                              std::to_string(report.verify_failed) + " failed verification" +
                              (report.stopped.empty() ? "" : ", the copy pass stopped early");
    } else {
      tell("delete", 0);
      for (size_t i = 0; i < all.size(); ++i) {
        MigrationItem item = DeleteOne(all[i], done, caller);
        if (item.outcome == "deleted") ++report.source_deleted;
        else if (item.outcome == "failed") report.delete_failures.push_back(std::move(item));
        tell("delete", i + 1);
      }
    }
  }
  // Any provider that appeared after the second listing is not in the
  // target: the run is not clean, and the next one copies it.
  if (report.stopped.empty()) {
    DYAD_ASSIGN_OR_RETURN(std::vector<Provider> last, AllProviders(providers_));
    for (const Provider& p : last) {
      if (!p.credential_fields.empty() && needs_copy(p)) {
        report.late.push_back(Item(p.id, "not copied", "created or given credentials during the run, after its "
                                                       "copy passes: run migrate again"));
      }
    }
  }
  if (report.verified && report.Clean()) {
    // A re-run recognises this migration's writes by the target's version:
    // the keyed fingerprints need not stay next to their key.
    Status s = records_.ClearFingerprints(report.migration);
    report.fingerprints_cleared = s.ok();
    if (!s.ok()) report.fingerprints_kept = s.error().message;
  }
  return report;
}

}  // namespace dyad
