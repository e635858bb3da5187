#include "app/app.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>

#include "api/routes.h"
#include "api/v1_routes.h"
#include "app/accounted_answer.h"
#include "audit/audit_log.h"
#include "app/audit_setup.h"
#include "app/backend.h"
#include "app/v1_settings.h"
#include "metrics/metrics.h"
#include "registry/change_feed.h"
#include "registry/database.h"
#include "server/auth.h"
#include "server/envelope.h"
#include "server/router.h"
#include "core/cron.h"
#include "core/env_vars.h"
#include "service/key_rotation_service.h"
#include "service/provider_service.h"
#include "service/proxy_service.h"
#include "service/rotation_scheduler.h"
#include "service/secrets_service.h"

namespace dyad {
namespace {

// The router's routes as (method, pattern) pairs.
std::vector<std::pair<std::string, std::string>> RoutePairs(const Router& router) {
  std::vector<std::pair<std::string, std::string>> out;
  for (auto& r : router.Routes()) out.emplace_back(std::move(r.method), std::move(r.pattern));
  return out;
}

}  // namespace

struct App::Parts {
  const Clock* clock = nullptr;
  std::shared_ptr<Database> db;
  std::unique_ptr<ProviderRepository> repo;
  std::unique_ptr<ProviderLeases> leases;
  std::unique_ptr<Metrics> metrics;  // before the backend, whose clients report to it
  std::shared_ptr<SettingsRepository> settings;
  std::shared_ptr<AuditKeyRepository> audit_keys;
  Backend backend;
  std::unique_ptr<AuditHeadStore> audit_heads;
  std::unique_ptr<ChangeFeed> changes;  // before secrets, which subscribes to it
  std::unique_ptr<FileAuditLog> audit;
  std::unique_ptr<TokenAuthenticator> auth;
  std::unique_ptr<SecretsService> secrets;
  std::unique_ptr<HostResolver> resolver;        // baseUrl checks at provider create/update
  std::unique_ptr<UpstreamClient> upstream;      // /v1 calls and credential probes (validate before promote)
  std::unique_ptr<ProviderService> providers;
  std::unique_ptr<KeyRotationService> rotation;
  std::unique_ptr<RotationScheduler> scheduler;
  std::unique_ptr<ProxyService> proxy;
  std::unique_ptr<ConcurrencyLimit> v1_limit;  // before the router, whose /v1 routes hold it
  int v1_threads = 64;
  bool v1_evented = true;
  std::unique_ptr<Router> router;
  std::unique_ptr<CacheWarmer> warmer;  // last: stopped before what it reads
};

App::App() : parts_(std::make_unique<Parts>()) {}
App::~App() = default;

ProviderService& App::providers() { return *parts_->providers; }
SecretsService& App::secrets() { return *parts_->secrets; }
KeyRotationService& App::rotation() { return *parts_->rotation; }
RotationScheduler& App::scheduler() { return *parts_->scheduler; }
const std::shared_ptr<Database>& App::database() { return parts_->db; }
ProviderRepository& App::registry() { return *parts_->repo; }

Result<std::unique_ptr<App>> App::Create(const Config& config, const Clock& clock, bool serving,
                                         const BackendRegistry& backends) {
  std::unique_ptr<App> app(new App());
  Parts& p = *app->parts_;
  p.clock = &clock;
  DYAD_ASSIGN_OR_RETURN(p.db, OpenDatabase(config.database_url));
  p.repo = p.db->NewProviderRepository();
  p.leases = p.db->NewProviderLeases(clock);
  p.settings = p.db->NewSettingsRepository();
  p.audit_keys = p.db->NewAuditKeyRepository();
  p.metrics = std::make_unique<Metrics>();
  DYAD_ASSIGN_OR_RETURN(p.backend,
                        backends.Open(BackendContext{config, p.db, clock, DefaultRandom(), p.metrics.get()}));
  // Every retirement goes through the guard, which first moves the audit key
  // off the version retired (audit_setup.h): the key is never lost.
  p.backend.keys = GuardAuditKey(std::move(p.backend.keys), p.audit_keys);
  AuditLogOptions audit;
  audit.path = config.audit_log_path;
  // Asked again (once a second at most) while the KMS cannot be reached:
  // the service starts, and refuses what it could not audit.
  audit.key_source = [audit_keys = p.audit_keys, keys = p.backend.keys.get(), &clock] {
    return LoadAuditKey(*audit_keys, *keys, clock, true);
  };
  p.audit_heads = p.db->NewAuditHeadStore(clock);
  audit.heads = p.audit_heads.get();
  audit.origin = ConfiguredAuditLogOrigin(config, audit.path, p.db->engine() != "sqlite");
  // A write past RLIMIT_FSIZE must fail with EFBIG (the audit log then
  // refuses operations) rather than kill the process.
  signal(SIGXFSZ, SIG_IGN);
  DYAD_ASSIGN_OR_RETURN(p.audit, FileAuditLog::Open(std::move(audit), clock));
  if (!p.audit->Healthy()) {
    spdlog::error("the audit log cannot be written ({}): requests other than GET get 503 until it can",
                  p.audit->Problem());
  }
  ::chmod(config.audit_log_path.c_str(), 0600);  // made 0644 by an older build: owner only
  DYAD_ASSIGN_OR_RETURN(p.auth, TokenAuthenticator::Create(config.admin_api_key, config.admin_tokens_file, serving,
                                                           config.client_api_keys_file));
  if (serving && p.auth->HasClientCertSubjects() && config.tls.client_ca_file.empty()) {
    // Only certificate identities and no certificate asked for: nobody could
    // log in, refused as a tokens file of nothing usable is.
    if (!p.auth->HasTokens()) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "GATEWAY_ADMIN_TOKENS_FILE names only client certificate subjects, GATEWAY_TLS_CLIENT_CA_FILE "
                       "is not set and GATEWAY_ADMIN_API_KEY is not set: nobody could log in; set "
                       "GATEWAY_TLS_CLIENT_CA_FILE (with GATEWAY_TLS_CERT_FILE and GATEWAY_TLS_KEY_FILE), or add a "
                       "token");
    }
    spdlog::warn("GATEWAY_ADMIN_TOKENS_FILE names client certificate subjects but GATEWAY_TLS_CLIENT_CA_FILE is not "
                 "set: no client certificate is asked for, so those identities cannot log in");
  }

  SecretsOptions so;
  so.leases = p.leases.get();
  if (auto sqlite = p.db->sqlite()) {
    DYAD_ASSIGN_OR_RETURN(p.changes, NewSqliteChangeFeed(std::move(sqlite), clock, {.metrics = p.metrics.get()}));
  } else {
    DYAD_ASSIGN_OR_RETURN(p.changes, NewPgChangeFeed(p.db->postgresql(), clock, {.metrics = p.metrics.get()}));
  }
  so.changes = p.changes.get();
  so.cache_enabled = config.cache_enabled;
  so.cache.max_entries = static_cast<size_t>(config.cache_max_size);
  so.cache.ttl = std::chrono::seconds(config.cache_ttl_seconds);
  so.cache.stale_if_error = std::chrono::seconds(config.cache_stale_if_error_seconds);
  so.fallback_enabled = config.fallback_enabled;
  so.fallback_to_env = config.fallback_to_env;
  so.seal_mode = config.encryption_mode == "provider" ? SealMode::kProvider : SealMode::kEnvelope;
  DYAD_ASSIGN_OR_RETURN(so.fingerprint_key, DeploymentFingerprintKey(*p.settings, DefaultRandom()));
  // Longer than a create can spend between its secret and its registry row:
  // the backend's longest write (AWS: every attempt at its timeout), and at
  // least SQLite's busy wait.
  so.min_orphan_age = std::max(std::chrono::seconds(60), p.backend.traits.longest_write);
  so.env_is_source = p.backend.traits.env_is_source;
  so.dynamic = p.backend.dynamic.get();
  // A holder renews its lease right before each write the lease alone
  // fences: the lease must outlast one store write, its retries included.
  // The write's settling (read-backs, an undo) ends at its deadline,
  // `margin` before the lease would, so that one call begun before the
  // deadline (a store call with its own retries; a busy registry pool waits
  // 10 s) ends inside the lease. The TTL is not stretched for the settling:
  // a lease its holder could not release (the registry restarting) blocks
  // the provider's other writers, and a shutdown, until it runs out.
  so.lease.margin = std::max<Clock::Duration>(std::chrono::seconds(10), p.backend.traits.longest_write);
  so.lease.ttl = std::max<Clock::Duration>(std::chrono::seconds(30), 2 * p.backend.traits.longest_write);
  so.lease.max_wait = so.lease.ttl + std::chrono::seconds(10);
  DYAD_ASSIGN_OR_RETURN(p.secrets, SecretsService::Create(so, *p.backend.store, *p.backend.keys, *p.repo, *p.audit,
                                                         *p.metrics, clock, DefaultRandom(), config.provider_env));
  // A key that did not seal the data already stored is a start-up error,
  // not a healthy service whose every read fails. A store down at start is
  // not: the service starts and reports it in health.
  if (Status keys = p.secrets->CheckStoredKeys(3); !keys.ok()) {
    if (keys.code() != ErrorCode::kUnavailable) return keys.error();
    spdlog::warn("cannot check the configured key against the stored credentials: {}", keys.error().message);
  }
  if (serving) DYAD_RETURN_IF_ERROR(p.changes->Start());
  p.resolver = NewSystemResolver();
  UpstreamClientOptions uo;
  uo.ca_file = config.upstream_ca_file;
  // The environment's proxy variables are not used upstream (upstream_client.h).
  if (const std::string* proxy = FindVariable(config.env, "GATEWAY_UPSTREAM_PROXY")) {
    uo.proxy = *proxy;
  } else {
    for (const char* name : {"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"}) {
      if (FindVariable(config.env, name)) {
        spdlog::warn("{} is set but /v1 upstream calls do not use the environment's proxy variables; set "
                     "GATEWAY_UPSTREAM_PROXY to send them through a proxy",
                     name);
        break;
      }
    }
  }
  uo.resolver = p.resolver.get();
  DYAD_ASSIGN_OR_RETURN(p.upstream, NewUpstreamClient(uo));
  ProviderUpstream upstream;
  upstream.policy.allow_plaintext = config.allow_plaintext_upstream;
  upstream.resolver = p.resolver.get();
  upstream.client = p.upstream.get();
  p.providers = std::make_unique<ProviderService>(*p.repo, *p.secrets, clock, DefaultRandom(), *p.audit, upstream);
  KeyRotationService::Options ro{500, p.backend.traits.rotation_parallelism};
  ro.metrics = p.metrics.get();
  p.metrics->SetKeyState([keys = p.backend.keys.get()] { return keys->KnownState(); },
                         config.key_rotation_max_encryptions);
  p.rotation = std::make_unique<KeyRotationService>(ro, p.db->NewRotationRepository(clock), *p.secrets, *p.audit,
                                                    clock);
  RotationTiming timing;
  timing.interval = std::chrono::hours(config.key_rotation_interval_hours);
  if (!config.key_rotation_schedule.empty()) {
    DYAD_ASSIGN_OR_RETURN(timing.cron, CronSchedule::Parse(config.key_rotation_schedule));
  }
  p.scheduler = std::make_unique<RotationScheduler>(*p.rotation, *p.backend.keys, p.settings, std::move(timing),
                                                    config.key_rotation_enabled, config.key_rotation_max_encryptions,
                                                    clock);
  if (serving && config.cache_warm && !config.cache_enabled) {
    spdlog::warn("SECRETS_CACHE_WARM=true has no effect with SECRETS_CACHE_ENABLED=false");
  } else if (serving && config.cache_warm) {
    CacheWarmer::Options wo;
    wo.max_entries = static_cast<size_t>(config.cache_max_size);
    wo.blocks_ready = config.cache_warm_blocks_ready;
    p.warmer = std::make_unique<CacheWarmer>(wo, *p.secrets, *p.repo, *p.metrics);
  }
  ProxyOptions po;
  po.timeouts.connect = std::chrono::milliseconds(config.upstream_connect_timeout_ms);
  po.timeouts.first_byte = std::chrono::milliseconds(config.upstream_first_byte_timeout_ms);
  po.timeouts.idle = std::chrono::milliseconds(config.upstream_idle_timeout_ms);
  DYAD_ASSIGN_OR_RETURN(V1Settings v1, ReadV1Settings(config.env));
  po.timeouts.total = v1.upstream_total;
  po.forced_refresh_interval = v1.refresh_interval;
  po.policy.allow_plaintext = config.allow_plaintext_upstream;
  // Through GATEWAY_UPSTREAM_PROXY every call is UpstreamClient's.
  po.prepare = v1.evented && uo.proxy.empty();
  p.proxy = std::make_unique<ProxyService>(po, *p.repo, *p.secrets, *p.upstream, *p.metrics, clock);
  p.router = std::make_unique<Router>(p.auth.get(), p.audit.get(), &clock);
  RegisterRoutes(*p.router, ApiContext{*p.providers, *p.secrets, *p.repo, *p.metrics, *p.rotation, *p.scheduler,
                                       *p.audit, config.max_body_bytes, p.warmer.get()});
  p.v1_limit = std::make_unique<ConcurrencyLimit>(v1.limits);
  p.v1_threads = v1.threads;
  p.v1_evented = v1.evented;
  RegisterV1Routes(*p.router, *p.proxy, p.v1_limit.get());
  p.metrics->SetHttpRoutes(RoutePairs(*p.router));  // each route's latency series, found without a label lookup
  if (serving) {
    auto resumed = p.rotation->ResumeInterrupted(Caller{"system", ""});
    if (!resumed.ok()) spdlog::error("cannot resume the interrupted key rotation: {}", resumed.error().message);
    else if (*resumed) spdlog::warn("resuming an interrupted key rotation as run {}", **resumed);
    if (auto why = p.scheduler->ToggleOverride()) spdlog::warn("{}", *why);
    DYAD_RETURN_IF_ERROR(p.scheduler->StartThread());
    p.secrets->Health();  // the first probe, so that the first /readyz has an answer
    p.secrets->AwaitProbe(std::chrono::seconds(2));
    if (p.warmer) p.warmer->Start();  // in the background: /readyz says when it is done, if asked to
  }

  if (serving) {
    // Reported, never deleted here: a create in another process writes its
    // secret before its row (`secrets gc` removes old orphans).
    auto orphans = p.secrets->ReportOrphans();
    if (!orphans.ok() && orphans.code() != ErrorCode::kPermissionDenied) {  // a refusal: said by the service
      spdlog::warn("cannot count orphaned secrets: {}", orphans.error().message);
    }
    if (orphans.ok() && *orphans) spdlog::warn("{} stored secret(s) have no provider row; `dyad-gateway secrets gc` removes "
                                    "those older than an hour", *orphans);
  }
  return app;
}

