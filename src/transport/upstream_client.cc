// UpstreamClient over libcurl. Each pooled entry is an easy handle in a
// multi handle of its own: the multi keeps the one connection alive between
// calls (CURLMOPT_MAXCONNECTS 1), and driving the transfer with
// curl_multi_perform/curl_multi_poll lets the first-byte and idle timeouts
// be kept to the millisecond on our monotonic clock (libcurl's LOW_SPEED
// options and the progress callback only see whole seconds). Entries are
// pooled per origin (scheme, host, port), at most max_idle_per_host each; a
// call that ended in an error does not give its entry back: the handle and
// its connection are closed, so a cancelled or timed-out answer never leaves
// a half-read connection for the next caller. A URL's target (the origin of
// its pool, how errors name the call) is parsed once per URL and kept
// (upstream_target.h); curl still parses CURLOPT_URL on every call.
//
// The head: the header callback collects the lines of each answer head
// (interim 1xx heads skipped, a proxy's CONNECT answer suppressed) and calls
// OnHead at the final head's blank line, before any body byte; the write
// callback hands each decoded piece (curl removes the chunked framing) to
// OnBody as it arrives. Either returning false makes the callback return a
// short count, which aborts the transfer (kCancelled).
//
// Proxies: unlike curl_transport, libcurl's reading of the environment
// (https_proxy and the like, no_proxy) is turned off (CURLOPT_PROXY is
// always set: "" for none), since through a proxy the address the
// open-socket check sees is the proxy's. With the options' proxy, every
// call goes through it (CURLOPT_NOPROXY ""), and the URL's host is resolved
// here first and each address checked. curl resends a request once when a kept connection turns out
// closed before any byte of the answer (a POST too: the server closed the idle
// connection, it did not read the request).
#include "transport/upstream_client.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <map>

#include "core/encoding.h"
#include "core/mutex.h"
#include "core/secret_bytes.h"
#include "transport/curl_common.h"
#include "transport/upstream_target.h"

