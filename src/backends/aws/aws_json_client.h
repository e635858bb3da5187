// AwsJsonClient: calls of one AWS service over the JSON 1.1 protocol
// (POST / with X-Amz-Target "<prefix>.<Action>"), signed with SigV4.
//
// Every call is retried by the shared RetryPolicy while it fails with
// kUnavailable (transport failure, timeout, 5xx, throttling). A clock-skew
// rejection corrects the signing clock by the response's Date header and is
// retried once. Errors keep AWS's own type and message and map to codes
// (AwsErrorFromReply). Thread-safe; one keep-alive transport per endpoint.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "backends/aws/aws_credentials.h"
#include "backends/aws/sigv4.h"
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
  Clock::Duration skew() const { return Clock::Duration(skew_ns_.load()); }

 private:
  AwsJsonClient(AwsServiceOptions options, std::string host, AwsCredentialSource& credentials,
                std::unique_ptr<HttpTransport> http, const Clock& clock, Random& random);
  Result<std::string> Attempt(const std::string& action, const std::string& request_json, bool skew_retry_left);

  AwsServiceOptions options_;
  std::string host_;
  AwsCredentialSource& credentials_;
  std::unique_ptr<HttpTransport> http_;
  const Clock& clock_;
  Random& random_;
  SigV4Signer signer_;
  std::atomic<int64_t> skew_ns_{0};
};

// What an AWS answer that is not 2xx means: the error code, and a message
// "<Action>: <ErrorType>: <AWS's message>". `clock_skew` is set when the
// request was refused for its signing time.
Error AwsErrorFromReply(const std::string& action, const HttpReply& reply, bool* clock_skew = nullptr);

}  // namespace dyad
