#include "api/v1_routes.h"

#include <nlohmann/json.hpp>

#include "server/envelope.h"

namespace dyad {
namespace {

// The client's side of a streamed answer.
class WriterOutput final : public ProxyOutput {
 public:
  explicit WriterOutput(ResponseWriter* writer) : writer_(writer) {}
  bool Begin(int status, std::string_view content_type, const HttpHeaders& headers) override {
    return writer_ && writer_->Begin(status, content_type, headers);
  }
  bool Write(std::string_view piece) override { return writer_ && writer_->Write(piece); }
  void Hold() override {
    if (writer_) writer_->Hold();
  }
  bool Flush(bool last) override { return writer_ && writer_->Flush(last); }
  int HangUpFd() const override { return writer_ ? writer_->HangUpFd() : -1; }

 private:
  ResponseWriter* writer_;
};

const std::vector<std::string>* Providers(const Principal& p) {
  return p.scope && p.scope->providers ? &*p.scope->providers : nullptr;
}
const std::vector<std::string>* Models(const Principal& p) {
  return p.scope && p.scope->models ? &*p.scope->models : nullptr;
}

ProxyRequest MakeProxyRequest(const HttpRequest& req, const Principal& principal, std::string_view endpoint) {
  ProxyRequest pr;
  pr.endpoint = endpoint;
  pr.body = req.body;
  pr.query = req.query;
  pr.headers = &req.headers;
  pr.allowed_providers = Providers(principal);
  pr.allowed_models = Models(principal);
  pr.caller = Caller{principal.identity, req.request_id};
  return pr;
}

HttpResponse Answer(Result<ProxyAnswer> answer, ResponseWriter* writer) {
  if (!answer.ok()) return V1ErrorResponse(answer.error());
  HttpResponse r;
  r.status = answer->status;
  if (answer->streamed) {  // already sent; the status is for the access log
    if (answer->cut_short && writer) writer->Abort();
    return r;
  }
  if (!answer->content_type.empty()) r.content_type = std::move(answer->content_type);
  r.headers = std::move(answer->headers);
  r.body = std::move(answer->body);
  return r;
}

// A /v1 call answered on the I/O threads (HttpRequest::may_defer): the
// proxy's Prepare made it ready, the server drives its exchange, Finish
// answers. Without a prepared call (ProxyService::Prepare said to Forward
// it), and after a held 401, the server runs RunOnPool: Forward, on the
// upstream pool. Holds the client's concurrency slot to the end.
class V1Deferred final : public DeferredAnswer, public std::enable_shared_from_this<V1Deferred> {
 public:
  V1Deferred(ProxyService& proxy, const RouteContext& ctx, std::string_view endpoint,
             std::optional<ConcurrencyLimit::Slot> slot)
      : proxy_(proxy),
        principal_(ctx.principal),
        endpoint_(endpoint),
        slot_(std::move(slot)),
        request_(&ctx.request),
        output_(ctx.request.writer) {}

  // Prepare's error, or this (a prepared call or none).
  Result<std::shared_ptr<DeferredAnswer>> Prepare() {
    auto call = proxy_.Prepare(MakeProxyRequest(*request_, principal_, endpoint_), output_);
    if (!call.ok()) return call.error();
    call_ = std::move(call).value();
    return std::shared_ptr<DeferredAnswer>(shared_from_this());
  }

  const UpstreamRequest* upstream() const override { return call_ ? &call_->request() : nullptr; }
  UpstreamSink& sink() override { return call_->sink(); }
  HttpResponse Finish(const Status& sent) override {
    if (call_->retry()) {  // a 401 held back: read the credential again, on the pool
      held_ = call_->held();
      call_.reset();
      HttpResponse again;
      again.deferred = shared_from_this();
      return again;
    }
    return Answer(proxy_.Finish(*call_, sent), request_->writer);
  }
  HttpResponse RunOnPool(const HttpRequest& request) override {
    call_.reset();
    ProxyRequest pr = MakeProxyRequest(request, principal_, endpoint_);
    pr.after_401 = held_;
    WriterOutput out(request.writer);
    return Answer(proxy_.Forward(pr, out), request.writer);
  }

