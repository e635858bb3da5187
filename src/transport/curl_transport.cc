#include "transport/curl_transport.h"

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/encoding.h"
#include "core/mutex.h"
#include "core/secret_bytes.h"
#include "transport/curl_common.h"
#include "transport/http_answer.h"
#include "transport/upstream_address.h"

namespace dyad {

std::string HttpReply::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (k == name) return v;
  }
  return "";
}

namespace {

// An easy handle (keeping its connection) and the storage of its request
// headers, reused from request to request: the lines are written into one
// buffer and linked by nodes curl reads but does not own, so a request
// allocates nothing for them once the buffer has grown to its size.
struct Handle {
  CURL* curl = nullptr;
  std::string lines;  // "Name: value\0" each: may carry a token, wiped after every request
  std::vector<size_t> starts;       // where each line starts in `lines`
  std::vector<curl_slist> nodes;    // one per line, into `lines`

  // Our own exchange (see the header): where the last URL points, parsed once.
  std::string url;          // the URL the fields below are of
  std::string connect_url;  // what curl connects to (the URL, or with the TLS server name as host)
  std::string connect_to;   // CURLOPT_CONNECT_TO entry, "" for none
  std::string origin;       // scheme, host, port and connect_to: which connection the URL needs
  std::string host;         // Host header value derived from the URL
  std::string target;       // path and query
  // The connection curl holds for us (CONNECT_ONLY), and which origin it is to.
  bool connected = false;
  std::string connected_origin;
  curl_socket_t sock = CURL_SOCKET_BAD;
  std::string out;                      // the request as sent: wiped after every request
  std::vector<char> in;                 // bytes received: wiped (up to in_high) after every request
  size_t in_high = 0;
  std::unique_ptr<AnswerReader> reader;
};

struct Received {
  HttpReply* reply;
  size_t limit;
  bool too_big = false;
  bool has_body = false;  // the current status line's answer carries a body (not 1xx, 204 or 304)
};

// The most a Content-Length reserves before the body arrives: AWS secrets
// are at most 64 KiB (other stores' are smaller), so a real answer is read
// into one buffer without growth; a larger figure (or a false one, from an
// endpoint that wants memory held and wiped for a two-byte answer) gets no
// more than this, and a larger body grows as any other.
constexpr size_t kMaxUpFrontReserve = 64 * 1024;

// The status code of an "HTTP/x y ..." line, 0 when it has none.
int StatusOf(std::string_view line) {
  auto space = line.find(' ');
  if (space == std::string_view::npos || line.size() < space + 4) return 0;
  int code = 0;
  for (char c : line.substr(space + 1, 3)) {
    if (c < '0' || c > '9') return 0;
    code = code * 10 + (c - '0');
  }
  return code;
}

// The Content-Length of an answer, when it is one and within `limit`.
size_t ExpectedLength(std::string_view value, size_t limit) {
  size_t n = 0;
  for (char c : value) {
    if (c < '0' || c > '9' || n > limit) return 0;
    n = n * 10 + static_cast<size_t>(c - '0');
  }
  return n <= limit ? n : 0;
}

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  auto* r = static_cast<Received*>(user);
  size_t bytes = size * n;
  if (r->reply->body.size() + bytes > r->limit) {
    r->too_big = true;
    return 0;  // aborts the transfer
  }
  r->reply->body.append(data, bytes);
  return bytes;
}

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* r = static_cast<Received*>(user);
  size_t bytes = size * n;
  std::string_view line(data, bytes);
  if (line.starts_with("HTTP/")) {
    r->reply->headers.clear();  // a 100-continue or redirect before the final answer
    const int status = StatusOf(line);
    r->has_body = status >= 200 && status != 204 && status != 304;
    return bytes;
  }
  auto colon = line.find(':');
  if (colon == std::string_view::npos) return bytes;
  std::string name = AsciiLower(line.substr(0, colon));
  std::string_view value = line.substr(colon + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' ')) value.remove_suffix(1);
  // The body arrives in one buffer of its announced size: no copy of it is
  // left behind in freed memory by growth. Only the final answer's headers,
  // before any of its body: a trailer (curl hands those here too) would
  // move a received secret to a new buffer and free the old one unwiped.
  if (name == "content-length" && r->has_body && r->reply->body.empty()) {
    r->reply->body.reserve(std::min(ExpectedLength(value, r->limit), kMaxUpFrontReserve));
  }
  r->reply->headers.emplace_back(std::move(name), std::string(value));
  return bytes;
}

