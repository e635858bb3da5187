// Router: maps method + path to a handler, with the admin auth rules.
//
// The path is parsed once, by ParseCanonicalPath, and that parse is what both
// authorization and routing see. A target not in canonical form (empty
// segments as in "//" or a trailing "/", "." and "..", escapes of unreserved
// characters or of '/', '\\' or other characters outside RFC 3986 pchar,
// absolute-form "http://host/…", "*") is 400 before any auth decision or
// handler. Patterns are literal segments and "{name}" parameters. A path whose
// first segment is "v1" needs a client token (role client; 401 without one,
// 403 for an admin or viewer token), and answers its own errors in OpenAI's
// shape (envelope.h); a client token under /admin is 403. Every path
// whose first segment is "admin" needs a bearer token (401 otherwise, before
// any route is looked up, so unknown admin paths reveal nothing); a viewer may
// only GET (403). An unknown path is 404; a known path with another method is
// 405 with Allow. HEAD runs a path's GET route (RFC 9110 §9.3.2), under the
// same auth rules; the server sends the answer's head, its Content-Length that
// of the body, which it drops. 401 and 403 answers go to the AuditSink, if one is given, at
// most one line per source address per second (the next line counts those
// left out). A handler that throws becomes a 500 naming the request id.
// Routes are added before serving; Handle() and MayBlock() are then
// thread-safe.
#pragma once

#include <compare>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "audit/audit_sink.h"
#include "core/clock.h"
#include "core/mutex.h"
#include "server/auth.h"
#include "server/http_types.h"

namespace dyad {

struct RouteContext {
  const HttpRequest& request;
  std::vector<std::string> params;  // path parameters in pattern order, decoded
  Principal principal;              // identity "anonymous" on public routes
};

using Handler = std::function<HttpResponse(const RouteContext&)>;

// Whether a handler may wait on a backend (a cloud call, a lock held across
// one). The server runs those off its I/O threads.
enum class HandlerCost { kMayBlock, kInline };

// The decoded segments of a path in canonical form, or kInvalidArgument
// saying what is not canonical. "/" is no segments.
Result<std::vector<std::string>> ParseCanonicalPath(std::string_view path);

class Router {
 public:
  // `audit` and `clock` may be null (no audit of denials).
  explicit Router(const TokenAuthenticator* auth, AuditSink* audit = nullptr, const Clock* clock = nullptr)
      : auth_(auth), audit_(audit), clock_(clock) {}
  void Add(std::string method, const std::string& pattern, Handler handler,
           HandlerCost cost = HandlerCost::kMayBlock);
  // Routes the request; `principal` receives who made it (for the access
  // log), `route` (if given) the pattern of the route that ran, as Add()
  // was given it ("" when none did): a bounded label for metrics.
  HttpResponse Handle(const HttpRequest& request, Principal& principal, std::string_view* route = nullptr) const;
  // True when Handle() would run a handler marked kMayBlock, or audit a
  // denial (a file written). When a route would run, `caller` (if given)
  // receives who calls it: set as HttpRequest::caller, Handle() takes it
  // instead of checking the credentials again.
  bool MayBlock(const HttpRequest& request, std::optional<Principal>* caller = nullptr) const;
  // True when Handle() refuses the request whatever its body (its path is
  // not canonical or no route, its caller unknown or not allowed there): the
  // server then answers it without reading the body. Audits nothing.
  bool RefusesHead(const HttpRequest& head) const;
  // Every route added, in order: what the API description must describe.
  struct RouteKey {
    std::string method;
    std::string pattern;  // as given to Add()
    bool operator==(const RouteKey&) const = default;
    auto operator<=>(const RouteKey&) const = default;
  };
  std::vector<RouteKey> Routes() const;

 private:
  struct Route {
    std::string method;
    std::string pattern;
    std::vector<std::string> segments;
    Handler handler;
    HandlerCost cost;
  };
  static bool Match(const Route& route, const std::vector<std::string>& path, std::vector<std::string>* params);
  // Why a request's head is refused (Refusal says it to the client).
  enum class Refused {
    kNone,
    kNotCanonical,      // 400; detail: what is not canonical
    kUnauthenticated,   // 401
    kClientUnderAdmin,  // 403: a client token under /admin
    kNotClient,         // 403: an admin or viewer token on /v1
    kNotJson,           // 415: a certificate-only POST not declared JSON
    kViewer,            // 403: a viewer on an admin route that writes
    kMethod,            // 405; detail: the methods the path allows
    kNoRoute,           // 404
  };
  // What the request's head decides before any handler runs: the route and
  // who calls it, or why it is refused (with the denial to audit). Only
  // Dispatch builds a refusal's answer: MayBlock and RefusesHead need none.
  struct Decision {
    const Route* route = nullptr;
    std::vector<std::string> path;  // the canonical segments
    Principal principal{"anonymous", Role::kViewer};
    bool authenticated = false;  // principal found by credentials (/admin, /v1)
    bool v1 = false;             // the /v1 realm: errors in OpenAI's shape
    Refused refused = Refused::kNone;
    std::string detail;  // see Refused
    int audit = 0;       // the denial's status to audit, 0 for none
    Principal audited;   // whose denial
  };
  Decision Decide(const HttpRequest& request) const;
  static HttpResponse Refusal(const HttpRequest& request, const Decision& d);
  HttpResponse Dispatch(const HttpRequest& request, Principal& principal, std::string_view* route) const;
  void AuditDenial(const HttpRequest& request, const Principal& who, int status) const DYAD_LOCKS_EXCLUDED(denial_mu_);

  const TokenAuthenticator* auth_;
  AuditSink* audit_;
  const Clock* clock_;
  std::vector<Route> routes_;

  struct DenialSource {
    Clock::Instant last;
    uint64_t suppressed = 0;
  };
  mutable Mutex denial_mu_;
  mutable std::unordered_map<std::string, DenialSource> denials_ DYAD_GUARDED_BY(denial_mu_);  // by "<status> <peer address>"
};

}  // namespace dyad
