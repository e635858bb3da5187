// ProxyService: the /v1 path (DESIGN.md §12). A client's OpenAI-compatible
// request is routed by its `model` to an enabled provider, that provider's
// credentials are read through SecretsService (cache first) and injected
// (CredentialHeaders of its adapterConfig), and the request goes upstream
// through UpstreamClient with its body unchanged; the answer is passed back.
//
// Routing: `model` names a provider's listed model (its dyadModelId; the
// upstream is sent its adapterModelId) on exactly one enabled provider, or is
// "<provider-slug>/<model>" (the prefix stripped upstream; any model then).
// Two enabled providers listing it: kInvalidArgument (use the prefix). None,
// or a prefix naming a disabled provider: kNotFound. spawn-cli and local
// providers: kUnimplemented naming the type. A client's allow-lists:
// kPermissionDenied. The body is parsed once, without building a document
// (SAX), to read the top-level `model` (a second top-level `model` is
// refused: the upstream might read the other one); when the model sent
// upstream differs from the one asked for, only that string is replaced in
// the raw body, every other byte is forwarded as received.
//
// Forwarding: the client's headers go upstream except its Authorization
// (its gateway token), Cookie, Host, Content-Length, Expect, hop-by-hop
// headers (Connection and those it names, Keep-Alive, Proxy-*, TE, Trailer,
// Transfer-Encoding, Upgrade) and any header the credential sets. An upstream
// 401 to a credential read from the cache or the store is held back and
// retried once when a fresh read finds another credential (another instance
// may have rotated it, before or during the call); the 401 never reaches the
// client then. At most one such forced read per provider and credential (its
// fingerprint) per forced_refresh_interval (on the injected clock); the
// claim of that window and the drop of the cache entry are one step, so two
// requests never both drop and read. A 401 to a credential whose window is
// used is still retried once when the cache already holds another one (a
// replaced credential), else passed on. The retry is routed anew. The
// total timeout is one deadline per client call, across that retry.
// A text/event-stream answer (or one
// larger than max_buffered_bytes) is passed on piece by piece as it comes;
// other answers are kept whole and returned (one write, with a length).
// Upstream errors: kUnavailable (unreachable), kDeadlineExceeded (a
// timeout), kCancelled (the client went away); once an answer was begun to
// the client an error only cuts it short (ProxyAnswer::cut_short). Their
// messages name the provider's slug and the kind of failure, never the
// upstream's URL, host, port or address (a /v1 client must not learn them):
// the upstream client's full words go to the log at warn, with the request id.
//
// A client with allow-lists is told nothing of what lies outside them: a
// provider or model outside its lists is answered as one that does not exist
// (kNotFound, the unknown model's message), and an ambiguity names only the
// providers it may use (one of them: routed there).
//
// The catalog of providers is read from the registry at most once per
// catalog_ttl (and again after InvalidateCatalog(), which this instance's
// provider writes call, and after a key's store read, below), so a request
// reads no registry row; one request reads it, those arriving meanwhile wait
// for its result (single flight). A credential read from the store
// (Credentials::read_at) is sent only with a catalog whose registry read
// began after that: a baseUrl changed before a rotation began never gets the
// rotated key. /v1 calls are not audited (a hot-path file write per call);
// they are counted in Metrics::ObserveV1. A credential read that misses the cache is audited by
// SecretsService as always. Thread-safe.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/clock.h"
#include "core/mutex.h"
#include "core/result.h"
#include "metrics/metrics.h"
#include "registry/provider_repository.h"
#include "service/adapter_config.h"
#include "service/secrets_service.h"
#include "transport/upstream_client.h"

