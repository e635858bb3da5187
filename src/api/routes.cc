#include "api/routes.h"

#include <nlohmann/json.hpp>

#include "api/openapi.h"
#include "api/provider_json.h"
#include "api/provider_patch.h"
#include "core/parse_int.h"
#include "core/time_format.h"
#include "server/envelope.h"

namespace dyad {
namespace {

using nlohmann::json;

Caller CallerOf(const RouteContext& ctx) { return Caller{ctx.principal.identity, ctx.request.request_id}; }

Result<bool> BoolField(const std::string& body, const std::string& field, std::optional<bool> fallback);

// A rotation that validate-before-promote refused, with what the upstream said.
HttpResponse UpstreamRefusal(const Error& error, const UpstreamProbe& probe) {
  json details = {{"upstreamStatus", probe.status}};  // 0: no answer
  return probe.status != 0 ? JsonError(422, "UPSTREAM_REJECTED", error.message, details)
                           : JsonError(424, "UPSTREAM_UNREACHABLE", error.message, details);
}

Result<int64_t> IntParam(const HttpRequest& req, const std::string& name, int64_t def, int64_t min, int64_t max) {
  auto v = QueryParam(req.query, name);
  if (!v) return def;
  if (auto n = ParseInt<int64_t>(*v); n && *n >= min && *n <= max) return *n;
  return MakeError(ErrorCode::kInvalidArgument, "query parameter '" + name + "' must be an integer from " +
                                                    std::to_string(min) + " to " + std::to_string(max));
}

json HealthJson(const SecretsHealth& h) {
  json j = {{"status", h.status},       {"provider", h.provider},          {"cacheEnabled", h.cache_enabled},
            {"cacheSize", h.cache_size}, {"lastChecked", h.last_checked},   {"auditLogHealthy", h.audit_ok},
            {"staleServes", h.stale_serves}, {"fallbackReads", h.fallback_reads}};
  if (!h.store_error.empty()) j["storeError"] = h.store_error;
  if (h.orphaned_secrets >= 0) j["orphanedSecrets"] = h.orphaned_secrets;  // counted at start; `secrets gc`
  if (h.replication) {  // checked on one sample secret, at most once a minute
    json replicas = json::array();
    for (const auto& r : h.replication->report.replicas) {
      replicas.push_back({{"region", r.place}, {"status", r.status}, {"message", r.message}});
    }
    j["replication"] = {{"status", h.replication->status},
                        {"sampleSecret", h.replication->report.sample},
                        {"checkedAt", h.replication->checked_at},
                        {"durationMs", h.replication->duration_ms},
                        {"replicas", std::move(replicas)}};
    if (!h.replication->error.empty()) j["replication"]["error"] = h.replication->error;
  }
  if (h.key_state) {
    json versions = json::array();
    for (const auto& v : h.key_state->versions) {
      versions.push_back({{"version", v.version}, {"state", v.state}, {"createdAt", v.created_at},
                          {"encryptionsUpperBound", v.encryptions}});  // recorded a block ahead of use
    }
    // The versions come from the registry; the status from the KMS itself.
    j["keyManager"] = {{"status", h.key_error.empty() ? "healthy" : "unhealthy"},
                       {"kind", h.key_state->kind},
                       {"keyId", h.key_state->key_id},
                       {"primaryVersion", h.key_state->primary_version},
                       {"versions", versions}};
    if (!h.key_error.empty()) j["keyManager"]["error"] = h.key_error;
  } else {
    j["keyManager"] = {{"status", "unhealthy"}, {"error", h.key_error}};
  }
  return j;
}

// Registry reads (no backend call) are answered on the I/O thread only when
// the registry answers in process (SQLite). A round trip to PostgreSQL there
// would hold every other connection of that thread while it waits: under CPU
// contention (three instances, their load generators and PostgreSQL on two
// cores) a GET waited up to 2.7 s and some timed out.
HandlerCost RegistryReadCost(const ProviderRepository& repo) {
  return repo.ReadsAreLocal() ? HandlerCost::kInline : HandlerCost::kMayBlock;
}

void ProviderRoutes(Router& r, ApiContext api) {
  r.Add("POST", "/admin/providers", [api](const RouteContext& ctx) {
    auto patch = ParseProviderBody(ctx.request.body, BodyKind::kCreate);
    if (!patch.ok()) return JsonError(patch.error());
    auto p = api.providers.Create(*patch, CallerOf(ctx));
    return p.ok() ? JsonSuccess(ProviderToJson(*p), 201) : JsonError(p.error());
  });
  r.Add("GET", "/admin/providers", [api](const RouteContext& ctx) {
    auto limit = IntParam(ctx.request, "limit", 50, 1, 500);
    if (!limit.ok()) return JsonError(limit.error());
    auto offset = IntParam(ctx.request, "offset", 0, 0, INT64_MAX);
    if (!offset.ok()) return JsonError(offset.error());
    auto page = api.providers.List(*offset, *limit);
    if (!page.ok()) return JsonError(page.error());
    json items = json::array();
    for (const auto& p : page->items) items.push_back(ProviderToJson(p));
    return JsonSuccess({{"items", items}, {"total", page->total}, {"limit", *limit}, {"offset", *offset}});
  }, RegistryReadCost(api.repo));
  r.Add("GET", "/admin/providers/{id}", [api](const RouteContext& ctx) {
    auto p = api.providers.Get(ctx.params[0]);
    return p.ok() ? JsonSuccess(ProviderToJson(*p)) : JsonError(p.error());
  }, RegistryReadCost(api.repo));
  r.Add("PUT", "/admin/providers/{id}", [api](const RouteContext& ctx) {
    auto patch = ParseProviderBody(ctx.request.body, BodyKind::kUpdate);
    if (!patch.ok()) return JsonError(patch.error());
    auto p = api.providers.Update(ctx.params[0], *patch, CallerOf(ctx));
    return p.ok() ? JsonSuccess(ProviderToJson(*p)) : JsonError(p.error());
  });
  r.Add("PATCH", "/admin/providers/{id}", [api](const RouteContext& ctx) {
    if (!IsMergePatchMediaType(ctx.request.content_type)) {
      return JsonError(415, "UNSUPPORTED_MEDIA_TYPE",
                       "PATCH takes Content-Type application/merge-patch+json (or application/json), not '" +
                           ctx.request.content_type.substr(0, 64) + "'");
    }
    auto patch = ParseJsonObject(ctx.request.body);
    if (!patch.ok()) return JsonError(patch.error());
    const json& change = *patch;
    const size_t max_body_bytes = api.max_body_bytes;
    auto p = api.providers.Edit(
        ctx.params[0], PatchCredentialNames(change),
        [&change, max_body_bytes](const Provider& row, const CredentialFields& stored, const StoredBytes& bytes) {
          return MergeProviderPatch(row, stored, bytes, change, max_body_bytes);
        },
        CallerOf(ctx));
    return p.ok() ? JsonSuccess(ProviderToJson(*p)) : JsonError(p.error());
  });
  r.Add("DELETE", "/admin/providers/{id}", [api](const RouteContext& ctx) {
    Status s = api.providers.Delete(ctx.params[0], CallerOf(ctx));
    return s.ok() ? JsonSuccess({{"id", ctx.params[0]}, {"deleted", true}}) : JsonError(s.error());
  });
  r.Add("POST", "/admin/providers/{id}/credentials/rotate", [api](const RouteContext& ctx) {
    auto body = ParseRotateBody(ctx.request.body);
    if (!body.ok()) return JsonError(body.error());
    UpstreamProbe probe;
    auto p = api.providers.RotateCredentials(ctx.params[0], body->credentials, CallerOf(ctx),
                                             body->validate ? &probe : nullptr);
    if (p.ok()) return JsonSuccess(ProviderToJson(*p));
    // Validate before promote refused: 422 when the upstream answered (its
    // status in upstreamStatus), 424 when it could not be reached.
    if (probe.attempted && !probe.ok()) return UpstreamRefusal(p.error(), probe);
    return JsonError(p.error());
  });
}

void SecretsRoutes(Router& r, ApiContext api) {
  r.Add("GET", "/admin/secrets/health", [api](const RouteContext&) {
    return JsonSuccess(HealthJson(api.secrets.Health()));
  }, HandlerCost::kInline);  // Health() answers from what it last saw, never waits on a backend
  r.Add("POST", "/admin/secrets/test-connection", [api](const RouteContext& ctx) {
    auto steps = api.secrets.TestConnection(CallerOf(ctx));
    json js = json::array();
    const ProbeStep* failed = nullptr;
    for (const auto& s : steps) {
      json j = {{"step", s.name}, {"ok", s.ok}, {"latencyMs", s.latency_ms}};
      if (!s.ok) {
        j["error"] = s.error;
        if (!failed) failed = &s;
      }
      js.push_back(j);
    }
    if (failed) {
      return JsonError(503, "SERVICE_UNAVAILABLE", "test-connection failed at step " + failed->name + ": " + failed->error);
    }
    return JsonSuccess({{"connected", true}, {"provider", api.secrets.store().Name()}, {"steps", js}});
  });
  r.Add("POST", "/admin/secrets/clear-cache", [api](const RouteContext& ctx) {
    size_t cleared = api.secrets.ClearCache(CallerOf(ctx));
    if (api.warmer) api.warmer->Start();
    return JsonSuccess({{"cleared", cleared}, {"warming", api.warmer != nullptr}});
  });
  r.Add("POST", "/admin/secrets/providers/{id}/credentials/validate", [api](const RouteContext& ctx) {
    auto live = BoolField(ctx.request.body, "live", false);
    if (!live.ok()) return JsonError(live.error());
    auto report = api.providers.Validate(ctx.params[0], CallerOf(ctx), *live);
    if (!report.ok()) return JsonError(report.error());
    json checks = json::array();
    for (const auto& c : report->checks) {
      json j = {{"check", c.name}, {"ok", c.ok}};
      if (!c.message.empty()) j["message"] = c.message;
      checks.push_back(j);
    }
    json data = {{"providerId", ctx.params[0]}, {"valid", report->valid}, {"source", report->source},
                 {"checks", checks}};
    if (!report->fingerprint.empty()) {
      data["credentialsVersion"] = report->credentials_version;
      data["fingerprint"] = report->fingerprint;
    }
    if (!report->lease_ttl_seconds.empty()) data["leaseTtlSeconds"] = report->lease_ttl_seconds;
    if (report->probe.attempted) data["upstreamStatus"] = report->probe.status;  // 0: no answer
    return JsonSuccess(data);
  });
}

json RunJson(const RotationRun& run) {
  json j = {{"id", run.id},
            {"trigger", run.trigger},
            {"status", run.status},
            {"force", run.force},
            {"startedAt", run.started_at},
            {"finishedAt", run.finished_at.empty() ? json(nullptr) : json(run.finished_at)},
            {"fromKeyVersion", run.from_version},
            {"toKeyVersion", run.to_version},
            {"total", run.total},
            {"done", run.done},
            {"reencrypted", run.reencrypted},
            {"skipped", run.skipped},
            {"failed", run.failed},
            {"durationMs", run.duration_ms},
            {"error", run.error.empty() ? json(nullptr) : json(run.error)}};
  return j;
}

// Reads {"force":bool} or {"enabled":bool}; an empty body means `fallback`.
Result<bool> BoolField(const std::string& body, const std::string& field, std::optional<bool> fallback) {
  if (body.empty() && fallback) return *fallback;
  DYAD_ASSIGN_OR_RETURN(json j, ParseJsonObject(body));
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() != field) return MakeError(ErrorCode::kInvalidArgument, "field '" + it.key().substr(0, 64) + "' is unknown");
  }
  if (!j.contains(field)) {
    if (fallback) return *fallback;
    return MakeError(ErrorCode::kInvalidArgument, "field '" + field + "' is required");
  }
  if (!j[field].is_boolean()) return MakeError(ErrorCode::kInvalidArgument, "field '" + field + "' must be true or false");
  return j[field].get<bool>();
}

