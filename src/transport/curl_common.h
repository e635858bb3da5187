// What the two libcurl clients (curl_transport: the backends' calls;
// upstream_client: the /v1 path's) share: libcurl's one-time global set-up,
// whether the environment names a proxy, a CURLU that frees itself, and the
// header-injection check, and their own HTTP/1.1 exchange on a connection
// curl made (CURLOPT_CONNECT_ONLY): probing a kept connection, and
// RunOwnExchange (the request out, the answer into an AnswerReader). Thread-
// safe (no state but curl's global init, done once; a handle is used by one
// thread at a time).
#pragma once

#include <curl/curl.h>

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"

namespace dyad {

class AnswerReader;

// curl_global_init, once per process, before the first easy handle.
void EnsureCurlGlobalInit();

// Whether curl would send requests through a proxy named in the process
// environment (it reads http_proxy, but not HTTP_PROXY, for http URLs).
bool ProxyInEnvironment();

// A CR or LF in a header would end its line and start another; a NUL would
// cut it short. One pass without branches per byte.
bool HasBreakOrNul(std::string_view s);

// Whether a request with this method may be sent twice (RFC 9110 §9.2.2;
// POST and PATCH may not).
bool Idempotent(std::string_view method);

// Whether a kept, idle CONNECT_ONLY connection can carry a request: nothing
// arrived on it since the last answer (a close, a reset, or stray bytes all
// say no; a TLS record without data, such as a session ticket, does not).
// Bytes OpenSSL decrypted but nobody read yet count as arrived.
bool ConnectionStillOpen(CURL* curl);

// The most an own exchange's receive buffer grows to: only an unfinished
// head is ever kept whole (a body is handed on, or parsed, as it comes).
constexpr size_t kMaxAnswerBuffer = 256 * 1024;

// A CONNECT_ONLY connection and the receive buffer kept with it (grown to
// 16 KiB at first, to kMaxAnswerBuffer at most; reused from call to call).
struct OwnConnection {
  CURL* curl;
  curl_socket_t sock;
  std::vector<char>& in;
};

// The timeouts of one exchange, on steady_clock (poll() waits on it): until
// the answer's first byte the first-byte timeout runs from `start` (the
// sending included), then the idle timeout from the last byte that arrived;
// `give_up` bounds it all (an answer that never pauses too). Until the
// answer's final head (an interim 1xx keeps it so), a hang-up of
// `hang_up_fd` (a socket; -1: none) ends a wait too (kCancelled): the
// caller's client has gone, and the upstream's work is for no one. Not
// after it: a client that leaves mid-answer is found when the caller next
// writes to it, and one that closes at an event stream's [DONE] (as the
// OpenAI SDK does) costs no kept connection.
struct ExchangeTimeouts {
  std::chrono::steady_clock::time_point start;
  std::chrono::steady_clock::duration first_byte;
  std::chrono::steady_clock::duration idle;
  std::chrono::steady_clock::time_point give_up;
  int hang_up_fd = -1;
};

// Whether the peer of socket `fd` has closed its side (or the connection
// failed): poll()'s POLLRDHUP, POLLHUP or POLLERR, without waiting. Bytes it
// sent (a pipelined request) are not a hang-up.
bool HungUp(int fd);

// When the request is sent once more, on a new connection: only when the
// connection was `reused` (kept from an earlier call) and gave back no byte
// of the answer, so the upstream most likely closed it while it was idle and
// never read the request.
struct ResendRule {
  bool reused = false;
  // The send failed: resent even when part of the request went out (else
  // only when none did).
  bool after_partial_send = false;
  // The connection closed while the answer was awaited: resent when the
  // method may be sent twice, or, with a clock, when the close came within
  // `stale_close_window` of the request going out (later, the upstream may
  // have worked on it).
  bool idempotent = false;
  const Clock* clock = nullptr;
  Clock::Duration stale_close_window{0};
};

enum class ExchangeEnd {
  kDone,          // the reader is done or failed (its state says which)
  kResend,        // ResendRule said so: the request again, on a new connection
  kTimedOut,      // `timeout` says which, `while_sending` when
  kHeadTooLarge,  // the receive buffer filled at kMaxAnswerBuffer
  kFailed,        // the connection failed: `why` (curl's words), `while_sending` when
  kCancelled,     // timeouts.hang_up_fd hung up before the answer (the connection is not kept)
};

enum class ExchangeTimeout { kFirstByte, kIdle, kTotal };

struct ExchangeResult {
  ExchangeEnd end = ExchangeEnd::kDone;
  // kDone: the connection may carry another request (the answer said so,
  // the request went out whole, and no byte follows the answer). Any other
  // end: false.
  bool keep = false;
  bool while_sending = false;
  ExchangeTimeout timeout = ExchangeTimeout::kFirstByte;
  std::string why;
  size_t high_water = 0;  // the most bytes the receive buffer held (to wipe)
};

// One HTTP/1.1 exchange on a CONNECT_ONLY connection, for both clients: the
// request (`head`, then `body`, which may be empty) sent while watching for
// an early answer (SendWatchingForAnswer): early bytes are fed to `reader`,
// the sending goes on through a 1xx or a final status under 300 and stops at
// a final 300 or more (an upstream refusing a large body), a request not
// sent whole leaving its connection unkept; then the answer read into
// `reader`, which the caller started (Start or StartStreaming) and reads
// when the end is kDone. No allocation beyond the buffer's growth.
ExchangeResult RunOwnExchange(const OwnConnection& connection, std::string_view head, std::string_view body,
                              AnswerReader& reader, const ExchangeTimeouts& timeouts, const ResendRule& resend);

// Frees a CURLU on every path.
struct UrlHandle {
  UrlHandle() : u(curl_url()) {}
  ~UrlHandle() { curl_url_cleanup(u); }
  UrlHandle(const UrlHandle&) = delete;
  UrlHandle& operator=(const UrlHandle&) = delete;
  // The part, "" when it is absent or the URL did not parse.
  std::string Get(CURLUPart part, unsigned flags = 0) const {
    char* out = nullptr;
    if (curl_url_get(u, part, &out, flags) != CURLUE_OK || !out) return "";
    std::string s(out);
    curl_free(out);
    return s;
  }
  CURLU* u;
};

}  // namespace dyad
