// AWS Signature Version 4 (header signing) for the AWS backend.
//
// Builds the canonical request (method, URI-encoded path with optional dot
// segment and slash normalisation, sorted encoded query, lower-cased trimmed
// sorted headers with duplicates joined, signed-header list, payload hash),
// the string to sign and the signature, and the Authorization header. The
// derived signing key is cached per access key (its id and a SHA-256 of its
// secret, not the secret itself), day, region and service, as
// the HMAC states of its padded key blocks, so a signature hashes only the
// string to sign (a small list, most recent first; a new day's key pushes
// the oldest out).
// Thread-safe. Secrets never appear in errors or in the returned parts
// except the signature itself.
#pragma once

#include <atomic>
#include <chrono>
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
  // Holds every signed header's value, x-amz-security-token's included: a
  // caller that keeps it for no test wipes it (Cleanse) once signed.
  std::string canonical_request;
  std::string string_to_sign;
  std::string signature;  // hex
  // Headers the caller must send: x-amz-date, x-amz-security-token and
  // x-amz-content-sha256 as applicable, and Authorization.
  std::vector<std::pair<std::string, std::string>> headers;
};

// A request as the signer reads it, without copies (SigningRequest's fields,
// or a cloud request's).
struct SigningView {
  std::string_view method;
  std::string_view path;
  std::string_view query;
  const std::vector<std::pair<std::string, std::string>>& headers;
  std::string_view body;
};

class SigV4Signer {
 public:
  static constexpr size_t kMaxCachedKeys = 8;

  Result<SignedRequest> Sign(const SigningRequest& request, const AwsCredentials& credentials,
                             const SigningParams& params);
  Result<SignedRequest> SignView(const SigningView& request, const AwsCredentials& credentials,
                                 const SigningParams& params);

  // How many signing keys were derived (not found in the cache); for tests.
  size_t derived_keys() const { return derived_.load(std::memory_order_relaxed); }

 private:
  struct CachedKey {
    std::string access_key_id, date, region, service;
    SecretBytes secret_digest;  // SHA-256 of the secret access key: a new secret under the same id derives anew
    SecretBytes hmac_state;  // the HMAC-SHA256 states after the inner and outer padded key blocks
  };
  // The HMAC states of the signing key, copied to `state` (hmac_state's size).
  void SigningKey(const AwsCredentials& credentials, std::string_view date, const SigningParams& params,
                  unsigned char* state) DYAD_LOCKS_EXCLUDED(mu_);

  Mutex mu_;
  std::vector<CachedKey> keys_ DYAD_GUARDED_BY(mu_);  // most recently derived first
  std::atomic<size_t> derived_{0};
};

// Pieces exposed for tests and fuzzing.
std::string SigV4CanonicalUri(std::string_view path, bool normalize);
std::string SigV4CanonicalQuery(std::string_view query);

}  // namespace dyad