void RotationRoutes(Router& r, ApiContext api) {
  r.Add("GET", "/admin/secrets/key-rotation/status", [api](const RouteContext&) {
    auto enabled = api.scheduler.Enabled();
    if (!enabled.ok()) return JsonError(enabled.error());
    // The run in progress first, then the history: read the other way round,
    // a run finishing in between would show as running in the history and
    // absent from inProgress.
    auto current = api.rotation.Current();
    auto history = api.rotation.History(20);
    if (!history.ok()) return JsonError(history.error());
    json runs = json::array();
    for (const auto& run : *history) runs.push_back(RunJson(run));
    json progress = nullptr;
    if (current) progress = {{"id", current->id}, {"done", current->done}, {"total", current->total}, {"startedAt", current->started_at}};
    auto next = api.scheduler.NextRun();
    auto keys = api.secrets.keys().Describe();
    return JsonSuccess({{"enabled", *enabled},
                        {"schedule", api.scheduler.Describe()},
                        {"intervalHours", api.scheduler.timing().cron ? json(nullptr)
                                                                      : json(api.scheduler.timing().interval.count())},
                        {"nextRun", next && *enabled ? json(FormatIso8601(*next)) : json(nullptr)},
                        {"inProgress", progress},
                        {"primaryKeyVersion", keys.ok() ? json(keys->primary_version) : json(nullptr)},
                        {"history", runs}});
  });
  r.Add("POST", "/admin/secrets/key-rotation/perform", [api](const RouteContext& ctx) {
    auto force = BoolField(ctx.request.body, "force", false);
    if (!force.ok()) return JsonError(force.error());
    auto run = api.rotation.Start(*force, "manual", CallerOf(ctx));
    if (!run.ok()) return JsonError(run.error());
    // A run left running is resumed instead of the one asked for: say so,
    // with that run's own force, so the operator asks again once it is over.
    return JsonSuccess({{"id", run->id}, {"status", "running"}, {"force", run->force},
                        {"resumed", run->trigger == kResumedTrigger}}, 202);
  });
  r.Add("POST", "/admin/secrets/key-rotation/toggle", [api](const RouteContext& ctx) {
    auto enabled = BoolField(ctx.request.body, "enabled", std::nullopt);
    if (!enabled.ok()) return JsonError(enabled.error());
    Status s = api.scheduler.SetEnabled(*enabled);
    if (!s.ok()) return JsonError(s.error());
    AuditEvent e;
    e.actor = ctx.principal.identity;
    e.request_id = ctx.request.request_id;
    e.action = "key_rotation.toggle";
    e.detail = *enabled ? "enabled" : "disabled";
    api.audit.Record(e);
    auto next = api.scheduler.NextRun();
    return JsonSuccess({{"enabled", *enabled}, {"nextRun", next && *enabled ? json(FormatIso8601(*next)) : json(nullptr)}});
  });
}

