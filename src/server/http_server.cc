#include "server/http_server.h"

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <type_traits>
#include <typeinfo>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <spdlog/spdlog.h>

#include "core/encoding.h"
#include "core/mutex.h"
#include "core/thread.h"
#include "server/answer_head.h"
#include "server/envelope.h"
#include "server/evented_upstream.h"
#include "server/fd_writer.h"
#include "server/request_parser.h"
#include "server/tls_context.h"

namespace dyad {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

namespace {

// The request header's limit; and the read buffer's, which must hold
// whole any element the parser takes at once: the header, a chunk's size
// line with its extensions, the trailer section. Without a cap a chunk
// extension or trailers grow it without end (the body limit counts
// neither), and Beast throws on a trailer field over 64 KiB.
constexpr size_t kHeaderLimit = 16 * 1024;
constexpr size_t kReadBufferLimit = 32 * 1024;
// How often each loop's tick (Impl::Tick) fires: sooner than any timeout a
// call arms (seconds; tests' shortest are tenths, which then reprogram the
// timer as before).
constexpr std::chrono::milliseconds kTickPeriod{500};

// Runs `context` until it stops. An exception a handler lets out (a
// library's, on hostile input) ends that handler, and the connection it
// held goes with it, not the process: logged by its type (its text may
// quote the input), and the loop runs on.
void RunContainingEscapes(asio::io_context& context, std::string_view what) {
  for (;;) {
    try {
      context.run();
      return;
    } catch (const std::exception& e) {
      spdlog::error("{}: a handler threw an exception of type {}; its connection is closed", what, typeid(e).name());
    } catch (...) {
      spdlog::error("{}: a handler threw; its connection is closed", what);
    }
  }
}

bool PrintableId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

std::string GenerateRequestId() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  uint64_t v[2] = {rng(), rng()};
  return HexEncode(std::string_view(reinterpret_cast<const char*>(v), sizeof v));
}

// A flag a thread can poll beside a socket: readable once raised, until
// Reset. Without an eventfd (the system refused one) nothing is woken: such
// a poll ends at its own timeout.
class EventFd {
 public:
  EventFd() : fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)), error_(fd_ < 0 ? errno : 0) {}
  ~EventFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  EventFd(const EventFd&) = delete;
  EventFd& operator=(const EventFd&) = delete;
  int fd() const { return fd_; }
  // kUnavailable naming `what` when the system refused the eventfd.
  Status Check(std::string_view what) const {
    if (fd_ >= 0) return OkStatus();
    return MakeError(ErrorCode::kUnavailable,
                     "cannot create an eventfd for " + std::string(what) + ": " + std::strerror(error_));
  }
  void Raise() {
    const uint64_t one = 1;
    if (fd_ >= 0 && ::write(fd_, &one, sizeof one) < 0) spdlog::debug("eventfd write: errno {}", errno);
  }
  void Reset() {
    uint64_t count;
    if (fd_ >= 0 && ::read(fd_, &count, sizeof count) < 0 && errno != EAGAIN) {
      spdlog::debug("eventfd read: errno {}", errno);
    }
  }

 private:
  int fd_;
  int error_;  // errno when fd_ < 0
};

// A pool of handler threads: an io_context that `n` threads started through
// StartThread run, so that a refused thread is a Status (asio::thread_pool's
// constructor throws, and that ends the process). Stop() drops queued work
// (destroyed with the pool), lets running handlers finish and joins.
class ThreadPool {
 public:
  ThreadPool() = default;
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() { Stop(); }

  // kUnavailable naming `what` when a thread is refused; those started are stopped.
  Status Start(int n, const ThreadStarter& starter, std::string_view what) {
    for (int i = 0; i < n; ++i) {
      auto started = StartThread(starter, [this, what = std::string(what)] { RunContainingEscapes(context_, what); });
      if (!started.ok()) {
        Stop();
        return MakeError(ErrorCode::kUnavailable, "cannot start thread " + std::to_string(i + 1) + " of " +
                                                      std::to_string(n) + " of the " + std::string(what) + ": " +
                                                      started.error().message);
      }
      threads_.push_back(std::move(started).value());
    }
    size_ = n;
    return OkStatus();
  }
  // Runs `fn` on one of the threads; Waiting() counts what was posted and
  // has not begun. When no thread is idle, raises work_posted(): a thread
  // that lingers on its connection (and so counts as busy) polls it and
  // gives its linger up.
  template <class Fn>
  void Post(Fn fn) {
    // Sequentially consistent: the sum below must not miss a thread that
    // has just begun (busy_ rises before waiting_ drops: the sum never dips).
    const int waiting = waiting_.fetch_add(1) + 1;
    asio::post(context_, [this, fn = std::move(fn)]() mutable {
      busy_.fetch_add(1);
      waiting_.fetch_sub(1);
      struct Done {
        std::atomic<int>& busy;
        ~Done() { busy.fetch_sub(1); }
      } done{busy_};
      fn();
    });
    if (waiting + busy_.load() > size_) work_posted_.Raise();
  }
  int Waiting() const { return waiting_.load(); }
  EventFd& work_posted() { return work_posted_; }
  void Stop() {
    work_.reset();
    context_.stop();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

 private:
  asio::io_context context_;
  int size_ = 0;  // threads started (set before any Post)
  std::atomic<int> waiting_{0};
  std::atomic<int> busy_{0};  // running what was posted (lingering included)
  EventFd work_posted_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{context_.get_executor()};
  std::vector<std::thread> threads_;
};

}  // namespace

// What the server keeps of a session, plain or TLS.
class SessionBase {
 public:
  virtual ~SessionBase() = default;
  virtual void Start() = 0;
  // Asks the session, on its own loop, to close if it is idle.
  virtual void PostShutdown() = 0;
  // After a TLS reload: asks a session that authenticated by client
  // certificate, on its own loop, to close now if idle (else after its
  // current answer).
  virtual void PostReload() = 0;
};

// What a streamed answer's producer (the handler's thread) and the session's
// loop share: the pieces queued unwritten, in order.
struct StreamQueue {
  Mutex mu;
  CondVar cv;  // signalled when queued bytes are written or the stream fails
  std::vector<std::string> pieces DYAD_GUARDED_BY(mu);
  size_t queued DYAD_GUARDED_BY(mu) = 0;       // bytes queued or being written
  bool draining DYAD_GUARDED_BY(mu) = false;   // a Drain is posted or writing
  bool failed DYAD_GUARDED_BY(mu) = false;     // a write failed or the I/O threads stopped: what is queued is dropped
  bool aborted DYAD_GUARDED_BY(mu) = false;    // the producer aborted: what is queued goes out, then the close
  bool finished DYAD_GUARDED_BY(mu) = false;   // the handler returned: the last chunk follows the queue
};

struct HttpServer::Impl {
  explicit Impl(HttpServerOptions opts) : options(std::move(opts)) {}

  static size_t MakeLoopCount(int threads) { return static_cast<size_t>(std::max(1, threads)); }
  static std::vector<std::unique_ptr<asio::io_context>> MakeLoops(int threads) {
    std::vector<std::unique_ptr<asio::io_context>> loops;
    for (size_t i = 0; i < MakeLoopCount(threads); ++i) loops.push_back(std::make_unique<asio::io_context>(1));
    return loops;
  }
  static std::vector<asio::executor_work_guard<asio::io_context::executor_type>> GuardLoops(
      const std::vector<std::unique_ptr<asio::io_context>>& loops) {
    std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
    for (size_t i = 1; i < loops.size(); ++i) guards.push_back(asio::make_work_guard(*loops[i]));
    return guards;
  }
  void StopLoops() {
    for (auto& loop : loops) loop->stop();
  }
  // Each loop's tick (Tick): its timer, armed or not.
  struct LoopTick {
    explicit LoopTick(asio::io_context& loop) : timer(loop) {}
    asio::steady_timer timer;
    bool armed = false;  // on the loop's thread only
  };
  static std::vector<std::unique_ptr<LoopTick>> MakeTicks(const std::vector<std::unique_ptr<asio::io_context>>& loops) {
    std::vector<std::unique_ptr<LoopTick>> ticks;
    for (auto& loop : loops) ticks.push_back(std::make_unique<LoopTick>(*loop));
    return ticks;
  }
  // The index of the loop `context` is.
  size_t LoopOf(const asio::execution_context& context) const {
    for (size_t i = 0; i < loops.size(); ++i) {
      if (loops[i].get() == &context) return i;
    }
    return 0;
  }
  // A timer that fires every kTickPeriod on loop `i` while sessions live
  // there, doing nothing: a loop's timers share one timerfd, which Asio
  // reprograms (a timerfd_settime call) whenever a timer armed is the loop's
  // earliest. A /v1 call arms its upstream deadline after sending the
  // request, and the session its idle timer after sending the answer: each
  // was the earliest, so two system calls per call, right after the sends,
  // when the woken upstream or client may be waiting for this core. Behind
  // the tick, they are not the earliest; the tick costs two calls a period,
  // and none on a loop without connections.
  void Tick(size_t i) {
    ticks[i]->timer.expires_after(kTickPeriod);
    ticks[i]->timer.async_wait([this, i](beast::error_code ec) {
      if (ec || stopping || loop_sessions[i] == 0) {
        ticks[i]->armed = false;
        return;
      }
      Tick(i);
    });
  }
  // On loop `i`'s thread, as a session starts there.
  void SessionStarted(size_t i) {
    ++loop_sessions[i];
    if (ticks[i]->armed || stopping) return;
    ticks[i]->armed = true;
    Tick(i);
  }
  void SessionEnded(size_t i) { --loop_sessions[i]; }
  void StopTicks() {
    for (size_t i = 0; i < loops.size(); ++i) {
      asio::post(*loops[i], [t = &ticks[i]->timer] { t->cancel(); });
    }
  }

