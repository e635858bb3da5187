// HttpServer: HTTP/1.1 over Boost.Beast, handing each request to one
// callback as plain HttpRequest/HttpResponse values.
//
// Keep-alive, a request-body limit (413), a header limit, an idle timeout
// between requests (until the first byte of the next one) and a header
// timeout for every request's headers (from the connection's start for the
// first), a cap on open connections (one over it is closed at once), a pause
// before accepting again when accept fails (EMFILE: no busy loop), an
// X-Request-Id echoed (when printable and at most 128 bytes) or generated.
// A head the handler refuses whatever its body (refuses_head) is answered
// without the body read; after an answer given before its request was read
// whole, what the client still sends is read and dropped, then the close.
// Each of the `threads` I/O threads runs its own event loop; a connection
// stays on the one it was given when accepted (in turn), so its handlers run
// in order with no strand or lock shared between connections.
// A classifier says where each request's handler runs: on the I/O thread
// that read it (kIo), on a pool of `blocking_threads` (kBlocking: a handler
// that waits on a backend never holds an I/O thread) or on a separate pool of
// `upstream_threads` (kUpstream: calls that wait on an upstream for as long
// as a stream lasts, so that they never take the blocking pool's threads).
// Without a classifier every handler runs on the I/O threads. Over plain
// HTTP a pool's thread writes its answer itself when the socket takes it at
// once, then waits up to `pool_linger` for the connection's next request and
// serves it too when it is for the same pool (a busy keep-alive client costs
// no hand-off per request; with `detach_lingering`, meanwhile the I/O
// threads do not watch its socket); anything else goes back to the I/O
// threads. A
// streamed answer over plain HTTP is written by its producer's thread itself
// (`stream_direct`), which waits while the socket takes no more (a slow
// reader slows the producer, memory stays bounded), then lingers as above.
// Over TLS its pieces are queued to the connection without waiting for each
// write; the handler waits only while `stream_buffer_bytes` are queued
// unwritten. An exception out of the handler is a 500 naming the request id.
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
#include "core/thread.h"
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
  int upstream_threads = 64;
  size_t stream_buffer_bytes = 64 * 1024;
  // How long a pool's thread that wrote its answer waits for the
  // connection's next request (above); 0: never. A lingering thread gives
  // its linger up at once when work is posted to its pool while no thread
  // of it is idle, and when the shutdown begins; meanwhile it holds no CPU.
  std::chrono::microseconds pool_linger{10000};
  // Over plain HTTP, a pool thread about to linger takes the socket out of
  // the I/O threads' epoll until it hands the connection back, so requests
  // it reads itself wake no I/O thread (about 5 % less CPU per /v1 request,
  // BENCHMARKS.md). It was off for a day while a cluster test's failure was
  // suspected to be an answer reaching another request; that failure was a
  // rotation's undo refused during a PostgreSQL restart (fixed), and every
  // answer there now checks its request id.
  bool detach_lingering = true;
  // Over plain HTTP, a streamed answer's producer writes each piece to the
  // socket itself, waiting (for at most the idle timeout) while the socket
  // takes no more: no hand-off to the I/O threads per piece. False: through
  // the session's queue, as over TLS.
  bool stream_direct = true;
  // Over plain HTTP, /v1 calls the classifier marks kEvented run on the I/O
  // threads, their upstream exchange driven there (server/evented_upstream.h:
  // no thread waits on an upstream). False: on the upstream pool, as over
  // TLS (GATEWAY_V1_EVENTED).
  bool evented_upstream = true;
  // Says, from a request's head alone, that its handler refuses it whatever
  // its body (an unknown caller, no route). Asked when the body has not come
  // whole with the head's read and one more (16 KiB; over TLS none): no more
  // of it is then read nor held, the request reaches the handler with
  // HttpRequest::body_unread, and after the answer the connection closes,
  // what the client still sends read and dropped (at most 8 × max_body_bytes
  // and a little more, within the header timeout), as after a 413. Runs on
  // an I/O thread or a pool's; must not block.
  std::function<bool(const HttpRequest& head)> refuses_head = nullptr;
  TlsFiles tls;  // cert_file set: HTTPS
  // Called once when the shutdown begins (SIGTERM, SIGINT, Shutdown()), on
  // an I/O thread: what would keep a handler waiting past the grace period
  // stops waiting (ProviderLocks::Interrupt). Must not block.
  std::function<void()> on_shutdown = nullptr;
  // Starts the handler pools' threads (in Listen) and the I/O threads (in
  // Run); StartThread when unset (core/thread.h).
  ThreadStarter start_thread = nullptr;
};

using RequestHandler = std::function<HttpResponse(const HttpRequest&)>;
// Where a request's handler runs (see above). kEvented: on the I/O thread
// that read it, with HttpRequest::may_defer (over TLS, or with
// evented_upstream off: as kUpstream).
enum class HandlerPool { kIo, kBlocking, kUpstream, kEvented };
// Says it for each request, on an I/O thread; it may note the caller it
// authenticated (HttpRequest::caller). Thread-safe.
using PoolClassifier = std::function<HandlerPool(HttpRequest&)>;

class HttpServer {
 public:
  HttpServer(HttpServerOptions options, RequestHandler handler, PoolClassifier classify = nullptr);
  ~HttpServer();

  // Loads the TLS files (an error names the variable and file), starts the
  // handler pools (kUnavailable, naming the pool, when the system refuses a
  // thread), binds and listens; the error names the address when it cannot.
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
