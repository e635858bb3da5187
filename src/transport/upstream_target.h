// UpstreamTarget: where an upstream URL goes, parsed once. The pool an
// UpstreamClient call takes its connection from (the origin), how its
// errors name the call (scheme, host, port and path: never the query or
// user information), and the host the proxy check resolves.
//
// UpstreamTargetCache keeps the targets of the URLs called lately, so a
// call to a URL seen before parses nothing (the /v1 path calls a handful of
// URLs, one per provider and endpoint, thousands of times a second). Keyed
// by the URL without its query (the client's, which changes nothing parsed):
// a provider whose baseUrl changes calls another URL, and two URLs on one
// origin share the pool but not the entry. Only URLs that
// parse are kept; at most `capacity` of them (when full, the cache starts
// over: a client calling ever new URLs costs a parse per call, never
// memory). Thread-safe.
//
// Errors (kInvalidArgument, never quoting the URL): not a URL, not http or
// https, no host, user information.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/mutex.h"
#include "core/result.h"

namespace dyad {

struct UpstreamTarget {
  std::string origin;  // scheme://host:port, lower case, the port always given
  std::string shown;   // origin + path
  std::string host;    // without an IPv6 literal's brackets
  // For a request written by hand: the path of the request line ("/" for
  // none; the query is the call's URL's, not kept here) and the Host
  // header's value (the host as written, the port when not the scheme's).
  std::string path;
  std::string host_header;
};

Result<UpstreamTarget> ParseUpstreamTarget(const std::string& url);

// Plain HTTP to an IP literal (no zone): a call needs no name resolved and
// no TLS handshake (the calls server/evented_upstream.h makes).
bool IsPlainNumericTarget(const UpstreamTarget& target);

class UpstreamTargetCache {
 public:
  explicit UpstreamTargetCache(size_t capacity = 256) : capacity_(capacity) {}
  UpstreamTargetCache(const UpstreamTargetCache&) = delete;
  UpstreamTargetCache& operator=(const UpstreamTargetCache&) = delete;

  Result<std::shared_ptr<const UpstreamTarget>> Get(const std::string& url) DYAD_LOCKS_EXCLUDED(mu_);
  size_t size() const DYAD_LOCKS_EXCLUDED(mu_);

 private:
  const size_t capacity_;
  mutable Mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<const UpstreamTarget>> by_url_ DYAD_GUARDED_BY(mu_);
};

}  // namespace dyad