  HttpServerOptions options;
  RequestHandler handler;
  PoolClassifier classify;
  // Before the loops: sessions still queued in a loop when it is destroyed
  // forget themselves here.
  std::atomic<bool> stopping{false};
  std::atomic<bool> finished{false};  // Run() has returned
  Mutex mu;
  uint64_t next_session DYAD_GUARDED_BY(mu) = 0;
  std::unordered_map<uint64_t, std::weak_ptr<SessionBase>> sessions DYAD_GUARDED_BY(mu);
  // How many sessions live on each loop (Tick); counted from any thread (a
  // session's last owner may be a pool thread), and before the loops too.
  std::vector<std::atomic<size_t>> loop_sessions = std::vector<std::atomic<size_t>>(MakeLoopCount(options.threads));
  // One event loop per I/O thread, each run by its thread alone
  // (concurrency hint 1): a connection lives on one loop, so its handlers
  // run in order on one thread with no strand and no lock shared with the
  // other loops' connections. Accepted connections go to the running loops
  // in turn. loops[0] is run by Run()'s caller and holds the acceptor too;
  // the others are held open by their guard until loops[0] is done.
  std::vector<std::unique_ptr<asio::io_context>> loops = MakeLoops(options.threads);
  asio::io_context& ioc = *loops[0];
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> loop_guards = GuardLoops(loops);
  std::vector<std::unique_ptr<LoopTick>> ticks = MakeTicks(loops);  // one per loop
  size_t running_loops = 1;  // set by Run() before it accepts
  size_t next_loop = 0;      // the next connection's; used only on `control`
  // The /v1 upstream calls the I/O threads drive (HandlerPool::kEvented);
  // null with options.evented_upstream off.
  std::unique_ptr<EventedUpstream> evented;
  // The acceptor, its back-off timer, the signals and the grace timer are
  // used only on this strand.
  asio::strand<asio::io_context::executor_type> control{ioc.get_executor()};
  tcp::acceptor acceptor{control};
  tcp protocol = tcp::v4();  // the acceptor's (set in Listen), its connections' too
  // Connections a refused assign closed (Session::Attach), and when that was
  // last logged (steady_clock ticks): logged at most every 10 s.
  std::atomic<uint64_t> refused_handbacks{0};
  std::atomic<int64_t> last_handback_log{0};
  asio::steady_timer accept_timer{control};
  std::chrono::milliseconds accept_backoff{0};
  std::chrono::steady_clock::time_point last_refusal_log;
  uint64_t refused = 0;
  asio::signal_set signals{control};
  asio::steady_timer grace_timer{control};
  // With TLS: what new connections handshake with; replaced on SIGHUP, while
  // each session keeps the one it started with. Used only on `control`.
  std::shared_ptr<asio::ssl::context> tls;
  // Bumped by each TLS reload; a session started before it holds a client
  // certificate identity the new client CA may no longer vouch for.
  std::atomic<uint64_t> tls_generation{0};
  // The streamed answers whose producer is running: when the I/O threads
  // stop for good (past the shutdown grace) their queues will never drain,
  // so StopStreams fails them and wakes a producer waiting for room. Before
  // the pools: a handler's Streamer leaves the set as the pools are joined.
  Mutex streams_mu;
  bool io_stopped DYAD_GUARDED_BY(streams_mu) = false;
  std::unordered_set<StreamQueue*> streams DYAD_GUARDED_BY(streams_mu);
  // Raised with io_stopped: a direct stream's producer waiting for its
  // socket (stream_direct) polls it too.
  EventFd io_stop;
  // Raised when the shutdown begins: a lingering pool thread polls it too.
  EventFd shutting_down;
  // After the loops, so destroyed first: work it dropped holds sessions
  // whose sockets belong to a loop.
  // Started by Listen().
  ThreadPool blocking;  // when classify is set
  ThreadPool upstream;  // likewise

  // False (and nothing kept) once the I/O threads have stopped.
  bool AddStream(StreamQueue* q) DYAD_LOCKS_EXCLUDED(streams_mu) {
    MutexLock lock(&streams_mu);
    if (io_stopped) return false;
    streams.insert(q);
    return true;
  }
  void RemoveStream(StreamQueue* q) DYAD_LOCKS_EXCLUDED(streams_mu) {
    MutexLock lock(&streams_mu);
    streams.erase(q);
  }
  void StopStreams() DYAD_LOCKS_EXCLUDED(streams_mu) {
    io_stop.Raise();
    MutexLock lock(&streams_mu);
    io_stopped = true;
    for (StreamQueue* q : streams) {
      MutexLock qlock(&q->mu);
      q->failed = true;
      q->cv.SignalAll();
    }
  }

  // Where a request's handler runs on a session (`plain`: not TLS); an
  // evented one only over plain HTTP, with the evented client.
  HandlerPool Where(HttpRequest& request, bool plain) {
    if (!classify) return HandlerPool::kIo;
    const HandlerPool where = classify(request);
    if (where == HandlerPool::kEvented && !(plain && evented)) return HandlerPool::kUpstream;
    return where;
  }
  // Its pool; null: an I/O thread.
  ThreadPool* PoolOf(HandlerPool where) {
    switch (where) {
      case HandlerPool::kBlocking: return &blocking;
      case HandlerPool::kUpstream: return &upstream;
      case HandlerPool::kIo:
      case HandlerPool::kEvented: break;
    }
    return nullptr;
  }

  void Accept();
  void WaitForSignal();
  void ReloadTls() DYAD_LOCKS_EXCLUDED(mu);
  std::vector<std::shared_ptr<SessionBase>> LiveSessions() DYAD_LOCKS_EXCLUDED(mu);
  void OnAccepted(beast::error_code ec, tcp::socket socket) DYAD_LOCKS_EXCLUDED(mu);
  void BeginShutdown() DYAD_LOCKS_EXCLUDED(mu);
  void Forget(uint64_t id) DYAD_LOCKS_EXCLUDED(mu);
  // The handler (or `fn`, the rest of a deferred answer), with any
  // exception turned into a 500.
  HttpResponse Call(const HttpRequest& request) {
    return Guarded(request, [&] { return handler(request); });
  }
  template <class Fn>
  HttpResponse Guarded(const HttpRequest& request, Fn&& fn) {
    try {
      return fn();
    } catch (...) {
      if (request.writer && request.writer->begun()) {  // the 500 is not sent: the body must not look whole
        spdlog::error("request {}: the handler threw during its streamed answer; the answer is cut short",
                      request.request_id);
        request.writer->Abort();
        HttpResponse cut;
        cut.status = 500;
        return cut;
      }
      spdlog::error("request {}: the handler threw; answered 500", request.request_id);
      return ErrorFor(request.path, 500, "INTERNAL_ERROR", "internal error; request id " + request.request_id);
    }
  }
};

// One connection: HTTP/1.1 over a plain or a TLS stream (`Stream`). A TLS
// session handshakes first, under the header timeout, so a client that
// connects and says nothing holds its slot no longer than one that sends no
// headers.
template <class Stream>
class Session : public SessionBase, public std::enable_shared_from_this<Session<Stream>> {
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;

 public:
  Session(tcp::socket socket, HttpServer::Impl* server, uint64_t id, std::shared_ptr<asio::ssl::context> tls,
          uint64_t tls_generation)
      : tls_(std::move(tls)),
        stream_(MakeStream(std::move(socket), tls_.get())),
        server_(server),
        id_(id),
        tls_generation_(tls_generation) {}
  ~Session() override {
    if (detached_) ::close(fd_);
    if (counted_) server_->SessionEnded(loop_);
    server_->Forget(id_);
  }

  void Start() override {
    beast::error_code ignored;
    Tcp().socket().set_option(tcp::no_delay(true), ignored);
    loop_ = server_->LoopOf(asio::query(stream_.get_executor(), asio::execution::context));
    asio::dispatch(stream_.get_executor(), [self = this->shared_from_this()] {
      self->server_->SessionStarted(self->loop_);
      self->counted_ = true;
      if constexpr (kTls) {
        self->Handshake();
      } else {
        self->Read();
      }
    });
  }

  void PostShutdown() override {
    asio::post(stream_.get_executor(), [self = this->shared_from_this()] { self->OnShutdown(); });
  }

  void PostReload() override {
    asio::post(stream_.get_executor(), [self = this->shared_from_this()] {
      if (self->CertRevoked()) self->OnShutdown();
    });
  }

 private:
  static Stream MakeStream(tcp::socket socket, asio::ssl::context* tls) {
    if constexpr (kTls) {
      return Stream(std::move(socket), *tls);
    } else {
      return Stream(std::move(socket));
    }
  }
  beast::tcp_stream& Tcp() { return beast::get_lowest_layer(stream_); }

  void Handshake() {
    Tcp().expires_after(server_->options.header_timeout);
    stream_.async_handshake(asio::ssl::stream_base::server, [self = this->shared_from_this()](beast::error_code ec) {
      if (ec) {
        beast::error_code ignored;
        auto peer = self->Tcp().socket().remote_endpoint(ignored);
        spdlog::debug("TLS handshake with {} failed: {}", ignored ? "?" : peer.address().to_string(), ec.message());
        self->Tcp().socket().shutdown(tcp::socket::shutdown_both, ignored);
        return;
      }
      self->client_cert_subject_ = PeerSubjectRfc2253(self->stream_.native_handle());
      self->cert_authenticated_ = !self->client_cert_subject_.empty();
      self->Read();
    });
  }

  // Whether this session's certificate identity predates a TLS reload: it
  // answers no more requests by it and closes after its current answer.
  bool CertRevoked() const { return cert_authenticated_ && tls_generation_ != server_->tls_generation.load(); }
  // The identity a request read now carries by its certificate: none after
  // a reload (a bearer token still counts; its answer closes the connection).
  std::string CertSubject() const { return CertRevoked() ? std::string() : client_cert_subject_; }
  // Whether the answer being written keeps the connection: the client's
  // wish, unless a shutdown began or its certificate no longer vouches.
  bool KeepsAlive() const { return keep_alive_ && !server_->stopping && !CertRevoked(); }

  // Called on the session's loop when the server shuts down (or, for a
  // revoked certificate identity, reloads): closes an idle connection.
  void OnShutdown() {
    if ((close_by_ && server_->stopping) || (!busy_ && buffer_.size() == 0 && !(parser_ && parser_->got_some()))) {
      beast::error_code ec;
      Tcp().socket().shutdown(tcp::socket::shutdown_both, ec);
      Tcp().cancel();
    }
  }

  void NewParser() { parser_.emplace(server_->options.max_body_bytes, kHeaderLimit); }

  void Read() {
    NewParser();
    if (first_ || buffer_.size() > 0) {
      first_ = false;
      return ReadHeader();
    }
    // Kept alive: the idle timeout until the next request's first byte,
    // then the header timeout for its headers.
    if (queued_watches_ > 0) return ReadOnWatch();
    Tcp().expires_after(server_->options.idle_timeout);
    stream_.async_read_some(buffer_.prepare(4096), [self = this->shared_from_this()](beast::error_code ec, size_t n) {
      if (ec) return self->Close();
      self->buffer_.commit(n);
      self->OnRequestBytes();
    });
  }

