// AwsCredentialSource: the credentials AWS requests are signed with, found by
// the standard chain, in this order:
//   1. environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN
//   2. shared files: profile AWS_PROFILE (default "default") in
//      AWS_SHARED_CREDENTIALS_FILE (~/.aws/credentials), then AWS_CONFIG_FILE
//      (~/.aws/config, sections "[profile NAME]")
//   3. web identity: AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN through STS
//      AssumeRoleWithWebIdentity
//   4. ECS container: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI,
//      with AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE)
//   5. EC2 instance metadata, IMDSv2 (session token required), unless
//      AWS_EC2_METADATA_DISABLED=true; AWS_EC2_METADATA_SERVICE_ENDPOINT.
// The first source that is configured is used from then on. Temporary
// credentials are refreshed from it five minutes before they expire, by one
// caller while the others keep using them; if the refresh fails, the old ones
// are used until they do expire, and it is tried again 30 s later at the
// earliest (cloud/refreshing_credential.h).
//
// Thread-safe (one fetch at a time). Errors: kFailedPrecondition when no
// source is configured (naming what was looked for), kUnavailable when a
// configured source cannot be reached, kPermissionDenied when it refuses,
// kInvalidArgument for a malformed file or answer. No error carries a secret.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "backends/aws/sigv4.h"
#include "core/clock.h"
#include "core/environment.h"
#include "core/result.h"
#include "transport/http_transport.h"

namespace dyad {

class AwsCredentialSource {
 public:
  virtual ~AwsCredentialSource() = default;
  virtual Result<AwsCredentials> Get() = 0;
  // Where the credentials in use came from ("environment", "profile default",
  // "web identity", "container", "instance metadata"), or "" before any.
  virtual std::string SourceName() = 0;
};

struct AwsChainOptions {
  EnvMap env;
  std::string region;
  std::string sts_endpoint;  // "": https://sts.REGION.amazonaws.com
  std::chrono::seconds refresh_before{300};
  // AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN (Config keeps them out of
  // `env`); when `env` has them, they are moved here.
  SecretBytes secret_access_key{};
  SecretBytes session_token{};
};

std::unique_ptr<AwsCredentialSource> NewAwsCredentialChain(AwsChainOptions options, HttpTransport& http,
                                                           const Clock& clock);

}  // namespace dyad
