// RequestAuth: the step of a cloud call that makes a request acceptable to
// its service: SigV4 signing for AWS, a bearer token for Vault or Entra.
//
// JsonClient (cloud/json_client.h) calls Authorize() on every attempt, after
// the request is complete and right before it is sent, so a signature's time
// and a token are always current. When the service's error decoder says a
// refusal was about the authorization itself (a signing time out of the
// allowed skew, an expired or revoked token), the client calls OnRejected();
// if it answers true, the step has corrected itself and the request is sent
// once more at once. Implementations are thread-safe. Authorize() errors
// carry the credential source's code (kUnavailable is retried by the client)
// and never a secret.
#pragma once

#include <string>
#include <string_view>

#include "core/result.h"
#include "transport/http_transport.h"

namespace dyad {

// One request as the auth step sees it, before it becomes an HttpCall.
struct CloudRequest {
  std::string method;   // "GET", "POST", "LIST", …
  std::string host;     // host[:port], also in `headers` as Host
  std::string path;     // "/", "/v1/secret/data/x": starts with '/', as sent
  std::string query;    // after '?', percent-encoded; "" for none
  HttpHeaders headers;  // the step adds its own (Authorization, X-Amz-Date, …)
  std::string body;
};

class RequestAuth {
 public:
  virtual ~RequestAuth() = default;
  virtual Status Authorize(CloudRequest& request) = 0;
  // `op` names the call for a log line. True: corrected, worth one retry.
  virtual bool OnRejected(std::string_view op, const HttpReply& reply) { return false; }
};

}  // namespace dyad
