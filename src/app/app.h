// App: the service wired together from a Config — registry, secrets
// backend, key manager, cache, audit log, metrics, services and routes —
// and the request entry point with the access log. Thread-safe once built.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "app/backend.h"
#include "core/clock.h"
#include "core/config.h"
#include "server/http_server.h"
#include "server/http_types.h"

namespace dyad {

class ProviderService;
class SecretsService;
class KeyRotationService;
class RotationScheduler;
class ProviderRepository;
class Database;

class App {
 public:
  // `serving` also starts the rotation scheduler and resumes a rotation
  // that a stopped process left half done. The secrets backend is
  // `backends`' factory named by SECRETS_PROVIDER.
  static Result<std::unique_ptr<App>> Create(const Config& config, const Clock& clock, bool serving,
                                             const BackendRegistry& backends = BuiltinBackends());
  ~App();

  HttpResponse Handle(const HttpRequest& request);
  // Where the server runs Handle() for this request: the I/O thread, the
  // blocking pool (it may wait on a backend) or, for /v1, the upstream pool
  // (it waits on an upstream for as long as a stream lasts); a /v1 call of
  // a known client token, with GATEWAY_V1_EVENTED, on the I/O thread, where
  // it may defer (HttpRequest::may_defer). `caller` (when given) is set to
  // whom it authenticated (HttpRequest::caller): a /v1 POST's known client
  // (before any route lookup), else the caller of a route that would run;
  // nobody the router refuses.
  HandlerPool PoolFor(const HttpRequest& request, std::optional<Principal>* caller = nullptr) const;
  // Whether Handle() refuses the request whatever its body: an unknown
  // caller, no route (HttpServerOptions::refuses_head). Audits nothing.
  bool RefusesHead(const HttpRequest& head) const;
  // The upstream pool's size (GATEWAY_V1_THREADS).
  int v1_threads() const;
  // The server's shutdown began: writes waiting for another writer stop
  // waiting (ProviderLocks::Interrupt). Does not block.
  void BeginShutdown();
  // GATEWAY_V1_EVENTED (HttpServerOptions::evented_upstream).
  bool v1_evented() const;

  // The routes served, as the router has them (the API description is
  // checked against these).
  std::vector<std::pair<std::string, std::string>> Routes() const;  // (method, pattern)

  ProviderService& providers();
  SecretsService& secrets();
  KeyRotationService& rotation();
  RotationScheduler& scheduler();
  // The registry: its database (to open another backend on it) and rows.
  const std::shared_ptr<Database>& database();
  ProviderRepository& registry();

 private:
  App();
  struct AccessLine;
  // The access log's line and the HTTP metrics of an answered request.
  void Account(const AccessLine& line, int status);
  struct Parts;
  std::unique_ptr<Parts> parts_;
};

// Creates the data dir if needed (`create`) and makes it 0700 unless it is
// a shared directory (sticky, like /tmp) or someone else's.
Status EnsureDataDir(const std::string& dir, bool create = true);

// kFailedPrecondition, naming the dir and a few of its entries, unless `dir`
// is missing or empty: a restore never lands beside (or over) live data.
Status RequireEmptyDataDir(const std::string& dir);

// Dev mode without ENCRYPTION_KEY / GATEWAY_ADMIN_API_KEY: reads them from
// the data dir. With `generate` (only `serve --dev`) a missing one is
// generated once there (0600) and the token announced once; without it a
// missing one is kNotFound and nothing is written.
Status PrepareDevSecrets(Config& config, bool generate);

}  // namespace dyad
