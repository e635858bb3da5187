// HttpServer: HTTP/1.1 over Boost.Beast, handing each request to one
// callback as plain HttpRequest/HttpResponse values.
//
// Keep-alive, a request-body limit (413), a header limit, a timeout for the
// first request of a connection and an idle timeout between requests, an
// X-Request-Id echoed (when printable and at most 128 bytes) or generated.
// Shutdown() (or SIGTERM/SIGINT, caught from Listen() on) stops accepting, lets
// requests in flight finish, closes idle connections and makes Run() return.
// Beast stays inside http_server.cc.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/result.h"
#include "server/http_types.h"

namespace dyad {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 3001;  // 0 picks a free port
  int threads = 2;
  size_t max_body_bytes = 1 << 20;
  std::chrono::seconds header_timeout{10};
  std::chrono::seconds idle_timeout{60};
  std::chrono::seconds shutdown_grace{15};
};

using RequestHandler = std::function<HttpResponse(const HttpRequest&)>;

class HttpServer {
 public:
  HttpServer(HttpServerOptions options, RequestHandler handler);
  ~HttpServer();

  // Binds and listens; the error names the address when it cannot.
  Status Listen();
  uint16_t port() const;
  // Serves on options.threads threads until shutdown; handles SIGTERM/SIGINT.
  void Run();
  void Shutdown();

  struct Impl;  // in http_server.cc

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace dyad
