// HttpServer: HTTP/1.1 over Boost.Beast, handing each request to one
// callback as plain HttpRequest/HttpResponse values.
//
// Keep-alive, a request-body limit (413), a header limit, an idle timeout
// between requests (until the first byte of the next one) and a header
// timeout for every request's headers (from the connection's start for the
// first), a cap on open connections (one over it is closed at once), a pause
// before accepting again when accept fails (EMFILE: no busy loop), an
// X-Request-Id echoed (when printable and at most 128 bytes) or generated.
// Requests for which `may_block` says true run on a separate pool of
// `blocking_threads`, so a handler waiting on a backend never holds an I/O
// thread; the others run on the I/O thread that read them. An exception out of
// the handler is a 500 naming the request id.
// Shutdown() (or SIGTERM/SIGINT, caught from Listen() on) stops accepting, lets
// requests in flight finish, closes idle connections and makes Run() return.
// With options.tls: HTTPS only (server/tls_context.h says the policy), the
// handshake under the header timeout, every other limit as for plain HTTP;
// SIGHUP (caught from Listen() on; logged only over plain HTTP) reloads the
// files for new connections, keeping the old context when the new files are
// bad; after a good reload with a client CA, a connection that authenticated
// by client certificate answers its current request and closes. With a
// client CA the verified certificate's subject reaches the handler as
// HttpRequest::client_cert_subject.
// Beast stays inside http_server.cc.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/config.h"
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
  size_t max_connections = 4096;
  int blocking_threads = 16;
  TlsFiles tls;  // cert_file set: HTTPS
};

using RequestHandler = std::function<HttpResponse(const HttpRequest&)>;
// True when the handler may wait on a backend for this request. Thread-safe.
using BlockingPredicate = std::function<bool(const HttpRequest&)>;

class HttpServer {
 public:
  HttpServer(HttpServerOptions options, RequestHandler handler, BlockingPredicate may_block = nullptr);
  ~HttpServer();

  // Loads the TLS files (an error names the variable and file), binds and
  // listens; the error names the address when it cannot.
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
