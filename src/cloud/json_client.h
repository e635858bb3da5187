// JsonClient: the one retrying JSON-over-HTTPS client of the cloud backends
// (AWS today; Vault and Azure next). One client talks to one endpoint.
//
// Call() sends any method and path (POST / for AWS JSON 1.1, GET/LIST on
// Vault paths, Azure paths with ?api-version) and returns a 2xx reply. Each
// attempt is authorized by the pluggable RequestAuth; a non-2xx reply becomes
// an Error through the service's ErrorDecoder, which keeps the service's own
// message. A call is retried by the shared RetryPolicy (transport/retry.h)
// while it fails with kUnavailable (transport failure, timeout, 5xx,
// throttling), after a full-jitter backoff that a Retry-After header (seconds
// or HTTP-date) raises to at least its value, capped by the policy's cap. A
// refusal the decoder marks as `auth_rejected` is sent once more at once when
// the auth step says it corrected itself (RequestAuth::OnRejected). Calls,
// retries and throttles are reported per endpoint and operation to an
// optional CloudCallObserver.
//
// Thread-safe (the auth step, transport and observer must be too). Request
// bodies are wiped after sending: they may carry a credential. Errors are
// prefixed with the operation's name and never carry the request's body.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "cloud/call_observer.h"
#include "cloud/request_auth.h"
#include "core/clock.h"
#include "core/random.h"
#include "core/result.h"
#include "transport/http_transport.h"
#include "transport/retry.h"

namespace dyad {

// What a reply that is not 2xx means.
struct ReplyError {
  Error error;  // the canonical code; kUnavailable is retried
  bool throttled = false;      // over the caller's rate: counted as a throttle
  bool auth_rejected = false;  // refused for its authorization: the auth step may correct it
};
using ErrorDecoder = std::function<ReplyError(std::string_view op, const HttpReply& reply)>;

// The decoder of a service without its own: by HTTP status alone (429 and
// 5xx kUnavailable, 401 kUnauthenticated, 403 kPermissionDenied, 404
// kNotFound, 409 kConflict, 412 kFailedPrecondition, other 4xx
// kInvalidArgument; 501 kUnimplemented), with a bounded one-line snippet of
// the body as the message.
ReplyError DecodeHttpStatus(std::string_view op, const HttpReply& reply);

struct JsonClientOptions {
  std::string endpoint;         // http(s)://host[:port]
  RetryPolicy retry;
  ErrorDecoder decode_error;    // empty: DecodeHttpStatus
  CloudCallObserver* observer = nullptr;  // optional; must outlive the client
};

// The options of a service's client (Vault, Key Vault): `endpoint` with any
// trailing '/' removed.
JsonClientOptions ServiceClientOptions(std::string endpoint, RetryPolicy retry, ErrorDecoder decode_error,
                                       CloudCallObserver* observer);

struct JsonRequest {
  std::string op;  // the operation's name: error prefix and metrics label
  std::string method = "POST";
  std::string path = "/";  // starts with '/'
  std::string query;       // after '?', percent-encoded; "" for none
  // Besides Host, and "Content-Type: application/json" when there is a
  // body and no Content-Type here.
  HttpHeaders headers;
  std::string body;
};

// A 2xx reply's body as a JSON object ({} for an empty body), the body
// wiped once read; kUnavailable "<op>: the answer (HTTP <status>) is not a
// JSON object" otherwise.
Result<nlohmann::json> JsonObjectAnswer(const std::string& op, HttpReply& reply);

class JsonClient {
 public:
  // Fails with kInvalidArgument on an endpoint that is not http(s)://host[:port].
  // `auth` may be null (a service or an endpoint that takes no authorization).
  static Result<std::unique_ptr<JsonClient>> Create(JsonClientOptions options, std::unique_ptr<RequestAuth> auth,
                                                    std::unique_ptr<HttpTransport> http, const Clock& clock,
                                                    Random& random);

  // The 2xx reply, or the error of the last attempt ("… (after N attempts)"
  // when retries ran out).
  Result<HttpReply> Call(const JsonRequest& request);

  const std::string& url() const { return url_; }    // scheme://host[:port]
  const std::string& host() const { return host_; }  // host[:port]: the metrics' endpoint label

 private:
  JsonClient(JsonClientOptions options, std::string url, std::string host, std::unique_ptr<RequestAuth> auth,
             std::unique_ptr<HttpTransport> http, const Clock& clock, Random& random);
  // One authorized exchange: whatever the server answered, or the auth
  // step's or the transport's error.
  Result<HttpReply> Send(const JsonRequest& request);
  // The wait a reply's Retry-After asks for; zero when it has none.
  Clock::Duration RetryAfter(const HttpReply& reply) const;
  Result<HttpReply> Report(const JsonRequest& request, Result<HttpReply> result);

  const JsonClientOptions options_;
  const std::string url_;
  const std::string host_;
  const std::unique_ptr<RequestAuth> auth_;
  const std::unique_ptr<HttpTransport> http_;
  const Clock& clock_;
  Random& random_;
};

}  // namespace dyad
