// Router: maps method + path to a handler, with the admin auth rules.
//
// Patterns are literal segments and "{name}" parameters. Every path under
// /admin/ needs a bearer token (401 otherwise, before any route is looked
// up, so unknown admin paths reveal nothing); a viewer may only GET (403).
// An unknown path is 404; a known path with another method is 405 with Allow.
// Routes are added before serving; Handle() is then thread-safe.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "server/auth.h"
#include "server/http_types.h"

namespace dyad {

struct RouteContext {
  const HttpRequest& request;
  std::vector<std::string> params;  // path parameters in pattern order
  Principal principal;              // identity "anonymous" on public routes
};

using Handler = std::function<HttpResponse(const RouteContext&)>;

class Router {
 public:
  explicit Router(const TokenAuthenticator* auth) : auth_(auth) {}
  void Add(std::string method, const std::string& pattern, Handler handler);
  // Routes the request; `principal` receives who made it (for the access log).
  HttpResponse Handle(const HttpRequest& request, Principal& principal) const;

 private:
  struct Route {
    std::string method;
    std::vector<std::string> segments;
    Handler handler;
  };
  static bool Match(const Route& route, const std::vector<std::string_view>& path,
                    std::vector<std::string>* params);

  const TokenAuthenticator* auth_;
  std::vector<Route> routes_;
};

}  // namespace dyad
