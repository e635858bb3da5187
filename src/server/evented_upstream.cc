#include "server/evented_upstream.h"

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "core/mutex.h"
#include "core/secret_bytes.h"
#include "server/fd_writer.h"
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

  // One event loop's kept connections, by origin. Each stays on the loop
  // that made it, whose thread alone runs its handlers; only that loop's
  // calls (and CloseIdle, IdleConnections) lock its shard, so the loops
  // never wait for each other here.
  struct Shard {
    Mutex mu;
    std::unordered_map<std::string, std::vector<std::unique_ptr<Conn>>> idle DYAD_GUARDED_BY(mu);
    bool closed DYAD_GUARDED_BY(mu) = false;  // CloseIdle: nothing is kept from then on
  };

  // `loop`'s shard: found once per thread, then remembered (a loop's calls
  // run on its one thread). A loop is known by its address, so this object
  // must not outlive its loops (HttpServer destroys it first): a new loop at
  // a dead one's address would find connections of the dead one.
  Shard& ShardOf(const void* loop) DYAD_LOCKS_EXCLUDED(shards_mu) {
    thread_local struct {
      uint64_t owner = 0;
      const void* loop = nullptr;
      Shard* shard = nullptr;
    } last;
    if (last.owner == id && last.loop == loop) return *last.shard;
    MutexLock lock(&shards_mu);
    std::unique_ptr<Shard>& shard = shards[loop];
    if (!shard) {
      shard = std::make_unique<Shard>();
      MutexLock shard_lock(&shard->mu);
      shard->closed = closed;
    }
    last = {id, loop, shard.get()};
    return *shard;
  }

  // The target of a call Start can make; null for any other.
  std::shared_ptr<const UpstreamTarget> TargetOf(const UpstreamRequest& request) {
    if (request.body.size() > kMaxBody) return nullptr;
    auto target = targets.Get(request.url);
    if (!target.ok() || !IsPlainNumericTarget(**target)) return nullptr;
    return std::move(target).value();
  }

  // The most recently kept connection to `origin` that is still fit; null
  // when there is none (those too old or no longer quiet are closed).
  std::unique_ptr<Conn> Lease(Shard& shard, const std::string& origin) DYAD_LOCKS_EXCLUDED(shard.mu) {
    std::vector<std::unique_ptr<Conn>> unfit;  // closed after the lock
    MutexLock lock(&shard.mu);
    auto it = shard.idle.find(origin);
    if (it == shard.idle.end()) return nullptr;
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

  void GiveBack(Shard& shard, const std::string& origin, std::unique_ptr<Conn> c) DYAD_LOCKS_EXCLUDED(shard.mu) {
    c->idle_since = Steady::now();
    MutexLock lock(&shard.mu);
    if (shard.closed) return;  // `c` closes its connection (on its own loop's thread)
    auto& free = shard.idle[origin];
    if (free.size() < options.max_idle_per_host) free.push_back(std::move(c));
    // Over the limit: `c` closes its connection here.
  }

  const Options options;
  const uint64_t id = NextId();  // tells this object from one made later at the same address
  UpstreamTargetCache targets;
  Mutex shards_mu;
  std::unordered_map<const void*, std::unique_ptr<Shard>> shards DYAD_GUARDED_BY(shards_mu);
  bool closed DYAD_GUARDED_BY(shards_mu) = false;

 private:
  static uint64_t NextId() {
    static std::atomic<uint64_t> next{1};
    return next.fetch_add(1, std::memory_order_relaxed);
  }
};

