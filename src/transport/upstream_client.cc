// UpstreamClient over libcurl, in two ways.
//
// Without a proxy (the usual case), curl only connects: each pooled entry is
// a CONNECT_ONLY easy handle, so curl does DNS, connect (the open-socket
// callback refusing forbidden addresses) and TLS with verification, the CA
// and SNI, HTTP/1.1 in ALPN; the client writes the HTTP/1.1 request itself
// (origin-form request line, Host, Content-Length, the caller's headers) into
// the entry's buffer, and the exchange is the one the backends' transport
// makes too (curl_common.h: RunOwnExchange): sent with curl_easy_send, the
// answer read with curl_easy_recv and poll() on the connection's socket and
// parsed with AnswerReader's streaming mode (http_answer.h: Beast): OnHead
// when the final head is complete, each decoded body piece to OnBody as it
// arrives. The timeouts are kept on steady_clock: first-byte from the
// request sent, idle between two reads, total from Send(). A small body is copied
// into the request's buffer (one write); a larger one is sent from the
// caller's. The buffer (it holds the credential) is wiped after every call.
// Before a kept connection is used, anything that arrived on it (a close, a
// reset, stray bytes) retires it and a new one is made; if a kept connection
// turns out closed before any byte of the answer, the request is sent once
// more on a new connection: a GET, PUT or DELETE always, a POST only when the
// close came while sending or right after (kStaleCloseWindow: the server
// closed an idle connection, it did not read the request; later it may have
// worked on it). A new connection's request is never sent twice. Answer bytes
// that arrive while the request is still going out are read as they come;
// the sending goes on through a 1xx or a final head under 300 and stops at a
// final 300 or more (an upstream refusing a large body), as curl did; an
// answer is never resent, and a connection whose request was cut is not
// kept. Connections idle past max_idle_age are closed, not used. A connection
// stays for the next call unless the answer ends it (Connection: close,
// HTTP/1.0, read to close) or bytes follow it (in the socket or decrypted in
// OpenSSL: the check before reuse asks curl, not poll()). A 101 is a failure.
//
// With GATEWAY_UPSTREAM_PROXY, curl does the whole exchange (a proxy needs an
// absolute-form request line or CONNECT): each pooled entry is an easy handle
// in a multi handle of its own, the multi keeping the one connection alive
// between calls (CURLMOPT_MAXCONNECTS 1), driven with curl_multi_perform/
// curl_multi_poll so the timeouts are kept to the millisecond on our clock
// (libcurl's LOW_SPEED options and the progress callback only see whole
// seconds). The header callback collects the lines of each answer head
// (interim 1xx heads skipped, the proxy's CONNECT answer suppressed) and
// calls OnHead at the final head's blank line; the write callback hands each
// decoded piece to OnBody. Either returning false makes the callback return a
// short count, which aborts the transfer (kCancelled). curl resends a request
// once when a kept connection turns out closed before any byte of the answer.
//
// Both ways: entries are pooled per origin (scheme, host, port), at most
// max_idle_per_host each; a call that ended in an error does not give its
// entry back (its connection is closed), so a cancelled or timed-out answer
// never leaves a half-read connection for the next caller. A URL's target
// (the origin of its pool, the path, how errors name the call) is parsed once
// per URL and kept (upstream_target.h). libcurl's reading of the environment
// (https_proxy and the like, no_proxy) is turned off (CURLOPT_PROXY is always
// set: "" for none), since through a proxy the address the open-socket check
// sees is the proxy's. With the options' proxy, every call goes through it
// (CURLOPT_NOPROXY ""), and the URL's host is resolved here first and each
// address checked.
#include "transport/upstream_client.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <iterator>
#include <cctype>
#include <cstdio>
#include <map>
#include <utility>

#include "core/encoding.h"
#include "core/mutex.h"
#include "core/secret_bytes.h"
#include "transport/curl_common.h"
#include "transport/http_answer.h"
#include "transport/upstream_target.h"
#include "transport/upstream_wire.h"

namespace dyad {
namespace {

using Steady = std::chrono::steady_clock;

// The numeric form of a socket address curl is about to connect to, "" for
// a family other than IPv4 and IPv6.
std::string Numeric(const sockaddr* a) {
  char text[INET6_ADDRSTRLEN] = {};
  if (a->sa_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(a)->sin_addr, text, sizeof text);
  } else if (a->sa_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(a)->sin6_addr, text, sizeof text);
  }
  return text;
}

// Connection-level headers: never handed on (RFC 9110 §7.6.1), and never
// taken from the caller (the framing and the connection are the client's).
bool IsHopByHop(std::string_view lower) {
  return lower == "connection" || lower == "keep-alive" || lower.starts_with("proxy-") || lower == "te" ||
         lower == "trailer" || lower == "transfer-encoding" || lower == "upgrade";
}

// IsSetByClient of a header name as the caller spelled it, without an
// allocation (the request path runs it for every header of every call).
bool IsSetByClientAnyCase(std::string_view name) {
  const LowerName lower(name);
  // Longer than the buffer: only a proxy-* name can be one of them.
  if (lower.full()) return lower.view().starts_with("proxy-");
  return IsSetByClient(lower.view());
}

// The most an answer head may take (curl's own limit is 100 KiB per line).
constexpr size_t kMaxHeadBytes = 64 * 1024;

}  // namespace

// upstream_wire.h

bool IsSetByClient(std::string_view lower) {
  return IsHopByHop(lower) || lower == "host" || lower == "content-length" || lower == "expect";
}

// How errors name a call: its method and target (built only for an error).
std::string UpstreamCallName(const std::string& method, const UpstreamTarget& target) { return method + " " + target.shown; }