  // The first bytes of a kept-alive connection's next request are in
  // buffer_. Headers already whole (the common case): no header timer to
  // arm, and the request, when it came whole, parsed here.
  void OnRequestBytes() {
    std::string_view got(static_cast<const char*>(buffer_.data().data()), buffer_.size());
    const bool whole_head = got.find("\r\n\r\n") != std::string_view::npos;
    if (whole_head && ParseBuffered()) return;
    ReadHeader(!whole_head);
  }

  // The next request read once the hang-up watch still queued on the
  // socket (StopWatching) sees it readable (OnWatchEnded), under the idle
  // timeout: no read tried before, and no second operation queued behind
  // the watch, whose completion would wait a turn of the loop.
  void ReadOnWatch() {
    next_on_watch_ = true;
    const uint64_t wait = ++watch_waits_;
    idle_timer_.expires_after(server_->options.idle_timeout);
    idle_timer_.async_wait([self = this->shared_from_this(), wait](beast::error_code ec) {
      // Cancelled, or expired as the watch ended (its handler ran first:
      // the next request may be in progress, or a later wait begun).
      if (ec || !self->next_on_watch_ || wait != self->watch_waits_) return;
      beast::error_code ignored;
      self->Tcp().socket().close(ignored);  // the watch ends aborted: OnWatchEnded closes the session
    });
  }

