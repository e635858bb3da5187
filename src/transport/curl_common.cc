#include "transport/curl_common.h"

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "transport/http_answer.h"

namespace dyad {

void EnsureCurlGlobalInit() {
  static std::once_flag init;
  std::call_once(init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

bool ProxyInEnvironment() {
  for (const char* name : {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"}) {
    const char* v = std::getenv(name);
    if (v && *v) return true;
  }
  return false;
}

// find_first_of of three characters is a memchr for each of them, per byte
// (≈ 10 k instructions per signed request).
bool HasBreakOrNul(std::string_view s) {
  bool found = false;
  for (char c : s) found |= (c == '\r') | (c == '\n') | (c == '\0');
  return found;
}

bool Idempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "PUT" || method == "DELETE" || method == "OPTIONS";
}

bool HungUp(int fd) {
  pollfd p{fd, POLLRDHUP, 0};
  return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}

// No poll() shortcut: bytes of a TLS record already read from the socket
// wait inside OpenSSL, where poll() does not see them (the socket is quiet,
// the connection is not). curl_easy_recv asks OpenSSL first, then the
// socket: CURLE_AGAIN only when neither holds anything (one syscall, as the
// poll() was).
bool ConnectionStillOpen(CURL* curl) {
  char byte;
  size_t n = 0;
  return curl_easy_recv(curl, &byte, 1, &n) == CURLE_AGAIN;
}

namespace {

// What WaitForSocketEvents answers when `hang_up_fd` hung up: a bit poll()
// never sets for `sock` (its POLLRDHUP is not asked for).
constexpr short kHungUp = POLLRDHUP;

// Waits until `sock` is ready for `events` (POLLIN, POLLOUT), `deadline`
// passes or `hang_up_fd` (-1: none) hangs up: the events that are ready
// (with POLLERR or POLLHUP for an error or a hang-up, which the next send or
// recv reports), kHungUp, or 0 when it timed out (or poll() itself failed).
// What `sock` has ready comes first: an answer that is there is read.
short WaitForSocketEvents(curl_socket_t sock, short events, std::chrono::steady_clock::time_point deadline,
                          int hang_up_fd) {
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return 0;
    pollfd p[2] = {{sock, events, 0}, {hang_up_fd, POLLRDHUP, 0}};
    const int n = poll(p, hang_up_fd >= 0 ? 2 : 1, static_cast<int>(std::min<long long>(left + 1, 1 << 30)));
    if (n > 0) return p[0].revents != 0 ? p[0].revents : kHungUp;
    if (n < 0 && errno != EINTR) return 0;  // as a timeout: a retry would spin (ENOMEM, say)
  }
}

// What a read while sending found.
enum class EarlyRead { kNothing, kAnswer, kEnded };

EarlyRead ReadWhileSending(CURL* curl, char* into, size_t room, size_t& got, std::string& why) {
  size_t n = 0;
  const CURLcode rc = curl_easy_recv(curl, into, room, &n);
  if (rc == CURLE_AGAIN) return EarlyRead::kNothing;  // no data (a session ticket, say)
  if (rc == CURLE_OK && n > 0) {
    got = n;
    return EarlyRead::kAnswer;
  }
  why = rc == CURLE_OK ? "the connection closed before any answer" : curl_easy_strerror(rc);
  return EarlyRead::kEnded;
}

// How SendWatchingForAnswer ended.
enum class SendEnd {
  kSent,      // all of data went out
  kAnswered,  // the answer began before it did: its first bytes are in `into`
  kFailed,    // `why` says why
  kHungUp,    // `hang_up_fd` hung up
};

// Sends data[sent..] on a CONNECT_ONLY handle's connection with
// curl_easy_send, waiting for the socket until `deadline`, for a request
// whose answer may come before it is all out: an
// upstream refusing a large body (401, 413) answers at once and stops
// reading, or answers and resets; one may also send a 1xx or an early head
// and go on reading. While the send waits, and when it fails, a readable
// connection is read into `into` (`room` bytes): kAnswered with the bytes
// there (`got` of them), `sent` counting what went out. The caller decides
// whether the rest is sent (call again with the same `sent`) or not (the
// request is then incomplete: the connection must not carry another). A TLS
// record without data is not an answer; the connection closed with none is
// a failure. A hang-up of `hang_up_fd` (-1: none) ends a wait: kHungUp.
SendEnd SendWatchingForAnswer(CURL* curl, curl_socket_t sock, std::string_view data,
                              std::chrono::steady_clock::time_point deadline, int hang_up_fd, size_t& sent, char* into,
                              size_t room, size_t& got, std::string& why) {
  got = 0;
  while (sent < data.size()) {
    size_t n = 0;
    const CURLcode rc = curl_easy_send(curl, data.data() + sent, data.size() - sent, &n);
    if (rc == CURLE_OK) {
      sent += n;
      continue;
    }
    if (rc != CURLE_AGAIN) {
      // An upstream that answered and reset: the answer is still to be read.
      std::string ignored;
      if (ReadWhileSending(curl, into, room, got, ignored) == EarlyRead::kAnswer) return SendEnd::kAnswered;
      why = curl_easy_strerror(rc);
      return SendEnd::kFailed;
    }
    const short ready = WaitForSocketEvents(sock, POLLIN | POLLOUT, deadline, hang_up_fd);
    if (ready == kHungUp) return SendEnd::kHungUp;
    if (ready == 0) {
      why = "timed out sending the request";
      return SendEnd::kFailed;
    }
    if (ready & (POLLIN | POLLERR | POLLHUP)) {
      switch (ReadWhileSending(curl, into, room, got, why)) {
        case EarlyRead::kAnswer:
          return SendEnd::kAnswered;
        case EarlyRead::kEnded:
          return SendEnd::kFailed;
        case EarlyRead::kNothing:
          break;
      }
    }
  }
  return SendEnd::kSent;
}

// The receive buffer of an own exchange, after the parser took what it
// could: moves the unparsed bytes in[begin, end) to the front and, when that
// leaves no room, doubles `in` (its old storage freed unwiped: only an
// unfinished head is ever kept whole, never a body). False when it is full
// at `max_size` or more (a head too large).
bool MakeRoom(std::vector<char>& in, size_t& begin, size_t& end, size_t max_size) {
  if (begin > 0) {
    std::memmove(in.data(), in.data() + begin, end - begin);
    end -= begin;
    begin = 0;
  }
  if (end < in.size()) return true;
  if (in.size() >= max_size) return false;
  in.resize(in.size() * 2);
  return true;
}

using Steady = std::chrono::steady_clock;

// RunOwnExchange's state: the receive buffer's window [begin_, end_), what
// arrived, and when.
class OwnExchange {
 public:
  OwnExchange(const OwnConnection& c, AnswerReader& reader, const ExchangeTimeouts& t)
      : c_(c), in_(c.in), reader_(reader), t_(t) {
    if (in_.size() < 16384) in_.resize(16384);
  }

  ExchangeResult Run(std::string_view head, std::string_view body, const ResendRule& resend) {
    result_.while_sending = true;
    if (Send(head, body, resend)) {
      result_.while_sending = false;
      const Clock::Instant sent_end = resend.clock ? resend.clock->Now() : Clock::Instant();
      Read(resend, sent_end);
    }
    result_.high_water = high_water_;
    return std::move(result_);
  }

 private:
  // Sends the request's parts; false when the exchange ended (result_ says
  // how), true when the answer is to be read.
  bool Send(std::string_view head, std::string_view body, const ResendRule& resend) {
    const std::string_view parts[] = {head, body};
    for (size_t i = 0; i < 2; ++i) {
      size_t sent = 0;
      for (;;) {
        ExchangeTimeout which;
        const Steady::time_point deadline = Deadline(which);
        if (!MakeRoom(in_, begin_, end_, kMaxAnswerBuffer)) return End(ExchangeEnd::kHeadTooLarge);
        size_t got = 0;
        const SendEnd sending = SendWatchingForAnswer(c_.curl, c_.sock, parts[i], deadline, HangUpFd(), sent,
                                                      in_.data() + end_, in_.size() - end_, got, result_.why);
        if (sending == SendEnd::kSent) break;
        if (sending == SendEnd::kHungUp) return End(ExchangeEnd::kCancelled);
        if (sending == SendEnd::kFailed) {
          if (Steady::now() >= deadline) return TimedOut(which);
          if (received_ > 0) {  // what came of the answer is read to its end or failure
            sent_whole_ = false;
            return true;
          }
          if (resend.reused && (resend.after_partial_send || (i == 0 && sent == 0))) return End(ExchangeEnd::kResend);
          return End(ExchangeEnd::kFailed);
        }
        Took(got);  // never resent after the answer's first bytes
        Feed();
        if (reader_.done() || reader_.failed() || reader_.final_status() >= 300) {
          sent_whole_ = sent == parts[i].size() && (i == 1 || parts[1].empty());
          return true;
        }
      }
    }
    return true;
  }

  // Reads the answer to its end (or failure) into the reader.
  void Read(const ResendRule& resend, Clock::Instant sent_end) {
    bool wait_first = received_ == 0;  // the answer cannot be there yet: poll before the first read
    for (;;) {
      Feed();
      if (reader_.failed()) return Done(false);
      if (reader_.done()) return Done(end_ == begin_ && sent_whole_ && reader_.keep_alive());
      if (!MakeRoom(in_, begin_, end_, kMaxAnswerBuffer)) return (void)End(ExchangeEnd::kHeadTooLarge);
      ExchangeTimeout which;
      const Steady::time_point deadline = Deadline(which);
      if (Steady::now() >= t_.give_up) return (void)TimedOut(ExchangeTimeout::kTotal);
      if (wait_first) {
        wait_first = false;
        if (!Wait(deadline, which)) return;
      }
      size_t n = 0;
      const CURLcode rc = curl_easy_recv(c_.curl, in_.data() + end_, in_.size() - end_, &n);
      if (rc == CURLE_AGAIN) {
        if (!Wait(deadline, which)) return;
        continue;
      }
      if (rc == CURLE_OK && n == 0 && received_ > 0) {
        reader_.FeedEof();
        return Done(false);
      }
      if (rc != CURLE_OK || n == 0) {
        if (ClosedWhileIdle(resend, sent_end)) return (void)End(ExchangeEnd::kResend);
        result_.why = rc != CURLE_OK ? curl_easy_strerror(rc) : "the connection closed before any answer";
        return (void)End(ExchangeEnd::kFailed);
      }
      Took(n);
    }
  }

  // The client's socket to watch for a hang-up: until the answer's final
  // head (an interim 1xx keeps the watch).
  int HangUpFd() const { return reader_.final_status() == 0 ? t_.hang_up_fd : -1; }

  // Waits for the answer's next bytes: false when the exchange ended
  // (timed out, or the caller's client hung up before the answer).
  bool Wait(Steady::time_point deadline, ExchangeTimeout which) {
    const short ready = WaitForSocketEvents(c_.sock, POLLIN, deadline, HangUpFd());
    if (ready == kHungUp) return End(ExchangeEnd::kCancelled);
    if (ready == 0) return TimedOut(which);
    return true;
  }

  // A close with no byte of the answer on a kept connection: resent when
  // the rule allows it (the upstream closed an idle connection).
  bool ClosedWhileIdle(const ResendRule& resend, Clock::Instant sent_end) const {
    if (!resend.reused || received_ > 0) return false;
    if (resend.idempotent) return true;
    return resend.clock && resend.clock->Now() - sent_end <= resend.stale_close_window;
  }

  // Where the current wait ends, and which timeout that is.
  Steady::time_point Deadline(ExchangeTimeout& which) const {
    which = received_ > 0 ? ExchangeTimeout::kIdle : ExchangeTimeout::kFirstByte;
    const Steady::time_point deadline = received_ > 0 ? last_activity_ + t_.idle : t_.start + t_.first_byte;
    if (deadline <= t_.give_up) return deadline;
    which = ExchangeTimeout::kTotal;
    return t_.give_up;
  }

  void Took(size_t n) {
    end_ += n;
    received_ += n;
    high_water_ = std::max(high_water_, end_);
    last_activity_ = Steady::now();
  }

  void Feed() {
    if (end_ > begin_ && !reader_.done() && !reader_.failed()) {
      begin_ += reader_.Feed(in_.data() + begin_, end_ - begin_);
      last_activity_ = Steady::now();  // a listener's time is not the upstream's silence
    }
  }

  bool End(ExchangeEnd end) {
    result_.end = end;
    return false;
  }
  bool TimedOut(ExchangeTimeout which) {
    result_.timeout = which;
    return End(ExchangeEnd::kTimedOut);
  }
  void Done(bool keep) {
    result_.end = ExchangeEnd::kDone;
    result_.keep = keep;
  }

  const OwnConnection& c_;
  std::vector<char>& in_;
  AnswerReader& reader_;
  const ExchangeTimeouts& t_;
  size_t begin_ = 0, end_ = 0, received_ = 0, high_water_ = 0;
  bool sent_whole_ = true;  // the request went out whole (an answer can stop it early)
  Steady::time_point last_activity_;
  ExchangeResult result_;
};

}  // namespace

ExchangeResult RunOwnExchange(const OwnConnection& connection, std::string_view head, std::string_view body,
                              AnswerReader& reader, const ExchangeTimeouts& timeouts, const ResendRule& resend) {
  return OwnExchange(connection, reader, timeouts).Run(head, body, resend);
}

}  // namespace dyad