// Removes hop-by-hop headers, and those the answer's Connection header names
// (sorted, so a hostile head of many names and fields costs n log n).
void RemoveHopByHop(HttpHeaders& headers) {
  std::vector<std::string> named;
  for (const auto& [name, value] : headers) {
    if (name == "connection") ForEachListElement(value, [&](std::string_view token) { named.push_back(AsciiLower(token)); });
  }
  std::sort(named.begin(), named.end());
  named.erase(std::unique(named.begin(), named.end()), named.end());
  std::erase_if(headers, [&](const auto& h) {
    return IsHopByHop(h.first) || std::binary_search(named.begin(), named.end(), h.first);
  });
}

// The request line and headers (and a small body) in `out`,
// sized first: no growth, no copy of the credential left in freed memory.
void SerialiseUpstreamRequest(const UpstreamRequest& request, const UpstreamTarget& target, std::string_view query,
                            bool inline_body, WipedString& out) {
  size_t size = request.method.size() + target.path.size() + query.size() + target.host_header.size() + 80;
  for (const auto& [k, v] : request.headers) size += k.size() + v.size() + 4;
  if (inline_body) size += request.body.size();
  out.clear();
  out.reserve(size);
  out.append(request.method).append(" ").append(target.path).append(query).append(" HTTP/1.1\r\nHost: ");
  out.append(target.host_header).append("\r\n");
  for (const auto& [k, v] : request.headers) {
    if (IsSetByClientAnyCase(k)) continue;
    out.append(k).append(v.empty() ? ":" : ": ").append(v).append("\r\n");
  }
  if (!request.body.empty() || (request.method != "GET" && request.method != "HEAD")) {
    char digits[24];
    const auto end = std::to_chars(digits, digits + sizeof digits, request.body.size()).ptr;
    out.append("Content-Length: ").append(digits, static_cast<size_t>(end - digits)).append("\r\n");
  }
  out.append("\r\n");
  if (inline_body) out.append(request.body);
}

Result<std::string_view> UpstreamQuery(const UpstreamRequest& request, const UpstreamTarget& target) {
  std::string_view query;
  if (const size_t q = request.url.find('?'); q != std::string::npos) {
    query = std::string_view(request.url).substr(q, request.url.find('#', q) - q);
    for (unsigned char c : query) {
      if (c <= ' ' || c == 0x7f) {
        return MakeError(ErrorCode::kInvalidArgument,
                         UpstreamCallName(request.method, target) + ": the URL's query has a space or control character");
      }
    }
    if (query.size() == 1) query = {};  // "?" alone: curl sends none either
  }
  return query;
}

UpstreamFailure TimeoutFailure(std::string_view which) {
  return which == "idle"      ? UpstreamFailure::kIdleTimeout
         : which == "total"   ? UpstreamFailure::kTotalTimeout
         : which == "connect" ? UpstreamFailure::kConnectTimeout
                              : UpstreamFailure::kFirstByteTimeout;
}

// `which` timeout ("connect", "first-byte", "idle" or "total") passed.
Status UpstreamTimedOut(const std::string& what, const char* which, const UpstreamTimeouts& t, bool head_done) {
  const std::string_view w = which;
  const auto limit = w == "idle" ? t.idle : w == "total" ? t.total : w == "connect" ? t.connect : t.first_byte;
  return MakeError(ErrorCode::kDeadlineExceeded, what + ": the " + which + " timeout (" +
                                                     std::to_string(limit.count()) + " ms) passed" +
                                                     (head_done ? "; the answer was cut short" : ""));
}

Status UpstreamClientHungUp(const std::string& what) {
  return MakeError(ErrorCode::kCancelled, what + ": stopped, the client hung up");
}

Status UpstreamHeadTooLarge(const std::string& what) {
  return MakeError(ErrorCode::kUnavailable,
                   what + ": the answer's head (or a chunk's size line, or its trailers) is larger than " +
                       std::to_string(kMaxHeadBytes) + " bytes");
}

namespace {

// One call's state, reached from curl's callbacks (through the proxy) or
// from AnswerReader (our own exchange).
struct Exchange final : AnswerListener {
  UpstreamSink* sink = nullptr;
  UpstreamHead head;
  int status = 0;           // of the head being read
  size_t head_bytes = 0;
  bool head_done = false;   // OnHead was called
  bool head_too_large = false;
  bool bad_status = false;  // a head whose status is not 100 to 599
  bool at_head_start = true;  // curl: the next head line is a status line
  std::string_view malformed;  // curl: why a head was refused (OnHeaderLine), else empty
  bool cancelled = false;   // the sink returned false
  bool unflushed = false;   // curl: the sink was called since its last OnFlush
  bool sent = false;        // the request is going out (first-byte timeout running)
  bool first_byte = false;  // a byte of the answer arrived (idle timeout running)
  Steady::time_point sent_at;
  Steady::time_point last_activity;
  std::string refused;  // a forbidden address curl was about to connect to
  UpstreamFailure failure = UpstreamFailure::kNone;  // told to the sink when the call fails

