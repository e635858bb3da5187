// AwsJsonClient: calls of one AWS service over the JSON 1.1 protocol
// (POST / with X-Amz-Target "<prefix>.<Action>"): the shared cloud client
// (cloud/json_client.h) with the SigV4 auth step (sigv4_auth.h) and AWS's
// error decoder.
//
// Every call is retried by the shared RetryPolicy while it fails with
// kUnavailable (transport failure, timeout, 5xx, throttling), honouring
// Retry-After. A clock-skew rejection corrects the signing clock by the
// response's Date header and is retried once. Errors keep AWS's own type and
// message and map to codes (AwsErrorFromReply). Calls, retries and throttles
// go to the optional observer. Thread-safe; one keep-alive transport per
// endpoint.
#pragma once

#include <memory>
#include <string>

#include "backends/aws/aws_credentials.h"
#include "backends/aws/sigv4_auth.h"
#include "cloud/json_client.h"
#include "core/clock.h"
#include "core/random.h"
#include "transport/http_transport.h"
#include "transport/retry.h"

namespace dyad {

struct AwsServiceOptions {
  std::string service;        // signing name: "secretsmanager", "kms"
  std::string target_prefix;  // "secretsmanager", "TrentService"
  std::string endpoint;       // scheme://host[:port], e.g. https://kms.eu-west-1.amazonaws.com
  std::string region;
  RetryPolicy retry;
  CloudCallObserver* observer = nullptr;  // optional; must outlive the client
};

class AwsJsonClient {
 public:
  // Fails with kInvalidArgument on an endpoint that is not http(s)://host[:port].
  static Result<std::unique_ptr<AwsJsonClient>> Create(AwsServiceOptions options, AwsCredentialSource& credentials,
                                                       std::unique_ptr<HttpTransport> http, const Clock& clock,
                                                       Random& random);

  // Sends `request_json`, returns the response JSON text of a 2xx answer.
  Result<std::string> Call(const std::string& action, const std::string& request_json);

  const AwsServiceOptions& options() const { return options_; }
  // The signing clock's correction (server time − local time).
  Clock::Duration skew() const { return auth_->skew(); }

 private:
  AwsJsonClient(AwsServiceOptions options, SigV4Auth* auth, std::unique_ptr<JsonClient> client)
      : options_(std::move(options)), auth_(auth), client_(std::move(client)) {}

  const AwsServiceOptions options_;
  SigV4Auth* const auth_;  // owned by client_
  const std::unique_ptr<JsonClient> client_;
};

// What an AWS answer that is not 2xx means: the error code, and a message
// "<Action>: <ErrorType>: <AWS's message>". `clock_skew` is set when the
// request was refused for its signing time.
Error AwsErrorFromReply(const std::string& action, const HttpReply& reply, bool* clock_skew = nullptr);
// The same as JsonClient's ErrorDecoder: a throttling error is `throttled`,
// a clock-skew refusal `auth_rejected`.
ReplyError DecodeAwsReply(std::string_view action, const HttpReply& reply);
// Whether `e` is AWS refusing an action for want of a permission
// (AccessDenied, AccessDeniedException), as opposed to credentials it did
// not accept (a bad signature, an unknown or expired key), which are
// kPermissionDenied too but say nothing about the policy.
bool NotPermitted(const Error& e);

}  // namespace dyad