 private:
  ProxyService& proxy_;
  const Principal principal_;
  const std::string_view endpoint_;  // a literal of RegisterV1Routes
  std::optional<ConcurrencyLimit::Slot> slot_;
  const HttpRequest* request_;  // the same object until Finish (DeferredAnswer)
  WriterOutput output_;         // its writer, the server's, until Finish
  std::unique_ptr<ProxyCall> call_;
  // Set when a 401 was held back: what its retry on the pool keeps.
  std::optional<ProxyRequest::HeldAttempt> held_;
};

HttpResponse Forward(ProxyService& proxy, const RouteContext& ctx, std::string_view endpoint,
                     std::optional<ConcurrencyLimit::Slot> slot) {
  const HttpRequest& req = ctx.request;
  if (req.may_defer) {
    auto deferred = std::make_shared<V1Deferred>(proxy, ctx, endpoint, std::move(slot))->Prepare();
    if (!deferred.ok()) return V1ErrorResponse(deferred.error());
    HttpResponse r;
    r.deferred = std::move(deferred).value();
    return r;
  }
  WriterOutput out(req.writer);
  return Answer(proxy.Forward(MakeProxyRequest(req, ctx.principal, endpoint), out), req.writer);
}

}  // namespace

HttpResponse V1ErrorResponse(const Error& error) {
  const std::string& m = error.message;
  std::string_view param = m.rfind("model", 0) == 0 ? "model" : "";
  switch (error.code) {
    case ErrorCode::kInvalidArgument: return OpenAiError(400, "invalid_request_error", m, "invalid_request", param);
    case ErrorCode::kNotFound: return OpenAiError(404, "invalid_request_error", m, "model_not_found", "model");
    case ErrorCode::kPermissionDenied: return OpenAiError(403, "permission_error", m, "forbidden", param);
    case ErrorCode::kUnimplemented: return OpenAiError(501, "invalid_request_error", m, "not_implemented", "model");
    case ErrorCode::kUnavailable: return OpenAiError(502, "api_error", m, "upstream_unavailable");
    case ErrorCode::kDeadlineExceeded: return OpenAiError(504, "api_error", m, "upstream_timeout");
    case ErrorCode::kFailedPrecondition: return OpenAiError(503, "api_error", m, "provider_unavailable");
    case ErrorCode::kCancelled: return OpenAiError(499, "api_error", m, "client_closed_request");
    default: return OpenAiError(500, "server_error", m, "internal_error");
  }
}

HttpResponse V1BusyResponse(const ConcurrencyLimits& limits, ConcurrencyLimit::Refusal why) {
  std::string message =
      why == ConcurrencyLimit::Refusal::kPerClient
          ? "this client already has " + std::to_string(limits.per_client) +
                " /v1 requests in progress (GATEWAY_V1_MAX_CONCURRENT_PER_CLIENT); retry when one has ended"
          : "the gateway already has " + std::to_string(limits.total) +
                " /v1 requests in progress (GATEWAY_V1_MAX_CONCURRENT); retry shortly";
  HttpResponse r = OpenAiError(429, "requests", message, "rate_limit_exceeded");
  r.headers.emplace_back("Retry-After", "1");
  return r;
}

void RegisterV1Routes(Router& r, ProxyService& proxy, ConcurrencyLimit* limit) {
  ProxyService* p = &proxy;
  r.Add("GET", "/v1/models", [p, limit](const RouteContext& ctx) {
    // No upstream call, but a registry read when the catalog is due: under
    // the same cap, so a flood of these cannot take the threads /admin needs.
    ConcurrencyLimit::Refusal why = ConcurrencyLimit::Refusal::kNone;
    std::optional<ConcurrencyLimit::Slot> slot =
        limit ? limit->TryAcquire(ctx.principal.identity, &why) : std::nullopt;
    if (limit && !slot) return V1BusyResponse(limit->limits(), why);
    auto models = p->Models(Providers(ctx.principal), Models(ctx.principal));
    if (!models.ok()) return V1ErrorResponse(models.error());
    nlohmann::json data = nlohmann::json::array();
    for (const auto& m : *models) {
      data.push_back({{"id", m.id}, {"object", "model"}, {"created", m.created}, {"owned_by", m.owned_by}});
    }
    HttpResponse resp;
    resp.body = nlohmann::json{{"object", "list"}, {"data", std::move(data)}}.dump(
        -1, ' ', false, nlohmann::json::error_handler_t::replace);
    return resp;
  });
  // OpenAI's retrieve-model; an id with one '/' ("meta/llama") is two
  // segments (the router refuses an escaped '/').
  auto retrieve = [p, limit](const RouteContext& ctx, const std::string& id) {
    ConcurrencyLimit::Refusal why = ConcurrencyLimit::Refusal::kNone;
    std::optional<ConcurrencyLimit::Slot> slot =
        limit ? limit->TryAcquire(ctx.principal.identity, &why) : std::nullopt;
    if (limit && !slot) return V1BusyResponse(limit->limits(), why);
    auto m = p->Model(id, Providers(ctx.principal), Models(ctx.principal));
    if (!m.ok()) return V1ErrorResponse(m.error());
    HttpResponse resp;
    resp.body = nlohmann::json{{"id", m->id}, {"object", "model"}, {"created", m->created}, {"owned_by", m->owned_by}}
                    .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return resp;
  };
  r.Add("GET", "/v1/models/{model}", [retrieve](const RouteContext& ctx) { return retrieve(ctx, ctx.params[0]); });
  r.Add("GET", "/v1/models/{owner}/{model}",
        [retrieve](const RouteContext& ctx) { return retrieve(ctx, ctx.params[0] + "/" + ctx.params[1]); });
  for (std::string_view endpoint : {"chat/completions", "completions", "embeddings"}) {
    r.Add("POST", "/v1/" + std::string(endpoint), [p, endpoint, limit](const RouteContext& ctx) {
      if (!limit) return Forward(*p, ctx, endpoint, std::nullopt);
      ConcurrencyLimit::Refusal why = ConcurrencyLimit::Refusal::kNone;
      auto slot = limit->TryAcquire(ctx.principal.identity, &why);
      if (!slot) return V1BusyResponse(limit->limits(), why);
      return Forward(*p, ctx, endpoint, std::move(slot));
    });
  }
}

}  // namespace dyad