constexpr int kMaxRedirects = 3;

// `location` (absolute or relative) resolved against `base`; "" when it is not a URL.
std::string ResolveLocation(const std::string& base, const std::string& location) {
  UrlHandle url;
  if (!url.u || curl_url_set(url.u, CURLUPART_URL, base.c_str(), 0) != CURLUE_OK) return "";
  if (curl_url_set(url.u, CURLUPART_URL, location.c_str(), 0) != CURLUE_OK) return "";
  return url.Get(CURLUPART_URL);
}

// Where one hop goes: the URL curl is given, and the CONNECT_TO entry that
// sends a URL naming the TLS server name to the real host.
struct Target {
  std::string url;
  std::string connect_to;  // "" for none
};

Result<Target> TargetFor(const std::string& url, const std::string& server_name) {
  if (server_name.empty()) return Target{url, ""};
  UrlHandle u;
  if (!u.u || curl_url_set(u.u, CURLUPART_URL, url.c_str(), 0) != CURLUE_OK) {
    return MakeError(ErrorCode::kInvalidArgument, "'" + url + "' is not a URL");
  }
  const std::string host = u.Get(CURLUPART_HOST), port = u.Get(CURLUPART_PORT, CURLU_DEFAULT_PORT);
  if (host.empty() || port.empty() || curl_url_set(u.u, CURLUPART_HOST, server_name.c_str(), 0) != CURLUE_OK) {
    return MakeError(ErrorCode::kInvalidArgument, "'" + url + "' has no host to connect to as " + server_name);
  }
  return Target{u.Get(CURLUPART_URL), server_name + ":" + port + ":" + host + ":" + port};
}

// Whether `url` is plain http to a loopback host: never sent through a
// proxy the environment names (it would carry a token in clear off the
// machine; a proxy cannot reach the machine's loopback anyway).
bool PlainToLoopback(const std::string& url) {
  UrlHandle u;
  if (!u.u || curl_url_set(u.u, CURLUPART_URL, url.c_str(), 0) != CURLUE_OK) return false;
  return u.Get(CURLUPART_SCHEME) == "http" && IsLoopbackHost(u.Get(CURLUPART_HOST));
}

}  // namespace

std::string RedirectRefusal(const std::string& from, const std::string& to,
                            const std::vector<std::string>& allowed) {
  UrlHandle a, b;
  if (!a.u || !b.u || curl_url_set(a.u, CURLUPART_URL, from.c_str(), 0) != CURLUE_OK ||
      curl_url_set(b.u, CURLUPART_URL, to.c_str(), 0) != CURLUE_OK) {
    return "refused a redirect to a URL that cannot be parsed";
  }
  // Hosts as compared: lower case, one trailing dot dropped (curl has
  // decoded and normalised the rest: %-escapes, numeric IPv4 forms, the
  // port's leading zeros).
  auto normal = [](std::string h) {
    h = AsciiLower(h);
    if (h.size() > 1 && h.back() == '.') h.pop_back();
    return h;
  };
  const std::string host = normal(b.Get(CURLUPART_HOST));
  const std::string port = b.Get(CURLUPART_PORT, CURLU_DEFAULT_PORT);
  if (!b.Get(CURLUPART_USER).empty() || !b.Get(CURLUPART_PASSWORD).empty()) {
    return "refused a redirect to " + host + " with user information in its URL";
  }
  if (host.empty() || port.empty()) return "refused a redirect to a URL without a host";
  if (host == normal(a.Get(CURLUPART_HOST))) return "";
  const std::string place = host + ":" + port;
  for (const std::string& entry : allowed) {
    if (AsciiLower(entry) == place) return "";
  }
  return "refused a redirect to " + place + ", a host that is neither the request's nor an allowed one";
}

