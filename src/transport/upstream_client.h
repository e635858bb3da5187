// UpstreamClient: one request to a model provider's OpenAI-compatible API on
// the /v1 path (DESIGN.md §12), its answer handed on as it arrives.
//
// Unlike HttpTransport (the backends' calls: whole answers, retried), an
// upstream call is made once and streamed: the sink hears the status and
// headers, then each piece of the body as the upstream sends it, so a
// text/event-stream answer reaches the client unbuffered. The request body
// is sent as given (never re-serialised).
//
// Safety is the client's, not the caller's:
//  - TLS verification is always on (a private CA via the options' ca_file);
//  - redirects are never followed (a 3xx is handed to the sink as is);
//  - no connection is ever made to a link-local or cloud metadata address
//    (169.254.0.0/16, fe80::/10, fd00:ec2::254), checked on the address
//    actually connected to, so a DNS answer cannot steer the credential there;
//  - only http:// and https:// URLs;
//  - no proxy from the environment (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and
//    their lower-case forms, NO_PROXY are ignored): through a proxy the
//    address connected to is the proxy's, which would bypass the check
//    above. Only the options' proxy (GATEWAY_UPSTREAM_PROXY) is used, for
//    every call; the URL's host is then resolved here before the call and
//    refused if any of its addresses is link-local or metadata (the proxy
//    resolves it again: a DNS answer that changes in between is not seen).
// Connections are pooled and kept alive per upstream (HTTP/1.1). Before a
// kept connection is used, one on which anything arrived while it was idle (a
// close, a reset, stray bytes) is dropped for a new one; a request whose kept
// connection turns out closed before any byte of the answer is sent once
// more on a new connection when it is idempotent (GET, PUT, DELETE), or, a
// POST too, when the close came while sending it or right after (the
// upstream closed an idle connection, it did not read the request; one that
// closes later may have worked on it, and a POST is not sent twice then). A
// request on a new connection is never sent twice. Thread-safe: any number of calls may
// run at once, each on its caller's thread.
//
// Errors: kUnavailable when no answer could be had (refused, DNS, TLS, a
// refused address; the library's message kept, never a header value),
// kDeadlineExceeded when a timeout passed (which one is named: connect,
// first-byte, idle or total), kCancelled when the sink returned false or the
// request's hang_up_fd hung up before the answer's head (the connection is
// then closed, not pooled), kInvalidArgument for a URL the client will not call. Once OnHead was called
// an error means the body was cut short. The messages name the call's URL and
// keep the library's words (host, port, address): the sink's OnFailure is
// told the kind of failure in words for those who must not learn them.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/clock.h"
#include "core/result.h"
#include "transport/host_resolver.h"
#include "transport/http_transport.h"