  bool OnAnswerHead(int final_status) override {
    head.status = final_status;
    RemoveHopByHop(head.headers);
    head_done = true;
    cancelled = !sink->OnHead(head);
    return !cancelled;
  }
  bool OnAnswerBody(std::string_view piece) override {
    cancelled = !sink->OnBody(piece);
    return !cancelled;
  }
  bool OnAnswerFlush(bool last) override {
    const bool kept = sink->OnFlush(last);
    cancelled = !kept && !last;
    return kept;
  }
  // curl: after what one curl_multi_perform read; `last`: the transfer is
  // complete. A sink that cancelled already is not asked again.
  bool FlushRead(bool last) {
    if (cancelled) return false;
    if (!std::exchange(unflushed, false) && !last) return true;
    return OnAnswerFlush(last);
  }
};

// curl's head, line by line. curl takes more than Beast does on our own
// exchange, and some of it differently from what a line-by-line reading
// here would see (a folded line it does not unfold, a name with a space
// before its colon it ignores): a head AnswerReader would refuse is
// refused here too (Exchange::malformed), before the sink hears of it.
size_t OnHeaderLine(char* data, size_t size, size_t n, void* user) {
  auto* x = static_cast<Exchange*>(user);
  const size_t bytes = size * n;
  x->first_byte = true;
  x->last_activity = Steady::now();
  if (x->head_done) return bytes;  // trailers: dropped
  x->head_bytes += bytes;
  if (x->head_bytes > kMaxHeadBytes) {
    x->head_too_large = true;
    return 0;
  }
  std::string_view line(data, bytes);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  auto refuse = [&](std::string_view why) -> size_t {
    x->malformed = why;
    return 0;
  };
  if (x->at_head_start) {  // a head's status line (an interim head's, or the final one's); only there
    x->at_head_start = false;
    x->head.headers.clear();
    x->status = 0;
    if (!line.starts_with("HTTP/")) return refuse("no status line where it starts");
    const size_t space = line.find(' ');
    for (size_t i = space + 1; space != std::string_view::npos && i < line.size() && i < space + 4; ++i) {
      if (line[i] < '0' || line[i] > '9') break;
      x->status = x->status * 10 + (line[i] - '0');
    }
    return bytes;
  }
  if (line.empty()) {  // the end of a head
    x->at_head_start = true;
    if (x->status < 100 || x->status > 599) {  // three digits, but not a status (RFC 9110 §15)
      x->bad_status = true;
      return 0;
    }
    if (x->status == 101) return refuse("a 101 (Switching Protocols) status, and no upgrade was asked for");
    TransferCodings codings;  // as AnswerReader reads them
    bool length = false;
    for (const auto& [name, value] : x->head.headers) {
      if (name == "transfer-encoding") codings.Add(value);
      length = length || name == "content-length";
    }
    if (!codings.ok()) return refuse("a transfer coding other than chunked, which was not asked for");
    if (codings.any() && length) return refuse("both Transfer-Encoding and Content-Length (RFC 9112 §6.3)");
    if (x->status < 200) {
      x->head.headers.clear();  // 1xx: the final head follows
      return bytes;
    }
    x->head.status = x->status;
    RemoveHopByHop(x->head.headers);
    x->head_done = true;
    x->unflushed = true;
    if (!x->sink->OnHead(x->head)) {
      x->cancelled = true;
      return 0;
    }
    x->last_activity = Steady::now();  // the sink's time is not the upstream's silence
    return bytes;
  }
  // An obsolete folded line: curl does not unfold it, so its Transfer-Encoding
  // would not be the one read here; a gateway may refuse it (RFC 9112 §5.2).
  if (line.front() == ' ' || line.front() == '\t') return refuse("a folded header line");
  const size_t colon = line.find(':');
  if (colon == std::string_view::npos || !IsHttpToken(line.substr(0, colon))) {
    return refuse("a header line that is not a name, a colon and a value");
  }
  const std::string_view value = TrimOws(line.substr(colon + 1));  // a \v kept: refused below, as curl keeps it
  if (!IsHttpFieldValue(value)) return refuse("a control character in a header value");
  x->head.headers.emplace_back(AsciiLower(line.substr(0, colon)), std::string(value));
  return bytes;
}

size_t OnBodyPiece(char* data, size_t size, size_t n, void* user) {
  auto* x = static_cast<Exchange*>(user);
  const size_t bytes = size * n;
  if (bytes == 0) return 0;
  x->first_byte = true;
  x->unflushed = true;
  if (!x->head_done || !x->sink->OnBody(std::string_view(data, bytes))) {
    x->cancelled = x->head_done;
    return 0;  // a short count aborts the transfer (CURL_WRITEFUNC_ERROR is curl ≥ 8.1)
  }
  x->last_activity = Steady::now();
  return bytes;
}

curl_socket_t OpenSocket(void* user, curlsocktype, curl_sockaddr* address) {
  auto* x = static_cast<Exchange*>(user);
  std::string numeric = Numeric(&address->addr);
  if (numeric.empty() || IsForbiddenUpstreamAddress(numeric)) {
    x->refused = numeric.empty() ? "an address of another family" : std::move(numeric);
    return CURL_SOCKET_BAD;
  }
  return socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
}

int OnRequestGoingOut(void* user, char*, char*, int, int) {
  auto* x = static_cast<Exchange*>(user);
  x->sent = true;
  x->sent_at = Steady::now();
  return CURL_PREREQFUNC_OK;
}

// A pooled easy handle. Through the proxy: its multi (which keeps the
// connection) and the storage of its request headers, lines written into
// one buffer linked by nodes curl reads but does not own. Our own exchange:
// the CONNECT_ONLY handle's socket, the request as written, the bytes
// received, the parser. The credential is in `lines` or `out`: wiped after
// every call, and by their allocator when they are freed (an exception from
// the sink unwinds past the wipe and destroys the entry).
struct Entry {
  CURLM* multi = nullptr;  // through the proxy only
  CURL* easy = nullptr;
  char error[CURL_ERROR_SIZE] = {};
  WipedString lines;
  std::vector<size_t> starts;
  std::vector<curl_slist> nodes;
  HttpHeaders head_headers;  // empty between calls: its capacity lent to each call's head

  bool connected = false;  // `sock` may carry a request
  Steady::time_point idle_since;  // when it was last given back
  curl_socket_t sock = CURL_SOCKET_BAD;
  WipedString out;
  std::vector<char> in;
  std::unique_ptr<AnswerReader> reader;

