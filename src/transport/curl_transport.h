// The libcurl HttpTransport: a pool of easy handles, each keeping its
// connection alive, so consecutive requests to one endpoint reuse a TCP (and
// TLS) connection. TLS peer and host verification are always on; `ca_file`
// and `ca_path` replace the system trust store (AWS_CA_BUNDLE, VAULT_CACERT,
// VAULT_CAPATH); `client_cert`/`client_key` present a client certificate.
//
// `tls_server_name` (VAULT_TLS_SERVER_NAME) is the name sent as SNI and
// verified in the server's certificate instead of the URL's host: the
// request goes to the URL with its host replaced by that name, and
// CURLOPT_CONNECT_TO ("name:port:realhost:port") connects it to the URL's
// real host and port, so no DNS lookup of the name is made. The Host header
// the caller sets is kept.
//
// `follow_redirects` follows 307 and 308 only (a Vault standby's answer
// naming the active node), at most 3 hops, with the same method, body and
// headers (but Host, which curl then derives from the new URL); an https
// request is redirected only to https, an http one to http or https. A
// redirect goes only to the caller's URL's host (any port) or to a host and
// port in `redirect_hosts`; a Location naming another host, or carrying userinfo
// (user@host), is refused (kFailedPrecondition naming the target's host, not
// its path or query): the token headers and the body are not re-sent to a
// host no one named. Other 3xx answers are returned as they are. Each hop gets what is left of the
// request's timeout. Thread-safe: a request leases a handle for its duration. A handle keeps the
// storage of its request headers from request to request, wiped after each one (they carry tokens
// and signatures).
//
// How a request goes out. By default curl only connects: the handle is
// CONNECT_ONLY, so curl does DNS, connect and TLS with every option above
// (verification, CA, client certificate, SNI, CONNECT_TO, HTTP/1.1 in ALPN),
// and this transport writes the HTTP/1.1 request itself into a reused buffer
// (curl_easy_send) and parses the answer with AnswerReader (Beast's parser;
// curl_easy_recv), waiting with poll() on the connection's socket within the
// request's timeout: the exchange the /v1 client makes too (curl_common.h:
// RunOwnExchange). An answer that begins while the request is going out is
// read as it comes; the sending stops at a final status of 300 or more (an
// endpoint refusing the body), and that connection is not kept. The
// connection stays open for the next request unless the answer says
// "Connection: close", is HTTP/1.0 without keep-alive, is read to the end of
// the stream, is followed by more bytes, or fails. Before a kept connection is used,
// anything arrived on it (a close, a reset, stray bytes) retires it and a
// new one is made; if a kept connection closes after the request went out
// and before any byte of the answer, the request is sent once more on a new
// connection only when its method is idempotent (GET, HEAD, PUT, DELETE,
// OPTIONS): a POST is never sent twice (kUnavailable instead; the caller's
// retry policy decides). Chunked answers (trailers dropped), answers without
// a length (read to close) and 1xx answers before the final one (skipped)
// are handled; header names are lower-cased.
//
// curl_easy_perform does the whole exchange instead when a proxy is named in
// the environment (http_proxy, https_proxy/HTTPS_PROXY, all_proxy/ALL_PROXY,
// read when the transport is made: our own request line is origin-form,
// which a proxy cannot route) or when `libcurl_http` is set. A URL with user
// information is refused by our own exchange (kInvalidArgument).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "transport/http_transport.h"

namespace dyad {

struct CurlOptions {
  std::string ca_file;  // PEM bundle of CAs; empty (and no ca_path): the system store
  std::string ca_path;  // directory of hashed PEM CAs (c_rehash)
  std::string client_cert;  // PEM file of a client certificate (with client_key)
  std::string client_key;   // PEM file of its private key
  std::string tls_server_name;  // SNI and verified name; empty: the URL's host
  bool follow_redirects = false;  // 307/308, as above
  // More places a redirect may go to: "host:port" ("[v6]:port"), the host
  // without a trailing dot, the port a plain number; matched without regard
  // to case against the target's host and port (the scheme's default when
  // its URL names none). An entry without a port matches nothing.
  std::vector<std::string> redirect_hosts;
  std::chrono::milliseconds connect_timeout{2000};
  std::chrono::milliseconds request_timeout{10000};
  size_t max_response_bytes = 4 << 20;
  // Every exchange through curl_easy_perform (see above); false: our own
  // exchange unless a proxy is named in the environment.
  bool libcurl_http = false;
};

std::unique_ptr<HttpTransport> NewCurlTransport(CurlOptions options = {});

// Whether a redirect from `from` may go to `to` under the rules above: ""
// when it may, else why not (naming the target's host and port only: its
// path and query may carry anything). Exposed for tests.
std::string RedirectRefusal(const std::string& from, const std::string& to,
                            const std::vector<std::string>& redirect_hosts);

}  // namespace dyad