namespace {

// A CR or LF in a header would end its line and start another (a token
// from a credential endpoint turned into a header of its choosing); a NUL
// would cut it short. The error names the header, never its value.
Status CheckHeaders(const HttpCall& call) {
  for (const auto& [name, value] : call.headers) {
    if (HasBreakOrNul(name)) {
      return MakeError(ErrorCode::kInvalidArgument,
                       call.method + " " + call.url + ": a header name has a CR, LF or NUL in it");
    }
    if (HasBreakOrNul(value)) {
      return MakeError(ErrorCode::kInvalidArgument,
                       call.method + " " + call.url + ": header " + name + " has a CR, LF or NUL in its value");
    }
    // The message's framing is the transport's: a second Content-Length or
    // a Transfer-Encoding of the caller's would make two answers of one.
    const std::string lower = AsciiLower(name);
    if (lower == "content-length" || lower == "transfer-encoding" || lower == "connection") {
      return MakeError(ErrorCode::kInvalidArgument,
                       call.method + " " + call.url + ": header " + name + " is set by the transport");
    }
  }
  return OkStatus();
}

bool IsHost(std::string_view header_name) {
  return header_name.size() == 4 && (header_name[0] == 'H' || header_name[0] == 'h') &&
         (header_name.substr(1) == "ost" || header_name.substr(1) == "OST");
}

using Steady = std::chrono::steady_clock;

class CurlTransport final : public HttpTransport {
 public:
  explicit CurlTransport(CurlOptions options) : options_(std::move(options)) {
    EnsureCurlGlobalInit();
    own_http_ = !options_.libcurl_http && !ProxyInEnvironment();
  }
  ~CurlTransport() override {
    for (auto& h : idle_) curl_easy_cleanup(h->curl);
  }

  Result<HttpReply> Send(const HttpCall& call) override {
    DYAD_RETURN_IF_ERROR(CheckHeaders(call));
    std::unique_ptr<Handle> h = Lease();
    if (!h) return MakeError(ErrorCode::kInternal, "curl_easy_init failed");
    const auto timeout = call.timeout.count() > 0 ? call.timeout : options_.request_timeout;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    std::string url = call.url;
    Result<HttpReply> reply = MakeError(ErrorCode::kInternal, "no request sent");
    for (int hop = 0;; ++hop) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (hop > 0 && left.count() <= 0) {
        reply = MakeError(ErrorCode::kUnavailable, call.method + " " + url + ": timed out following a redirect");
        break;
      }
      reply = Perform(*h, call, url, hop > 0, hop == 0 ? timeout : left);
      if (!reply.ok() || !options_.follow_redirects || (reply->status != 307 && reply->status != 308)) break;
      const std::string next = ResolveLocation(url, reply->Header("location"));
      if (next.empty() || hop == kMaxRedirects) break;  // the 3xx as it is: the caller says what it means
      const bool https = next.starts_with("https://");
      if (!https && !(call.url.starts_with("http://") && next.starts_with("http://"))) {
        reply = MakeError(ErrorCode::kFailedPrecondition,
                          call.method + " " + url + ": refused a redirect to a URL that is not https");
        break;
      }
      if (std::string why = RedirectRefusal(call.url, next, options_.redirect_hosts); !why.empty()) {
        reply = MakeError(ErrorCode::kFailedPrecondition, call.method + " " + url + ": " + why);
        break;
      }
      url = next;
    }
    Return(std::move(h));
    return reply;
  }