  Entry() = default;
  Entry(const Entry&) = delete;
  Entry& operator=(const Entry&) = delete;
  ~Entry() {
    if (multi && easy) curl_multi_remove_handle(multi, easy);
    if (easy) curl_easy_cleanup(easy);  // closes a CONNECT_ONLY connection
    if (multi) curl_multi_cleanup(multi);  // closes the kept connection
  }
};

// How an exchange on our own connection went.
enum class Outcome {
  kDone,
  kRetry,  // the kept connection was found closed before any byte of the answer
  kFailed,
};

// A request body up to this size is copied behind the head: one write.
constexpr size_t kInlineBody = 16 * 1024;

// How soon after a request went out on a kept connection its close still
// means "closed while idle, the request unread" (resent): a loopback or LAN
// round trip and then some. Later, the upstream may have worked on it.
constexpr std::chrono::milliseconds kStaleCloseWindow{250};

class CurlUpstreamClient final : public UpstreamClient {
 public:
  explicit CurlUpstreamClient(UpstreamClientOptions options) : options_(std::move(options)) {
    if (!options_.clock) options_.clock = &system_clock_;
    if (!options_.proxy.empty() && !options_.resolver) {
      own_resolver_ = NewSystemResolver();
      options_.resolver = own_resolver_.get();
    }
  }

  Status Send(const UpstreamRequest& request, UpstreamSink& sink) override {
    Exchange x;
    x.sink = &sink;
    Status status = Call(request, x);
    if (!status.ok() && x.failure != UpstreamFailure::kNone) sink.OnFailure(x.failure);
    return status;
  }

 private:
  // An error of `kind` (the sink is told the kind when Send returns it).
  static Status Failed(Exchange& x, UpstreamFailure kind, ErrorCode code, std::string message) {
    x.failure = kind;
    return MakeError(code, std::move(message));
  }

  // The kind of a curl error code.
  static UpstreamFailure KindOf(CURLcode rc) {
    switch (rc) {
      case CURLE_COULDNT_RESOLVE_HOST:
      case CURLE_COULDNT_RESOLVE_PROXY:
        return UpstreamFailure::kResolve;
      case CURLE_COULDNT_CONNECT:
        return UpstreamFailure::kConnect;
      case CURLE_SSL_CONNECT_ERROR:
      case CURLE_PEER_FAILED_VERIFICATION:
      case CURLE_SSL_CERTPROBLEM:
      case CURLE_SSL_CIPHER:
      case CURLE_SSL_CACERT_BADFILE:
      case CURLE_SSL_CRL_BADFILE:
      case CURLE_SSL_ISSUER_ERROR:
      case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
      case CURLE_SSL_INVALIDCERTSTATUS:
      case CURLE_SSL_SHUTDOWN_FAILED:
      case CURLE_SSL_CLIENTCERT:
      case CURLE_USE_SSL_FAILED:
        return UpstreamFailure::kTls;
      case CURLE_SEND_ERROR:
      case CURLE_RECV_ERROR:
      case CURLE_GOT_NOTHING:
      case CURLE_PARTIAL_FILE:
        return UpstreamFailure::kConnectionLost;
      case CURLE_WEIRD_SERVER_REPLY:
        return UpstreamFailure::kBadAnswer;
      default:
        return UpstreamFailure::kOther;
    }
  }

  Status Call(const UpstreamRequest& request, Exchange& x) {
    auto aimed = targets_.Get(request.url);
    if (!aimed.ok()) return Failed(x, UpstreamFailure::kInvalidRequest, aimed.code(), aimed.error().message);
    const UpstreamTarget& target = **aimed;
    if (!IsHttpToken(request.method)) {
      return Failed(x, UpstreamFailure::kInvalidRequest, ErrorCode::kInvalidArgument,
                    "upstream request: the method is not an HTTP token");
    }
    for (const auto& [name, value] : request.headers) {
      if (!IsHttpToken(name)) {
        return Failed(x, UpstreamFailure::kInvalidRequest, ErrorCode::kInvalidArgument,
                      UpstreamCallName(request.method, target) + ": a header name is not an HTTP token");
      }
      if (HasBreakOrNul(value)) {
        return Failed(x, UpstreamFailure::kInvalidRequest, ErrorCode::kInvalidArgument,
                      UpstreamCallName(request.method, target) + ": header " + name + " has a CR, LF or NUL in its value");
      }
    }
    // A client gone already (while the call waited for a thread, say): no
    // request goes out for it.
    if (request.hang_up_fd >= 0 && HungUp(request.hang_up_fd)) return UpstreamClientHungUp(UpstreamCallName(request.method, target));
    if (!options_.proxy.empty()) DYAD_RETURN_IF_ERROR(CheckHostBeforeProxy(x, UpstreamCallName(request.method, target), target.host));
    std::unique_ptr<Entry> entry = Lease(target.origin);
    if (!entry) return MakeError(ErrorCode::kInternal, "curl_easy_init failed");
    x.head.headers = std::move(entry->head_headers);  // no growth of a new vector per answer
    Status status = options_.proxy.empty() ? PerformOwn(*entry, request, x, target) : Perform(*entry, request, x, target);
    x.head.headers.clear();
    entry->head_headers = std::move(x.head.headers);
    if (status.ok()) Return(target.origin, std::move(entry));
    return status;
  }

  static bool IsNumeric(const std::string& host) {
    unsigned char buf[sizeof(in6_addr)];
    const std::string bare = host.substr(0, host.find('%'));
    return inet_pton(AF_INET, bare.c_str(), buf) == 1 || inet_pton(AF_INET6, bare.c_str(), buf) == 1;
  }

