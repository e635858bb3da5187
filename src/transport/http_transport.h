// HttpTransport: one outbound HTTP exchange (the backends' only way out).
//
// Send() performs a single request and returns the status, headers and body
// of whatever the server answered, including 4xx and 5xx: deciding what an
// answer means is the caller's job. Transport failures (refused connection,
// DNS, TLS verification, timeout) are kUnavailable with the library's own
// message. Implementations are thread-safe and keep connections alive.
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "core/result.h"

namespace dyad {

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

struct HttpCall {
  std::string method = "GET";
  std::string url;
  HttpHeaders headers;
  std::string body;
  // 0: the transport's default.
  std::chrono::milliseconds timeout{0};
};

struct HttpReply {
  int status = 0;
  HttpHeaders headers;  // names lower-cased
  std::string body;

  // The first header of that (lower-case) name, or "".
  std::string Header(std::string_view name) const;
};

class HttpTransport {
 public:
  virtual ~HttpTransport() = default;
  virtual Result<HttpReply> Send(const HttpCall& call) = 0;
};

}  // namespace dyad
