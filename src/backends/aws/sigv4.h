// AWS Signature Version 4 (header signing) for the AWS backend.
//
// Builds the canonical request (method, URI-encoded path with optional dot
// segment and slash normalisation, sorted encoded query, lower-cased trimmed
// sorted headers with duplicates joined, signed-header list, payload hash),
// the string to sign and the signature, and the Authorization header. The
// derived signing key is cached per access key, day, region and service.
// Thread-safe. Secrets never appear in errors or in the returned parts
// except the signature itself.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/mutex.h"
#include "core/result.h"
#include "core/secret_bytes.h"

namespace dyad {

struct AwsCredentials {
  std::string access_key_id;
  SecretBytes secret_access_key;
  std::string session_token;  // empty unless temporary credentials
};

struct SigningRequest {
  std::string method;
  std::string path;   // as sent, before encoding
  std::string query;  // after '?', raw or percent-encoded
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

struct SigningParams {
  std::string region;
  std::string service;
  std::chrono::system_clock::time_point time;
  bool normalize_path = true;
  bool sign_body = false;  // adds x-amz-content-sha256
};

struct SignedRequest {
  std::string canonical_request;
  std::string string_to_sign;
  std::string signature;  // hex
  // Headers the caller must send: x-amz-date, x-amz-security-token and
  // x-amz-content-sha256 as applicable, and Authorization.
  std::vector<std::pair<std::string, std::string>> headers;
};

class SigV4Signer {
 public:
  Result<SignedRequest> Sign(const SigningRequest& request, const AwsCredentials& credentials,
                             const SigningParams& params);

 private:
  SecretBytes SigningKey(const AwsCredentials& credentials, const std::string& date, const SigningParams& params)
      DYAD_LOCKS_EXCLUDED(mu_);

  Mutex mu_;
  std::map<std::string, SecretBytes> keys_ DYAD_GUARDED_BY(mu_);  // access key id ‖ scope → key
};

// Pieces exposed for tests and fuzzing.
std::string SigV4CanonicalUri(std::string_view path, bool normalize);
std::string SigV4CanonicalQuery(std::string_view query);

}  // namespace dyad