  // Through the proxy: the URL's host, resolved here, leads to no refused
  // address (a numeric host is its own address).
  Status CheckHostBeforeProxy(Exchange& x, const std::string& what, const std::string& host) const {
    if (IsNumeric(host)) {
      if (IsForbiddenUpstreamAddress(host.substr(0, host.find('%')))) return Refused(x, what, host);
      return OkStatus();
    }
    auto addresses = options_.resolver->Resolve(host);
    if (!addresses.ok()) {
      return Failed(x, UpstreamFailure::kResolve, ErrorCode::kUnavailable,
                    what + ": the host could not be resolved to check it before the call through "
                           "GATEWAY_UPSTREAM_PROXY (" + std::string(ErrorCodeName(addresses.code())) + ")");
    }
    for (const std::string& a : *addresses) {
      if (IsForbiddenUpstreamAddress(a)) return Refused(x, what, a);
    }
    return OkStatus();
  }

  static Status Refused(Exchange& x, const std::string& what, const std::string& address) {
    return Failed(x, UpstreamFailure::kRefusedAddress, ErrorCode::kUnavailable,
                  what + ": refused to connect to " + address + ", a link-local or cloud metadata address");
  }

  Status Perform(Entry& e, const UpstreamRequest& request, Exchange& x, const UpstreamTarget& target) {
    CURL* h = e.easy;
    e.error[0] = '\0';
    curl_easy_setopt(h, CURLOPT_URL, request.url.c_str());
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, LinkHeaders(e, request.headers));
    // A handle is reused: no verb of an earlier call may stick.
    curl_easy_setopt(h, CURLOPT_NOBODY, 0L);
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    const char* verb = nullptr;  // CURLOPT_CUSTOMREQUEST: none for what curl's own verb says
    if (request.method == "HEAD" && request.body.empty()) {
      curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (request.method != "GET" || !request.body.empty()) {
      // Not copied: curl reads the caller's bytes, Content-Length from the size.
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size()));
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, request.body.data());
      if (request.method != "POST") verb = request.method.c_str();
    }
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, verb);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(std::max<int64_t>(1, request.timeouts.connect.count())));
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &x);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, &x);
    curl_easy_setopt(h, CURLOPT_PREREQDATA, &x);

    const char* timed_out = nullptr;
    const Steady::time_point give_up = Steady::now() + request.timeouts.total;
    CURLcode result = CURLE_OK;
    std::string failure;
    bool hung_up = false;
    // Until the answer's final head (curl_common.h: ExchangeTimeouts). curl
    // asks poll() for no POLLRDHUP: a wait wakes on the client's POLLIN (or
    // error, or hang-up), and HungUp, asked after every wait, says whether
    // it was its close. After bytes alone (a pipelined request) the client
    // wakes no wait (it would at once, every time): its close is then found
    // by the next wait's end (within the 1 s curl_multi_poll waits at most).
    bool wake_on_client = true;
    curl_multi_add_handle(e.multi, h);
    for (;;) {
      int running = 0;
      CURLMcode mc = curl_multi_perform(e.multi, &running);
      if (mc != CURLM_OK) {
        failure = curl_multi_strerror(mc);
        break;
      }
      if (running == 0) {
        int left = 0;
        while (CURLMsg* m = curl_multi_info_read(e.multi, &left)) {
          if (m->msg == CURLMSG_DONE) result = m->data.result;
        }
        x.FlushRead(result == CURLE_OK && x.head_done);
        break;
      }
      if (!x.FlushRead(false)) break;
      // Until the request goes out, curl's connect timeout runs.
      const Steady::time_point now = Steady::now();
      Steady::time_point deadline = now + std::chrono::milliseconds(100);
      if (x.first_byte) {
        deadline = x.last_activity + request.timeouts.idle;
        if (now >= deadline) timed_out = "idle";
      } else if (x.sent) {
        deadline = x.sent_at + request.timeouts.first_byte;
        if (now >= deadline) timed_out = "first-byte";
      }
      if (!timed_out && now >= give_up) timed_out = "total";
      if (timed_out) break;
      deadline = std::min(deadline, give_up);
      const auto wait = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
      const bool watch = request.hang_up_fd >= 0 && !x.head_done;
      curl_waitfd client{request.hang_up_fd, CURL_WAIT_POLLIN, 0};
      const bool wake = watch && wake_on_client;
      mc = curl_multi_poll(e.multi, wake ? &client : nullptr, wake ? 1 : 0,
                           static_cast<int>(std::clamp<int64_t>(wait, 1, 1000)), nullptr);
      if (mc != CURLM_OK) {
        failure = curl_multi_strerror(mc);
        break;
      }
      if (watch) {
        hung_up = HungUp(request.hang_up_fd);
        if (hung_up) break;
        if (client.revents != 0) wake_on_client = false;
      }
    }
    curl_multi_remove_handle(e.multi, h);  // mid-transfer: curl closes the connection
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, nullptr);
    Cleanse(e.lines);  // the credential; the capacity stays for the next call

    if (!timed_out && !hung_up && failure.empty() && !x.cancelled && !x.head_too_large && result == CURLE_OK &&
        x.head_done) {
      return OkStatus();
    }
    const std::string what = UpstreamCallName(request.method, target);
    if (hung_up) return UpstreamClientHungUp(what);
    if (timed_out) return TimedOut(x, what, timed_out, request.timeouts, x.head_done);
    if (!failure.empty()) return Failed(x, UpstreamFailure::kOther, ErrorCode::kInternal, what + ": " + failure);
    if (x.cancelled) return MakeError(ErrorCode::kCancelled, what + ": the answer's reader stopped reading it");
    if (x.head_too_large) return HeadTooLarge(x, what);
    if (x.bad_status) {
      return Failed(x, UpstreamFailure::kBadAnswer, ErrorCode::kUnavailable,
                    what + ": the answer's status " + std::to_string(x.status) + " is not an HTTP status");
    }
    if (!x.malformed.empty()) {
      return Failed(x, UpstreamFailure::kBadAnswer, ErrorCode::kUnavailable,
                    what + ": the answer's head has " + std::string(x.malformed));
    }
    if (result == CURLE_OPERATION_TIMEDOUT) return TimedOut(x, what, "connect", request.timeouts, false);
    if (result != CURLE_OK && !x.refused.empty()) return Refused(x, what, x.refused);
    if (result != CURLE_OK) {
      const std::string why = e.error[0] ? std::string(e.error) : curl_easy_strerror(result);
      return Failed(x, KindOf(result), ErrorCode::kUnavailable,
                    what + ": " + (x.head_done ? "the answer was cut short: " : "") + why);
    }
    if (!x.head_done) return Failed(x, UpstreamFailure::kBadAnswer, ErrorCode::kUnavailable, what + ": no answer head");
    return OkStatus();
  }

  // `which` timeout ("connect", "first-byte", "idle" or "total") passed.
  static Status TimedOut(Exchange& x, const std::string& what, const char* which, const UpstreamTimeouts& t,
                         bool head_done) {
    x.failure = TimeoutFailure(which);
    return UpstreamTimedOut(what, which, t, head_done);
  }

  static Status HeadTooLarge(Exchange& x, const std::string& what) {
    x.failure = UpstreamFailure::kBadAnswer;
    return UpstreamHeadTooLarge(what);
  }

  // Our own exchange (see the top of this file).
  Status PerformOwn(Entry& e, const UpstreamRequest& request, Exchange& x, const UpstreamTarget& target) {
    const Steady::time_point give_up = Steady::now() + request.timeouts.total;
    // The query is the call's (the target is kept without it): it goes into
    // the request line, so nothing in it may end or split that line.
    auto query = UpstreamQuery(request, target);
    if (!query.ok()) {
      x.failure = UpstreamFailure::kInvalidRequest;
      return query.error();
    }
    const bool inline_body = request.body.size() <= kInlineBody;
    SerialiseUpstreamRequest(request, target, *query, inline_body, e.out);
    Status status = OkStatus();
    for (int attempt = 0; attempt < 2; ++attempt) {
      const bool reused = e.connected && ConnectionStillOpen(e.easy);
      if (!reused) {
        status = Connect(e, request, x, target, give_up);
        if (!status.ok()) break;
        // The connect (and TLS handshake) watched no client: one gone
        // meanwhile gets no request sent.
        if (request.hang_up_fd >= 0 && HungUp(request.hang_up_fd)) {
          status = UpstreamClientHungUp(UpstreamCallName(request.method, target));
          break;
        }
      }
      if (SendAndRead(e, request, x, target, reused, inline_body, give_up, status) != Outcome::kRetry) break;
    }
    Cleanse(e.out);  // the credential; the capacity stays for the next call
    return status;
  }

  // A new connection for the entry's origin, made by curl with the options
  // set at Lease; the open-socket callback refuses forbidden addresses.
  Status Connect(Entry& e, const UpstreamRequest& request, Exchange& x, const UpstreamTarget& target,
                 Steady::time_point give_up) {
    Retire(e);
    if (e.sock != CURL_SOCKET_BAD) {
      // curl keeps a CONNECT_ONLY connection with its handle (to the
      // handle's end): a new handle closes it.
      CURL* fresh = NewEasy(e);
      if (!fresh) return MakeError(ErrorCode::kInternal, "curl_easy_init failed");
      curl_easy_cleanup(e.easy);
      e.easy = fresh;
      e.sock = CURL_SOCKET_BAD;
    }
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(give_up - Steady::now());
    if (left.count() <= 0) return TimedOut(x, UpstreamCallName(request.method, target), "total", request.timeouts, false);
    CURL* h = e.easy;
    e.error[0] = '\0';
    x.refused.clear();
    curl_easy_setopt(h, CURLOPT_URL, target.origin.c_str());
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(std::max<int64_t>(1, request.timeouts.connect.count())));
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(left.count()));
    curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, &x);
    const CURLcode rc = curl_easy_perform(h);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, nullptr);
    if (rc != CURLE_OK) {
      const std::string what = UpstreamCallName(request.method, target);
      if (!x.refused.empty()) return Refused(x, what, x.refused);
      if (rc == CURLE_OPERATION_TIMEDOUT) {
        const bool total = Steady::now() >= give_up && request.timeouts.total < request.timeouts.connect;
        return TimedOut(x, what, total ? "total" : "connect", request.timeouts, false);
      }
      return Failed(x, KindOf(rc), ErrorCode::kUnavailable,
                    what + ": " + (e.error[0] ? std::string(e.error) : curl_easy_strerror(rc)));
    }
    curl_socket_t sock = CURL_SOCKET_BAD;
    if (curl_easy_getinfo(h, CURLINFO_ACTIVESOCKET, &sock) != CURLE_OK || sock == CURL_SOCKET_BAD) {
      return Failed(x, UpstreamFailure::kConnect, ErrorCode::kUnavailable,
                    UpstreamCallName(request.method, target) + ": no socket after connecting");
    }
    e.sock = sock;
    e.connected = true;
    return OkStatus();
  }

  // Ends the connection for the peer at once (curl closes the socket when
  // it drops the connection: at the next connect, or with the handle).
  static void Retire(Entry& e) {
    if (e.connected) shutdown(e.sock, SHUT_RDWR);
    e.connected = false;
  }

  // Sends the request and reads its answer on the entry's connection into
  // the sink (curl_common.h: RunOwnExchange); `status` says how it went when
  // the outcome is not kRetry.
  Outcome SendAndRead(Entry& e, const UpstreamRequest& request, Exchange& x, const UpstreamTarget& target,
                      bool reused, bool inline_body, Steady::time_point give_up, Status& status) const {
    const UpstreamTimeouts& t = request.timeouts;
    x.sent_at = Steady::now();
    const ExchangeTimeouts timeouts{x.sent_at, t.first_byte, t.idle, give_up, request.hang_up_fd};
    // A kept connection the upstream closed while it was idle fails the
    // send, or ends right after the request lands: resent. One that ends
    // later may have been read and worked on: a POST is not sent twice then.
    const ResendRule resend{reused, true, Idempotent(request.method), options_.clock, kStaleCloseWindow};
    AnswerReader& reader = *e.reader;
    reader.StartStreaming(&x.head.headers, &x, request.method == "HEAD");
    const ExchangeResult r = RunOwnExchange(OwnConnection{e.easy, e.sock, e.in}, e.out,
                                            inline_body ? std::string_view() : request.body, reader, timeouts, resend);
    if (!r.keep) Retire(e);
    if (r.end == ExchangeEnd::kResend) return Outcome::kRetry;
    status = Settle(r, reader, x, UpstreamCallName(request.method, target), t);
    return status.ok() ? Outcome::kDone : Outcome::kFailed;
  }

  // The status of an exchange that was not resent.
  static Status Settle(const ExchangeResult& r, const AnswerReader& reader, Exchange& x, const std::string& what,
                       const UpstreamTimeouts& t) {
    const char* cut = x.head_done ? "the answer was cut short: " : "";
    switch (r.end) {
      case ExchangeEnd::kTimedOut: {
        const char* which = r.timeout == ExchangeTimeout::kIdle    ? "idle"
                            : r.timeout == ExchangeTimeout::kTotal ? "total"
                                                                   : "first-byte";
        return TimedOut(x, what, which, t, x.head_done);
      }
      case ExchangeEnd::kHeadTooLarge:
        return HeadTooLarge(x, what);
      case ExchangeEnd::kCancelled:
        return UpstreamClientHungUp(what);
      case ExchangeEnd::kResend:
      case ExchangeEnd::kFailed:
        return Failed(x, UpstreamFailure::kConnectionLost, ErrorCode::kUnavailable, what + ": " + cut + r.why);
      case ExchangeEnd::kDone:
        break;
    }
    if (reader.cancelled()) return MakeError(ErrorCode::kCancelled, what + ": the answer's reader stopped reading it");
    if (reader.head_too_large()) return HeadTooLarge(x, what);
    if (reader.failed()) {
      return Failed(x, reader.cut_by_close() ? UpstreamFailure::kConnectionLost : UpstreamFailure::kBadAnswer,
                    ErrorCode::kUnavailable, what + ": " + cut + reader.error());
    }
    return OkStatus();
  }

  // The caller's headers (less those the client sets) in the entry's
  // buffer, sized first (no growth: no copy of the credential left in freed
  // memory); then "Expect:" (no 100-continue), and curl's own Accept and
  // form Content-Type removed unless the caller sent them.
  static curl_slist* LinkHeaders(Entry& e, const HttpHeaders& headers) {
    size_t size = 64;
    for (const auto& [k, v] : headers) size += k.size() + v.size() + 3;
    WipedString& lines = e.lines;
    lines.clear();
    lines.reserve(size);
    e.starts.clear();
    bool accept = false, content_type = false;
    auto add = [&](std::string_view name, std::string_view value, const char* separator) {
      e.starts.push_back(lines.size());
      lines.append(name).append(separator).append(value).push_back('\0');
    };
    for (const auto& [k, v] : headers) {
      const std::string lower = AsciiLower(k);
      if (IsSetByClient(lower)) continue;
      accept |= lower == "accept";
      content_type |= lower == "content-type";
      add(k, v, v.empty() ? ";" : ": ");  // "Name;" sends an empty value ("Name:" would remove it)
    }
    add("Expect", "", ":");
    if (!accept) add("Accept", "", ":");
    if (!content_type) add("Content-Type", "", ":");
    e.nodes.resize(e.starts.size());
    for (size_t i = 0; i < e.nodes.size(); ++i) {
      e.nodes[i].data = lines.data() + e.starts[i];
      e.nodes[i].next = i + 1 < e.nodes.size() ? &e.nodes[i + 1] : nullptr;
    }
    return e.nodes.data();
  }

  std::unique_ptr<Entry> Lease(const std::string& origin) {
    std::vector<std::unique_ptr<Entry>> too_old;  // closed after the lock
    {
      MutexLock lock(&mu_);
      auto it = idle_.find(origin);
      if (it != idle_.end()) {
        // Oldest first: those idle too long are dropped, including the ones
        // below the most recent that a steady load never reaches.
        auto& free = it->second;
        const Steady::time_point oldest_kept = options_.clock->Now() - options_.max_idle_age;
        size_t old = 0;
        while (old < free.size() && free[old]->idle_since < oldest_kept) ++old;
        std::move(free.begin(), free.begin() + static_cast<std::ptrdiff_t>(old), std::back_inserter(too_old));
        free.erase(free.begin(), free.begin() + static_cast<std::ptrdiff_t>(old));
        if (!free.empty()) {
          std::unique_ptr<Entry> e = std::move(free.back());
          free.pop_back();
          return e;
        }
      }
    }
    auto e = std::make_unique<Entry>();
    e->easy = NewEasy(*e);
    if (!e->easy) return nullptr;
    if (options_.proxy.empty()) {
      e->reader = std::make_unique<AnswerReader>();
      return e;
    }
    e->multi = curl_multi_init();
    if (!e->multi) return nullptr;
    curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, 1L);
    CURL* h = e->easy;
    curl_easy_setopt(h, CURLOPT_NOPROXY, "");
    curl_easy_setopt(h, CURLOPT_PROXY_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_PROXY_SSL_VERIFYHOST, 2L);
    if (!options_.ca_file.empty()) curl_easy_setopt(h, CURLOPT_PROXY_CAINFO, options_.ca_file.c_str());
    curl_easy_setopt(h, CURLOPT_HTTP_CONTENT_DECODING, 0L);  // the body as the upstream encoded it
    curl_easy_setopt(h, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);  // a proxy's answer is not the upstream's head
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, OnHeaderLine);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, OnBodyPiece);
    curl_easy_setopt(h, CURLOPT_PREREQFUNCTION, OnRequestGoingOut);
    return e;
  }

  // An easy handle with the options of both ways; CONNECT_ONLY without a proxy.
  CURL* NewEasy(Entry& e) const {
    CURL* h = curl_easy_init();
    if (!h) return nullptr;
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    if (!options_.ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, options_.ca_file.c_str());
    // Never a proxy of the environment's; the configured one for every call.
    curl_easy_setopt(h, CURLOPT_PROXY, options_.proxy.c_str());
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    // HTTP/1.1 (in ALPN too): a cancelled answer closes its connection (with
    // HTTP/2 it would reset one stream of a shared one).
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, e.error);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, OpenSocket);
    if (options_.proxy.empty()) curl_easy_setopt(h, CURLOPT_CONNECT_ONLY, 1L);
    return h;
  }

  void Return(const std::string& origin, std::unique_ptr<Entry> e) {
    // Our own exchange's entry without a connection (retired after a good
    // answer): a shut socket and a grown receive buffer, nothing to keep.
    if (options_.proxy.empty() && !e->connected) return;
    e->idle_since = options_.clock->Now();
    {
      MutexLock lock(&mu_);
      auto& free = idle_[origin];
      if (free.size() < options_.max_idle_per_host) {
        free.push_back(std::move(e));
        return;
      }
    }
    // Over the limit: `e` closes its connection here, outside the lock.
  }

  SystemClock system_clock_;  // when the options name no clock
  UpstreamClientOptions options_;  // set in the constructor
  std::unique_ptr<HostResolver> own_resolver_;
  UpstreamTargetCache targets_;
  Mutex mu_;
  std::map<std::string, std::vector<std::unique_ptr<Entry>>> idle_ DYAD_GUARDED_BY(mu_);
};

}  // namespace