 private:
  // One exchange with `url`; `redirected`: the caller's Host header is left out.
  Result<HttpReply> Perform(Handle& handle, const HttpCall& call, const std::string& url, bool redirected,
                            std::chrono::milliseconds timeout) {
    if (own_http_) return PerformOwn(handle, call, url, redirected, timeout);
    return PerformCurl(handle, call, url, redirected, timeout);
  }

  // Parses `url` into the handle's fields, once per distinct URL.
  Status Aim(Handle& h, const std::string& url) {
    if (h.url == url && !url.empty()) return OkStatus();
    h.url.clear();
    UrlHandle u;
    if (!u.u || curl_url_set(u.u, CURLUPART_URL, url.c_str(), 0) != CURLUE_OK) {
      return MakeError(ErrorCode::kInvalidArgument, "'" + url + "' is not a URL");
    }
    const std::string scheme = AsciiLower(u.Get(CURLUPART_SCHEME)), host = u.Get(CURLUPART_HOST);
    if ((scheme != "http" && scheme != "https") || host.empty()) {
      return MakeError(ErrorCode::kInvalidArgument, "'" + url + "' is not an http or https URL with a host");
    }
    if (!u.Get(CURLUPART_USER).empty() || !u.Get(CURLUPART_PASSWORD).empty()) {
      return MakeError(ErrorCode::kInvalidArgument, "a URL with user information is not supported");
    }
    DYAD_ASSIGN_OR_RETURN(Target t, TargetFor(url, options_.tls_server_name));
    h.connect_url = std::move(t.url);
    h.connect_to = std::move(t.connect_to);
    // As curl writes Host: the port only when it is not the scheme's.
    const std::string port = u.Get(CURLUPART_PORT, CURLU_DEFAULT_PORT);
    const bool default_port = port == (scheme == "https" ? "443" : "80");
    const std::string shown = options_.tls_server_name.empty() ? host : options_.tls_server_name;
    h.host = default_port ? shown : shown + ":" + port;
    h.origin = scheme + "://" + AsciiLower(host) + ":" + port + "|" + h.connect_to;
    const std::string path = u.Get(CURLUPART_PATH);
    h.target = path.empty() ? std::string("/") : path;
    if (std::string q = u.Get(CURLUPART_QUERY); !q.empty()) h.target.append("?").append(q);
    h.url = url;
    return OkStatus();
  }

  // A new connection for the handle's URL, made by curl with every TLS option set at Lease.
  Status Connect(Handle& h, const HttpCall& call, Steady::time_point deadline) {
    Retire(h);
    if (h.sock != CURL_SOCKET_BAD) {
      // curl keeps a CONNECT_ONLY connection in the handle's cache after we
      // are done with it (to the handle's end): a new handle closes it.
      CURL* fresh = NewEasy();
      if (!fresh) return MakeError(ErrorCode::kInternal, "curl_easy_init failed");
      curl_easy_cleanup(h.curl);
      h.curl = fresh;
      h.sock = CURL_SOCKET_BAD;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Steady::now());
    if (left.count() <= 0) {
      return MakeError(ErrorCode::kUnavailable, call.method + " " + h.url + ": timed out before connecting");
    }
    curl_slist* connect_to = h.connect_to.empty() ? nullptr : curl_slist_append(nullptr, h.connect_to.c_str());
    curl_easy_setopt(h.curl, CURLOPT_URL, h.connect_url.c_str());
    curl_easy_setopt(h.curl, CURLOPT_CONNECT_TO, connect_to);
    curl_easy_setopt(h.curl, CURLOPT_TIMEOUT_MS, static_cast<long>(left.count()));
    curl_easy_setopt(h.curl, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(std::min(left, options_.connect_timeout).count()));
    const CURLcode rc = curl_easy_perform(h.curl);
    curl_easy_setopt(h.curl, CURLOPT_CONNECT_TO, nullptr);
    curl_slist_free_all(connect_to);
    if (rc != CURLE_OK) {
      return MakeError(ErrorCode::kUnavailable, call.method + " " + h.url + ": " + curl_easy_strerror(rc));
    }
    curl_socket_t sock = CURL_SOCKET_BAD;
    if (curl_easy_getinfo(h.curl, CURLINFO_ACTIVESOCKET, &sock) != CURLE_OK || sock == CURL_SOCKET_BAD) {
      return MakeError(ErrorCode::kUnavailable, call.method + " " + h.url + ": no socket after connecting");
    }
    h.sock = sock;
    h.connected = true;
    h.connected_origin = h.origin;
    return OkStatus();
  }

