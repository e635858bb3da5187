#include "server/router.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <exception>
#include <typeinfo>

#include "core/encoding.h"
#include "server/envelope.h"

namespace dyad {
namespace {

constexpr size_t kMaxDenialSources = 10000;
constexpr auto kDenialInterval = std::chrono::seconds(1);

bool IsUnreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
         c == '_' || c == '~';
}

// RFC 3986 pchar without pct-encoded: unreserved, sub-delims, ':' and '@'.
bool IsPlainPathChar(unsigned char c) {
  return IsUnreserved(c) || c == '!' || c == '$' || c == '&' || c == '\'' || c == '(' || c == ')' || c == '*' ||
         c == '+' || c == ',' || c == ';' || c == '=' || c == ':' || c == '@';
}

int HexValue(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

Error NotCanonical(std::string_view what) {
  return MakeError(ErrorCode::kInvalidArgument, "the request target is not in canonical form: " + std::string(what));
}

// One segment, decoded, or why it is not canonical.
Result<std::string> DecodeSegment(std::string_view seg) {
  if (seg.empty()) return NotCanonical("it has an empty segment ('//' or a trailing '/')");
  if (seg == "." || seg == "..") return NotCanonical("it has a '.' or '..' segment");
  // Most segments are plain: taken whole (every /v1 and admin call parses
  // its path twice, to pick a thread and then to route).
  if (std::all_of(seg.begin(), seg.end(), [](char c) { return IsPlainPathChar(static_cast<unsigned char>(c)); })) {
    return std::string(seg);
  }
  std::string out;
  out.reserve(seg.size());
  for (size_t i = 0; i < seg.size(); ++i) {
    auto c = static_cast<unsigned char>(seg[i]);
    if (c == '%') {
      int hi = i + 2 < seg.size() ? HexValue(static_cast<unsigned char>(seg[i + 1])) : -1;
      int lo = hi < 0 ? -1 : HexValue(static_cast<unsigned char>(seg[i + 2]));
      if (lo < 0) return NotCanonical("it has a '%' that is not followed by two hex digits");
      auto d = static_cast<unsigned char>(hi * 16 + lo);
      if (IsUnreserved(d)) return NotCanonical("it escapes a character that needs no escape (letters, digits, -._~)");
      if (d == '/' || d == '\\') return NotCanonical("it has an escaped '/' or '\\'");
      if (d < 0x20 || d == 0x7f) return NotCanonical("it has an escaped control character");
      out.push_back(static_cast<char>(d));
      i += 2;
      continue;
    }
    if (c == '\\') return NotCanonical("it has a backslash");
    if (!IsPlainPathChar(c)) return NotCanonical("it has a character outside RFC 3986 path characters");
    out.push_back(static_cast<char>(c));
  }
  return out;
}

bool IsReadOnly(std::string_view method) { return method == "GET" || method == "HEAD"; }

// Whether a route added for `route_method` answers `method`: HEAD runs the
// GET route (RFC 9110 §9.3.2); the server sends its head without the body.
bool Answers(std::string_view route_method, std::string_view method) {
  return route_method == method || (method == "HEAD" && route_method == "GET");
}

}  // namespace

Result<std::vector<std::string>> ParseCanonicalPath(std::string_view path) {
  if (path.empty() || path.front() != '/') {
    return NotCanonical("it must be an absolute path starting with '/' (no absolute-form URL, no '*')");
  }
  std::vector<std::string> out;
  if (path.size() == 1) return out;
  out.reserve(static_cast<size_t>(std::count(path.begin(), path.end(), '/')));
  size_t start = 1;
  while (true) {
    size_t slash = path.find('/', start);
    std::string_view seg = path.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    DYAD_ASSIGN_OR_RETURN(std::string decoded, DecodeSegment(seg));
    out.push_back(std::move(decoded));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return out;
}

void Router::Add(std::string method, const std::string& pattern, Handler handler, HandlerCost cost) {
  Route r{std::move(method), pattern, {}, std::move(handler), cost};
  std::string_view rest = pattern;
  while (rest.size() > 1 && rest.front() == '/') {  // literal segments and {params}, as written
    rest.remove_prefix(1);
    size_t slash = rest.find('/');
    r.segments.emplace_back(rest.substr(0, slash));
    rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
  }
  routes_.push_back(std::move(r));
}

std::vector<Router::RouteKey> Router::Routes() const {
  std::vector<RouteKey> out;
  for (const auto& r : routes_) out.push_back({r.method, r.pattern});
  return out;
}

bool Router::Match(const Route& route, const std::vector<std::string>& path, std::vector<std::string>* params) {
  if (route.segments.size() != path.size()) return false;
  for (size_t i = 0; i < path.size(); ++i) {
    const std::string& seg = route.segments[i];
    bool is_param = seg.size() > 2 && seg.front() == '{' && seg.back() == '}';
    if (!is_param && seg != path[i]) return false;
    if (is_param && params) params->push_back(path[i]);
  }
  return true;
}

bool Router::MayBlock(const HttpRequest& request, std::optional<Principal>* caller) const {
  Decision d = Decide(request);
  // A denial is audited (a file written, on SQLite a commit) wherever the
  // route would have run; an inline route's too.
  if (d.audit != 0) return true;
  if (!d.route) return false;
  if (caller && d.authenticated) *caller = std::move(d.principal);
  return d.route->cost == HandlerCost::kMayBlock;
}

HttpResponse Router::Handle(const HttpRequest& request, Principal& principal, std::string_view* route) const {
  if (route) *route = {};
  try {
    return Dispatch(request, principal, route);
  } catch (const std::exception& e) {
    // The type only: an exception's text may quote the input.
    spdlog::error("request {} {}: unhandled exception of type {}", request.method, request.request_id,
                  typeid(e).name());
  } catch (...) {
    spdlog::error("request {} {}: unhandled exception", request.method, request.request_id);
  }
  return ErrorFor(request.path, 500, "INTERNAL_ERROR", "internal error; request id " + request.request_id);
}

Router::Decision Router::Decide(const HttpRequest& request) const {
  Decision d;
  auto parsed = ParseCanonicalPath(request.path);
  if (!parsed.ok()) {
    d.refused = Refused::kNotCanonical;
    d.detail = parsed.error().message;
    return d;
  }
  d.path = std::move(parsed).value();
  const std::vector<std::string>& path = d.path;
  auto deny = [&](Refused why, int status, const Principal& who) {
    d.refused = why;
    d.audit = status;
    d.audited = who;
    return std::move(d);
  };
  // Decided on the same parse the routes are matched against: "admin" and
  // "v1" are exact segments, so no spelling of either escapes its realm
  // (a different one is not canonical, or is no route).
  const bool admin = !path.empty() && path.front() == "admin";
  d.v1 = !path.empty() && path.front() == "v1";
  // The caller the server's classifier found (MayBlock, or App's own for
  // a /v1 POST) from this request's own credentials, which nothing changes
  // between there and here (the request is classified once, after it is
  // parsed), is taken in the realm its role belongs to, and only there.
  const auto noted = [&](bool client) {
    return request.caller && (request.caller->role == Role::kClient) == client ? request.caller : std::nullopt;
  };
  if (admin) {
    auto who = noted(false);
    if (!who && auth_) who = auth_->Authenticate(request.authorization, request.client_cert_subject);
    if (!who) {
      auto client = auth_ ? auth_->AuthenticateClient(request.authorization, request.client_cert_subject)
                          : std::nullopt;
      if (client) return deny(Refused::kClientUnderAdmin, 403, *client);
      return deny(Refused::kUnauthenticated, 401, d.principal);
    }
    d.principal = *who;
    d.authenticated = true;
  } else if (d.v1) {
    auto who = noted(true);
    if (!who && auth_) who = auth_->AuthenticateClient(request.authorization, request.client_cert_subject);
    if (!who) {
      auto other = auth_ ? auth_->Authenticate(request.authorization, request.client_cert_subject) : std::nullopt;
      if (other) return deny(Refused::kNotClient, 403, *other);
      return deny(Refused::kUnauthenticated, 401, d.principal);
    }
    d.principal = *who;
    d.authenticated = true;
  }
  // A caller identified by its client certificate alone may be a browser
  // that holds the certificate, made to send a cross-site form: a POST no
  // preflight stops. Its body must then be declared JSON, which no form can
  // send (and a cross-site JSON POST needs a preflight, never answered here).
  if ((admin || d.v1) && request.method == "POST" && request.authorization.empty() &&
      !request.client_cert_subject.empty() && !MediaTypeIs(request.content_type, "application/json")) {
    return deny(Refused::kNotJson, 415, d.principal);
  }
  for (const auto& route : routes_) {
    if (!Match(route, path, nullptr)) continue;
    if (!Answers(route.method, request.method)) {
      d.detail += (d.detail.empty() ? "" : ", ") + route.method + (route.method == "GET" ? ", HEAD" : "");
      continue;
    }
    if (admin && !IsReadOnly(request.method) && d.principal.role != Role::kAdmin) {
      return deny(Refused::kViewer, 403, d.principal);
    }
    d.route = &route;
    d.detail.clear();
    return d;
  }
  d.refused = d.detail.empty() ? Refused::kNoRoute : Refused::kMethod;
  return d;
}

HttpResponse Router::Refusal(const HttpRequest& request, const Decision& d) {
  const bool v1 = d.v1;
  const Principal& who = d.audited;
  switch (d.refused) {
    case Refused::kNone:
      break;
    case Refused::kNotCanonical:
      return ErrorFor(request.path, 400, "BAD_REQUEST", d.detail);
    case Refused::kClientUnderAdmin:
      return JsonError(403, "FORBIDDEN",
                       "identity '" + who.identity + "' has the client role, which may call /v1 only, nothing under /admin");
    case Refused::kNotClient:
      return OpenAiError(403, "permission_error",
                         "identity '" + who.identity + "' has the " + (who.role == Role::kAdmin ? "admin" : "viewer") +
                             " role; /v1 takes a client token (role \"client\")",
                         "forbidden");
    case Refused::kUnauthenticated: {
      HttpResponse r = v1 ? OpenAiError(401, "invalid_request_error",
                                        request.authorization.empty() ? "missing Authorization: Bearer <client token>"
                                                                      : "invalid client token",
                                        "invalid_api_key")
                          : JsonError(401, "UNAUTHORIZED",
                                      !request.authorization.empty()        ? "invalid bearer token"
                                      : request.client_cert_subject.empty() ? "missing Authorization: Bearer <token>"
                                                                            : "missing Authorization: Bearer <token>; the "
                                                                              "client certificate names no identity");
      r.headers.emplace_back("WWW-Authenticate", "Bearer");
      return r;
    }
    case Refused::kNotJson: {
      const std::string m = "a POST authenticated by client certificate alone must send Content-Type: application/json";
      return v1 ? OpenAiError(415, "invalid_request_error", m, "unsupported_media_type")
                : JsonError(415, "UNSUPPORTED_MEDIA_TYPE", m);
    }
    case Refused::kViewer:
      return JsonError(403, "FORBIDDEN", "identity '" + who.identity + "' has the viewer role; this route needs admin");
    case Refused::kMethod: {
      const std::string m = "method " + request.method + " is not allowed here; allowed: " + d.detail;
      HttpResponse r = v1 ? OpenAiError(405, "invalid_request_error", m, "method_not_allowed")
                          : JsonError(405, "METHOD_NOT_ALLOWED", m);
      r.headers.emplace_back("Allow", d.detail);
      return r;
    }
    case Refused::kNoRoute: {
      const std::string m = "no route for " + request.method + " " + request.path;
      return v1 ? OpenAiError(404, "invalid_request_error", m, "not_found") : JsonError(404, "NOT_FOUND", m);
    }
  }
  return ErrorFor(request.path, 500, "INTERNAL_ERROR", "internal error; request id " + request.request_id);
}

HttpResponse Router::Dispatch(const HttpRequest& request, Principal& principal, std::string_view* matched) const {
  Decision d = Decide(request);
  principal = std::move(d.principal);
  if (d.audit != 0) AuditDenial(request, d.audited, d.audit);
  if (d.refused != Refused::kNone) return Refusal(request, d);
  // The server left the body unread because RefusesHead said the head was
  // refused; a handler must not take a request without its body for whole.
  if (request.body_unread) {
    return ErrorFor(request.path, 503, "UNAVAILABLE", "the request was refused before its body was read; send it again");
  }
  RouteContext ctx{request, {}, principal};
  Match(*d.route, d.path, &ctx.params);
  if (matched) *matched = d.route->pattern;
  return d.route->handler(ctx);
}

bool Router::RefusesHead(const HttpRequest& head) const { return Decide(head).refused != Refused::kNone; }

void Router::AuditDenial(const HttpRequest& request, const Principal& who, int status) const {
  if (!audit_ || !clock_) return;
  uint64_t suppressed = 0;
  {
    MutexLock lock(&denial_mu_);
    auto now = clock_->Now();
    // One bucket per address and status: a 401 storm must not hide a 403
    // (an authenticated principal trying what its role does not allow).
    auto [it, fresh] = denials_.try_emplace(std::to_string(status) + " " + request.peer);
    if (!fresh && now - it->second.last < kDenialInterval) {
      ++it->second.suppressed;
      return;
    }
    suppressed = it->second.suppressed;
    it->second = DenialSource{now, 0};
    if (denials_.size() > kMaxDenialSources) {  // forget quiet sources (and what they had left out)
      std::erase_if(denials_, [&](const auto& kv) { return now - kv.second.last >= kDenialInterval; });
    }
  }
  AuditEvent e;
  e.actor = who.identity;
  e.action = status == 401 ? "auth.unauthenticated" : "auth.forbidden";
  e.resource = request.method.substr(0, 16) + " " + request.path.substr(0, 256);
  e.outcome = "denied";
  e.error_code = status == 401 ? "UNAUTHORIZED" : status == 415 ? "UNSUPPORTED_MEDIA_TYPE" : "FORBIDDEN";
  e.request_id = request.request_id;
  e.detail = "from " + (request.peer.empty() ? std::string("unknown") : request.peer);
  if (suppressed > 0) {
    e.detail += "; " + std::to_string(suppressed) + " denial(s) of this kind from this address since the last such line not logged";
  }
  audit_->Record(e);
}

}  // namespace dyad
