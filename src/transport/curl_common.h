// What the two libcurl clients (curl_transport: the backends' calls;
// upstream_client: the /v1 path's) share: libcurl's one-time global set-up,
// whether the environment names a proxy, a CURLU that frees itself, and the
// header-injection check. Thread-safe (no state but curl's global init,
// done once).
#pragma once

#include <curl/curl.h>

#include <string>
#include <string_view>

namespace dyad {

// curl_global_init, once per process, before the first easy handle.
void EnsureCurlGlobalInit();

// Whether curl would send requests through a proxy named in the process
// environment (it reads http_proxy, but not HTTP_PROXY, for http URLs).
bool ProxyInEnvironment();

// A CR or LF in a header would end its line and start another; a NUL would
// cut it short. One pass without branches per byte.
bool HasBreakOrNul(std::string_view s);

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
