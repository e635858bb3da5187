#include "service/provider_service.h"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "core/time_format.h"
#include "transport/upstream_address.h"

namespace dyad {
namespace {

// How far a secret may be ahead of its row: one version per write whose
// row update failed in a row, which no real sequence comes near.
constexpr int64_t kMaxVersionsAhead = 1000;

void Apply(const ProviderPatch& patch, Provider& p) {
  if (patch.name) p.name = *patch.name;
  if (patch.slug) p.slug = *patch.slug;
  if (patch.type) p.type = *patch.type;
  if (patch.description) p.description = *patch.description;
  if (patch.enabled) p.enabled = *patch.enabled;
  if (patch.models_json) p.models_json = *patch.models_json;
  if (patch.adapter_config_json) p.adapter_config_json = *patch.adapter_config_json;
}

// Plain values as kStoredValue (their lengths in `bytes`); references (no
// secret) as they are.
CredentialFields MaskValues(const CredentialFields& stored, StoredBytes& bytes) {
  CredentialFields out;
  for (const auto& [k, v] : stored) {
    if (DecodeReference(v)) {
      out.emplace(k, v);
    } else {
      out.emplace(k, SecretBytes(kStoredValue));
      bytes.emplace(k, v.size());
    }
  }
  return out;
}

// Each kStoredValue back to the value stored under its name.
Status UnmaskValues(CredentialFields& fields, const CredentialFields& stored) {
  for (auto& [k, v] : fields) {
    if (v.view() != kStoredValue) continue;
    auto it = stored.find(k);
    if (it == stored.end()) {
      return MakeError(ErrorCode::kInternal, "credentials." + k + " keeps a stored value that does not exist");
    }
    v = it->second;
  }
  return OkStatus();
}

// Hears the status of a probe's answer and stops there: the body is not
// needed, and the connection is then closed rather than pooled.
class StatusSink final : public UpstreamSink {
 public:
  bool OnHead(const UpstreamHead& head) override {
    status = head.status;
    return false;
  }
  bool OnBody(std::string_view) override { return false; }
  int status = 0;
};

}  // namespace


namespace {

// The credentials being written (`fields`; null: those stored, by name)
// against `p`'s adapterConfig: refused now, not found broken on the first
// /v1 call.
Status CheckCredentialsForHeaders(const Provider& p, const CredentialFields* fields) {
  return CheckCredentialsWrite(p.type, p.adapter_config_json, fields,
                               fields ? FieldNames(*fields) : p.credential_fields);
}

}  // namespace

std::string UpstreamProbe::Describe() const {
  if (status != 0) return "GET " + url + " answered HTTP " + std::to_string(status);
  return "GET " + url + " had no answer: " + error;
}

Status ProviderService::CheckUpstream(const Provider& p) {
  DYAD_ASSIGN_OR_RETURN(AdapterConfig config, ParseAdapterConfig(p.adapter_config_json, upstream_.policy));
  std::string host = UpstreamHost(config.base_url);
  if (!upstream_.resolver || ParseIpLiteral(host)) return OkStatus();  // a literal was checked by the parse
  auto addresses = upstream_.resolver->Resolve(host);
  if (!addresses.ok()) return OkStatus();  // no answer names a forbidden address; the connection is checked again
  for (const auto& a : *addresses) {
    if (auto ip = ParseIpLiteral(a); ip && IsForbiddenIp(*ip)) {
      return MakeError(ErrorCode::kInvalidArgument, "adapterConfig.baseUrl: host '" + host + "' resolves to " + a +
                                                        ", a link-local or cloud metadata address, which the gateway "
                                                        "never calls");
    }
  }
  return OkStatus();
}

Result<UpstreamProbe> ProviderService::ProbeUpstream(const Provider& p, const CredentialFields& fields) {
  if (!UsesUpstream(p.type)) {
    return MakeError(ErrorCode::kFailedPrecondition,
                     "provider type '" + p.type + "' has no upstream to probe (only http-sdk and proxy)");
  }
  auto config = ParseAdapterConfig(p.adapter_config_json, upstream_.policy);
  if (!config.ok()) {
    return MakeError(ErrorCode::kFailedPrecondition, "provider '" + p.id + "': " + config.error().message);
  }
  if (!upstream_.client) return MakeError(ErrorCode::kUnimplemented, "no upstream client: probes are not available");
  DYAD_ASSIGN_OR_RETURN(HttpHeaders headers, CredentialHeaders(*config, fields));
  headers.emplace_back("Accept", "application/json");
  UpstreamProbe probe;
  probe.attempted = true;
  probe.url = config->base_url + config->validate_path;
  UpstreamRequest request;
  request.method = "GET";
  request.url = probe.url;
  request.headers = std::move(headers);
  request.timeouts = upstream_.probe_timeouts;
  StatusSink sink;
  Status sent = upstream_.client->Send(request, sink);
  for (auto& [name, value] : request.headers) Cleanse(value);
  probe.status = sink.status;
  if (sink.status == 0) probe.error = sent.ok() ? "the upstream sent no status" : sent.error().message;
  return probe;
}

void ProviderService::Audit(const std::string& action, const std::string& id, const Status& s, const Caller& caller,
                            Clock::Instant started, std::vector<std::string> fields) {
  AuditEvent e;
  e.duration_ms = std::chrono::duration<double, std::milli>(clock_.Now() - started).count();
  e.actor = caller.actor;
  e.request_id = caller.request_id;
  e.action = action;
  e.resource = id;
  e.fields = std::move(fields);
  if (!s.ok()) {
    SetFailure(e, s.error());
  }
  audit_.Record(e);
}

Result<Provider> ProviderService::Create(const ProviderPatch& input, const Caller& caller) {
  const auto t0 = clock_.Now();
  Provider p;
  p.id = NewUuid(random_);
  Apply(input, p);
  p.created_at = p.updated_at = FormatIso8601(clock_.WallNow());
  if (UsesUpstream(p.type)) {
    Status up = CheckUpstream(p);
    if (up.ok() && input.credentials) up = CheckCredentialsForHeaders(p, &*input.credentials);
    if (!up.ok()) {
      Audit("provider.create", p.id, up, caller, t0);
      return up.error();
    }
  }
  auto held = secrets_.locks().Hold(p.id);
  Status s = held.ok() ? OkStatus() : Status(held.error());
  std::optional<StoredSecret> written;
  if (s.ok() && input.credentials && !input.credentials->empty()) {
    p.credential_fields = FieldNames(*input.credentials);
    p.credentials_version = 1;
    auto stored = secrets_.Create(p.id, p.credentials_version, *input.credentials, caller, **held);
    if (stored.ok()) written = std::move(stored).value();
    else s = stored.error();
  }
  if (s.ok()) {
    s = repo_.Insert(p);
    const RowWrite row = InsertSettled(s, p, (*held)->deadline());
    if (row == RowWrite::kWritten) s = OkStatus();
    if (row == RowWrite::kNotWritten && written) {
      // No secret without its row. One left behind has no row to be served
      // under: the create failed, whatever became of the undo.
      Status undo = secrets_.RestoreRaw(p.id, written->version, std::nullopt, **held);
      if (!undo.ok()) {
        UndoFailed(p.id, undo, **held);
        Audit("secret.orphaned", p.id, undo, caller, t0);
      }
    }
    if (row == RowWrite::kUnknown) s = OutcomeUnknown(s, p.id);
  }
  if (s.ok() && written) secrets_.Settle(p.id, p.credentials_version, *input.credentials, *written, **held);
  Audit("provider.create", p.id, s, caller, t0, p.credential_fields);
  if (!s.ok()) return s.error();
  return p;
}

Result<Provider> ProviderService::Update(const std::string& id, const ProviderPatch& patch, const Caller& caller) {
  std::optional<std::vector<std::string>> named;
  if (patch.credentials) named = FieldNames(*patch.credentials);
  return Write(id, false, named,
               [&](const Provider&, const CredentialFields&, const StoredBytes&) -> Result<ProviderPatch> {
                 return patch;
               },
               caller);
}

Result<Provider> ProviderService::Edit(const std::string& id,
                                       const std::optional<std::vector<std::string>>& credentials_named,
                                       const ProviderEdit& edit, const Caller& caller) {
  return Write(id, credentials_named.has_value(), credentials_named, edit, caller);
}

Result<Provider> ProviderService::Write(const std::string& id, bool reads_credentials,
                                        const std::optional<std::vector<std::string>>& credentials_named,
                                        const ProviderEdit& edit, const Caller& caller, bool from_environment) {
  const auto t0 = clock_.Now();
  bool credentials_written = false;
  std::vector<std::string> fields = credentials_named.value_or(std::vector<std::string>{});
  auto result = [&]() -> Result<Provider> {
    DYAD_ASSIGN_OR_RETURN(auto held, secrets_.locks().Hold(id));  // the row is read and written under it
    DYAD_ASSIGN_OR_RETURN(Provider p, repo_.Get(id));
    std::optional<StoredSecret> previous;
    CredentialFields stored;
    int64_t stored_version = p.credentials_version;
    if (reads_credentials) {
      DYAD_ASSIGN_OR_RETURN(previous, secrets_.ReadRaw(id));
      DYAD_ASSIGN_OR_RETURN(stored, StoredFields(p, previous, stored_version));
    }
    StoredBytes stored_bytes;
    CredentialFields masked = MaskValues(stored, stored_bytes);
    DYAD_ASSIGN_OR_RETURN(ProviderPatch patch, edit(p, masked, stored_bytes));
    // The secret may be ahead of its row: a write whose row update failed
    // with its outcome unknown, whose credentials reads serve. A write over
    // it stores the version after the secret's, so no version already
    // served is stored again (dynamic secrets end the leases of every
    // version up to the one replaced), and a late undo by the write that
    // stored it, fenced by its version, cannot put the old secret back over
    // this one.
    if (reads_credentials && patch.credentials) {
      DYAD_RETURN_IF_ERROR(UnmaskValues(*patch.credentials, stored));
      // A merge that changes nothing stored (removing a field that is not
      // there) writes no new version, unless the secret is ahead of its row:
      // the client's retry of that write, written again so that the row
      // names the credentials served (their version and field names).
      if (*patch.credentials == stored && stored_version <= p.credentials_version) patch.credentials.reset();
    }
    if (reads_credentials && patch.credentials && stored.empty() && !from_environment) {
      // Stored, the merge would replace what the environment supplies (the
      // provider then reads only the store): never copied in implicitly.
      if (std::string prefix = secrets_.EnvironmentSource(p); !prefix.empty()) {
        return MakeError(ErrorCode::kFailedPrecondition,
                         "provider '" + id + "' has no stored credentials and reads them from the environment (" +
                             prefix + "*): a merge of credentials would store only the fields it names and the "
                             "provider would lose the environment's; send the whole set with PUT");
      }
    }
    if (patch.credentials) {
      credentials_written = true;
      fields = FieldNames(*patch.credentials);
    }
    const std::string type_before = p.type, config_before = p.adapter_config_json;
    Apply(patch, p);
    // Only a change is checked: a provider stored before baseUrl was
    // required keeps working until its type or adapterConfig changes.
    const bool config_changed = p.type != type_before || p.adapter_config_json != config_before;
    if (UsesUpstream(p.type) && config_changed) DYAD_RETURN_IF_ERROR(CheckUpstream(p));
    if (patch.credentials || config_changed) {
      const CredentialFields* written_fields = patch.credentials ? &*patch.credentials : nullptr;
      DYAD_RETURN_IF_ERROR(CheckCredentialsForHeaders(p, written_fields));
    }
    p.updated_at = FormatIso8601(clock_.WallNow());
    // Both writes are fenced by what was read under the lease (the secret's
    // version, the row's revision): a writer whose lease ran out while it
    // stalled gets kConflict instead of overwriting the one that took over.
    std::optional<std::string> written;
    bool wrote_secret = false, clearing = false;
    if (patch.credentials) {
      if (!reads_credentials) {
        DYAD_ASSIGN_OR_RETURN(previous, secrets_.ReadRaw(id));
      }
      // A replace (PUT) does not open the secret it replaces: its header
      // says how far ahead of the row it is. Only a plausible figure: a
      // forged header must not push the versions to their limit.
      if (const int64_t sealed = previous ? SecretsService::SealedVersion(*previous) : 0;
          sealed > stored_version && sealed - p.credentials_version <= kMaxVersionsAhead) {
        stored_version = sealed;
      }
      if (patch.credentials->empty()) {
        // The row first (revision-fenced: a writer whose lease ran out
        // fails here and touches nothing), then the secret it read.
        clearing = previous.has_value();
        p.credential_fields.clear();
      } else {
        p.credential_fields = FieldNames(*patch.credentials);
        DYAD_ASSIGN_OR_RETURN(StoredSecret stored_now,
                              secrets_.Put(id, std::max(p.credentials_version, stored_version) + 1,
                                           *patch.credentials, previous, caller, *held));
        written = std::move(stored_now.version);
      }
      p.credentials_version = std::max(p.credentials_version, stored_version) + 1;
      wrote_secret = !patch.credentials->empty();
    }
    Status s = repo_.Update(p);
    const RowWrite row = ReadBack(s, id, [&](const Provider& now) {
      return now.revision == p.revision + 1 && now.updated_at == p.updated_at &&
             now.credentials_version == p.credentials_version;
    }, p.credentials_version, held->deadline());
    if (row == RowWrite::kWritten) {
      s = OkStatus();
      ++p.revision;
    }
    // The row and the secret stay in step. The restore is fenced by the
    // version written: another writer's secret is never undone. Never under
    // a row that may name this version: every read would fail as a
    // rollback, while a secret ahead of its row reads as the newer write
    // (the error then says the outcome is unknown). An undo that fails
    // (the store still down at the deadline, the lease lost to another
    // instance) leaves such a secret: the outcome is unknown too.
    bool undone = true;
    if (row == RowWrite::kNotWritten && wrote_secret) {
      const std::optional<std::string> raw = previous ? std::optional(previous->value) : std::nullopt;
      Status undo = secrets_.RestoreRaw(id, written, raw, *held);
      if (!undo.ok()) {
        undone = false;
        UndoFailed(id, undo, *held);
        Audit("secret.restore_failed", id, undo, caller, t0);
      }
    }
    if (row == RowWrite::kUnknown || row == RowWrite::kOvertaken || !undone) s = OutcomeUnknown(s, id);
    if (s.ok() && clearing) {
      // Only the secret read under the lease. Meanwhile (or if this fails)
      // reads treat a secret older than a row without credentials as absent.
      Status gone = secrets_.DeleteIfUnchanged(id, *previous, caller, *held);
      if (!gone.ok()) Audit("secret.orphaned", id, gone, caller, t0);
    }
    if (!s.ok()) return s.error();
    return p;
  }();
  Audit(credentials_written || credentials_named ? "credentials.rotate" : "provider.update", id,
        result.ok() ? OkStatus() : Status(result.error()), caller, t0, fields);
  return result;
}

ProviderService::RowWrite ProviderService::ReadBack(const Status& s, const std::string& id,
                                                    const std::function<bool(const Provider&)>& ours,
                                                    int64_t credentials_version, Clock::Instant deadline) {
  if (s.ok()) return RowWrite::kWritten;
  if (s.code() != ErrorCode::kUnavailable) return RowWrite::kNotWritten;
  auto now = WithRetries(SecretsService::kSettle, clock_, random_, deadline, [&] { return repo_.GetSettled(id); });
  if (now.ok()) {
    if (ours(*now)) return RowWrite::kWritten;
    return now->credentials_version >= credentials_version ? RowWrite::kOvertaken : RowWrite::kNotWritten;
  }
  return now.code() == ErrorCode::kNotFound ? RowWrite::kNotWritten : RowWrite::kUnknown;
}

ProviderService::RowWrite ProviderService::InsertSettled(const Status& s, const Provider& p,
                                                         Clock::Instant deadline) {
  if (s.ok()) return RowWrite::kWritten;
  if (s.code() != ErrorCode::kUnavailable) return RowWrite::kNotWritten;
  // The insert may still be running on the server, where a read does not
  // see it yet. Inserted again, the row waits for it on the id's unique
  // index: kAlreadyExists once it committed (any row under this new id is
  // this writer's, read back to tell it from another provider's slug),
  // written now if it had not.
  Status again =
      WithRetries(SecretsService::kSettle, clock_, random_, deadline, [&] { return repo_.InsertSettled(p); });
  if (again.ok()) return RowWrite::kWritten;
  // Taken: read back. Still unanswered: read back only where a write ends
  // with its call (SQLite, in process). On a network database the first
  // insert may still commit, unseen by any read, after this one's failure
  // whatever it was (unanswered, a statement cancelled, a timeout shorter
  // than the wait): unknown. In process, refused: the first never
  // committed either.
  if (again.code() == ErrorCode::kAlreadyExists || (again.code() == ErrorCode::kUnavailable && repo_.ReadsAreLocal())) {
    return ReadBack(s, p.id, [](const Provider&) { return true; }, 0, deadline);
  }
  return repo_.ReadsAreLocal() ? RowWrite::kNotWritten : RowWrite::kUnknown;
}

void ProviderService::UndoFailed(const std::string& id, const Status& undo, const ProviderLocks::Held& held) {
  if (held.lost()) {
    spdlog::warn("provider {}: the undo of a failed write was refused: its lease ran out while the write settled and "
                 "another instance took it over; the secret written stays",
                 id);
  } else {
    spdlog::warn("provider {}: the undo of a failed write failed ({}); the secret written stays", id,
                 undo.error().message);
  }
}

Status ProviderService::OutcomeUnknown(const Status& s, const std::string& id) {
  return MakeError(ErrorCode::kUnavailable, s.error().message + "; whether provider '" + id +
                                                "' was written is unknown, and any credentials it carried may be "
                                                "served: read it again before retrying");
}

Result<CredentialFields> ProviderService::StoredFields(const Provider& row, const std::optional<StoredSecret>& raw,
                                                      int64_t& version) {
  version = row.credentials_version;
  if (row.credential_fields.empty()) return CredentialFields{};  // none, or cleared (its delete may be behind)
  if (!raw) {
    return MakeError(ErrorCode::kFailedPrecondition,
                     "provider '" + row.id + "' lists credential fields but no secret is stored under " +
                         secrets_.SecretName(row.id) + "; replace the whole set with PUT");
  }
  DYAD_ASSIGN_OR_RETURN(CredentialFields fields, secrets_.OpenRaw(row.id, *raw, row.credentials_version));
  // Opened: in envelope mode the header's version is authenticated; in
  // provider mode there is none (0).
  version = SecretsService::SealedVersion(*raw);
  return fields;
}

Result<Provider> ProviderService::ImportCredentials(const std::string& id, const CredentialFields& fields,
                                                    const Caller& caller) {
  auto merge = [&fields](const Provider&, const CredentialFields& stored, const StoredBytes&) -> Result<ProviderPatch> {
    ProviderPatch patch;
    patch.credentials = stored;  // masked: each kept field stands for its stored value
    // Only fields with no stored value: a stored one may be newer than the
    // variable (rotated through the API) and is never replaced by it.
    for (const auto& [name, value] : fields) patch.credentials->emplace(name, value);
    return patch;
  };
  return Write(id, true, FieldNames(fields), merge, caller, /*from_environment=*/true);
}

Result<Provider> ProviderService::RotateCredentials(const std::string& id, const CredentialFields& credentials,
                                                    const Caller& caller, UpstreamProbe* probe) {
  if (probe) {
    // Probed before the write and outside the provider's lock: an upstream
    // that takes its time holds up no other writer.
    const auto t0 = clock_.Now();
    Status checked = [&]() -> Status {
      DYAD_ASSIGN_OR_RETURN(Provider p, repo_.Get(id));
      for (const auto& [field, value] : credentials) {
        if (DecodeReference(value)) {
          return MakeError(ErrorCode::kInvalidArgument, "validate: credential field '" + field +
                                                            "' is a reference, which cannot be probed before it is "
                                                            "stored; rotate without validate, then validate live");
        }
      }
      DYAD_RETURN_IF_ERROR(CheckCredentialsForHeaders(p, &credentials));
      DYAD_ASSIGN_OR_RETURN(*probe, ProbeUpstream(p, credentials));
      if (!probe->ok()) {
        return MakeError(ErrorCode::kFailedPrecondition,
                         "the new credentials were not promoted: " + probe->Describe() + "; nothing changed");
      }
      return OkStatus();
    }();
    if (!checked.ok()) {
      Audit("credentials.rotate", id, checked, caller, t0, FieldNames(credentials));
      return checked.error();
    }
  }
  ProviderPatch patch;
  patch.credentials = credentials;
  return Update(id, patch, caller);
}

Status ProviderService::Delete(const std::string& id, const Caller& caller) {
  const auto t0 = clock_.Now();
  auto held = secrets_.locks().Hold(id);
  Status s = held.ok() ? repo_.Delete(id) : Status(held.error());
  if (s.ok()) {
    // The row goes first: a secret whose delete fails is an orphan that the
    // reconciliation sweep removes, never a row without its secret.
    Status gone = secrets_.Delete(id, caller);
    if (!gone.ok()) Audit("secret.orphaned", id, gone, caller, t0);
  }
  Audit("provider.delete", id, s, caller, t0);
  return s;
}

Result<ValidationReport> ProviderService::Validate(const std::string& id, const Caller& caller, bool live) {
  const auto t0 = clock_.Now();
  DYAD_ASSIGN_OR_RETURN(Provider p, repo_.Get(id));
  ValidationReport report;
  auto read = secrets_.Get(id, caller);
  if (read.ok() && read->source == "cache" && read->credentials->version < p.credentials_version) {
    // Written through another instance since this one cached it: the row
    // just read says so; validate what is stored now.
    secrets_.cache().Invalidate(id);
    read = secrets_.Get(id, caller);
  }
  const std::vector<std::string> required = RequiredCredentialFields(p.type, p.adapter_config_json);
  bool needs = !required.empty() || !p.credential_fields.empty();
  if (!read.ok() && read.code() == ErrorCode::kNotFound && !needs) {
    report.valid = true;
    report.source = "none";
    report.checks.push_back({"present", true, "this provider type needs no credentials"});
    Audit("credentials.validate", id, OkStatus(), caller, t0);
    return report;
  }
  bool present = read.ok() || (read.code() != ErrorCode::kNotFound);
  report.checks.push_back({"present", present, present ? "" : read.error().message});
  report.checks.push_back({"decryptable", read.ok(), read.ok() ? "" : read.error().message});
  std::vector<std::string> missing;
  if (read.ok()) {
    report.source = read->source;
    report.credentials_version = read->credentials->version;
    report.fingerprint = secrets_.Fingerprint(read->credentials->fields);  // keyed: no offline guess check
    const auto now = clock_.Now();
    for (const auto& [field, end] : read->credentials->lease_ends) {
      report.lease_ttl_seconds[field] =
          end > now ? std::chrono::duration_cast<std::chrono::seconds>(end - now).count() : 0;
    }
    for (const auto& field : required) {
      auto it = read->credentials->fields.find(field);
      if (it == read->credentials->fields.end() || it->second.empty()) missing.push_back(field);
    }
  } else {
    missing = required;
  }
  std::string msg;
  for (const auto& m : missing) msg += (msg.empty() ? "missing: " : ", ") + m;
  report.checks.push_back({"required_fields", missing.empty(), msg});
  report.valid = read.ok() && missing.empty();
  if (live) {
    ValidationCheck check{"upstream", false, ""};
    if (!read.ok()) {
      check.message = "no credentials to probe";
    } else if (auto probe = ProbeUpstream(p, read->credentials->fields); !probe.ok()) {
      check.message = probe.error().message;
    } else {
      report.probe = std::move(probe).value();
      check.ok = report.probe.ok();
      check.message = report.probe.Describe();
    }
    report.valid = report.valid && check.ok;
    report.checks.push_back(std::move(check));
  }
  Audit("credentials.validate", id, OkStatus(), caller, t0);
  return report;
}

}  // namespace dyad