namespace {

// One call, on its executor from Begin() to Finish().
class Exchange final : public EventedUpstream::Call,
                       public AnswerListener,
                       public std::enable_shared_from_this<Exchange> {
 public:
  Exchange(std::shared_ptr<EventedUpstream::Impl> owner, const UpstreamRequest& request,
           std::shared_ptr<const UpstreamTarget> target, UpstreamSink& sink, asio::any_io_executor executor,
           EventedUpstream::Pause pause, EventedUpstream::Done done)
      : owner_(std::move(owner)),
        request_(request),
        target_(std::move(target)),
        sink_(sink),
        executor_(std::move(executor)),
        timer_(executor_),
        pause_(std::move(pause)),
        done_(std::move(done)) {}

  void Begin() override {
    what_ = UpstreamCallName(request_.method, *target_);
    if (Interrupted()) return;  // cancelled before it ran: nothing goes out
    auto query = UpstreamQuery(request_, *target_);
    if (!query.ok()) return Finish(query.error(), UpstreamFailure::kInvalidRequest);
    give_up_ = Steady::now() + request_.timeouts.total;
    SerialiseUpstreamRequest(request_, *target_, *query, /*inline_body=*/false, out_);
    shard_ = &owner_->ShardOf(&asio::query(executor_, asio::execution::context));
    conn_ = owner_->Lease(*shard_, target_->origin);
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
    head_.headers.clear();
    conn_->reader.StartStreaming(&head_.headers, this, request_.method == "HEAD");
    in_begin_ = in_end_ = 0;
    std::array<asio::const_buffer, 2> rest{asio::buffer(out_.data(), out_.size()),
                                           asio::buffer(request_.body.data(), request_.body.size())};
    // Most requests fit the socket's send buffer: written here at once, with
    // no completion queued; only a remainder is written asynchronously.
    beast_ec ec;
    size_t sent = FdWriter{conn_->sock.native_handle()}.write_some(rest, ec);
    // (armed after the write: the timer's update is not between the request
    // and the upstream)
    Arm(sent_at_ + request_.timeouts.first_byte, "first-byte");
    if (ec && ec != asio::error::would_block) return OnSent(ec);
    for (asio::const_buffer& b : rest) {
      const size_t n = std::min(sent, b.size());
      b += n;
      sent -= n;
    }
    if (asio::buffer_size(rest) == 0) return OnSent({});
    asio::async_write(conn_->sock, rest, Bound([self = shared_from_this()](beast_ec ec, size_t) {
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
      owner_->GiveBack(*shard_, target_->origin, std::move(conn_));
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
  const std::shared_ptr<const UpstreamTarget> target_;
  UpstreamSink& sink_;
  asio::any_io_executor executor_;
  asio::steady_timer timer_;
  EventedUpstream::Pause pause_;
  EventedUpstream::Done done_;
  EventedUpstream::Impl::Shard* shard_ = nullptr;  // this loop's kept connections
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

bool EventedUpstream::Supports(const UpstreamRequest& request) { return impl_->TargetOf(request) != nullptr; }

std::shared_ptr<EventedUpstream::Call> EventedUpstream::Start(const UpstreamRequest& request, UpstreamSink& sink,
                                                              asio::any_io_executor executor, Pause pause, Done done) {
  auto target = impl_->TargetOf(request);
  if (!target) return nullptr;
  return std::make_shared<Exchange>(impl_, request, std::move(target), sink, std::move(executor), std::move(pause),
                                    std::move(done));
}

size_t EventedUpstream::IdleConnections() {
  MutexLock lock(&impl_->shards_mu);
  size_t n = 0;
  for (const auto& [loop, shard] : impl_->shards) {
    MutexLock shard_lock(&shard->mu);
    for (const auto& [origin, free] : shard->idle) n += free.size();
  }
  return n;
}

void EventedUpstream::CloseIdle() {
  std::vector<std::unique_ptr<Conn>> idle;  // closed after the locks
  MutexLock lock(&impl_->shards_mu);
  impl_->closed = true;
  for (const auto& [loop, shard] : impl_->shards) {
    MutexLock shard_lock(&shard->mu);
    shard->closed = true;
    for (auto& [origin, free] : shard->idle) {
      for (auto& c : free) idle.push_back(std::move(c));
    }
    shard->idle.clear();
  }
}

}  // namespace dyad