  // Ends the connection for the peer at once (curl closes the socket when it
  // drops the connection: at the next connect, or with the handle).
  static void Retire(Handle& h) {
    if (h.connected) shutdown(h.sock, SHUT_RDWR);
    h.connected = false;
  }

  // Whether the idle connection can carry a request (curl_common.h).
  static bool StillOpen(Handle& h) { return ConnectionStillOpen(h.curl); }

  // The request line, headers and body in the handle's buffer (sized first:
  // no growth, no copy of a token left in freed memory).
  static void Serialise(Handle& h, const HttpCall& call, bool redirected) {
    bool caller_host = false;
    size_t size = call.method.size() + h.target.size() + 64 + h.host.size() + call.body.size();
    for (const auto& [k, v] : call.headers) {
      size += k.size() + v.size() + 4;
      if (!redirected && IsHost(k)) caller_host = true;
    }
    std::string& out = h.out;
    out.clear();
    out.reserve(size);
    out.append(call.method).append(" ").append(h.target).append(" HTTP/1.1\r\n");
    if (!caller_host) out.append("Host: ").append(h.host).append("\r\n");
    for (const auto& [k, v] : call.headers) {
      if (redirected && IsHost(k)) continue;
      out.append(k).append(": ").append(v).append("\r\n");
    }
    if (!call.body.empty() || (call.method != "GET" && call.method != "HEAD")) {
      char length[32];
      const int n = snprintf(length, sizeof length, "Content-Length: %zu\r\n", call.body.size());
      out.append(length, static_cast<size_t>(n));
    }
    out.append("\r\n").append(call.body);
  }

  // Why an own exchange that did not end in an answer failed ("" for an
  // answer: the reply holds it).
  std::string WhyNot(const ExchangeResult& r, const AnswerReader& reader) const {
    switch (r.end) {
      case ExchangeEnd::kDone:
        if (!reader.failed()) return "";
        return reader.too_big() ? "response larger than " + std::to_string(options_.max_response_bytes) + " bytes"
                                : reader.error();
      case ExchangeEnd::kTimedOut:
        return r.while_sending ? "timed out sending the request" : "timed out waiting for the answer";
      case ExchangeEnd::kHeadTooLarge:  // only the header is kept whole: it holds no secret body yet
        return "answer header larger than " + std::to_string(kMaxAnswerBuffer) + " bytes";
      case ExchangeEnd::kCancelled:  // never: the backends' calls watch no client
      case ExchangeEnd::kResend:  // a second resend is not made: the new connection's request failed
      case ExchangeEnd::kFailed:
        break;
    }
    return r.why.empty() ? "the exchange failed" : r.why;
  }

