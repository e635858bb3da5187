#include "server/evented_upstream.h"

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "core/mutex.h"
#include "core/secret_bytes.h"
#include "transport/http_answer.h"
#include "transport/upstream_target.h"
#include "transport/upstream_wire.h"

namespace dyad {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Steady = std::chrono::steady_clock;
using beast_ec = boost::system::error_code;

namespace {

// How soon after a request went out on a kept connection its close still
// means "closed while idle, the request unread" (UpstreamClient's window).
constexpr std::chrono::milliseconds kStaleCloseWindow{250};
// The receive buffer: 16 KiB at first, grown to hold a head of up to 64 KiB
// (the reader's limit) and a read beside it.
constexpr size_t kFirstBuffer = 16 * 1024;
constexpr size_t kMaxBuffer = 96 * 1024;

// A kept-alive connection to one origin, with its reader and buffer.
struct Conn {
  explicit Conn(const asio::any_io_executor& loop) : sock(loop) {}
  tcp::socket sock;
  Steady::time_point idle_since;
  AnswerReader reader;
  std::vector<char> in = std::vector<char>(kFirstBuffer);
};

// Whether a kept connection is still fit to carry a request: nothing
// arrived on it while it was idle (no close, no reset, no stray byte).
bool QuietSinceKept(Conn& c) {
  char byte;
  const ssize_t n = ::recv(c.sock.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

}  // namespace

struct EventedUpstream::Impl {
  explicit Impl(Options options) : options(options) {}

  // The most recently kept connection to `origin` that is still fit; null
  // when there is none (those too old or no longer quiet are closed).
  std::unique_ptr<Conn> Lease(const std::string& origin) DYAD_LOCKS_EXCLUDED(mu) {
    std::vector<std::unique_ptr<Conn>> unfit;  // closed after the lock
    MutexLock lock(&mu);
    auto it = idle.find(origin);
    if (it == idle.end()) return nullptr;
    auto& free = it->second;
    const Steady::time_point oldest_kept = Steady::now() - options.max_idle_age;
    while (!free.empty()) {
      std::unique_ptr<Conn> c = std::move(free.back());
      free.pop_back();
      if (c->idle_since >= oldest_kept && QuietSinceKept(*c)) return c;
      unfit.push_back(std::move(c));
    }
    return nullptr;
  }

  void GiveBack(const std::string& origin, std::unique_ptr<Conn> c) DYAD_LOCKS_EXCLUDED(mu) {
    c->idle_since = Steady::now();
    MutexLock lock(&mu);
    if (closed) return;  // `c` closes its connection (on its own loop's thread)
    auto& free = idle[origin];
    if (free.size() < options.max_idle_per_host) free.push_back(std::move(c));
    // Over the limit: `c` closes its connection here.
  }

  const Options options;
  UpstreamTargetCache targets;
  Mutex mu;
  std::unordered_map<std::string, std::vector<std::unique_ptr<Conn>>> idle DYAD_GUARDED_BY(mu);
  bool closed DYAD_GUARDED_BY(mu) = false;  // CloseIdle: nothing is kept from then on
};

namespace {

// One call, on its executor from Run() to Finish().
class Exchange final : public EventedUpstream::Call,
                       public AnswerListener,
                       public std::enable_shared_from_this<Exchange> {
 public:
  Exchange(std::shared_ptr<EventedUpstream::Impl> owner, const UpstreamRequest& request, UpstreamSink& sink,
           asio::any_io_executor executor, EventedUpstream::Pause pause, EventedUpstream::Done done)
      : owner_(std::move(owner)),
        request_(request),
        sink_(sink),
        executor_(std::move(executor)),
        timer_(executor_),
        pause_(std::move(pause)),
        done_(std::move(done)) {}

  void Run() {
    auto target = owner_->targets.Get(request_.url);
    if (!target.ok()) return Finish(target.error(), UpstreamFailure::kInvalidRequest);
    target_ = std::move(target).value();
    what_ = UpstreamCallName(request_.method, *target_);
    if (Interrupted()) return;  // cancelled before it ran: nothing goes out
    auto query = UpstreamQuery(request_, *target_);
    if (!query.ok()) return Finish(query.error(), UpstreamFailure::kInvalidRequest);
    give_up_ = Steady::now() + request_.timeouts.total;
    SerialiseUpstreamRequest(request_, *target_, *query, /*inline_body=*/false, out_);
    conn_ = owner_->Lease(PoolKey());
    reused_ = conn_ != nullptr;
    if (reused_) return Send();
    Connect();
  }

  void Cancel() override {
    if (finished_) return;
    cancelled_ = true;
    CloseSocket();  // the operation in progress ends now (aborted)
  }

  // AnswerListener: the reader's calls, passed to the sink.
  bool OnAnswerHead(int status) override {
    head_.status = status;
    RemoveHopByHop(head_.headers);
    head_done_ = fed_ = true;
    return sink_.OnHead(head_);
  }
  bool OnAnswerBody(std::string_view piece) override {
    fed_ = true;
    return sink_.OnBody(piece);
  }
  bool OnAnswerFlush(bool last) override {
    fed_ = true;
    return sink_.OnFlush(last);
  }

 private:
  auto Bound(auto fn) { return asio::bind_executor(executor_, std::move(fn)); }
  // Connections are kept per origin and per event loop: each stays on the
  // loop that made it, whose thread alone runs its handlers.
  std::string PoolKey() const {
    const void* loop = &asio::query(executor_, asio::execution::context);
    return target_->origin + "#" + std::to_string(reinterpret_cast<uintptr_t>(loop));
  }

  void Connect() {
    const std::string& host = target_->host;
    beast_ec ec;
    const auto address = asio::ip::make_address(host, ec);
    if (ec) return Finish(MakeError(ErrorCode::kUnavailable, what_ + ": " + host + " is not an IP address"), UpstreamFailure::kConnect);
    if (IsForbiddenUpstreamAddress(host)) {
      return Finish(MakeError(ErrorCode::kUnavailable,
                              what_ + ": refused to connect to " + host + ", a link-local or cloud metadata address"),
                    UpstreamFailure::kRefusedAddress);
    }
    const std::string& origin = target_->origin;
    const auto port = static_cast<uint16_t>(std::stoi(origin.substr(origin.rfind(':') + 1)));
    conn_ = std::make_unique<Conn>(executor_);
    Arm(Steady::now() + request_.timeouts.connect, "connect");
    conn_->sock.async_connect(tcp::endpoint(address, port), Bound([self = shared_from_this()](beast_ec ec) {
                                self->OnConnected(ec);
                              }));
  }

  void OnConnected(beast_ec ec) {
    if (Interrupted()) return;
    if (ec) return Finish(MakeError(ErrorCode::kUnavailable, what_ + ": cannot connect: " + ec.message()), UpstreamFailure::kConnect);
    conn_->sock.set_option(tcp::no_delay(true), ec);
    Send();
  }

  void Send() {
    sent_at_ = Steady::now();
    Arm(sent_at_ + request_.timeouts.first_byte, "first-byte");
    head_.headers.clear();
    conn_->reader.StartStreaming(&head_.headers, this, request_.method == "HEAD");
    in_begin_ = in_end_ = 0;
    const std::array<asio::const_buffer, 2> buffers{asio::buffer(out_.data(), out_.size()),
                                                    asio::buffer(request_.body.data(), request_.body.size())};
    asio::async_write(conn_->sock, buffers, Bound([self = shared_from_this()](beast_ec ec, size_t) {
                        self->OnSent(ec);
                      }));
  }

  void OnSent(beast_ec ec) {
    if (Interrupted()) return;
    if (ec) {
      // A kept connection the upstream closed while it was idle fails the send.
      if (reused_ && !resent_) return Resend();
      return Finish(MakeError(ErrorCode::kUnavailable, what_ + ": sending the request: " + ec.message()),
                    UpstreamFailure::kConnectionLost);
    }
    Read();
  }

  void Read() {
    std::vector<char>& in = conn_->in;
    if (in_end_ == in.size()) {
      if (in.size() >= kMaxBuffer) return Finish(UpstreamHeadTooLarge(what_), UpstreamFailure::kBadAnswer);
      in.resize(std::min(kMaxBuffer, in.size() * 2));
    }
    conn_->sock.async_read_some(asio::buffer(in.data() + in_end_, in.size() - in_end_),
                                Bound([self = shared_from_this()](beast_ec ec, size_t n) { self->OnRead(ec, n); }));
  }

  void OnRead(beast_ec ec, size_t n) {
    if (Interrupted()) return;
    AnswerReader& reader = conn_->reader;
    fed_ = false;
    if (n > 0) {
      answered_ = true;
      Arm(Steady::now() + request_.timeouts.idle, "idle");
      in_end_ += n;
      std::vector<char>& in = conn_->in;
      in_begin_ += reader.Feed(in.data() + in_begin_, in_end_ - in_begin_);
      if (in_begin_ > 0) {  // what the reader left for later goes to the front
        std::memmove(in.data(), in.data() + in_begin_, in_end_ - in_begin_);
        in_end_ -= in_begin_;
        in_begin_ = 0;
      }
    } else if (ec == asio::error::eof) {
      if (!answered_ && reused_ && !resent_ && Steady::now() - sent_at_ < kStaleCloseWindow) return Resend();
      reader.FeedEof();
    } else if (ec) {
      if (!answered_ && reused_ && !resent_ && Steady::now() - sent_at_ < kStaleCloseWindow) return Resend();
      return Finish(MakeError(ErrorCode::kUnavailable, what_ + ": " + Cut() + ec.message()), UpstreamFailure::kConnectionLost);
    }
    if (reader.failed()) {
      return Finish(ReaderError(),
                    reader.cut_by_close() ? UpstreamFailure::kConnectionLost : UpstreamFailure::kBadAnswer);
    }
    if (!fed_) return reader.done() ? Complete() : Read();
    // The sink wrote: the client takes it before the upstream is read again.
    // Meanwhile only the total timeout runs: a slow client is not the
    // upstream's silence. The idle one starts again with the next read.
    Arm(give_up_, "total");
    pause_([self = shared_from_this()](bool client_took_it) {
      if (self->Interrupted()) return;
      if (!client_took_it) return self->Finish(UpstreamClientHungUp(self->what_));
      if (self->conn_->reader.done()) return self->Complete();
      self->Arm(Steady::now() + self->request_.timeouts.idle, "idle");
      self->Read();
    });
  }

  // The request again, on a new connection (the kept one was closed idle).
  void Resend() {
    resent_ = true;
    reused_ = false;
    CloseSocket();
    conn_.reset();
    Connect();
  }

  // The answer is whole: the connection is kept when it may carry another
  // request and nothing follows the answer on it.
  void Complete() {
    if (!head_done_) {
      return Finish(MakeError(ErrorCode::kUnavailable, what_ + ": no answer head"), UpstreamFailure::kBadAnswer);
    }
    if (conn_->reader.keep_alive() && in_end_ == 0) {
      owner_->GiveBack(PoolKey(), std::move(conn_));
    }
    Finish(OkStatus());
  }

  Status ReaderError() const {
    const AnswerReader& reader = conn_->reader;
    if (reader.cancelled()) return MakeError(ErrorCode::kCancelled, what_ + ": the answer's reader stopped reading it");
    if (reader.head_too_large()) return UpstreamHeadTooLarge(what_);
    return MakeError(ErrorCode::kUnavailable, what_ + ": " + Cut() + reader.error());
  }

  std::string Cut() const { return head_done_ ? "the answer was cut short: " : ""; }

  // A timeout passed or the client hung up: the call ends (true).
  bool Interrupted() {
    if (finished_) return true;
    if (cancelled_) {
      Finish(UpstreamClientHungUp(what_));
      return true;
    }
    if (timed_out_) {
      Finish(UpstreamTimedOut(what_, timed_out_, request_.timeouts, head_done_), TimeoutFailure(timed_out_));
      return true;
    }
    return false;
  }

  // The deadline of the phase begun (`which` timeout), or the total one when
  // sooner. The timer is moved only to an earlier time; when it fires before
  // the deadline (a read moved it on since), it is armed again.
  void Arm(Steady::time_point deadline, const char* which) {
    if (deadline >= give_up_) {
      deadline = give_up_;
      which = "total";
    }
    deadline_ = deadline;
    phase_ = which;
    if (timer_armed_ && timer_.expiry() <= deadline) return;
    timer_armed_ = true;
    timer_.expires_at(deadline);
    timer_.async_wait(Bound([self = shared_from_this()](beast_ec ec) { self->OnTimer(ec); }));
  }

  void OnTimer(beast_ec ec) {
    if (ec == asio::error::operation_aborted) return;  // re-armed earlier, or finished
    timer_armed_ = false;
    if (finished_) return;
    if (Steady::now() < deadline_) return Arm(deadline_, phase_);
    timed_out_ = phase_;
    CloseSocket();  // the operation in progress ends now; a pause ends when the client's write does
  }

  void CloseSocket() {
    if (!conn_) return;
    beast_ec ignored;
    conn_->sock.shutdown(tcp::socket::shutdown_both, ignored);
    conn_->sock.close(ignored);
  }

  // `kind`: what the sink is told of a failure (UpstreamSink::OnFailure).
  void Finish(Status status, UpstreamFailure kind = UpstreamFailure::kNone) {
    if (finished_) return;
    finished_ = true;
    if (!status.ok() && kind != UpstreamFailure::kNone) sink_.OnFailure(kind);
    timer_.cancel();
    CloseSocket();  // not kept (Complete gave a kept one back)
    conn_.reset();
    Cleanse(out_);  // the credential
    // pause_ stays (this may run inside it); what it holds goes with this call.
    EventedUpstream::Done done = std::move(done_);
    done_ = nullptr;
    done(std::move(status));
  }

  std::shared_ptr<EventedUpstream::Impl> owner_;
  const UpstreamRequest& request_;
  UpstreamSink& sink_;
  asio::any_io_executor executor_;
  asio::steady_timer timer_;
  EventedUpstream::Pause pause_;
  EventedUpstream::Done done_;
  std::shared_ptr<const UpstreamTarget> target_;
  std::string what_;
  WipedString out_;  // the request's head, the credential in it
  std::unique_ptr<Conn> conn_;
  UpstreamHead head_;
  size_t in_begin_ = 0, in_end_ = 0;  // what conn_->in holds unread
  Steady::time_point give_up_, sent_at_, deadline_;
  const char* phase_ = "connect";
  const char* timed_out_ = nullptr;  // which timeout passed
  bool timer_armed_ = false;
  bool reused_ = false;     // conn_ was kept from an earlier call
  bool resent_ = false;     // the request went out a second time
  bool answered_ = false;   // a byte of the answer arrived
  bool head_done_ = false;  // the sink heard the head
  bool fed_ = false;        // the reader called the sink in the last read
  bool cancelled_ = false;
  bool finished_ = false;
};

}  // namespace

EventedUpstream::EventedUpstream(Options options) : impl_(std::make_shared<Impl>(options)) {}

// Calls still queued on the loops may hold the client's state past this,
// and with it kept connections of loops destroyed before it: closed now.
EventedUpstream::~EventedUpstream() { CloseIdle(); }

bool EventedUpstream::Supports(const UpstreamRequest& request) {
  if (request.body.size() > kMaxBody) return false;
  auto target = impl_->targets.Get(request.url);
  return target.ok() && IsPlainNumericTarget(**target);
}

std::shared_ptr<EventedUpstream::Call> EventedUpstream::Start(const UpstreamRequest& request, UpstreamSink& sink,
                                                              asio::any_io_executor executor, Pause pause, Done done) {
  auto call = std::make_shared<Exchange>(impl_, request, sink, executor, std::move(pause), std::move(done));
  asio::post(executor, [call] { call->Run(); });
  return call;
}

size_t EventedUpstream::IdleConnections() {
  MutexLock lock(&impl_->mu);
  size_t n = 0;
  for (const auto& [origin, free] : impl_->idle) n += free.size();
  return n;
}

void EventedUpstream::CloseIdle() {
  std::unordered_map<std::string, std::vector<std::unique_ptr<Conn>>> idle;  // closed after the lock
  MutexLock lock(&impl_->mu);
  impl_->closed = true;
  idle.swap(impl_->idle);
}

}  // namespace dyad