// IsForbiddenUpstreamAddress: transport/upstream_address.cc (one definition for both
// branches that wrote it).

std::string DescribeUpstreamFailure(UpstreamFailure kind, const UpstreamTimeouts& timeouts) {
  auto passed = [](const char* which, std::chrono::milliseconds limit) {
    return std::string("the ") + which + " timeout (" + std::to_string(limit.count()) + " ms) passed";
  };
  switch (kind) {
    case UpstreamFailure::kResolve: return "its host name could not be resolved (DNS)";
    case UpstreamFailure::kConnect: return "could not connect";
    case UpstreamFailure::kRefusedAddress: return "its address is link-local or cloud metadata, which is refused";
    case UpstreamFailure::kTls: return "TLS failure (the handshake or the certificate check failed)";
    case UpstreamFailure::kConnectionLost: return "connection reset or closed";
    case UpstreamFailure::kBadAnswer: return "its answer was not valid HTTP";
    case UpstreamFailure::kInvalidRequest: return "the request cannot be sent as HTTP (a header or the query)";
    case UpstreamFailure::kConnectTimeout: return passed("connect", timeouts.connect);
    case UpstreamFailure::kFirstByteTimeout: return passed("first-byte", timeouts.first_byte);
    case UpstreamFailure::kIdleTimeout: return passed("idle", timeouts.idle);
    case UpstreamFailure::kTotalTimeout: return passed("total", timeouts.total);
    case UpstreamFailure::kNone:
    case UpstreamFailure::kOther: break;
  }
  return "the call failed";
}