  Result<HttpReply> PerformOwn(Handle& h, const HttpCall& call, const std::string& url, bool redirected,
                               std::chrono::milliseconds timeout) {
    DYAD_RETURN_IF_ERROR(Aim(h, url));
    const Steady::time_point start = Steady::now();
    // One deadline for the whole exchange: the first-byte and idle timeouts
    // are the call's, bounded by it.
    const ExchangeTimeouts timeouts{start, timeout, timeout, start + timeout};
    Serialise(h, call, redirected);
    HttpReply reply;
    std::string why = "no answer";
    for (int attempt = 0; attempt < 2; ++attempt) {
      const bool reused = h.connected && h.connected_origin == h.origin && StillOpen(h);
      if (!reused) {
        Status connected = Connect(h, call, timeouts.give_up);
        if (!connected.ok()) {
          Cleanse(h.out);
          return connected.error();
        }
      }
      // A kept connection closed before any byte of the answer: resent when
      // none of the request went out, or the method may be sent twice.
      const ResendRule resend{.reused = reused, .idempotent = Idempotent(call.method)};
      h.reader->Start(&reply, options_.max_response_bytes, call.method == "HEAD");
      const ExchangeResult r = RunOwnExchange(OwnConnection{h.curl, h.sock, h.in}, h.out, {}, *h.reader, timeouts,
                                              resend);
      h.in_high = std::max(h.in_high, r.high_water);
      if (!r.keep) Retire(h);
      if (r.end == ExchangeEnd::kResend) continue;
      why = WhyNot(r, *h.reader);
      break;
    }
    Cleanse(h.out);
    if (h.in_high > 0) {
      OPENSSL_cleanse(h.in.data(), h.in_high);  // the answer's bytes: a secret
      h.in_high = 0;
    }
    if (!why.empty()) {
      if (reply.body.capacity() > 0) Cleanse(reply.body);
      return MakeError(ErrorCode::kUnavailable, call.method + " " + url + ": " + why);
    }
    return reply;
  }