namespace dyad {
namespace {

using Clock = std::chrono::steady_clock;

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

bool IsSetByClient(std::string_view lower) {
  return IsHopByHop(lower) || lower == "host" || lower == "content-length" || lower == "expect";
}

bool IsToken(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (!(std::isalnum(c) || std::strchr("!#$%&'*+-.^_`|~", c) != nullptr) || c == 0) return false;
  }
  return true;
}

// The most an answer head may take (curl's own limit is 100 KiB per line).
constexpr size_t kMaxHeadBytes = 64 * 1024;

// One call's state, reached from curl's callbacks.
struct Exchange {
  UpstreamSink* sink = nullptr;
  UpstreamHead head;
  int status = 0;           // of the head being read
  size_t head_bytes = 0;
  bool head_done = false;   // OnHead was called
  bool head_too_large = false;
  bool cancelled = false;   // the sink returned false
  bool sent = false;        // the request is going out (first-byte timeout running)
  bool first_byte = false;  // a byte of the answer arrived (idle timeout running)
  Clock::time_point sent_at;
  Clock::time_point last_activity;
  std::string refused;  // a forbidden address curl was about to connect to
};

// Removes hop-by-hop headers, and those the answer's Connection header names.
void RemoveHopByHop(HttpHeaders& headers) {
  std::vector<std::string> named;
  for (const auto& [name, value] : headers) {
    if (name != "connection") continue;
    std::string_view rest = value;
    while (!rest.empty()) {
      const size_t comma = rest.find(',');
      named.push_back(AsciiLower(TrimSpace(rest.substr(0, comma))));
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    }
  }
  std::erase_if(headers, [&](const auto& h) {
    return IsHopByHop(h.first) || std::find(named.begin(), named.end(), h.first) != named.end();
  });
}

size_t OnHeaderLine(char* data, size_t size, size_t n, void* user) {
  auto* x = static_cast<Exchange*>(user);
  const size_t bytes = size * n;
  x->first_byte = true;
  x->last_activity = Clock::now();
  if (x->head_done) return bytes;  // trailers: dropped
  x->head_bytes += bytes;
  if (x->head_bytes > kMaxHeadBytes) {
    x->head_too_large = true;
    return 0;
  }
  std::string_view line(data, bytes);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  if (line.starts_with("HTTP/")) {  // a new head (after an interim one)
    x->head.headers.clear();
    const size_t space = line.find(' ');
    x->status = 0;
    for (size_t i = space + 1; space != std::string_view::npos && i < line.size() && i < space + 4; ++i) {
      if (line[i] < '0' || line[i] > '9') break;
      x->status = x->status * 10 + (line[i] - '0');
    }
    return bytes;
  }
  if (line.empty()) {  // the end of a head
    if (x->status < 200) {
      x->head.headers.clear();  // 1xx: the final head follows
      return bytes;
    }
    x->head.status = x->status;
    RemoveHopByHop(x->head.headers);
    x->head_done = true;
    if (!x->sink->OnHead(x->head)) {
      x->cancelled = true;
      return 0;
    }
    x->last_activity = Clock::now();  // the sink's time is not the upstream's silence
    return bytes;
  }
  if (line.front() == ' ' || line.front() == '\t') {  // an obsolete folded line continues the last value
    if (!x->head.headers.empty()) x->head.headers.back().second.append(" ").append(TrimSpace(line));
    return bytes;
  }
  const size_t colon = line.find(':');
  if (colon == std::string_view::npos || colon == 0) return bytes;  // not a header: ignored
  x->head.headers.emplace_back(AsciiLower(line.substr(0, colon)), std::string(TrimSpace(line.substr(colon + 1))));
  return bytes;
}

size_t OnBodyPiece(char* data, size_t size, size_t n, void* user) {
  auto* x = static_cast<Exchange*>(user);
  const size_t bytes = size * n;
  if (bytes == 0) return 0;
  x->first_byte = true;
  if (!x->head_done || !x->sink->OnBody(std::string_view(data, bytes))) {
    x->cancelled = x->head_done;
    return 0;  // a short count aborts the transfer (CURL_WRITEFUNC_ERROR is curl ≥ 8.1)
  }
  x->last_activity = Clock::now();
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
  x->sent_at = Clock::now();
  return CURL_PREREQFUNC_OK;
}

// A pooled easy handle, its multi (which keeps the connection), and the
// storage of its request headers: lines written into one buffer linked by
// nodes curl reads but does not own (the credential is among them: wiped
// after every call).
struct Entry {
  CURLM* multi = nullptr;
  CURL* easy = nullptr;
  char error[CURL_ERROR_SIZE] = {};
  std::string lines;
  std::vector<size_t> starts;
  std::vector<curl_slist> nodes;
  HttpHeaders head_headers;  // empty between calls: its capacity lent to each call's head

  Entry() = default;
  Entry(const Entry&) = delete;
  Entry& operator=(const Entry&) = delete;
  ~Entry() {
    if (easy) curl_easy_cleanup(easy);
    if (multi) curl_multi_cleanup(multi);  // closes the kept connection
  }
};

// How errors name a call: its method and target (built only for an error).
std::string What(const std::string& method, const UpstreamTarget& target) { return method + " " + target.shown; }

class CurlUpstreamClient final : public UpstreamClient {
 public:
  explicit CurlUpstreamClient(UpstreamClientOptions options) : options_(std::move(options)) {
    if (!options_.proxy.empty() && !options_.resolver) {
      own_resolver_ = NewSystemResolver();
      options_.resolver = own_resolver_.get();
    }
  }

