#include "server/router.h"

#include "server/envelope.h"

namespace dyad {
namespace {

std::vector<std::string_view> SplitPath(std::string_view path) {
  std::vector<std::string_view> out;
  size_t start = 1;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    if (slash > start) out.push_back(path.substr(start, slash - start));
    start = slash + 1;
  }
  return out;
}

bool IsMutating(std::string_view method) { return method != "GET" && method != "HEAD"; }

}  // namespace

void Router::Add(std::string method, const std::string& pattern, Handler handler) {
  Route r{std::move(method), {}, std::move(handler)};
  for (auto seg : SplitPath(pattern)) r.segments.emplace_back(seg);
  routes_.push_back(std::move(r));
}

bool Router::Match(const Route& route, const std::vector<std::string_view>& path,
                   std::vector<std::string>* params) {
  if (route.segments.size() != path.size()) return false;
  for (size_t i = 0; i < path.size(); ++i) {
    const std::string& seg = route.segments[i];
    bool is_param = seg.size() > 2 && seg.front() == '{' && seg.back() == '}';
    if (!is_param && seg != path[i]) return false;
    if (is_param && params) params->emplace_back(path[i]);
  }
  return true;
}

HttpResponse Router::Handle(const HttpRequest& request, Principal& principal) const {
  principal = Principal{"anonymous", Role::kViewer};
  if (request.path.empty() || request.path.front() != '/') {
    return JsonError(400, "BAD_REQUEST", "the request target must be an absolute path");
  }
  bool admin = request.path == "/admin" || request.path.rfind("/admin/", 0) == 0;
  if (admin) {
    auto who = auth_ ? auth_->Authenticate(request.authorization) : std::nullopt;
    if (!who) {
      HttpResponse r = JsonError(401, "UNAUTHORIZED",
                                 request.authorization.empty() ? "missing Authorization: Bearer <token>"
                                                               : "invalid bearer token");
      r.headers.emplace_back("WWW-Authenticate", "Bearer");
      return r;
    }
    principal = *who;
  }
  auto path = SplitPath(request.path);
  std::string allow;
  for (const auto& route : routes_) {
    if (!Match(route, path, nullptr)) continue;
    if (route.method != request.method) {
      allow += (allow.empty() ? "" : ", ") + route.method;
      continue;
    }
    if (admin && IsMutating(request.method) && principal.role != Role::kAdmin) {
      return JsonError(403, "FORBIDDEN", "identity '" + principal.identity + "' has the viewer role; "
                                         "this route needs admin");
    }
    RouteContext ctx{request, {}, principal};
    Match(route, path, &ctx.params);
    return route.handler(ctx);
  }
  if (!allow.empty()) {
    HttpResponse r = JsonError(405, "METHOD_NOT_ALLOWED",
                               "method " + request.method + " is not allowed here; allowed: " + allow);
    r.headers.emplace_back("Allow", allow);
    return r;
  }
  return JsonError(404, "NOT_FOUND", "no route for " + request.method + " " + request.path);
}

}  // namespace dyad