  // One exchange through curl_easy_perform (a proxy in the environment, or
  // options.libcurl_http).
  Result<HttpReply> PerformCurl(Handle& handle, const HttpCall& call, const std::string& url, bool redirected,
                                std::chrono::milliseconds timeout) {
    DYAD_ASSIGN_OR_RETURN(Target target, TargetFor(url, options_.tls_server_name));
    CURL* h = handle.curl;
    HttpReply reply;
    Received received{&reply, options_.max_response_bytes};
    curl_slist* headers = LinkHeaders(handle, call.headers, redirected);
    curl_slist* connect_to = target.connect_to.empty() ? nullptr : curl_slist_append(nullptr, target.connect_to.c_str());

    curl_easy_setopt(h, CURLOPT_URL, target.url.c_str());
    curl_easy_setopt(h, CURLOPT_CONNECT_TO, connect_to);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    // The URL as given (target.url may name the TLS server name instead of its host); reset per request.
    curl_easy_setopt(h, CURLOPT_NOPROXY, PlainToLoopback(url) ? "*" : nullptr);
    if (call.method == "GET") {
      curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else {
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, call.body.data());
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(call.body.size()));
    }
    // A handle is reused: a verb set for an earlier request must not stick.
    bool plain = call.method == "GET" || call.method == "POST";
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, plain ? nullptr : call.method.c_str());
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(std::min(timeout, options_.connect_timeout).count()));
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &received);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &received);

    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, nullptr);
    curl_easy_setopt(h, CURLOPT_CONNECT_TO, nullptr);
    Cleanse(handle.lines);  // a token or signature; the capacity stays for the next request
    curl_slist_free_all(connect_to);
    const bool refused = received.too_big || rc != CURLE_OK || status < 100 || status > 599;
    if (refused && reply.body.capacity() > 0) Cleanse(reply.body);  // what came may be a secret: not left in freed memory
    if (received.too_big) {
      return MakeError(ErrorCode::kUnavailable, call.method + " " + url + ": response larger than " +
                                                    std::to_string(options_.max_response_bytes) + " bytes");
    }
    if (rc != CURLE_OK) {
      return MakeError(ErrorCode::kUnavailable, call.method + " " + url + ": " + curl_easy_strerror(rc));
    }
    if (status < 100 || status > 599) {  // curl takes any three digits (RFC 9110 §15: 100 to 599)
      return MakeError(ErrorCode::kUnavailable, call.method + " " + url + ": the answer's status " +
                                                    std::to_string(status) + " is not an HTTP status");
    }
    reply.status = static_cast<int>(status);
    return reply;
  }

  // The request's header lines in the handle's buffer, and "Expect:" (no
  // 100-continue round trip); `redirected`: without the caller's Host.
  static curl_slist* LinkHeaders(Handle& handle, const HttpHeaders& headers, bool redirected) {
    std::string& lines = handle.lines;
    lines.clear();
    size_t size = sizeof "Expect:";
    for (const auto& [k, v] : headers) size += k.size() + v.size() + 3;
    lines.reserve(size);  // no growth: no copy of a token left in freed memory
    handle.starts.clear();
    auto add = [&](std::string_view name, std::string_view value, bool colon_only) {
      handle.starts.push_back(lines.size());
      lines.append(name).append(colon_only ? ":" : ": ").append(value).push_back('\0');
    };
    for (const auto& [k, v] : headers) {
      if (redirected && IsHost(k)) continue;
      add(k, v, false);
    }
    add("Expect", "", true);
    handle.nodes.resize(handle.starts.size());
    for (size_t i = 0; i < handle.nodes.size(); ++i) {
      handle.nodes[i].data = lines.data() + handle.starts[i];
      handle.nodes[i].next = i + 1 < handle.nodes.size() ? &handle.nodes[i + 1] : nullptr;
    }
    return handle.nodes.data();
  }

  std::unique_ptr<Handle> Lease() {
    {
      MutexLock lock(&mu_);
      if (!idle_.empty()) {
        std::unique_ptr<Handle> h = std::move(idle_.back());
        idle_.pop_back();
        return h;
      }
    }
    auto handle = std::make_unique<Handle>();
    handle->curl = NewEasy();
    if (!handle->curl) return nullptr;
    if (own_http_) handle->reader = std::make_unique<AnswerReader>();
    return handle;
  }

  // An easy handle with every option that is the same for all requests.
  CURL* NewEasy() {
    CURL* h = curl_easy_init();
    if (!h) return nullptr;
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    if (!options_.ca_file.empty()) {
      curl_easy_setopt(h, CURLOPT_CAINFO, options_.ca_file.c_str());
    } else if (!options_.ca_path.empty()) {
      curl_easy_setopt(h, CURLOPT_CAINFO, nullptr);  // the directory replaces the system bundle
    }
    if (!options_.ca_path.empty()) curl_easy_setopt(h, CURLOPT_CAPATH, options_.ca_path.c_str());
    if (!options_.client_cert.empty()) {
      curl_easy_setopt(h, CURLOPT_SSLCERT, options_.client_cert.c_str());
      curl_easy_setopt(h, CURLOPT_SSLCERTTYPE, "PEM");
    }
    if (!options_.client_key.empty()) {
      curl_easy_setopt(h, CURLOPT_SSLKEY, options_.client_key.c_str());
      curl_easy_setopt(h, CURLOPT_SSLKEYTYPE, "PEM");
    }
    // The same for every request: set once.
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, OnBody);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, OnHeader);
    if (own_http_) {
      // curl connects (TLS and all the options above, HTTP/1.1 in ALPN)
      // and we exchange on the connection; one connection per easy handle.
      curl_easy_setopt(h, CURLOPT_CONNECT_ONLY, 1L);
      curl_easy_setopt(h, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
    }
    return h;
  }
  void Return(std::unique_ptr<Handle> h) {
    MutexLock lock(&mu_);
    idle_.push_back(std::move(h));
  }

  CurlOptions options_;
  bool own_http_ = true;  // our own exchange on a CONNECT_ONLY connection (see the header)
  Mutex mu_;
  std::vector<std::unique_ptr<Handle>> idle_ DYAD_GUARDED_BY(mu_);
};

}  // namespace

std::unique_ptr<HttpTransport> NewCurlTransport(CurlOptions options) {
  return std::make_unique<CurlTransport>(std::move(options));
}

}  // namespace dyad