  Status Send(const UpstreamRequest& request, UpstreamSink& sink) override {
    DYAD_ASSIGN_OR_RETURN(std::shared_ptr<const UpstreamTarget> aimed, targets_.Get(request.url));
    const UpstreamTarget& target = *aimed;
    if (!IsToken(request.method)) {
      return MakeError(ErrorCode::kInvalidArgument, "upstream request: the method is not an HTTP token");
    }
    for (const auto& [name, value] : request.headers) {
      if (!IsToken(name)) {
        return MakeError(ErrorCode::kInvalidArgument, What(request.method, target) + ": a header name is not an HTTP token");
      }
      if (HasBreakOrNul(value)) {
        return MakeError(ErrorCode::kInvalidArgument,
                         What(request.method, target) + ": header " + name + " has a CR, LF or NUL in its value");
      }
    }
    if (!options_.proxy.empty()) DYAD_RETURN_IF_ERROR(CheckHostBeforeProxy(What(request.method, target), target.host));
    std::unique_ptr<Entry> entry = Lease(target.origin);
    if (!entry) return MakeError(ErrorCode::kInternal, "curl_easy_init failed");
    Exchange x;
    x.sink = &sink;
    x.head.headers = std::move(entry->head_headers);  // no growth of a new vector per answer
    Status status = Perform(*entry, request, x, target);
    x.head.headers.clear();
    entry->head_headers = std::move(x.head.headers);
    if (status.ok()) Return(target.origin, std::move(entry));
    return status;
  }

 private:
  static bool IsNumeric(const std::string& host) {
    unsigned char buf[sizeof(in6_addr)];
    const std::string bare = host.substr(0, host.find('%'));
    return inet_pton(AF_INET, bare.c_str(), buf) == 1 || inet_pton(AF_INET6, bare.c_str(), buf) == 1;
  }

  // Through the proxy: the URL's host, resolved here, leads to no refused
  // address (a numeric host is its own address).
  Status CheckHostBeforeProxy(const std::string& what, const std::string& host) const {
    if (IsNumeric(host)) {
      if (IsForbiddenUpstreamAddress(host.substr(0, host.find('%')))) return Refused(what, host);
      return OkStatus();
    }
    auto addresses = options_.resolver->Resolve(host);
    if (!addresses.ok()) {
      return MakeError(ErrorCode::kUnavailable, what + ": the host could not be resolved to check it before the "
                                                       "call through GATEWAY_UPSTREAM_PROXY (" +
                                                       std::string(ErrorCodeName(addresses.code())) + ")");
    }
    for (const std::string& a : *addresses) {
      if (IsForbiddenUpstreamAddress(a)) return Refused(what, a);
    }
    return OkStatus();
  }

  static Status Refused(const std::string& what, const std::string& address) {
    return MakeError(ErrorCode::kUnavailable,
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
    const Clock::time_point give_up = Clock::now() + request.timeouts.total;
    CURLcode result = CURLE_OK;
    std::string failure;
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
        break;
      }
      // Until the request goes out, curl's connect timeout runs.
      const Clock::time_point now = Clock::now();
      Clock::time_point deadline = now + std::chrono::milliseconds(100);
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
      mc = curl_multi_poll(e.multi, nullptr, 0, static_cast<int>(std::clamp<int64_t>(wait, 1, 1000)), nullptr);
      if (mc != CURLM_OK) {
        failure = curl_multi_strerror(mc);
        break;
      }
    }
    curl_multi_remove_handle(e.multi, h);  // mid-transfer: curl closes the connection
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, nullptr);
    Cleanse(e.lines);  // the credential; the capacity stays for the next call