void OperationsRoutes(Router& r, ApiContext api) {
  static const std::string kHealthz = R"({"status":"success","data":{"status":"ok"}})";
  r.Add("GET", "/healthz", [](const RouteContext&) {
    HttpResponse resp;
    resp.body = kHealthz;
    return resp;
  }, HandlerCost::kInline);
  r.Add("GET", "/readyz", [api](const RouteContext&) {
    Status db = api.repo.Ping();
    if (!db.ok()) return JsonError(503, "SERVICE_UNAVAILABLE", "registry unreachable: " + db.error().message);
    // Every write is refused while the audit log cannot take it (a failed
    // write, disk space, RLIMIT_FSIZE): not ready. Healthy() waits on no lock.
    if (!api.audit.Healthy()) {
      return JsonError(503, "SERVICE_UNAVAILABLE",
                       "audit log cannot be written (disk space, file-size limit or audit key): writes are refused");
    }
    if (api.warmer && !api.warmer->Ready()) {
      CacheWarmer::Progress p = api.warmer->progress();
      return JsonError(503, "SERVICE_UNAVAILABLE",
                       "the credential cache is being warmed (SECRETS_CACHE_WARM_BLOCKS_READY=true): " +
                           std::to_string(p.loaded + p.failed + p.absent) + " of " + std::to_string(p.total) +
                           " provider(s) done");
    }
    SecretsHealth h = api.secrets.Health();
    if (h.status == "unhealthy") {
      return JsonError(503, "SERVICE_UNAVAILABLE",
                       "secrets backend unhealthy: " + (h.store_error.empty() ? h.key_error : h.store_error));
    }
    return JsonSuccess({{"status", "ready"}, {"secrets", h.status}});
  // Inline even on PostgreSQL (one short round trip): on the blocking pool,
  // a probe would queue behind /admin calls hung on a slow backend and take
  // a healthy instance out of rotation.
  }, HandlerCost::kInline);
  r.Add("GET", "/admin/openapi.json", [](const RouteContext&) {
    HttpResponse resp;
    resp.body = std::string(OpenApiDocument());  // as it is: what OpenAPI tools load
    return resp;
  }, HandlerCost::kInline);
  r.Add("GET", "/metrics", [api](const RouteContext&) {
    HttpResponse resp;
    resp.body = api.metrics.Render();
    resp.content_type = "text/plain; version=0.0.4";
    return resp;
  }, HandlerCost::kInline);
}

}  // namespace

void RegisterRoutes(Router& router, ApiContext api) {
  ProviderRoutes(router, api);
  SecretsRoutes(router, api);
  RotationRoutes(router, api);
  OperationsRoutes(router, api);
}

}  // namespace dyad