std::vector<std::pair<std::string, std::string>> App::Routes() const { return RoutePairs(*parts_->router); }

HandlerPool App::PoolFor(const HttpRequest& request, std::optional<Principal>* caller) const {
  // A /v1 POST: a known client's on the I/O threads without a route lookup
  // (the router answers a path that is no route, or not canonical, there
  // too, without blocking); any other's on the upstream pool, where a
  // refused token is audited (a file written: never on an I/O thread).
  const bool v1 = request.path.rfind("/v1/", 0) == 0;
  if (v1 && parts_->v1_evented && request.method == "POST") {
    auto client = parts_->auth->AuthenticateClient(request.authorization, request.client_cert_subject);
    if (!client) return HandlerPool::kUpstream;
    if (caller) *caller = std::move(client);
    return HandlerPool::kEvented;
  }
  if (!parts_->router->MayBlock(request, caller)) return HandlerPool::kIo;
  // The router refuses a non-canonical spelling of /v1 (answered inline).
  return v1 ? HandlerPool::kUpstream : HandlerPool::kBlocking;
}

bool App::RefusesHead(const HttpRequest& head) const { return parts_->router->RefusesHead(head); }

int App::v1_threads() const { return parts_->v1_threads; }
bool App::v1_evented() const { return parts_->v1_evented; }