    if (!timed_out && failure.empty() && !x.cancelled && !x.head_too_large && result == CURLE_OK && x.head_done) {
      return OkStatus();
    }
    const std::string what = What(request.method, target);
    if (timed_out) {
      const auto limit = timed_out[0] == 'i'   ? request.timeouts.idle
                         : timed_out[0] == 't' ? request.timeouts.total
                                               : request.timeouts.first_byte;
      return MakeError(ErrorCode::kDeadlineExceeded, what + ": the " + timed_out + " timeout (" +
                                                         std::to_string(limit.count()) + " ms) passed" +
                                                         (x.head_done ? "; the answer was cut short" : ""));
    }
    if (!failure.empty()) return MakeError(ErrorCode::kInternal, what + ": " + failure);
    if (x.cancelled) return MakeError(ErrorCode::kCancelled, what + ": the answer's reader stopped reading it");
    if (x.head_too_large) {
      return MakeError(ErrorCode::kUnavailable,
                       what + ": the answer's head is larger than " + std::to_string(kMaxHeadBytes) + " bytes");
    }
    if (result == CURLE_OPERATION_TIMEDOUT) {
      return MakeError(ErrorCode::kDeadlineExceeded, what + ": the connect timeout (" +
                                                         std::to_string(request.timeouts.connect.count()) +
                                                         " ms) passed");
    }
    if (result != CURLE_OK && !x.refused.empty()) return Refused(what, x.refused);
    if (result != CURLE_OK) {
      const std::string why = e.error[0] ? std::string(e.error) : curl_easy_strerror(result);
      return MakeError(ErrorCode::kUnavailable,
                       what + ": " + (x.head_done ? "the answer was cut short: " : "") + why);
    }
    if (!x.head_done) return MakeError(ErrorCode::kUnavailable, what + ": no answer head");
    return OkStatus();
  }

  // The caller's headers (less those the client sets) in the entry's
  // buffer, sized first (no growth: no copy of the credential left in freed
  // memory); then "Expect:" (no 100-continue), and curl's own Accept and
  // form Content-Type removed unless the caller sent them.
  static curl_slist* LinkHeaders(Entry& e, const HttpHeaders& headers) {
    size_t size = 64;
    for (const auto& [k, v] : headers) size += k.size() + v.size() + 3;
    std::string& lines = e.lines;
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
    {
      MutexLock lock(&mu_);
      auto it = idle_.find(origin);
      if (it != idle_.end() && !it->second.empty()) {
        std::unique_ptr<Entry> e = std::move(it->second.back());
        it->second.pop_back();
        return e;
      }
    }
    auto e = std::make_unique<Entry>();
    e->multi = curl_multi_init();
    e->easy = curl_easy_init();
    if (!e->multi || !e->easy) return nullptr;
    curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, 1L);
    CURL* h = e->easy;
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    if (!options_.ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, options_.ca_file.c_str());
    // Never a proxy of the environment's; the configured one for every call.
    curl_easy_setopt(h, CURLOPT_PROXY, options_.proxy.c_str());
    if (!options_.proxy.empty()) {
      curl_easy_setopt(h, CURLOPT_NOPROXY, "");
      curl_easy_setopt(h, CURLOPT_PROXY_SSL_VERIFYPEER, 1L);
      curl_easy_setopt(h, CURLOPT_PROXY_SSL_VERIFYHOST, 2L);
      if (!options_.ca_file.empty()) curl_easy_setopt(h, CURLOPT_PROXY_CAINFO, options_.ca_file.c_str());
    }
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    // HTTP/1.1: a cancelled answer closes its connection (with HTTP/2 it
    // would reset one stream of a shared one).
    curl_easy_setopt(h, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
    curl_easy_setopt(h, CURLOPT_HTTP_CONTENT_DECODING, 0L);  // the body as the upstream encoded it
    curl_easy_setopt(h, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);  // a proxy's answer is not the upstream's head
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, e->error);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, OnHeaderLine);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, OnBodyPiece);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, OpenSocket);
    curl_easy_setopt(h, CURLOPT_PREREQFUNCTION, OnRequestGoingOut);
    return e;
  }

  void Return(const std::string& origin, std::unique_ptr<Entry> e) {
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

  UpstreamClientOptions options_;  // set in the constructor
  std::unique_ptr<HostResolver> own_resolver_;
  UpstreamTargetCache targets_;
  Mutex mu_;
  std::map<std::string, std::vector<std::unique_ptr<Entry>>> idle_ DYAD_GUARDED_BY(mu_);
};

}  // namespace

// IsForbiddenUpstreamAddress: transport/upstream_address.cc (one definition for both
// branches that wrote it).

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
