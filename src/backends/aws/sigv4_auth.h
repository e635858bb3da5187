// SigV4Auth: the RequestAuth of AWS services (cloud/request_auth.h). Signs
// every attempt with Signature Version 4 under the credentials the
// AwsCredentialSource gives at that moment, at the local wall time corrected
// by the skew learned from the service.
//
// A refusal for the signing time (the ErrorDecoder marks it auth_rejected)
// sets the skew from the reply's Date header and asks for one retry; without
// a readable Date it asks for none. Thread-safe. Errors: the credential
// source's; a signing failure. Neither carries a secret.
#pragma once

#include <atomic>
#include <string>

#include "backends/aws/aws_credentials.h"
#include "backends/aws/sigv4.h"
#include "cloud/request_auth.h"
#include "core/clock.h"

namespace dyad {

class SigV4Auth final : public RequestAuth {
 public:
  // `credentials` and `clock` must outlive the step.
  SigV4Auth(AwsCredentialSource& credentials, std::string region, std::string service, const Clock& clock);

  Status Authorize(CloudRequest& request) override;
  bool OnRejected(std::string_view op, const HttpReply& reply) override;

  // The signing clock's correction (server time − local time).
  Clock::Duration skew() const { return Clock::Duration(skew_ns_.load(std::memory_order_relaxed)); }

 private:
  AwsCredentialSource& credentials_;
  const std::string region_;
  const std::string service_;
  const Clock& clock_;
  SigV4Signer signer_;
  std::atomic<int64_t> skew_ns_{0};
};

}  // namespace dyad
