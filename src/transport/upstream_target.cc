#include "transport/upstream_target.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <curl/curl.h>

#include "core/encoding.h"
#include "transport/curl_common.h"

namespace dyad {

Result<UpstreamTarget> ParseUpstreamTarget(const std::string& url) {
  UrlHandle u;
  if (!u.u || curl_url_set(u.u, CURLUPART_URL, url.c_str(), 0) != CURLUE_OK) {
    return MakeError(ErrorCode::kInvalidArgument, "the upstream URL is not a URL");
  }
  const std::string scheme = AsciiLower(u.Get(CURLUPART_SCHEME));
  std::string host = u.Get(CURLUPART_HOST);
  if ((scheme != "http" && scheme != "https") || host.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "the upstream URL is not an http or https URL with a host");
  }
  if (!u.Get(CURLUPART_USER).empty() || !u.Get(CURLUPART_PASSWORD).empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "an upstream URL with user information is not called");
  }
  const std::string port = u.Get(CURLUPART_PORT, CURLU_DEFAULT_PORT);
  std::string origin = scheme + "://" + AsciiLower(host) + ":" + port;
  std::string host_header = port == (scheme == "https" ? "443" : "80") ? host : host + ":" + port;
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  std::string path = u.Get(CURLUPART_PATH);
  if (path.empty()) path = "/";
  std::string shown = origin + path;
  return UpstreamTarget{std::move(origin), std::move(shown), std::move(host), std::move(path), std::move(host_header)};
}

bool IsPlainNumericTarget(const UpstreamTarget& target) {
  if (!target.origin.starts_with("http://")) return false;
  unsigned char address[sizeof(in6_addr)];
  return inet_pton(AF_INET, target.host.c_str(), address) == 1 || inet_pton(AF_INET6, target.host.c_str(), address) == 1;
}

Result<std::shared_ptr<const UpstreamTarget>> UpstreamTargetCache::Get(const std::string& url) {
  // Nothing parsed depends on the query (the client's, passed on): it is not
  // in the key, so a client's ever-new queries neither churn nor fill the cache.
  const std::string key = url.substr(0, url.find('?'));
  {
    MutexLock lock(&mu_);
    if (auto it = by_url_.find(key); it != by_url_.end()) return it->second;
  }
  // Parsed outside the lock: two callers may both parse a new URL (the same
  // answer), none waits for another's parse.
  DYAD_ASSIGN_OR_RETURN(UpstreamTarget parsed, ParseUpstreamTarget(key));
  auto target = std::make_shared<const UpstreamTarget>(std::move(parsed));
  MutexLock lock(&mu_);
  if (by_url_.size() >= capacity_) by_url_.clear();
  by_url_.emplace(key, target);
  return target;
}

size_t UpstreamTargetCache::size() const {
  MutexLock lock(&mu_);
  return by_url_.size();
}

}  // namespace dyad
