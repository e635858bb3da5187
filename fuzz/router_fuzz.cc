// libFuzzer: the router's auth invariant (issue 9, item 1). Whatever the
// bytes of the method, the target and the Authorization header, no admin
// handler runs unless the header holds an admin token (or a viewer token on a
// GET), or a client certificate the tokens name (a POST on the certificate
// alone only with a JSON body), and none runs on a target that is not in
// canonical form; the server's early refusal (RefusesHead) agrees with
// Handle, every audited denial runs off the I/O threads (MayBlock), and the
// caller MayBlock notes for Handle changes nothing it answers (one planted
// from the other realm is not taken). A /v1 handler runs only for a client
// token or certificate.
//
// Input: method '\n' target '\n' authorization '\n' content type '\n'
// client certificate subject (missing parts are empty).
// The routes mirror src/api/routes.cc, plus catch-all parameter patterns.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/encoding.h"
#include "server/envelope.h"
#include "server/router.h"

namespace {

constexpr std::string_view kAdminToken = "admin-token-0123456789";
constexpr std::string_view kViewerToken = "viewer-token-0123456789";
constexpr std::string_view kClientToken = "client-token-0123456789";

const dyad::TokenAuthenticator* auth = nullptr;

[[noreturn]] void Violation(const char* what) {
  fprintf(stderr, "invariant violated: %s\n", what);
  abort();
}

bool IsAdminPath(std::string_view p) { return p == "/admin" || p.rfind("/admin/", 0) == 0; }

dyad::HttpResponse CheckAdmin(const dyad::RouteContext& ctx) {
  const dyad::HttpRequest& r = ctx.request;
  auto who = auth->Authenticate(r.authorization, r.client_cert_subject);
  if (!who) Violation("an admin handler ran without a valid token");
  if (who->role != dyad::Role::kAdmin && r.method != "GET" && r.method != "HEAD") {
    Violation("an admin handler ran for a viewer on a method other than GET");
  }
  if (ctx.principal.identity != who->identity) Violation("the handler saw another principal");
  if (r.method == "POST" && r.authorization.empty() && !dyad::MediaTypeIs(r.content_type, "application/json")) {
    Violation("a POST on a client certificate alone ran without a JSON body");
  }
  std::string_view p = r.path;
  if (p.rfind("/admin/", 0) != 0) Violation("an admin handler ran on a path not under /admin/");
  if (p.find("//") != p.npos || p.find("/./") != p.npos || p.find("/../") != p.npos || p.back() == '/' ||
      p.find('\\') != p.npos) {
    Violation("a handler ran on a non-canonical path");
  }
  return dyad::JsonSuccess(true);
}

dyad::HttpResponse CheckClient(const dyad::RouteContext& ctx) {
  const dyad::HttpRequest& r = ctx.request;
  auto who = auth->AuthenticateClient(r.authorization, r.client_cert_subject);
  if (!who) Violation("a /v1 handler ran without a client token");
  if (ctx.principal.identity != who->identity || ctx.principal.role != dyad::Role::kClient) {
    Violation("a /v1 handler saw another principal");
  }
  if (r.path.rfind("/v1/", 0) != 0) Violation("a /v1 handler ran on a path not under /v1/");
  return dyad::JsonSuccess(true);
}

dyad::Router& TheRouter() {
  static std::unique_ptr<dyad::TokenAuthenticator> a = [] {
    std::string tokens = R"({"tokens":[{"name":"v","role":"viewer","sha256":")" +
                         dyad::HexEncode(dyad::Sha256(kViewerToken)) +
                         R"("},{"name":"cv","role":"viewer","clientCertSubject":"CN=viewer"},)"
                         R"({"name":"ca","role":"admin","clientCertSubject":"CN=admin"}]})";
    std::string clients = R"({"tokens":[{"name":"app","role":"client","sha256":")" +
                          dyad::HexEncode(dyad::Sha256(kClientToken)) +
                          R"("},{"name":"cc","role":"client","clientCertSubject":"CN=client"}]})";
    return std::move(
               dyad::TokenAuthenticator::FromTokensJson(dyad::SecretBytes(std::string(kAdminToken)), tokens, true, clients))
        .value();
  }();
  static std::unique_ptr<dyad::Router> router = [] {
    auth = a.get();
    auto r = std::make_unique<dyad::Router>(a.get());
    const char* admin[][2] = {
        {"POST", "/admin/providers"}, {"GET", "/admin/providers"}, {"GET", "/admin/providers/{id}"},
        {"PUT", "/admin/providers/{id}"}, {"DELETE", "/admin/providers/{id}"},
        {"POST", "/admin/providers/{id}/credentials/rotate"}, {"GET", "/admin/secrets/health"},
        {"POST", "/admin/secrets/test-connection"}, {"POST", "/admin/secrets/clear-cache"},
        {"POST", "/admin/secrets/providers/{id}/credentials/validate"},
        {"GET", "/admin/secrets/key-rotation/status"}, {"POST", "/admin/secrets/key-rotation/perform"},
        {"POST", "/admin/secrets/key-rotation/toggle"}, {"GET", "/admin/{a}"}, {"POST", "/admin/{a}/{b}"},
        {"PATCH", "/admin/{a}/{b}/{c}"}, {"HEAD", "/admin/providers/{id}"}};
    for (auto& [method, pattern] : admin) r->Add(method, pattern, CheckAdmin);
    const char* v1[][2] = {{"GET", "/v1/models"}, {"POST", "/v1/chat/completions"}, {"POST", "/v1/{a}"}};
    for (auto& [method, pattern] : v1) r->Add(method, pattern, CheckClient);
    for (const char* pattern : {"/healthz", "/readyz", "/metrics", "/{x}", "/{x}/{y}"}) {
      r->Add("GET", pattern, [](const dyad::RouteContext& ctx) {
        if (IsAdminPath(ctx.request.path) &&
            !auth->Authenticate(ctx.request.authorization, ctx.request.client_cert_subject)) {
          Violation("a handler ran on an admin path without a valid token");
        }
        return dyad::JsonSuccess(true);
      });
    }
    return r;
  }();
  return *router;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::string_view parts[5];
  for (auto& part : parts) {
    auto nl = in.find('\n');
    part = in.substr(0, nl);
    in = nl == in.npos ? std::string_view() : in.substr(nl + 1);
  }
  dyad::HttpRequest request;
  request.method = std::string(parts[0]);
  dyad::SetTarget(request, parts[1]);
  request.authorization = std::string(parts[2]);
  request.content_type = std::string(parts[3]);
  request.client_cert_subject = std::string(parts[4]);
  request.request_id = "fuzz";
  dyad::Principal who;
  dyad::HttpResponse response = TheRouter().Handle(request, who);
  if (response.status < 300 && IsAdminPath(request.path) &&
      !auth->Authenticate(request.authorization, request.client_cert_subject)) {
    Violation("a 200 on an admin path without a valid token");
  }
  const bool audited = response.status == 401 || response.status == 403 || response.status == 415;
  if (audited && !TheRouter().MayBlock(request)) Violation("a denial would be audited on an I/O thread");
  // The caller the classifier notes changes nothing Handle answers; one
  // noted in the other realm (a planted one) is not taken.
  std::optional<dyad::Principal> caller;
  TheRouter().MayBlock(request, &caller);
  if (caller && response.status >= 400) Violation("MayBlock noted the caller of a refused request");
  auto same_answer = [&](const char* what) {
    dyad::Principal again;
    const dyad::HttpResponse r = TheRouter().Handle(request, again);
    if (r.status != response.status || r.body != response.body || r.headers != response.headers ||
        again.identity != who.identity || again.role != who.role) {
      Violation(what);
    }
  };
  request.caller = caller;
  same_answer("the noted caller changed Handle's answer");
  const bool v1 = request.path == "/v1" || request.path.rfind("/v1/", 0) == 0;  // the realm: its first segment
  request.caller = dyad::Principal{"planted", v1 ? dyad::Role::kAdmin : dyad::Role::kClient, nullptr};
  same_answer("a caller noted in the other realm was taken");
  // The server's question before it reads a body: refused from the head
  // alone exactly when no handler runs (every handler here answers 200).
  if (TheRouter().RefusesHead(request) != (response.status >= 400)) Violation("RefusesHead disagrees with Handle");
  // A request whose body was left unread never reaches a handler.
  request.body_unread = true;
  if (TheRouter().Handle(request, who).status < 300) Violation("a handler ran on a request with its body unread");
  return 0;
}