namespace dyad {

struct ProxyOptions {
  UpstreamTimeouts timeouts;
  UpstreamPolicy policy;  // GATEWAY_ALLOW_PLAINTEXT_UPSTREAM
  Clock::Duration catalog_ttl = std::chrono::seconds(1);
  // A non-streamed answer larger than this is passed on as it comes.
  size_t max_buffered_bytes = 8 << 20;
  // At most one 401-forced credential read per provider and credential in
  // this time (GATEWAY_V1_REFRESH_INTERVAL_MS): a credential the upstream
  // keeps refusing does not make every request read the backend.
  Clock::Duration forced_refresh_interval = std::chrono::seconds(5);
  // Prepare makes calls (else it always answers "Forward it"): to providers
  // whose baseUrl a caller that must not wait can call (IsPlainNumericTarget).
  // Off with GATEWAY_UPSTREAM_PROXY (every call goes through the proxy).
  bool prepare = false;
};

struct ProxyRequest {
  std::string_view endpoint;  // after /v1/: "chat/completions", "completions", "embeddings"
  std::string_view body;      // as received; must outlive Forward()
  std::string_view query;     // after '?', passed on as is
  const std::vector<std::pair<std::string, std::string>>* headers = nullptr;  // the client's
  // The client's allow-lists; null: no limit.
  const std::vector<std::string>* allowed_providers = nullptr;  // slugs
  // Model ids, or <slug>/<model> for a model its provider does not list.
  const std::vector<std::string>* allowed_models = nullptr;
  Caller caller;
  // The first attempt, answered 401 and held back (Forward's own, or
  // ProxyService::Prepare's call: ProxyCall::held()). The retry reads the
  // credential again, is not held back twice, and keeps the client call's
  // start and total deadline; its metrics count the held attempt's upstream
  // time as upstream time, not as the gateway's overhead.
  struct HeldAttempt {
    Clock::Instant started;
    Clock::Instant give_up;
    double upstream_seconds = 0;
  };
  std::optional<HeldAttempt> after_401;
};

// Where a streamed answer goes (the client): false when it has gone.
class ProxyOutput {
 public:
  virtual ~ProxyOutput() = default;
  virtual bool Begin(int status, std::string_view content_type, const HttpHeaders& headers) = 0;
  virtual bool Write(std::string_view piece) = 0;
  // Begin() and Write() may be held until Flush() (ResponseWriter::Hold).
  virtual void Hold() {}
  virtual bool Flush(bool /*last*/) { return true; }
  // A socket whose hang-up means the client has gone (ResponseWriter::
  // HangUpFd): the upstream call is then stopped while it waits. -1: none.
  virtual int HangUpFd() const { return -1; }
};

struct ProxyAnswer {
  int status = 0;
  std::string content_type;
  HttpHeaders headers;  // the upstream's, to pass on (no framing headers)
  std::string body;     // when !streamed
  bool streamed = false;   // head and body went to the ProxyOutput
  bool cut_short = false;  // streamed, and the upstream or the client failed before its end
};

// One /v1 call made ready without waiting (ProxyService::Prepare), for a
// caller that drives the upstream exchange itself (the server's I/O
// threads): the request to send, with the credential injected (wiped when
// the call is destroyed), and the sink its answer goes into.
class ProxyCall {
 public:
  ~ProxyCall();
  ProxyCall(const ProxyCall&) = delete;
  ProxyCall& operator=(const ProxyCall&) = delete;
  const UpstreamRequest& request() const;
  UpstreamSink& sink();
  // The upstream answered 401 to the cached credential and the answer was
  // held back (as Forward holds it): ask Forward again, with after_401 set
  // to held().
  bool retry() const;
  ProxyRequest::HeldAttempt held() const;

  struct State;  // in proxy_service.cc

 private:
  friend class ProxyService;
  explicit ProxyCall(std::unique_ptr<State> state);
  std::unique_ptr<State> s_;
};

// One entry of GET /v1/models.
struct ListedModel {
  std::string id;
  std::string owned_by;  // the provider's slug
  int64_t created = 0;   // the provider's creation, Unix seconds
};

class ProxyService {
 public:
  ProxyService(ProxyOptions options, ProviderRepository& repo, SecretsService& secrets, UpstreamClient& upstream,
               Metrics& metrics, const Clock& clock);
  ~ProxyService();

  Result<ProxyAnswer> Forward(const ProxyRequest& request, ProxyOutput& output);
  // Forward in two halves, for a caller that must not wait (an I/O thread):
  // Prepare does Forward's work up to the upstream call with what is at
  // hand (the catalog as held, the credential from the cache only) and
  // Finish, after the caller's exchange (`sent`: its outcome), what Forward
  // does after it. Prepare's errors are Forward's; null (no error) when it
  // would have to wait (the catalog due, a credential not cached), for a
  // provider it does not call (ProxyOptions::prepare) and for a request
  // with after_401: Forward it then, off the I/O threads.
  Result<std::unique_ptr<ProxyCall>> Prepare(const ProxyRequest& request, ProxyOutput& output);
  Result<ProxyAnswer> Finish(ProxyCall& call, const Status& sent);
  // The enabled providers' models, in provider order (a model listed by two
  // providers is listed once, as the first's); only those the allow-lists pass.
  Result<std::vector<ListedModel>> Models(const std::vector<std::string>* allowed_providers,
                                          const std::vector<std::string>* allowed_models);
  // One model of that list by its id (GET /v1/models/{model}); kNotFound
  // for one not listed, or not passed by the allow-lists (the same message).
  Result<ListedModel> Model(std::string_view id, const std::vector<std::string>* allowed_providers,
                            const std::vector<std::string>* allowed_models);
  // The next request reads the registry again.
  void InvalidateCatalog() DYAD_LOCKS_EXCLUDED(mu_);
  // Requests waiting for another's catalog read (tests).
  int CatalogWaiters() DYAD_LOCKS_EXCLUDED(mu_);

  struct Catalog;  // in proxy_service.cc

