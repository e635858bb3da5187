// TokenAuthenticator: bearer tokens to identities with a role.
//
// Tokens come from GATEWAY_ADMIN_API_KEY (identity "admin", role admin) and a
// tokens file of named identities holding only SHA-256 hashes of tokens:
//   {"tokens":[{"name":"ci","role":"viewer","sha256":"<64 hex>"}]}
// A presented token is hashed and compared with every entry in constant time.
// An entry may instead (or also) name a TLS client certificate's subject, as
// RFC 2253 prints it (server/tls_context.h):
//   {"name":"ci","role":"viewer","clientCertSubject":"CN=ci-runner,O=Example"}
// A request without an Authorization header whose connection presented a
// verified certificate with exactly that subject (byte for byte: no prefix,
// substring or case folding) is that identity. A bearer token, when present,
// decides alone: an invalid one is refused whatever the certificate.
// Immutable after construction; thread-safe.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/result.h"
#include "core/secret_bytes.h"

namespace dyad {

enum class Role { kViewer, kAdmin };

struct Principal {
  std::string identity;
  Role role = Role::kViewer;
};

class TokenAuthenticator {
 public:
  // Errors name the tokens file and the entry at fault. With
  // `require_login` (a server), no token at all (an empty tokens file and no
  // admin key) is an error: nobody could log in. A CLI command needs none.
  static Result<std::unique_ptr<TokenAuthenticator>> Create(const std::optional<SecretBytes>& admin_api_key,
                                                            const std::string& tokens_file, bool require_login = true);
  static Result<std::unique_ptr<TokenAuthenticator>> FromTokensJson(const std::optional<SecretBytes>& admin_api_key,
                                                                    std::string_view tokens_json,
                                                                    bool require_login = true);

  // The principal for an "Authorization" header value, if it holds a known
  // "Bearer <token>".
  std::optional<Principal> Authenticate(std::string_view authorization) const;
  // The same, or when `authorization` is empty, the identity whose
  // clientCertSubject is `client_cert_subject` ("" when the connection
  // presented no verified certificate).
  std::optional<Principal> Authenticate(std::string_view authorization, std::string_view client_cert_subject) const;
  // Whether some entry names a client certificate subject.
  bool HasClientCertSubjects() const { return !subjects_.empty(); }
  // Whether some bearer token (GATEWAY_ADMIN_API_KEY or a sha256 entry) is known.
  bool HasTokens() const { return !entries_.empty(); }


 private:
  static Result<std::string> CheckSubject(const nlohmann::json& subject, const std::string& where,
                                          const TokenAuthenticator& so_far);
  struct Entry {
    std::string sha256;  // raw 32 bytes
    Principal principal;
  };
  struct SubjectEntry {
    std::string subject;
    Principal principal;
  };
  std::vector<Entry> entries_;
  std::vector<SubjectEntry> subjects_;
};

}  // namespace dyad