struct App::AccessLine {
  std::string_view method, path, request_id, peer, identity;
  std::string_view route;  // the router's pattern
  Clock::Instant t0;
};

void App::Account(const AccessLine& line, int status) {
  parts_->metrics->CountHttpRequest(status);
  parts_->metrics->ObserveHttpLatency(line.method, line.route,
                                      std::chrono::duration<double>(parts_->clock->Now() - line.t0).count());
  if (spdlog::should_log(spdlog::level::info)) {
    double ms = std::chrono::duration<double, std::milli>(parts_->clock->Now() - line.t0).count();
    spdlog::info("{} {} {} {:.3f}ms id={} rid={} peer={}", line.method, line.path, status, ms, line.identity,
                 line.request_id, line.peer);
  }
}

void App::BeginShutdown() { parts_->secrets->locks().Interrupt(); }

HttpResponse App::Handle(const HttpRequest& request) {
  auto t0 = parts_->clock->Now();
  Principal who;
  std::string_view route;
  HttpResponse resp;
  // Whatever changes or reveals a secret (every method but GET and HEAD)
  // waits until it can be audited, as Vault does. /v1 calls change nothing
  // and show no secret to their caller (they are counted in metrics, not
  // audited): the proxy keeps serving while the audit log cannot be
  // written. (A non-canonical spelling of /v1 is refused by the router,
  // in /v1's error shape, as /v1 is.)
  const bool v1 = AimsAtV1(request.path);
  if (!v1 && request.method != "GET" && request.method != "HEAD" && !parts_->audit->Ready()) {
    // Why, only to a known identity (the reason may be the KMS's answer).
    std::string why = parts_->auth->Authenticate(request.authorization, request.client_cert_subject) ? ": " + parts_->audit->Problem() : "";
    resp = JsonError(MakeError(ErrorCode::kUnavailable, "the audit log cannot be written" + why));
    resp.headers.emplace_back("Retry-After", "1");
  } else {
    resp = parts_->router->Handle(request, who, &route);
  }
  // This instance's provider writes are seen by the next /v1 request
  // (another instance's within ProxyOptions::catalog_ttl).
  if (resp.status < 300 && request.method != "GET" && route.rfind("/admin/providers", 0) == 0) {
    parts_->proxy->InvalidateCatalog();
  }
  AccessLine line{request.method, request.path, request.request_id, request.peer, who.identity, route, t0};
  if (resp.deferred) {
    // A deferred answer (a /v1 call on the I/O threads) is accounted once it
    // went out; the request's strings are copied (it may move meanwhile).
    resp.deferred = std::make_shared<AccountedAnswer>(
        std::move(resp.deferred),
        AccessRecord{std::string(line.method), std::string(line.path), std::string(line.request_id),
                     std::string(line.peer), std::string(line.identity), line.route, line.t0},
        [this](const AccessRecord& r, int status) {
          Account({r.method, r.path, r.request_id, r.peer, r.identity, r.route, r.t0}, status);
        });
  } else {
    Account(line, resp.status);
  }
  return resp;
}

}  // namespace dyad