 private:
  // A call resolved again: its provider's key, read from the store after
  // the catalog it had (the one it gets now is read after the key, and the
  // key is used as read), and when the call began (its total deadline's
  // start); how many times it was, at most kMaxReroutes.
  struct Reroute {
    CredentialRead read;
    std::string provider_id;
    Clock::Instant started;
    int count = 1;
  };
  static constexpr int kMaxReroutes = 3;
  // The catalog, fresh; with `begun_after`, one whose registry read began
  // after that instant (the current one, else a new read).
  Result<std::shared_ptr<const Catalog>> Snapshot(std::optional<Clock::Instant> begun_after = std::nullopt)
      DYAD_LOCKS_EXCLUDED(mu_);
  // The catalog when it is fresh, else null (never reads the registry).
  std::shared_ptr<const Catalog> FreshSnapshot() DYAD_LOCKS_EXCLUDED(mu_);
  // The halves of a call (Forward, Prepare, Finish). Resolve: the body's
  // model, its route and the upstream request less its headers; false
  // when `may_wait` is not and the catalog is due. Inject: the headers,
  // with `credentials` injected. Arm: the sink, and the total timeout left
  // (an error, counted, when none is). Conclude: the answer or error of an
  // exchange, counted.
  Result<bool> Resolve(const ProxyRequest& request, ProxyCall::State& s, bool may_wait,
                       const Reroute* reroute = nullptr);
  Result<ProxyAnswer> Forward(const ProxyRequest& request, ProxyOutput& output, const Reroute* reroute);
  Status Inject(const ProxyRequest& request, ProxyCall::State& s, CredentialsPtr credentials);
  std::optional<Error> Arm(ProxyCall::State& s, ProxyOutput& output, bool may_hold);
  Result<ProxyAnswer> Conclude(ProxyCall::State& s, const Status& sent);
  bool CatalogFresh(Clock::Instant now) const DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // On a 401 to `used`: whether a retry would carry another credential.
  // Claims the window (ClaimForcedRefresh), then compares `used` with the
  // store's credential read as `read_as`, or, without it (an I/O thread:
  // no store read), with what the cache holds (an empty cache counts as
  // another: the retry reads it).
  bool AnotherCredential(const std::string& provider_id, const std::string& slug, const Credentials& used,
                         const Caller* read_as) DYAD_LOCKS_EXCLUDED(mu_);
  // After a 401 to the credential with this fingerprint: claims the
  // window of (provider, fingerprint) and, in the same step, drops the cache
  // entry; false when the window is already used.
  bool ClaimForcedRefresh(const std::string& provider_id, const std::string& fingerprint) DYAD_LOCKS_EXCLUDED(mu_);

  ProxyOptions options_;
  ProviderRepository& repo_;
  SecretsService& secrets_;
  UpstreamClient& upstream_;
  Metrics& metrics_;
  const Clock& clock_;
  Mutex mu_;
  CondVar catalog_loaded_;
  std::shared_ptr<const Catalog> catalog_ DYAD_GUARDED_BY(mu_);
  uint64_t catalog_epoch_ DYAD_GUARDED_BY(mu_) = 0;  // moved by InvalidateCatalog()
  bool catalog_loading_ DYAD_GUARDED_BY(mu_) = false;
  uint64_t catalog_loads_ DYAD_GUARDED_BY(mu_) = 0;  // reads ended
  std::optional<Error> catalog_error_ DYAD_GUARDED_BY(mu_);  // of the last read
  int catalog_waiters_ DYAD_GUARDED_BY(mu_) = 0;
  // By provider id + '\n' + fingerprint.
  std::unordered_map<std::string, Clock::Instant> last_forced_refresh_ DYAD_GUARDED_BY(mu_);
};

// The top-level `model` of a JSON object body and where its string token
// lies in the raw text ([begin, end), quotes included). kInvalidArgument for
// a body that is not one JSON object, a `model` that is not a non-empty
// string, or a second top-level `model`.
struct ModelField {
  std::string value;
  size_t begin = 0, end = 0;
};
Result<ModelField> FindModel(std::string_view body);

// `body` with the string token of `field` replaced by `model` as a JSON
// string; every other byte as it was.
std::string ReplaceModel(std::string_view body, const ModelField& field, std::string_view model);

// The client's headers that may go upstream (see above), less any named in
// `injected` (compared case-insensitively).
HttpHeaders ForwardableHeaders(const std::vector<std::pair<std::string, std::string>>& client,
                               const HttpHeaders& injected);

// Whether an upstream answer's header may reach the client: not hop-by-hop
// or framing (Connection, Keep-Alive, Proxy-*, TE, Trailer,
// Transfer-Encoding, Upgrade, Content-Length), not one that speaks for the
// gateway's origin (Set-Cookie, Set-Cookie2, Access-Control-*,
// Strict-Transport-Security, Alt-Svc, Clear-Site-Data), a name that is an
// HTTP token and a value without control characters (HTAB allowed).
// Content-Type, X-Request-Id, OpenAI-* and the rate-limit headers pass.
bool IsPassableUpstreamHeader(std::string_view name, std::string_view value);
// The upstream's headers that pass, in order, less Content-Type (the
// answer's own field); X-Request-Id renamed X-Upstream-Request-Id.
HttpHeaders PassableUpstreamHeaders(const HttpHeaders& upstream);

}  // namespace dyad