namespace {

// GATEWAY_UPSTREAM_PROXY: scheme://[user[:password]@]host[:port][/]; the
// errors never quote it.
Status CheckProxyUrl(const std::string& proxy) {
  auto bad = [](const std::string& why) {
    return MakeError(ErrorCode::kInvalidArgument, "GATEWAY_UPSTREAM_PROXY: " + why);
  };
  for (unsigned char c : proxy) {
    if (c <= ' ' || c == 0x7f) return bad("has a space or control character");
  }
  UrlHandle u;
  if (!u.u || curl_url_set(u.u, CURLUPART_URL, proxy.c_str(), CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK) {
    return bad("is not a URL (scheme://host:port)");
  }
  const std::string scheme = AsciiLower(u.Get(CURLUPART_SCHEME));
  if (scheme != "http" && scheme != "https" && scheme != "socks5" && scheme != "socks5h") {
    return bad("the scheme must be http, https, socks5 or socks5h");
  }
  if (u.Get(CURLUPART_HOST).empty()) return bad("has no host");
  const std::string path = u.Get(CURLUPART_PATH);
  if ((!path.empty() && path != "/") || !u.Get(CURLUPART_QUERY).empty() || !u.Get(CURLUPART_FRAGMENT).empty()) {
    return bad("must be scheme://host:port, without a path, query or fragment");
  }
  return OkStatus();
}

}  // namespace

Result<std::unique_ptr<UpstreamClient>> NewUpstreamClient(const UpstreamClientOptions& options) {
  EnsureCurlGlobalInit();
  if (!options.proxy.empty()) DYAD_RETURN_IF_ERROR(CheckProxyUrl(options.proxy));
  if (!options.ca_file.empty()) {
    std::FILE* f = std::fopen(options.ca_file.c_str(), "r");
    if (!f) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "GATEWAY_UPSTREAM_CA_FILE: '" + options.ca_file + "' cannot be read");
    }
    std::fclose(f);
  }
  return std::unique_ptr<UpstreamClient>(std::make_unique<CurlUpstreamClient>(options));
}

}  // namespace dyad
