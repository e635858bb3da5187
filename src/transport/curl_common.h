// What the two libcurl clients (curl_transport: the backends' calls;
// upstream_client: the /v1 path's) share: libcurl's one-time global set-up,
// whether the environment names a proxy, a CURLU that frees itself, and the
// header-injection check, and the socket I/O of their own HTTP/1.1 exchange
// on a connection curl made (CURLOPT_CONNECT_ONLY): waiting on the socket,
// sending a whole buffer, probing a kept connection. Thread-safe (no state
// but curl's global init, done once; a handle is used by one thread at a time).
#pragma once

#include <curl/curl.h>

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

namespace dyad {

// curl_global_init, once per process, before the first easy handle.
void EnsureCurlGlobalInit();

// Whether curl would send requests through a proxy named in the process
// environment (it reads http_proxy, but not HTTP_PROXY, for http URLs).
bool ProxyInEnvironment();

// A CR or LF in a header would end its line and start another; a NUL would
// cut it short. One pass without branches per byte.
bool HasBreakOrNul(std::string_view s);

// Waits until `sock` is ready for `events` (POLLIN, POLLOUT) or `deadline`
// passes: true when ready (or in error: the next send or recv reports it).
bool WaitForSocket(curl_socket_t sock, short events, std::chrono::steady_clock::time_point deadline);

// Sends data[sent..] on a CONNECT_ONLY handle's connection with
// curl_easy_send, waiting for the socket until `deadline`; `sent` counts the
// bytes that went out. False with `why` (curl's words, or "timed out sending
// the request") when it could not.
bool SendAllOn(CURL* curl, curl_socket_t sock, std::string_view data, std::chrono::steady_clock::time_point deadline,
               size_t& sent, std::string& why);

// Waits until `sock` is ready for `events` (POLLIN, POLLOUT) or `deadline`
// passes: the events that are ready (with POLLERR or POLLHUP for an error or
// a hang-up, which the next send or recv reports), 0 when it timed out (or
// poll() itself failed).
short WaitForSocketEvents(curl_socket_t sock, short events, std::chrono::steady_clock::time_point deadline);

// How SendWatchingForAnswer ended.
enum class SendEnd {
  kSent,      // all of data went out
  kAnswered,  // the answer began before it did: its first bytes are in `into`
  kFailed,    // `why` says why
};

// SendAllOn for a request whose answer may come before it is all out: an
// upstream refusing a large body (401, 413) answers at once and stops
// reading, or answers and resets; one may also send a 1xx or an early head
// and go on reading. While the send waits, and when it fails, a readable
// connection is read into `into` (`room` bytes): kAnswered with the bytes
// there (`got` of them), `sent` counting what went out. The caller decides
// whether the rest is sent (call again with the same `sent`) or not (the
// request is then incomplete: the connection must not carry another). A TLS
// record without data is not an answer; the connection closed with none is
// a failure.
SendEnd SendWatchingForAnswer(CURL* curl, curl_socket_t sock, std::string_view data,
                              std::chrono::steady_clock::time_point deadline, size_t& sent, char* into, size_t room,
                              size_t& got, std::string& why);

// Whether a request with this method may be sent twice (RFC 9110 §9.2.2;
// POST and PATCH may not).
bool Idempotent(std::string_view method);

// Whether a kept, idle CONNECT_ONLY connection can carry a request: nothing
// arrived on it since the last answer (a close, a reset, or stray bytes all
// say no; a TLS record without data, such as a session ticket, does not).
// Bytes OpenSSL decrypted but nobody read yet count as arrived.
bool ConnectionStillOpen(CURL* curl);

// The receive buffer of an own exchange, after the parser took what it
// could: moves the unparsed bytes in[begin, end) to the front and, when that
// leaves no room, doubles `in` (its old storage freed unwiped: only an
// unfinished head is ever kept whole, never a body). False when it is full
// at `max_size` or more (a head too large).
bool MakeRoom(std::vector<char>& in, size_t& begin, size_t& end, size_t max_size);

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