namespace dyad {

struct UpstreamTimeouts {
  std::chrono::milliseconds connect{5000};
  // From the request sent to the first byte of the answer's head.
  std::chrono::milliseconds first_byte{60000};
  // Longest silence between two pieces of the body.
  std::chrono::milliseconds idle{60000};
  // The whole call, from Send() to the body's last byte: an upstream that
  // trickles a byte per idle timeout still ends (GATEWAY_UPSTREAM_TOTAL_TIMEOUT_MS).
  std::chrono::milliseconds total{600000};
};

struct UpstreamRequest {
  std::string method = "POST";
  std::string url;  // absolute: https://host[:port]/path[?query]
  // Sent as given, but Host, Content-Length, Expect and hop-by-hop headers
  // (Connection, Transfer-Encoding, ...): those are the client's, the caller's dropped.
  HttpHeaders headers;
  std::string_view body;  // must outlive Send()
  UpstreamTimeouts timeouts;
  // A socket whose hang-up (its peer closed, or the connection failed;
  // poll()'s POLLRDHUP) stops the call while it waits for the answer's final
  // head (through interim 1xx heads): kCancelled. The /v1 client's, so that a
  // client that has gone no longer keeps an upstream working for it. Not
  // after that head: the sink's writes find a client gone mid-answer, and
  // one that closes at an event stream's [DONE] must not cost the kept
  // connection. Never read or written. -1: none.
  int hang_up_fd = -1;
};

struct UpstreamHead {
  int status = 0;
  HttpHeaders headers;  // names lower-cased; hop-by-hop headers removed
};

// What kind of failure ended a call, for whoever must not learn the
// upstream's address: a Send error's message names the call's URL and keeps
// the library's words, which name the host, the port and the IP (for the
// gateway's log and its admins); a /v1 client is told this instead.
enum class UpstreamFailure {
  kNone,            // not told (a client gone, a sink that stopped, a fake)
  kResolve,         // the host name did not resolve
  kConnect,         // no connection (refused, unreachable)
  kRefusedAddress,  // a link-local or cloud metadata address, refused here
  kTls,             // the TLS handshake or the certificate check failed
  kConnectionLost,  // the connection was reset or closed
  kBadAnswer,       // the answer was not HTTP (no head, a head too large, malformed)
  kInvalidRequest,  // the request cannot be sent as HTTP (a header or the query)
  kConnectTimeout,
  kFirstByteTimeout,
  kIdleTimeout,
  kTotalTimeout,
  kOther,
};

// The kind in words that name no host, port, address or URL; a timeout
// with its limit in `timeouts` ("the first-byte timeout (400 ms) passed").
std::string DescribeUpstreamFailure(UpstreamFailure kind, const UpstreamTimeouts& timeouts);

// Called on the caller's thread, in order: OnHead once, then OnBody for each
// piece (never empty), with OnFlush after those of one read from the
// upstream, before the call waits for more. Returning false cancels the call.
class UpstreamSink {
 public:
  virtual ~UpstreamSink() = default;
  virtual bool OnHead(const UpstreamHead& head) = 0;
  virtual bool OnBody(std::string_view piece) = 0;
  // A sink that holds what it was given passes it on now; `last`: the
  // answer is complete (no OnBody follows; false then cancels nothing). An
  // answer that fails gets no OnFlush(true): the call's error says so, and
  // what the sink holds is its to pass on or drop.
  virtual bool OnFlush(bool /*last*/) { return true; }
  // Before Send returns an error of kUnavailable, kDeadlineExceeded or
  // kInvalidArgument (not always for kInternal): what kind it was.
  virtual void OnFailure(UpstreamFailure /*kind*/) {}
};

struct UpstreamClientOptions {
  std::string ca_file;  // GATEWAY_UPSTREAM_CA_FILE; empty: the system's CAs
  size_t max_idle_per_host = 64;
  // A kept connection idle longer is closed, not used (curl's
  // CURLOPT_MAXAGE_CONN default): an old one is likelier half-closed.
  std::chrono::milliseconds max_idle_age{118000};
  // GATEWAY_UPSTREAM_PROXY: http://, https://, socks5:// or socks5h://
  // host[:port] (user information allowed, never shown); empty: no proxy.
  std::string proxy = {};
  // Resolves a URL's host for the check above when `proxy` is set; null:
  // the system's. Must outlive the client.
  HostResolver* resolver = nullptr;
  // What the client measures time since on: a kept connection's idle age,
  // and how soon after a request went out its connection closed (resent
  // within a short window). Null: the system's. The I/O timeouts above stay
  // on steady_clock, which poll() waits on. Must outlive the client.
  const Clock* clock = nullptr;
};

class UpstreamClient {
 public:
  virtual ~UpstreamClient() = default;
  virtual Status Send(const UpstreamRequest& request, UpstreamSink& sink) = 0;
};

// kInvalidArgument naming GATEWAY_UPSTREAM_CA_FILE or GATEWAY_UPSTREAM_PROXY
// (never the proxy's value, which may hold a password).
Result<std::unique_ptr<UpstreamClient>> NewUpstreamClient(const UpstreamClientOptions& options);

// Whether connecting to `address` (numeric IPv4 or IPv6) is refused: link-local
// and metadata addresses.
bool IsForbiddenUpstreamAddress(std::string_view address);

}  // namespace dyad