  // A watch left queued ended while the next request is awaited on it.
  void OnWatchEnded(beast::error_code ec) {
    next_on_watch_ = false;
    idle_timer_.cancel();
    if (ec) return Close();
    auto space = buffer_.prepare(4096);
    const ssize_t n = ::recv(Fd(), space.data(), space.size(), MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Read();  // woken for nothing: read as ever
    if (n <= 0) return Close();
    buffer_.commit(static_cast<size_t>(n));
    OnRequestBytes();
  }

  // What the buffer holds, parsed here: a request that came whole in one
  // read (most do) costs no composed read and no queued completion. True
  // when it was whole, or refused (OnRead has it); false when more must be
  // read (ReadHeader goes on from what was parsed).
  bool ParseBuffered() {
    beast::error_code ec;
    if (!TakeBuffered(ec) && !ec) return false;
    OnRead(ec);
    return true;
  }

  void ReadHeader(bool arm_timer = true) {
    if (arm_timer) Tcp().expires_after(server_->options.header_timeout);
    http::async_read_header(stream_, buffer_, *parser_, [self = this->shared_from_this()](beast::error_code ec, size_t) {
      if (ec || self->parser_->is_done()) return self->OnRead(ec);
      self->OnHeader();
    });
  }

  // The head is read, the body not whole: read on, unless the head alone is
  // refused (by the parser, or by the handler: refuses_head), which is then
  // answered without the rest of the body ever read or held.
  void OnHeader() {
    if (auto refused = parser_->refusal()) return Reply(refused->status, refused->code, refused->message);
    // What came with the head, and (plain) one read (16 KiB) of what has come
    // since: a request whole by then is served as one read at once (not
    // judged, its connection kept). No more is read before the judgement: a
    // refused caller's body is never held beyond that.
    beast::error_code ec;
    bool whole = TakeBuffered(ec);
    if constexpr (!kTls) {
      if (!whole && !ec && ReadNow() > 0) whole = TakeBuffered(ec);
    }
    if (ec || whole) return OnRead(ec);
    if (RefusesHead()) return AnswerRefusedHead();
    // The body has the idle timeout: it must keep coming, not arrive
    // within the header timeout.
    Tcp().expires_after(server_->options.idle_timeout);
    auto read_body = [self = this->shared_from_this()] {
      http::async_read(self->stream_, self->buffer_, *self->parser_,
                       [self](beast::error_code ec, size_t) { self->OnRead(ec); });
    };
    // A client that waits for leave to send its body (curl does, for a
    // large one) would otherwise wait a second before sending it anyway.
    // Not to HTTP/1.0 (RFC 9110 §10.1.1).
    if (!parser_->expects_continue()) return read_body();
    static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    asio::async_write(stream_, asio::buffer(kContinue.data(), kContinue.size()),
                      [self = this->shared_from_this(), read_body](beast::error_code ec, size_t) {
                        if (ec) return self->Close();
                        read_body();
                      });
  }

  // Feeds what the buffer holds to the parser, past the end of the head
  // (put() alone stops there): true when the request is whole; `ec` its
  // refusal (never need_more).
  bool TakeBuffered(beast::error_code& ec) {
    while (buffer_.size() > 0 && !parser_->is_done()) {
      const size_t used = parser_->put(buffer_.data(), ec);
      buffer_.consume(used);
      if (ec == http::error::need_more) ec = {};
      if (ec || used == 0) break;
    }
    return !ec && parser_->is_done();
  }

  // Whether the handler refuses the request whose head was read whatever
  // its body (HttpServerOptions::refuses_head); not when it throws.
  bool RefusesHead() {
    const auto& refuses = server_->options.refuses_head;
    if (!refuses) return false;
    HttpRequest& head = parser_->request();
    head.client_cert_subject = CertSubject();
    try {
      return refuses(head);
    } catch (...) {
      return false;  // judged with the body, as before
    }
  }

  // A refused head, to its handler without its body; the connection closes
  // after the answer, what the client still sends discarded (Close).
  void AnswerRefusedHead() {
    busy_ = true;
    unsigned version = 11;
    HttpRequest req = MakeRequest(version);
    req.body_unread = true;
    std::string().swap(req.body);  // what came with the head: not the request's body, nor its reserve
    keep_alive_ = false;
    discard_rest_ = true;
    Dispatch(std::move(req), version);
  }

  void OnRead(beast::error_code ec) {
    if (ec == http::error::body_limit) {
      return Reply(413, "PAYLOAD_TOO_LARGE",
                   "the request body exceeds " + std::to_string(server_->options.max_body_bytes) + " bytes");
    }
    if (ec == http::error::header_limit) return Reply(431, "HEADERS_TOO_LARGE", "request headers too large");
    if (ec == http::error::buffer_overflow) {
      return Reply(431, "HEADERS_TOO_LARGE", "request trailers or a chunk extension exceed " +
                                                 std::to_string(kReadBufferLimit) + " bytes");
    }
    // A malformed request gets a 400; anything else (end of stream, a
    // timeout, a reset, a TLS error) closes the connection.
    if (ec && ec != http::error::end_of_stream && ec.category() == http::make_error_code(http::error::bad_target).category()) {
      return Reply(400, "BAD_REQUEST", "malformed HTTP request");
    }
    if (ec) return Close();
    if (auto refused = parser_->refusal()) return Reply(refused->status, refused->code, refused->message);
    busy_ = true;
    unsigned version = 11;
    HttpRequest req = MakeRequest(version);
    Dispatch(std::move(req), version);
  }

  // The parsed request as the handler sees it, and its HTTP version.
  HttpRequest MakeRequest(unsigned& version) {
    HttpRequest req = std::move(parser_->request());
    head_ = parser_->head();
    if (!PrintableId(req.request_id)) req.request_id = GenerateRequestId();
    if (!peer_known_) {  // once per connection (a getpeername call)
      peer_known_ = true;
      beast::error_code peer_ec;
      auto ep = Tcp().socket().remote_endpoint(peer_ec);
      if (!peer_ec) peer_ = ep.address().to_string();
    }
    req.peer = peer_;
    req.client_cert_subject = CertSubject();
    keep_alive_ = parser_->header_keep_alive() && !CertRevoked();
    version = parser_->version();
    return req;
  }

  // Runs the request's handler where the classifier says.
  // `decided`: where a pool thread that read it found it runs (the
  // classifier not run twice: for /v1 it hashes the client token).
  void Dispatch(HttpRequest&& req, unsigned version, std::optional<HandlerPool> decided = std::nullopt) {
    const HandlerPool where = decided ? *decided : server_->Where(req, !kTls);
    if constexpr (!kTls) {
      if (where == HandlerPool::kEvented) return DispatchEvented(std::move(req), version);
    }
    if (ThreadPool* pool = server_->PoolOf(where)) {
      pool->Post([self = this->shared_from_this(), req = std::move(req), version, pool]() mutable {
        self->ServeOnPool(std::move(req), version, *pool);
      });
      return;
    }
    HttpResponse resp = server_->Call(req);
    Write(std::move(resp), req.request_id, version);
  }

  // On a pool thread, off the I/O threads. A plain answer is written here
  // when the socket takes it at once; then, for up to options.pool_linger,
  // the connection's next request is waited for and, when it comes whole
  // and belongs to the same pool, served here too. A keep-alive client that
  // sends its next request at once (a busy one) so costs no hand-off to the
  // I/O threads and back. A streamed answer written directly (Streamer) is
  // followed the same way. Anything else (a TLS session, a queued stream,
  // an answer or a request that does not go through at once, an error, no
  // request in time, other work waiting for this pool, a shutdown) goes back
  // to the session's loop, as every answer did before. Meanwhile the
  // session stays busy_, so its loop does not touch it.
  // `deferred`: the first request's answer is its RunOnPool.
  void ServeOnPool(HttpRequest req, unsigned version, ThreadPool& pool,
                   std::shared_ptr<DeferredAnswer> deferred = nullptr) {
    for (;;) {
      Streamer writer(this->shared_from_this(), req.request_id, version);
      req.writer = head_ ? nullptr : &writer;  // a HEAD answer is never streamed (MakeAnswer drops its body)
      HttpResponse resp = deferred ? server_->Guarded(req, [&] { return deferred->RunOnPool(req); })
                                   : server_->Call(req);
      deferred.reset();
      resp.deferred.reset();  // never from a pool's handler (no may_defer)
      req.writer = nullptr;
      if constexpr (kTls) {
        if (writer.begun()) return writer.FinishQueued();
        asio::post(stream_.get_executor(),
                   [self = this->shared_from_this(), resp = std::move(resp), rid = req.request_id, version]() mutable {
                     self->Write(std::move(resp), rid, version);
                   });
        return;
      } else {
        if (writer.begun() ? !writer.Finish() : !WriteOnPool(std::move(resp), req.request_id, version)) return;
        std::optional<HttpRequest> next = NextOnPool(pool, version);
        if (!next) return;
        const HandlerPool next_where = server_->Where(*next, !kTls);
        if (server_->PoolOf(next_where) != &pool) {
          ToLoop([self = this->shared_from_this(), r = std::move(*next), version, next_where]() mutable {
            self->Dispatch(std::move(r), version, next_where);
          });
          return;
        }
        req = std::move(*next);
      }
    }
  }

  // Plain, on a pool thread: true when the answer went out whole and the
  // connection is kept; else its loop has the rest (the remainder to
  // write, the next read, or the close).
  bool WriteOnPool(HttpResponse resp, const std::string& request_id, unsigned version) {
    auto answer = MakeAnswer(std::move(resp), request_id, version);
    beast::error_code ec;
    const bool whole = WriteAtOnce(*answer, ec);
    if (whole && !ec && answer->keep_alive && !server_->stopping) return true;
    ToLoop([self = this->shared_from_this(), answer, whole, ec] {
      if (!whole) return self->WriteRest(answer);
      self->AfterWrite(ec, answer->keep_alive);
    });
    return false;
  }

  // Plain, on a pool thread: the connection's next request when it comes
  // whole within options.pool_linger; else nullopt, its loop having the
  // connection again (reading on, answering a malformed request, or closing).
  std::optional<HttpRequest> NextOnPool(ThreadPool& pool, unsigned& version) {
    auto to_loop = [this](std::function<void(Session&)> then) {
      ToLoop([self = this->shared_from_this(), then = std::move(then)] { then(*self); });
      return std::nullopt;
    };
    auto read_on = [](Session& s) { s.AfterWrite({}, true); };
    // Work waiting for this pool goes first, even when the client already
    // sent more (pipelined): it queues behind it, as on the loop path.
    if (server_->stopping || pool.Waiting() > 0) return to_loop(read_on);
    if (buffer_.size() == 0) {
      if (server_->options.detach_lingering && server_->options.pool_linger.count() > 0) Detach();
      if (!Linger(pool)) return to_loop(read_on);
      if (ReadNow() == 0) return to_loop(read_on);  // its loop's read sees the close or the error
    }
    NewParser();
    beast::error_code ec;
    // What this thread reads of one request is bounded: a body's chunk
    // framing does not count toward its limit, so a fast sender could
    // otherwise hold the thread for as long as it keeps sending.
    size_t left = server_->options.max_body_bytes + 2 * kReadBufferLimit;
    bool head_judged = false;
    for (;;) {
      TakeBuffered(ec);
      // The rest of a request that did not come in one read (a conversation's
      // body) is taken while it is there and no other call waits for this
      // pool; its loop waits for the rest.
      if (ec || parser_->is_done() || pool.Waiting() > 0) break;
      // The first read did not bring the body whole: one its handler would
      // refuse whatever it holds is not read on (its loop answers it).
      if (!head_judged && parser_->is_header_done()) {
        head_judged = true;
        if (parser_->refusal() || RefusesHead()) return to_loop([](Session& s) { s.OnHeader(); });
      }
      const size_t got = ReadNow(left);
      if (got == 0) break;
      left -= got;
    }
    if (ec) return to_loop([ec](Session& s) { s.OnRead(ec); });
    if (!parser_->is_done()) return to_loop([](Session& s) { s.ReadHeader(); });
    if (parser_->refusal()) return to_loop([](Session& s) { s.OnRead({}); });
    return MakeRequest(version);
  }

  // Plain, on a pool thread: what the socket holds now, up to `most` bytes,
  // into buffer_ (one recv that never waits); how many came. 0 when none did
  // (none yet, the close, an error: its loop's read sees those) or when
  // the buffer or `most` leaves no room.
  size_t ReadNow(size_t most = 16 * 1024) {
    const size_t room = std::min<size_t>({16 * 1024, most, buffer_.max_size() - buffer_.size()});
    if (room == 0) return 0;
    auto space = buffer_.prepare(room);
    const ssize_t n = ::recv(Fd(), space.data(), space.size(), MSG_DONTWAIT);
    if (n <= 0) return 0;
    buffer_.commit(static_cast<size_t>(n));
    return static_cast<size_t>(n);
  }

  // Plain, on a pool thread: waits up to options.pool_linger for the
  // connection's next bytes; false when none came in time, or when work was
  // posted to `pool` while none of its threads was idle, or the shutdown
  // began: the linger is given up at once for either.
  bool Linger(ThreadPool& pool) {
    const auto deadline = std::chrono::steady_clock::now() + server_->options.pool_linger;
    pollfd p[3] = {{Fd(), POLLIN, 0},
                   {pool.work_posted().fd(), POLLIN, 0},
                   {server_->shutting_down.fd(), POLLIN, 0}};
    for (;;) {
      if (PollUntil(p, 3, deadline) <= 0 || p[2].revents != 0) return false;
      if (p[1].revents != 0) {
        // Reset takes every post's wake-up: what this thread will not take
        // is raised again for the other lingering threads. Work another
        // thread has taken already: linger on.
        pool.work_posted().Reset();
        const int waiting = pool.Waiting();
        if (waiting > 1) pool.work_posted().Raise();
        if (waiting > 0) return false;
        continue;
      }
      return true;  // readable, or closed (the caller's read says which)
    }
  }

  // The ResponseWriter of a handler run off the I/O threads (http_types.h).
  // Direct (plain HTTP, options.stream_direct): the handler's thread writes
  // the head and each piece to the socket itself, waiting while the socket
  // takes no more (for at most the idle timeout, or until the I/O threads
  // stop for good), so a client that reads slowly slows the producer down,
  // nothing is buffered here and no piece costs a hand-off. Queued (TLS): each
  // piece is copied into the stream's queue and handed to the session's
  // loop only when no write is in progress (the pieces queued meanwhile go
  // out together, as one chunk), so the handler's thread does not wait for
  // each write; it waits only while options.stream_buffer_bytes are queued
  // unwritten. A failed write (the client gone, or not reading for the idle
  // timeout) fails every later call.
  class Streamer final : public ResponseWriter {
   public:
    Streamer(std::shared_ptr<Session> session, std::string request_id, unsigned version)
        : session_(std::move(session)),
          request_id_(std::move(request_id)),
          version_(version),
          direct_(!kTls && session_->server_->options.stream_direct) {}
    ~Streamer() override {
      if (queue_) session_->server_->RemoveStream(queue_.get());
    }
    Streamer(const Streamer&) = delete;
    Streamer& operator=(const Streamer&) = delete;

    bool Begin(int status, std::string_view content_type,
               const std::vector<std::pair<std::string, std::string>>& headers) override {
      if (begun_ || failed_) return false;
      begun_ = true;
      bodiless_ = AnswerHasNoBody(status);
      if (direct_) {
        std::string head = session_->StreamedHead(status, content_type, headers, request_id_, version_);
        if (holding_) {
          held_ += head;
          return true;
        }
        if (!session_->SendDirect(beast::buffers_suffix<asio::const_buffer>(asio::buffer(head)))) failed_ = true;
        return !failed_;
      }
      if (!session_->Attach()) {  // its loop writes a queued stream while this thread runs on
        failed_ = true;
        return false;
      }
      queue_ = std::make_shared<StreamQueue>();
      {
        MutexLock lock(&queue_->mu);
        queue_->draining = true;  // until the head is written
      }
      if (!session_->server_->AddStream(queue_.get())) {  // the I/O threads have stopped
        queue_.reset();
        failed_ = true;
        return false;
      }
      asio::post(session_->stream_.get_executor(), [s = session_, q = queue_, status,
                                                    content_type = std::string(content_type), headers,
                                                    request_id = request_id_, version = version_] {
        auto head = std::make_shared<std::string>(s->StreamedHead(status, content_type, headers, request_id, version));
        s->WriteStreamHead(std::move(head), [s, q](beast::error_code ec) {
          if (ec) {
            MutexLock lock(&q->mu);
            q->failed = true;
          }
          s->Drain(q);
        });
      });
      return true;
    }

    bool Write(std::string_view piece) override {
      if (!begun_ || failed_ || ended_) return false;
      if (piece.empty() || bodiless_) return true;
      if (direct_ && holding_ && piece.size() < kMaxHeld) {
        session_->HoldPieceDirect(piece, held_);
        return held_.size() < kMaxHeld || SendHeld();
      }
      if (direct_) {  // a large piece is not copied: what is held goes first
        if (!SendHeld() || !session_->SendPieceDirect(piece)) failed_ = true;
        return !failed_;
      }
      const size_t limit = std::max<size_t>(1, session_->server_->options.stream_buffer_bytes);
      MutexLock lock(&queue_->mu);
      // Woken by a written batch, a failed write, or the I/O threads
      // stopping for good (Impl::StopStreams: the queue would never drain).
      while (!queue_->failed && queue_->queued >= limit) queue_->cv.Wait(&queue_->mu);
      if (queue_->failed) {
        failed_ = true;
        return false;
      }
      queue_->pieces.emplace_back(piece);
      queue_->queued += piece.size();
      if (!queue_->draining) {
        queue_->draining = true;
        asio::post(session_->stream_.get_executor(), [s = session_, q = queue_] { s->Drain(q); });
      }
      return true;
    }

    // Queued, the pieces queued while a write is in progress go out
    // together already: nothing to hold.
    void Hold() override { holding_ = direct_; }
    bool Flush(bool last) override {
      if (!begun_ || failed_ || ended_) return false;
      ended_ = last;
      if (!direct_) {  // queued: the last chunk when the handler returns
        MutexLock lock(&queue_->mu);
        failed_ = queue_->failed;
        return !failed_;
      }
      if (last && session_->stream_chunked_) held_.append("0\r\n\r\n");
      return SendHeld();
    }

    // The client gets what came before the cut, then the close. Not over
    // HTTP/1.0, where the close is the body's end: there what is held is
    // dropped, so a cut made before the first flush is not taken for whole.
    void Abort() override {
      if (direct_ && !session_->stream_close_delimited_) SendHeld();
      failed_ = true;
      if (!queue_) return;
      MutexLock lock(&queue_->mu);
      queue_->aborted = true;
    }
    bool begun() const override { return begun_; }
    // Before Begin() only: after it, on the queued path, a failed write on
    // its loop may close the socket while the handler runs.
    int HangUpFd() const override { return begun_ ? -1 : session_->Fd(); }

    // After the handler returned. Direct: the last chunk; true when the
    // connection is kept and its next request is this thread's to wait for
    // (ServeOnPool), else its loop closes it. Queued: FinishQueued.
    bool Finish() {
      if (direct_) return session_->EndStreamDirect(!SendHeld(), ended_);
      FinishQueued();
      return false;
    }
    // What is queued, then the last chunk, then the next request (or the
    // close), on the session's loop.
    void FinishQueued() {
      if (!queue_) return;  // Begin() found the I/O threads stopped
      MutexLock lock(&queue_->mu);
      queue_->finished = true;
      if (queue_->draining) return;  // the Drain in progress ends the stream
      queue_->draining = true;
      asio::post(session_->stream_.get_executor(), [s = session_, q = queue_] { s->Drain(q); });
    }

   private:
    // Held bytes past which they go out without waiting for the Flush(), so
    // a producer that flushes rarely (or a large piece) holds little memory.
    static constexpr size_t kMaxHeld = 64 * 1024;

    // Direct: what is held, in one write (none when a write failed before).
    bool SendHeld() {
      if (!failed_ && !held_.empty() && !session_->SendDirect(beast::buffers_suffix<asio::const_buffer>(
                                            asio::const_buffer(held_.data(), held_.size())))) {
        failed_ = true;
      }
      held_.clear();
      return !failed_;
    }

    std::shared_ptr<Session> session_;
    std::string request_id_;
    unsigned version_;
    const bool direct_;
    std::shared_ptr<StreamQueue> queue_;  // from Begin(), when queued
    bool begun_ = false;
    bool bodiless_ = false;  // its status has no body (AnswerHasNoBody): pieces are dropped
    bool failed_ = false;
    bool holding_ = false;  // direct, after Hold()
    bool ended_ = false;    // after Flush(true) (direct and chunked: the last chunk went out)
    std::string held_;      // the head and chunks Hold() keeps, framed
  };

  // The ResponseWriter of a handler that may defer (kEvented), on the
  // session's loop: the head and pieces are held, framed, and the session writes
  // them after each read of the upstream (DrainHeld), before the next one.
  class HeldWriter final : public ResponseWriter {
   public:
    HeldWriter(Session* session, const std::string* request_id, unsigned version)
        : session_(session), request_id_(request_id), version_(version) {}
    bool Begin(int status, std::string_view content_type,
               const std::vector<std::pair<std::string, std::string>>& headers) override {
      if (begun_ || failed) return false;
      begun_ = true;
      bodiless_ = AnswerHasNoBody(status);
      held += session_->StreamedHead(status, content_type, headers, *request_id_, version_);
      return true;
    }
    bool Write(std::string_view piece) override {
      if (!begun_ || failed || ended) return false;
      if (piece.empty() || bodiless_) return true;  // (an empty chunk would end the body)
      session_->HoldPieceDirect(piece, held);
      return true;
    }
    void Hold() override {}
    bool Flush(bool last) override {
      if (!begun_ || failed || ended) return false;
      ended = last;
      if (last && session_->stream_chunked_) held.append("0\r\n\r\n");
      return true;
    }
    void Abort() override { aborted = failed = true; }
    bool begun() const override { return begun_; }
    int HangUpFd() const override { return -1; }  // the session watches (WatchHangUp)

    std::string held;      // framed, not yet written
    bool failed = false;   // a write failed (the client has gone), or aborted
    bool aborted = false;  // the producer cut the answer short
    bool ended = false;    // the last chunk is held or written

   private:
    Session* session_;
    const std::string* request_id_;
    unsigned version_;
    bool begun_ = false;
    bool bodiless_ = false;  // as Streamer's
  };

  // A request whose handler may defer, from its dispatch to its answer; on
  // the session's loop. The request stays here while the deferred answer uses it.
  struct Deferral final : UpstreamSink {
    Deferral(Session* s, HttpRequest&& r, unsigned v)
        : session(s), request(std::move(r)), version(v), writer(s, &request.request_id, v) {}
    // The deferred answer's sink, the client's hang-up no longer watched
    // once the head came (as UpstreamClient watches it only until then).
    bool OnHead(const UpstreamHead& head) override {
      session->StopWatching(*this);
      return answer->sink().OnHead(head);
    }
    bool OnBody(std::string_view piece) override { return answer->sink().OnBody(piece); }
    bool OnFlush(bool last) override { return answer->sink().OnFlush(last); }
    void OnFailure(UpstreamFailure kind) override { answer->sink().OnFailure(kind); }

    Session* session;
    HttpRequest request;
    unsigned version;
    HeldWriter writer;
    std::shared_ptr<DeferredAnswer> answer;
    std::shared_ptr<EventedUpstream::Call> call;  // until its Done
    bool watching = false;  // a hang-up wait is pending
  };

  // Plain, on the session's loop: the handler runs here, and may answer with a
  // DeferredAnswer, whose exchange the I/O threads then drive (or, for one
  // they cannot make, the upstream pool's RunOnPool).
  void DispatchEvented(HttpRequest&& req, unsigned version) {
    auto d = std::make_shared<Deferral>(this, std::move(req), version);
    d->request.may_defer = true;
    d->request.writer = head_ ? nullptr : &d->writer;  // a HEAD answer is never streamed, as on the pools
    HttpResponse resp = server_->Call(d->request);
    d->request.may_defer = false;
    if (!resp.deferred) {
      d->request.writer = nullptr;
      return Write(std::move(resp), d->request.request_id, version);
    }
    d->answer = std::move(resp.deferred);
    const UpstreamRequest* up = d->answer->upstream();
    auto self = this->shared_from_this();
    auto call = !up ? nullptr
                    : server_->evented->Start(
                          *up, *d, stream_.get_executor(),
                          [self, d](std::function<void(bool)> resume) { self->DrainHeld(d, std::move(resume)); },
                          [self, d](Status sent) { self->OnDeferredDone(d, std::move(sent)); });
    if (!call) return DeferToPool(d);
    d->call = call;
    call->Begin();
    // The watch after the request went out (one epoll_ctl less before it);
    // none when the call ended within Begin (OnDeferredDone dropped it).
    if (d->call) WatchHangUp(d);
  }

  // The deferred answer's RunOnPool on the upstream pool, as a handler run
  // there (its next requests served there too).
  void DeferToPool(const std::shared_ptr<Deferral>& d) {
    ThreadPool* pool = &server_->upstream;
    pool->Post([self = this->shared_from_this(), d, pool]() mutable {
      d->request.writer = nullptr;
      self->ServeOnPool(std::move(d->request), d->version, *pool, std::move(d->answer));
    });
  }

  // While the upstream is awaited: a client that hangs up (its peer closed,
  // or the connection failed) cancels the call. Bytes it sends meanwhile
  // (its next request, pipelined) go to the session's buffer, read after
  // this answer, and the watch goes on while the buffer has room (else the
  // close is seen only when the buffer is read).
  // A watch stopped stays queued (StopWatching) and holds the call's
  // state only weakly; the next request may be read on it (ReadOnWatch).
  void WatchHangUp(const std::shared_ptr<Deferral>& d) {
    d->watching = true;
    ++queued_watches_;
    Tcp().socket().async_wait(tcp::socket::wait_read, [self = this->shared_from_this(),
                                                       weak = std::weak_ptr<Deferral>(d)](beast::error_code ec) {
      --self->queued_watches_;
      const std::shared_ptr<Deferral> d = weak.lock();
      if (!d || !d->watching) {
        if (self->next_on_watch_) self->OnWatchEnded(ec);
        return;
      }
      if (ec) return;
      d->watching = false;
      beast::flat_buffer& in = self->buffer_;
      const size_t room = in.max_size() - in.size();  // kReadBufferLimit in all
      if (room == 0) return;
      auto space = in.prepare(room);
      const ssize_t n = ::recv(self->Fd(), space.data(), space.size(), MSG_DONTWAIT);
      if (n > 0) in.commit(static_cast<size_t>(n));
      const bool hung_up = n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
      if (!hung_up) return self->WatchHangUp(d);
      if (d->call) d->call->Cancel();
    });
  }
  // Not cancelled: the wait stays queued on the socket until the client's
  // next bytes (or its close) end it, and Read waits for the next request
  // on it (ReadOnWatch) instead of first trying a read that fails (asio
  // tries a read at once): per call one system call, one operation and the
  // cancel's completion less. A pool thread that takes the socket (Detach)
  // ends the wait (aborted), before the session's loop reads again.
  void StopWatching(Deferral& d) { d.watching = false; }

  // What the sink wrote, to the client, before the upstream is read again;
  // resume(false) when the client has gone.
  void DrainHeld(const std::shared_ptr<Deferral>& d, std::function<void(bool)> resume) {
    HeldWriter& w = d->writer;
    if (w.failed) return resume(false);
    if (w.held.empty()) return resume(true);
    auto pending = std::make_shared<std::string>(std::move(w.held));
    w.held.clear();
    auto rest = std::make_shared<beast::buffers_suffix<asio::const_buffer>>(asio::buffer(*pending));
    beast::error_code ec;
    if (WriteNow(*rest, ec)) return resume(true);  // most pieces: the socket takes them at once
    if (ec != asio::error::would_block) {
      w.failed = true;
      return resume(false);
    }
    Tcp().expires_after(server_->options.idle_timeout);
    asio::async_write(stream_, *rest,
                      [d, pending, rest, resume = std::move(resume)](beast::error_code ec, size_t) {
                        if (ec) d->writer.failed = true;
                        resume(!ec);
                      });
  }

  // The exchange ended: the deferred answer's Finish, then its answer
  // written, or the streamed one ended, or (a held 401) RunOnPool.
  void OnDeferredDone(const std::shared_ptr<Deferral>& d, Status sent) {
    d->call.reset();
    StopWatching(*d);
    HttpResponse resp = server_->Guarded(d->request, [&] { return d->answer->Finish(sent); });
    if (resp.deferred && !d->writer.begun()) return DeferToPool(d);
    if (!d->writer.begun()) {
      d->request.writer = nullptr;
      Write(std::move(resp), d->request.request_id, d->version);
    } else {
      EndHeld(d);
    }
    d->answer->Answered();
  }

  // A streamed deferred answer's end: what is still held, then the last
  // chunk and the next request, or the close (FinishStream).
  void EndHeld(const std::shared_ptr<Deferral>& d) {
    HeldWriter& w = d->writer;
    const bool cut = w.failed || w.aborted;
    if (!w.held.empty() && !(cut && stream_close_delimited_)) {
      auto pending = std::make_shared<std::string>(std::move(w.held));
      w.held.clear();
      Tcp().expires_after(server_->options.idle_timeout);
      asio::async_write(stream_, asio::buffer(*pending),
                        [self = this->shared_from_this(), d, pending](beast::error_code ec, size_t) {
                          if (ec) d->writer.failed = true;
                          self->EndHeld(d);
                        });
      return;
    }
    if (cut || !stream_chunked_ || !w.ended) return FinishStream(cut);
    busy_ = false;
    if (!stream_keep_alive_ || server_->stopping) return Close();
    Read();
  }

  // A streamed answer's framing: chunked (HTTP/1.1) or, for HTTP/1.0, its
  // body delimited by the close.
  // Unchunked, the socket resets when closed (SO_LINGER 0, set by its
  // descriptor: asio's destructor would undo its own option) until
  // FinishStream knows the body whole: one closed any other way (the
  // shutdown's grace ending, the process exiting) is not taken for whole.
  // A status that has no body (a 204 or 304 the upstream streamed): the
  // head alone, then the close (a clean one, cut or not: nothing can be);
  // the writer drops the pieces.
  AnswerFraming FrameStream(int status, unsigned version) {
    const bool bodiless = AnswerHasNoBody(status);
    stream_chunked_ = version >= 11 && !bodiless;
    stream_close_delimited_ = version < 11 && !bodiless;
    if (stream_close_delimited_) ResetOnClose(true);
    stream_keep_alive_ = stream_chunked_ && KeepsAlive();
    return {version, stream_keep_alive_, std::nullopt};
  }

  // A streamed answer's head (ResponseWriter::Begin), its framing set
  // (FrameStream): the server's fields, then the handler's less those the
  // server sets (AnswerHead).
  std::string StreamedHead(int status, std::string_view content_type,
                           const std::vector<std::pair<std::string, std::string>>& headers,
                           std::string_view request_id, unsigned version) {
    return AnswerHead(status, content_type, headers, request_id, FrameStream(status, version));
  }

  // On the session's loop: a queued stream's head.
  void WriteStreamHead(std::shared_ptr<std::string> head, std::function<void(beast::error_code)> done) {
    Tcp().expires_after(server_->options.idle_timeout);
    asio::async_write(stream_, asio::buffer(*head), [head, done = std::move(done)](beast::error_code ec, size_t) {
      done(ec);
    });
  }

  // On the session's loop, one at a time per stream (StreamQueue::draining): writes
  // every piece queued so far as one chunk, then looks again; with nothing
  // queued, stops, or ends the stream once the handler has returned. After a
  // failure the queue is dropped. Plain: a chunk the socket takes at once is
  // written here (no timer, no completion queued) and the loop looks again;
  // only a remainder goes asynchronously.
  void Drain(std::shared_ptr<StreamQueue> q) {
    // Written at once: the loop looks again, but after stream_buffer_bytes it
    // lets the I/O thread's other connections in (a fast producer and a fast
    // reader would otherwise keep it here for the whole answer).
    size_t written_at_once = 0;
    auto yield = [&](size_t bytes) {
      written_at_once += bytes;
      if (written_at_once < std::max<size_t>(1, server_->options.stream_buffer_bytes)) return false;
      asio::post(stream_.get_executor(), [self = this->shared_from_this(), q] { self->Drain(q); });
      return true;
    };
    while (true) {
      auto batch = std::make_shared<std::vector<std::string>>();
      bool failed = false;
      {
        MutexLock lock(&q->mu);
        // Over HTTP/1.0 the close ends the body: an aborted one is cut where it is.
        if (q->failed || (q->aborted && stream_close_delimited_)) {
          q->pieces.clear();
          q->queued = 0;
          q->cv.SignalAll();
        }
        batch->swap(q->pieces);
        if (batch->empty()) {
          if (!q->finished) {
            q->draining = false;
            return;
          }
          failed = q->failed || q->aborted;
        }
      }
      if (batch->empty()) return FinishStream(failed);
      size_t bytes = 0;
      std::vector<asio::const_buffer> buffers;
      buffers.reserve(batch->size());
      for (const auto& piece : *batch) {
        buffers.emplace_back(piece.data(), piece.size());
        bytes += piece.size();
      }
      auto done = [self = this->shared_from_this(), q, batch, bytes](beast::error_code ec, size_t) {
        Written(*q, bytes, ec);
        self->Drain(q);
      };
      using Chunk = http::chunk_body<std::vector<asio::const_buffer>>;
      if constexpr (!kTls) {
        // What the socket takes now is written here; true when a remainder
        // went on asynchronously (`done` then runs Drain again).
        auto send = [&](auto rest) {
          beast::error_code ec;
          if (WriteNow(*rest, ec) || ec != asio::error::would_block) {
            Written(*q, bytes, ec);
            return false;
          }
          Tcp().expires_after(server_->options.idle_timeout);
          asio::async_write(stream_, *rest, [rest, done = std::move(done)](beast::error_code ec, size_t n) mutable {
            done(ec, n);
          });
          return true;
        };
        const bool later =
            stream_chunked_
                ? send(std::make_shared<beast::buffers_suffix<Chunk>>(Chunk(std::move(buffers))))
                : send(std::make_shared<beast::buffers_suffix<std::vector<asio::const_buffer>>>(std::move(buffers)));
        if (later || yield(bytes)) return;
        continue;
      } else {
        Tcp().expires_after(server_->options.idle_timeout);
        if (!stream_chunked_) return asio::async_write(stream_, buffers, std::move(done));
        auto chunk = std::make_shared<Chunk>(std::move(buffers));
        return asio::async_write(stream_, *chunk, [chunk, done = std::move(done)](beast::error_code ec, size_t n) mutable {
          done(ec, n);
        });
      }
    }
  }

  // `bytes` of the queue written (or the write failed): room for the producer.
  static void Written(StreamQueue& q, size_t bytes, beast::error_code ec) DYAD_LOCKS_EXCLUDED(q.mu) {
    MutexLock lock(&q.mu);
    q.queued -= std::min(q.queued, bytes);
    if (ec) q.failed = true;
    q.cv.SignalAll();
  }

  // Plain (FdWriter: never waits): writes what the socket takes of `rest` now.
  // True when all of it was written; else `ec` says why (would_block: the rest
  // must wait).
  template <class Buffers>
  bool WriteNow(beast::buffers_suffix<Buffers>& rest, beast::error_code& ec) {
    while (beast::buffer_bytes(rest) > 0) {
      FdWriter out{Fd()};
      size_t n = out.write_some(rest, ec);
      if (ec) return false;
      rest.consume(n);
    }
    return true;
  }

  // Plain, on the producer's thread (a direct stream, Streamer): waits until
  // the socket takes more, until `deadline`; false when it did not, or when
  // the I/O threads have stopped for good (the producer must stop too: Run()
  // is joining its pool).
  bool WaitWritable(std::chrono::steady_clock::time_point deadline) {
    pollfd p[2] = {{Fd(), POLLOUT, 0}, {server_->io_stop.fd(), POLLIN, 0}};
    return PollUntil(p, 2, deadline) > 0 && p[1].revents == 0;  // POLLERR/POLLHUP: the next write says what
  }

  // poll() on `fds` until one is ready or `deadline` passes (to the
  // microsecond, through ppoll; EINTR waits on): poll's count, 0 at the
  // deadline, -1 for another error.
  static int PollUntil(pollfd* fds, nfds_t n, std::chrono::steady_clock::time_point deadline) {
    for (;;) {
      const auto left =
          std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return 0;
      const timespec wait{static_cast<time_t>(left.count() / 1000000000), static_cast<long>(left.count() % 1000000000)};
      const int r = ::ppoll(fds, n, &wait, nullptr);
      if (r >= 0 || errno != EINTR) return r;
    }
  }

  // Plain, a direct stream: `write` (non-blocking: true when all went out,
  // else `ec` says why) again each time the socket takes more, all within
  // the idle timeout (a client that reads a little now and then cannot hold
  // the producer for longer).
  template <class Write>
  bool SendDirectWithin(Write&& write) {
    const auto deadline = std::chrono::steady_clock::now() + server_->options.idle_timeout;
    beast::error_code ec;
    while (!write(ec)) {
      if (ec != asio::error::would_block || !WaitWritable(deadline)) return false;
      ec = {};
    }
    return !server_->finished;
  }

  template <class Buffers>
  bool SendDirect(beast::buffers_suffix<Buffers> rest) {
    return SendDirectWithin([&](beast::error_code& ec) { return WriteNow(rest, ec); });
  }

  // A direct stream that holds (Streamer::Hold): the head (StreamedHead),
  // then each piece as its chunk, appended to the held bytes as they will go out.
  void HoldPieceDirect(std::string_view piece, std::string& held) const {
    if (!stream_chunked_) {
      held.append(piece);
      return;
    }
    char size[2 * sizeof(size_t)];
    const auto end = std::to_chars(size, size + sizeof size, piece.size(), 16).ptr;
    held.append(size, end).append("\r\n").append(piece).append("\r\n");
  }

  bool SendPieceDirect(std::string_view piece) {
    const asio::const_buffer data(piece.data(), piece.size());
    if (!stream_chunked_) return SendDirect(beast::buffers_suffix<asio::const_buffer>(data));
    return SendDirect(beast::buffers_suffix<http::chunk_body<asio::const_buffer>>(http::make_chunk(data)));
  }

  // The end of a direct stream (`failed`: a write failed or the producer
  // aborted; `ended`: its last chunk went out already). True when the last
  // chunk went out and the connection is kept: the caller waits for the next
  // request (ServeOnPool); else its loop closes the connection (an
  // incomplete body is so told from a whole one).
  bool EndStreamDirect(bool failed, bool ended) {
    if (!failed && !ended && stream_chunked_) {
      failed = !SendDirect(beast::buffers_suffix<http::chunk_last<http::chunk_crlf>>(http::make_chunk_last()));
    }
    if (!failed && stream_chunked_ && stream_keep_alive_ && !server_->stopping) return true;
    // Chunked, the last chunk went out or must not: the close only.
    ToLoop([self = this->shared_from_this(), cut = failed || stream_chunked_] { self->FinishStream(cut); });
    return false;
  }

  // On the session's loop, a streamed answer's end: its last chunk and the next
  // request, else (`cut`: it failed, or chunked, its last chunk went out
  // already; or HTTP/1.0) the close. Over HTTP/1.0 the close is the body's
  // end, so a cut one ends with a reset instead: the client cannot take a
  // cut body for whole.
  void FinishStream(bool cut) {
    if (cut || !stream_chunked_) {
      busy_ = false;
      if (cut && stream_close_delimited_) return Reset();
      if (stream_close_delimited_) ResetOnClose(false);  // whole: the close ends it
      return Close();
    }
    Tcp().expires_after(server_->options.idle_timeout);
    auto last = std::make_shared<http::chunk_last<http::chunk_crlf>>();
    asio::async_write(stream_, *last, [self = this->shared_from_this(), last](beast::error_code ec, size_t) {
      self->busy_ = false;
      if (ec || !self->stream_keep_alive_ || self->server_->stopping) return self->Close();
      self->Read();
    });
  }

  // An error before the request reached a handler, in the shape its client
  // reads (ErrorFor, by the target it sent). What the client still sends is
  // discarded before the close: a request the parser read "whole" may have
  // a body it did not frame (a transfer coding it refused).
  void Reply(int status, std::string_view code, const std::string& message) {
    HttpResponse r = ErrorFor(TargetSent(), status, code, message);
    keep_alive_ = false;
    discard_rest_ = true;
    head_ = false;  // no request was read whole: the body goes out, and the connection closes
    busy_ = true;
    Write(std::move(r), GenerateRequestId(), 11);
  }

  // The target of the request being read: the parsed one, or, for a
  // request line the parser refused (too long, a bad version), its second
  // word as the client sent it, still in the buffer. Only to pick an error's
  // shape (AimsAtV1 reads it as written).
  std::string_view TargetSent() {
    if (parser_ && !parser_->request().method.empty()) return parser_->request().path;  // the line was parsed
    std::string_view line(static_cast<const char*>(buffer_.data().data()), buffer_.size());
    line = line.substr(0, line.find('\n'));
    const size_t space = line.find(' ');
    if (space == std::string_view::npos) return {};
    line.remove_prefix(space + 1);
    return line.substr(0, line.find_first_of(" ?\r"));
  }

  // A whole answer as it goes out: its head (AnswerHead) and its body,
  // written without Beast's serializer, whose state machine cost more than
  // the rest of the write (one sendmsg for most).
  struct PlainAnswer {
    PlainAnswer(std::string h, std::string b, bool keep)
        : head(std::move(h)),
          body(std::move(b)),
          keep_alive(keep),
          rest(std::array{asio::const_buffer(head.data(), head.size()), asio::const_buffer(body.data(), body.size())}) {}
    PlainAnswer(const PlainAnswer&) = delete;
    PlainAnswer& operator=(const PlainAnswer&) = delete;
    const std::string head, body;
    const bool keep_alive;
    beast::buffers_suffix<std::array<asio::const_buffer, 2>> rest;  // not yet written (refers to head and body)
  };

  std::shared_ptr<PlainAnswer> MakeAnswer(HttpResponse resp, const std::string& request_id, unsigned version) {
    const bool keep_alive = KeepsAlive();
    std::string head =
        AnswerHead(resp.status, resp.content_type, resp.headers, request_id, {version, keep_alive, resp.body.size()});
    // HEAD (RFC 9110 §9.3.2): the head a GET would have, its Content-Length
    // the body's, and no byte of the body (a kept connection would read it
    // as the next answer).
    if (head_ || AnswerHasNoBody(resp.status)) resp.body.clear();
    return std::make_shared<PlainAnswer>(std::move(head), std::move(resp.body), keep_alive);
  }

  // Plain (FdWriter: never waits): writes what the socket takes now; true
  // when the whole answer went out or the write failed (`ec`), false when the
  // rest must wait (WriteRest).
  bool WriteAtOnce(PlainAnswer& answer, beast::error_code& ec) {
    return WriteNow(answer.rest, ec) || ec != asio::error::would_block;
  }

  // What did not fit the socket (a large answer, a slow reader), under the idle timeout.
  void WriteRest(std::shared_ptr<PlainAnswer> answer) {
    Tcp().expires_after(server_->options.idle_timeout);
    asio::async_write(stream_, answer->rest, [self = this->shared_from_this(), answer](beast::error_code ec, size_t) {
      self->AfterWrite(ec, answer->keep_alive);
    });
  }

  void Write(HttpResponse resp, const std::string& request_id, unsigned version) {
    auto answer = MakeAnswer(std::move(resp), request_id, version);
    if constexpr (!kTls) {
      // Most answers fit the socket's send buffer: written here at once, with
      // no timer armed and cancelled and no completion queued.
      beast::error_code ec;
      if (!WriteAtOnce(*answer, ec)) return WriteRest(answer);
      return AfterWrite(ec, answer->keep_alive);
    }
    WriteRest(answer);
  }

  // A whole answer written (or failed): the next request, or the close.
  void AfterWrite(beast::error_code ec, bool keep_alive) {
    busy_ = false;
    // A shutdown that began while this answer was being written found the
    // session busy and left it: it closes here instead of waiting for a
    // next request until the grace period ends.
    if (ec || !keep_alive || server_->stopping) return Close();
    Read();
  }

  void ResetOnClose(bool on) {
    const linger l{on ? 1 : 0, 0};
    ::setsockopt(Fd(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
  }

  // An abortive close (RST, and no TLS close_notify): the peer's read fails
  // instead of ending.
  void Reset() {
    beast::error_code ignored;
    Tcp().socket().set_option(asio::socket_base::linger(true, 0), ignored);
    Tcp().socket().close(ignored);
  }

  void Close() {
    if (discard_rest_ && !server_->stopping) {
      discard_rest_ = false;
      if constexpr (!kTls) {  // the answer's end for the client first
        beast::error_code ec;
        stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
      }
      close_by_ = std::chrono::steady_clock::now() + server_->options.header_timeout;  // one deadline for all of it
      Tcp().expires_at(*close_by_);
      return DiscardRest(8 * server_->options.max_body_bytes + 2 * kReadBufferLimit);
    }
    if constexpr (kTls) {
      if (server_->stopping) {  // no wait for the peer's close_notify
        beast::error_code ignored;
        Tcp().socket().shutdown(tcp::socket::shutdown_both, ignored);
        return;
      }
      // close_notify, then the TCP close; bounded like any other wait (after
      // a discard, by what is left of its deadline).
      if (close_by_) {
        Tcp().expires_at(*close_by_);
      } else {
        Tcp().expires_after(server_->options.header_timeout);
      }
      stream_.async_shutdown([self = this->shared_from_this()](beast::error_code) {
        beast::error_code ignored;
        self->Tcp().socket().shutdown(tcp::socket::shutdown_both, ignored);
      });
    } else {
      beast::error_code ec;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
      // A hang-up wait still queued (StopWatching) would hold the session,
      // and the socket, until the client sent or closed.
      if (queued_watches_ > 0) stream_.socket().cancel(ec);
    }
  }

  // Reads and drops what the client still sends of a request answered
  // before it was read whole (a refused head, a 413), until its end: closed
  // with bytes unread, the socket would reset, and a client still sending
  // could lose the answer to the reset (nginx's lingering close). At most
  // `left` bytes (Close: 8 × max_body_bytes and a little more) within the
  // header timeout, then the close.
  void DiscardRest(size_t left) {
    buffer_.clear();
    stream_.async_read_some(buffer_.prepare(std::min<size_t>(left, 16 * 1024)),
                            [self = this->shared_from_this(), left](beast::error_code ec, size_t n) {
                              if (ec || n >= left) return self->Close();
                              self->DiscardRest(left - n);
                            });
  }

  // The socket's descriptor, whether the asio socket holds it or (plain) a
  // pool thread does (Detach); -1 once closed.
  int Fd() { return detached_ ? fd_ : Tcp().socket().native_handle(); }

  // Plain, on the pool thread that has the connection (busy_), before it
  // lingers: the I/O threads' epoll stops watching the socket. asio
  // registers a socket edge-triggered for good, so each request the thread
  // reads itself (NextOnPool) would also wake an I/O thread, for nothing.
  // Until Attach, only this thread uses the descriptor (Fd()).
  void Detach() {
    if (detached_) return;
    beast::error_code ec;
    const int fd = Tcp().socket().release(ec);
    if (ec) return;
    fd_ = fd;
    detached_ = true;
  }

  // The socket back in the I/O threads' reactor, before the session's loop uses it
  // (ToLoop, a queued stream). One the reactor refuses is closed (false):
  // its loop's next operation on it fails and ends the session.
  bool Attach() {
    if (!detached_) return true;
    detached_ = false;
    beast::error_code ec;
    Tcp().socket().assign(server_->protocol, fd_, ec);
    if (ec) ::close(fd_);
    fd_ = -1;
    if (ec) LogRefusedHandback(ec);
    return !ec;
  }

  // The reactor's limit (max_user_watches) refuses many at once: a count,
  // at most every 10 s.
  void LogRefusedHandback(beast::error_code ec) {
    const uint64_t n = ++server_->refused_handbacks;
    const int64_t now = std::chrono::steady_clock::now().time_since_epoch().count();
    int64_t last = server_->last_handback_log.load();
    const int64_t every = std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::seconds(10)).count();
    if ((last == 0 || now - last >= every) && server_->last_handback_log.compare_exchange_strong(last, now)) {
      spdlog::warn("{} connection(s) in all could not be handed back to the I/O threads and were closed (last: {})", n,
                   ec.message());
    }
  }

  // Hands the connection back to the session's loop, then runs `fn` there.
  template <class Fn>
  void ToLoop(Fn&& fn) {
    Attach();
    asio::post(stream_.get_executor(), std::forward<Fn>(fn));
  }

  std::shared_ptr<asio::ssl::context> tls_;  // before stream_, which uses it
  Stream stream_;
  std::string client_cert_subject_;  // RFC 2253; empty without a verified client certificate
  bool cert_authenticated_ = false;  // the handshake verified a client certificate
  beast::flat_buffer buffer_{kReadBufferLimit};
  std::optional<RequestParser> parser_;
  HttpServer::Impl* server_;
  uint64_t id_;
  size_t loop_ = 0;       // which of the server's loops this session lives on (Start)
  bool counted_ = false;  // SessionStarted ran for it
  uint64_t tls_generation_;  // Impl::tls_generation when tls_ was taken
  std::string peer_;  // the remote address, taken at the first request
  bool peer_known_ = false;
  bool first_ = true;
  bool busy_ = false;
  bool keep_alive_ = true;
  bool head_ = false;  // the request being answered is a HEAD (MakeRequest)
  bool discard_rest_ = false;  // its answer went out before it was read whole: Close discards the rest
  // Set when that discard begins: the close is done by then (the shutdown
  // does not wait for it).
  std::optional<std::chrono::steady_clock::time_point> close_by_;
  bool stream_chunked_ = false;     // the streamed answer in progress is chunked
  bool stream_close_delimited_ = false;  // or its body ends at the close (HTTP/1.0); else it has none
  bool stream_keep_alive_ = false;  // and keeps the connection
  int fd_ = -1;                     // while detached: the socket's descriptor
  bool detached_ = false;           // plain: a pool thread holds fd_ (Detach)
  int queued_watches_ = 0;          // hang-up waits queued on the socket (WatchHangUp)
  bool next_on_watch_ = false;      // the next request awaits their end (ReadOnWatch)
  uint64_t watch_waits_ = 0;        // ReadOnWatch's waits begun (its timer's is the last)
  asio::steady_timer idle_timer_{stream_.get_executor()};  // ReadOnWatch's idle timeout
};

void HttpServer::Impl::Accept() {
  asio::io_context& loop = *loops[next_loop++ % running_loops];
  acceptor.async_accept(loop, asio::bind_executor(control, [this](beast::error_code ec, tcp::socket socket) {
    OnAccepted(ec, std::move(socket));
  }));
}

void HttpServer::Impl::OnAccepted(beast::error_code ec, tcp::socket socket) {
  if (stopping || !acceptor.is_open()) return;
  if (ec) {
    // EMFILE, ENFILE, ENOBUFS…: the connection stays in the backlog and the
    // next accept would fail at once; wait (10 ms doubling to 1 s) instead.
    if (accept_backoff.count() == 0) spdlog::warn("accept failed: {}; retrying with a back-off", ec.message());
    accept_backoff = std::clamp(accept_backoff * 2, std::chrono::milliseconds(10), std::chrono::milliseconds(1000));
    accept_timer.expires_after(accept_backoff);
    accept_timer.async_wait([this](beast::error_code ec) {
      if (!ec && !stopping) Accept();
    });
    return;
  }
  accept_backoff = std::chrono::milliseconds(0);
  // The next accept first (on this same strand, it runs after this one):
  // a session that cannot be made (an exception, contained by the run loop)
  // must not end the accepting.
  Accept();
  std::shared_ptr<SessionBase> session;
  {
    MutexLock lock(&mu);
    if (sessions.size() < options.max_connections) {
      uint64_t id = next_session++;
      if (tls) {
        session = std::make_shared<Session<TlsStream>>(std::move(socket), this, id, tls, tls_generation.load());
      } else {
        session = std::make_shared<Session<beast::tcp_stream>>(std::move(socket), this, id, nullptr, 0);
      }
      sessions[id] = session;
    }
  }
  if (session) {
    session->Start();
  } else {
    socket.close(ec);  // over GATEWAY_MAX_CONNECTIONS
    ++refused;
    auto now = std::chrono::steady_clock::now();
    if (now - last_refusal_log >= std::chrono::seconds(10)) {
      spdlog::warn("{} connection(s) closed at once: {} open, the GATEWAY_MAX_CONNECTIONS limit", refused,
                   options.max_connections);
      last_refusal_log = now;
      refused = 0;
    }
  }
}

void HttpServer::Impl::WaitForSignal() {
  signals.async_wait([this](beast::error_code ec, int signal) {
    if (ec) return;
    if (signal != SIGHUP) return BeginShutdown();
    if (tls) {
      ReloadTls();
    } else {
      spdlog::warn("SIGHUP: plain HTTP, nothing to reload");
    }
    WaitForSignal();
  });
}

// New handshakes use the new files; sessions keep the context they started
// with, except that one which authenticated by client certificate answers its
// current request and closes (the new client CA may have dropped its issuer).
// A bad file keeps the current context and every connection.
void HttpServer::Impl::ReloadTls() {
  auto ctx = NewTlsServerContext(options.tls);
  if (!ctx.ok()) {
    spdlog::error("SIGHUP: TLS reload failed, still serving the previous certificate: {}", ctx.error().message);
    return;
  }
  tls = std::make_shared<asio::ssl::context>(ctx->release());
  tls_generation.fetch_add(1);
  if (!options.tls.client_ca_file.empty()) {
    for (auto& s : LiveSessions()) s->PostReload();
  }
  spdlog::warn("SIGHUP: TLS certificate and key reloaded from '{}' and '{}'{}", options.tls.cert_file,
               options.tls.key_file,
               options.tls.client_ca_file.empty()
                   ? ""
                   : ", client CA from '" + options.tls.client_ca_file +
                         "'; connections authenticated by client certificate close after their current request");
}

std::vector<std::shared_ptr<SessionBase>> HttpServer::Impl::LiveSessions() {
  std::vector<std::shared_ptr<SessionBase>> live;
  MutexLock lock(&mu);
  for (auto& [id, weak] : sessions) {
    if (auto s = weak.lock()) live.push_back(std::move(s));
  }
  return live;
}

void HttpServer::Impl::Forget(uint64_t id) {
  MutexLock lock(&mu);
  sessions.erase(id);
  if (stopping && sessions.empty() && !finished) {
    asio::post(control, [this] { grace_timer.cancel(); });
  }
}

void HttpServer::Impl::BeginShutdown() {
  if (stopping.exchange(true)) return;
  shutting_down.Raise();
  StopTicks();
  if (options.on_shutdown) options.on_shutdown();
  beast::error_code ec;
  acceptor.close(ec);
  accept_timer.cancel();
  signals.cancel(ec);
  std::vector<std::shared_ptr<SessionBase>> live;
  {
    MutexLock lock(&mu);
    for (auto& [id, weak] : sessions) {
      if (auto s = weak.lock()) live.push_back(std::move(s));
    }
    if (sessions.empty()) return;  // nothing to wait for
  }
  for (auto& s : live) s->PostShutdown();
  grace_timer.expires_after(options.shutdown_grace);
  grace_timer.async_wait([this](beast::error_code ec) {
    if (ec) return;
    size_t open = 0;
    {
      MutexLock lock(&mu);
      open = sessions.size();
    }
    spdlog::warn("shutdown: {} connection(s) still open after the {}s grace period; stopping", open,
                 options.shutdown_grace.count());
    StopLoops();  // requests still running past the grace period
  });
}

HttpServer::HttpServer(HttpServerOptions options, RequestHandler handler, PoolClassifier classify)
    : impl_(std::make_unique<Impl>(std::move(options))) {
  impl_->handler = std::move(handler);
  impl_->classify = std::move(classify);
  if (impl_->options.evented_upstream) {
    impl_->evented = std::make_unique<EventedUpstream>(EventedUpstream::Options{});
  }
}

HttpServer::~HttpServer() = default;

Status HttpServer::Listen() {
  beast::error_code ec;
  auto address = asio::ip::make_address(impl_->options.host, ec);
  std::string where = impl_->options.host + ":" + std::to_string(impl_->options.port);
  if (ec) return MakeError(ErrorCode::kInvalidArgument, "GATEWAY_HOST: '" + impl_->options.host + "' is not an IP address");
  if (impl_->options.tls.enabled()) {  // before binding: a bad file is refused without touching the port
    DYAD_ASSIGN_OR_RETURN(SslCtxPtr ctx, NewTlsServerContext(impl_->options.tls));
    impl_->tls = std::make_shared<asio::ssl::context>(ctx.release());
  }
  DYAD_RETURN_IF_ERROR(impl_->io_stop.Check("stopping streams"));
  DYAD_RETURN_IF_ERROR(impl_->shutting_down.Check("the shutdown"));
  if (impl_->classify) {  // likewise before binding
    DYAD_RETURN_IF_ERROR(impl_->blocking.work_posted().Check("the blocking handler pool"));
    DYAD_RETURN_IF_ERROR(impl_->upstream.work_posted().Check("the /v1 upstream handler pool"));
    const ThreadStarter& starter = impl_->options.start_thread;
    DYAD_RETURN_IF_ERROR(impl_->blocking.Start(std::max(1, impl_->options.blocking_threads), starter,
                                               "blocking handler pool (GATEWAY_BLOCKING_THREADS)"));
    DYAD_RETURN_IF_ERROR(impl_->upstream.Start(std::max(1, impl_->options.upstream_threads), starter,
                                               "/v1 upstream handler pool (GATEWAY_V1_THREADS)"));
  }
  tcp::endpoint endpoint(address, impl_->options.port);
  impl_->protocol = endpoint.protocol();
  auto& acc = impl_->acceptor;
  acc.open(endpoint.protocol(), ec);
  if (!ec) acc.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acc.bind(endpoint, ec);
  if (!ec) acc.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return MakeError(ErrorCode::kUnavailable, "cannot listen on " + where + ": " + ec.message());
  // Caught from here on (queued until Run() waits), so a signal sent as soon
  // as the port is announced still shuts down gracefully.
  impl_->signals.add(SIGINT);
  impl_->signals.add(SIGTERM);
  impl_->signals.add(SIGHUP);  // reloads TLS; logged and otherwise ignored over plain HTTP
  return OkStatus();
}

uint16_t HttpServer::port() const {
  beast::error_code ec;
  auto ep = impl_->acceptor.local_endpoint(ec);
  return ec ? 0 : ep.port();
}

void HttpServer::Run() {
  std::vector<std::thread> threads;
  for (size_t i = 1; i < impl_->loops.size(); ++i) {
    asio::io_context& loop = *impl_->loops[i];
    auto started = StartThread(impl_->options.start_thread, [&loop] { RunContainingEscapes(loop, "I/O thread"); });
    if (!started.ok()) {  // serve on those there are: a throw here would end the process
      spdlog::warn("serving on {} of {} I/O threads: cannot start another: {}", i, impl_->loops.size(),
                   started.error().message);
      break;
    }
    threads.push_back(std::move(started).value());
  }
  impl_->running_loops = threads.size() + 1;  // before the first accept, which reads it
  asio::dispatch(impl_->control, [this] {
    impl_->WaitForSignal();
    impl_->Accept();
  });
  RunContainingEscapes(impl_->ioc, "I/O thread");
  // loops[0] ran out of work: no connection is left (or the grace period
  // stopped every loop). The other loops end once their queues are empty.
  impl_->loop_guards.clear();
  for (auto& t : threads) t.join();
  impl_->finished = true;
  impl_->StopStreams();  // before the pools' join: a producer waiting for room returns
  impl_->blocking.Stop();  // queued work is dropped; running handlers finish
  impl_->upstream.Stop();
}

void HttpServer::Shutdown() {
  asio::post(impl_->control, [this] { impl_->BeginShutdown(); });
}

}  // namespace dyad
