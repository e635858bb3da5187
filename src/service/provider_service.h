// ProviderService: the provider registry with its credentials kept outside
// the row (DESIGN.md §4).
//
// Create, update, credential rotation and delete are all-or-nothing: the
// secret is written first under the provider's write lock, and undone
// (deleted, or put back as it was) when the row write fails, so there is no
// row without its secret and no secret left behind. Rows show each
// credential field as "[STORED_EXTERNALLY]". Each of them is one atomic
// read-modify-write across instances: it runs holding the provider's
// in-process lock and, given ProviderLeases, its lease in the registry
// database (waited for with the injected clock; kConflict when another
// instance keeps it past `max_wait`). Thread-safe.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/random.h"
#include "registry/provider_lease.h"
#include "registry/provider_repository.h"
#include "service/adapter_config.h"
#include "service/secrets_service.h"
#include "transport/host_resolver.h"
#include "transport/upstream_client.h"

namespace dyad {

// Fields a create or update sets; unset fields keep their value.
struct ProviderPatch {
  std::optional<std::string> name, slug, type, description;
  std::optional<bool> enabled;
  std::optional<std::string> models_json, adapter_config_json;
  std::optional<CredentialFields> credentials;
};

// In ProviderService::Edit, a credential value that stands for the value
// stored under its field's name: a 0xFE byte (which no JSON text holds, as
// it is UTF-8) and a word, so it cannot come from a request.
inline constexpr std::string_view kStoredValue = "\xFE" "stored";

// A read-modify-write of a provider (PATCH, RFC 7396): given the row as
// stored and its stored credentials, each plain value shown as kStoredValue
// (references, which hold no secret, as they are; empty when it has none or
// when the edit does not read them), the patch to apply in full. A
// kStoredValue left in its credentials keeps that field's stored value; the
// edit never sees one. `stored_bytes`: the length of each masked value, so
// that the edit can hold its result to what a request body may hold.
using StoredBytes = std::map<std::string, size_t>;
using ProviderEdit = std::function<Result<ProviderPatch>(const Provider& row, const CredentialFields& stored,
                                                         const StoredBytes& stored_bytes)>;

struct ValidationCheck {
  std::string name;
  bool ok = false;
  std::string message;
};

// What an upstream answered to a probe of credentials: GET
// {baseUrl}{validatePath} with the credentials injected (CredentialHeaders).
struct UpstreamProbe {
  bool attempted = false;  // a request was sent (or its sending failed)
  int status = 0;          // the upstream's HTTP status; 0: no answer
  std::string url;         // what was probed; never holds a credential
  std::string error;       // why there was no answer
  bool ok() const { return status >= 200 && status < 300; }
  std::string Describe() const;  // "GET https://…/models answered HTTP 401"
};

// The /v1 upstreams as provider writes and credential probes see them
// (DESIGN.md §12). For http-sdk and proxy providers, create and any update
// that changes the type or adapterConfig checks adapterConfig under
// `policy` (ParseAdapterConfig) and, given a resolver, that no address the
// baseUrl's host resolves to is link-local or metadata (a name that does
// not resolve passes: UpstreamClient checks the address it connects to).
// Without a client, probes fail with kUnimplemented.
struct ProviderUpstream {
  UpstreamPolicy policy;
  HostResolver* resolver = nullptr;
  UpstreamClient* client = nullptr;
  UpstreamTimeouts probe_timeouts{std::chrono::milliseconds(5000), std::chrono::milliseconds(15000),
                                  std::chrono::milliseconds(15000)};
};


struct ValidationReport {
  bool valid = false;
  std::string source;
  int64_t credentials_version = 0;
  std::string fingerprint;
  // Fields resolved from a leased dynamic secret: the seconds their lease
  // has left (0 once it has ended).
  std::map<std::string, int64_t> lease_ttl_seconds;
  std::vector<ValidationCheck> checks;
  UpstreamProbe probe;  // Validate(…, live=true) only
};

class ProviderService {
 public:
  // Writers of one provider take secrets.locks() (its lease too, where
  // SecretsOptions has the registry's ProviderLeases).
  ProviderService(ProviderRepository& repo, SecretsService& secrets, const Clock& clock, Random& random,
                  AuditSink& audit, ProviderUpstream upstream = {})
      : repo_(repo), secrets_(secrets), clock_(clock), random_(random), audit_(audit), upstream_(upstream) {}

  Result<Provider> Create(const ProviderPatch& input, const Caller& caller);
  Result<Provider> Get(const std::string& id) { return repo_.Get(id); }
  Result<ProviderPage> List(int64_t offset, int64_t limit) { return repo_.List(offset, limit); }
  Result<Provider> Update(const std::string& id, const ProviderPatch& patch, const Caller& caller);
  // Runs `edit` under the provider's lock and writes what it returns as
  // Update() does, fenced by what was read: a concurrent writer's change
  // is never lost. `credentials_named`: the credential fields the request
  // names (nullopt: none; the edit then does not read the stored ones).
  // Edits of the credentials of a provider that reads them from the
  // environment (nothing stored) are refused (kFailedPrecondition): the
  // result would hold only the fields named, never the environment's.
  Result<Provider> Edit(const std::string& id, const std::optional<std::vector<std::string>>& credentials_named,
                        const ProviderEdit& edit, const Caller& caller);
  // `migrate import-env`: those of `fields` (the provider's DYAD_PROVIDER_*
  // values) with no stored value added to its stored credentials, read
  // under its lock (a stored value is never replaced); as
  // Edit() with those fields named, but allowed where the provider reads its
  // credentials from the environment (the fields stored are that set).
  Result<Provider> ImportCredentials(const std::string& id, const CredentialFields& fields, const Caller& caller);
  // Given `probe` (validate before promote), the new credentials are first
  // probed at the upstream (ProbeUpstream) and written only when it answers
  // 2xx; otherwise nothing is written, the refusal is audited, `probe` says
  // what the upstream answered and the error is kFailedPrecondition (or the
  // probe's own: a provider type without upstream, a bad adapterConfig, a
  // reference among the credentials, which cannot be probed before it is
  // stored).
  Result<Provider> RotateCredentials(const std::string& id, const CredentialFields& credentials, const Caller& caller,
                                     UpstreamProbe* probe = nullptr);
  Status Delete(const std::string& id, const Caller& caller);
  // `live`: also probe the upstream with the current credentials (the
  // report's `probe` and an "upstream" check; valid only on a 2xx).
  Result<ValidationReport> Validate(const std::string& id, const Caller& caller, bool live = false);

 private:
  // `started`: when the action began, for its durationMs.
  void Audit(const std::string& action, const std::string& id, const Status& s, const Caller& caller,
             Clock::Instant started, std::vector<std::string> fields = {});

  // Edit() and Update(): audited as credentials.rotate whenever the request
  // names credentials (`credentials_named`), whether or not the write
  // happens, with the fields written (else those named).
  Result<Provider> Write(const std::string& id, bool reads_credentials,
                         const std::optional<std::vector<std::string>>& credentials_named, const ProviderEdit& edit,
                         const Caller& caller, bool from_environment = false);

  // What became of a registry write that failed: kUnavailable may be a
  // lost answer to a committed write (the connection dropped after the
  // COMMIT), so the row is read back (SecretsService::kSettle, until the
  // write's `deadline`).
  enum class RowWrite {
    kWritten,     // this writer's row (`ours`)
    kNotWritten,  // the row names older credentials than `credentials_version`: put the secret back
    kOvertaken,   // another writer's row names them (or newer): the secret stays, the outcome is unknown
    kUnknown,     // the row could not be read: the secret stays
  };
  RowWrite ReadBack(const Status& s, const std::string& id, const std::function<bool(const Provider&)>& ours,
                    int64_t credentials_version, Clock::Instant deadline);
  // What became of Create's insert of `p` that answered `s` (retried until
  // the write's `deadline`).
  RowWrite InsertSettled(const Status& s, const Provider& p, Clock::Instant deadline);
  static Status OutcomeUnknown(const Status& s, const std::string& id);
  // Logs an undo (SecretsService::RestoreRaw) that failed: a lease lost to
  // another instance told apart from a store that did not answer. Names the
  // provider, never a value.
  static void UndoFailed(const std::string& id, const Status& undo, const ProviderLocks::Held& held);

  // For http-sdk and proxy providers: adapterConfig and where its host
  // resolves (ProviderUpstream).
  Status CheckUpstream(const Provider& p);
  // GET {baseUrl}{validatePath} with `fields` injected. Errors when no
  // request could be made (the type, the adapterConfig, the credentials, no
  // client); an upstream that cannot be reached is a probe without status.
  Result<UpstreamProbe> ProbeUpstream(const Provider& p, const CredentialFields& fields);

  // The credentials stored for `row` (read under its lock), in clear, and in
  // `version` the credentials version they carry (the row's when it lists
  // none).
  Result<CredentialFields> StoredFields(const Provider& row, const std::optional<StoredSecret>& raw,
                                        int64_t& version);

  ProviderRepository& repo_;
  SecretsService& secrets_;
  const Clock& clock_;
  Random& random_;
  AuditSink& audit_;
  const ProviderUpstream upstream_;
};

}  // namespace dyad
