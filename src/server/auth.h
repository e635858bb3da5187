// TokenAuthenticator: bearer tokens to identities with a role.
//
// Tokens come from GATEWAY_ADMIN_API_KEY (identity "admin", role admin) and a
// tokens file of named identities holding only SHA-256 hashes of tokens:
//   {"tokens":[{"name":"ci","role":"viewer","sha256":"<64 hex>"}]}
// A presented token is hashed and compared with every entry in constant time.
//
// Role "client" is the /v1 path's caller (DESIGN.md §12): such an entry may
// call /v1/* and nothing under /admin, and an admin or viewer token may not
// call /v1 unless the same token is also listed as a client. Client entries
// may sit in the tokens file or in GATEWAY_CLIENT_API_KEYS_FILE (same format,
// client entries only: any other role there is an error naming the file and
// the entry), and may narrow what they reach:
//   {"name":"app","role":"client","sha256":"<64 hex>",
//    "providers":["openai"],"models":["gpt-4o-mini"]}
// (provider slugs; model names as the client sends them or without the
// provider prefix; absent: all). The two realms are looked up apart:
// Authenticate() finds admin and viewer identities only, AuthenticateClient()
// client identities only.
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
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/result.h"
#include "core/secret_bytes.h"
#include "server/principal.h"

namespace dyad {

class TokenAuthenticator {
 public:
  // Errors name the tokens file and the entry at fault. With
  // `require_login` (a server), no token at all (an empty tokens file and no
  // admin key) is an error: nobody could log in. A CLI command needs none.
  // `client_tokens_file`: GATEWAY_CLIENT_API_KEYS_FILE ("" for none).
  static Result<std::unique_ptr<TokenAuthenticator>> Create(const std::optional<SecretBytes>& admin_api_key,
                                                            const std::string& tokens_file, bool require_login = true,
                                                            const std::string& client_tokens_file = "");
  static Result<std::unique_ptr<TokenAuthenticator>> FromTokensJson(const std::optional<SecretBytes>& admin_api_key,
                                                                    std::string_view tokens_json,
                                                                    bool require_login = true,
                                                                    std::string_view client_tokens_json = "");

  // The principal for an "Authorization" header value, if it holds a known
  // "Bearer <token>".
  std::optional<Principal> Authenticate(std::string_view authorization) const;
  // The same, or when `authorization` is empty, the identity whose
  // clientCertSubject is `client_cert_subject` ("" when the connection
  // presented no verified certificate).
  std::optional<Principal> Authenticate(std::string_view authorization, std::string_view client_cert_subject) const;
  // The client identity (role kClient) for an Authorization header value
  // or, without one, for a verified certificate's subject.
  std::optional<Principal> AuthenticateClient(std::string_view authorization,
                                              std::string_view client_cert_subject = "") const;
  // Whether some entry names a client certificate subject.
  bool HasClientCertSubjects() const { return !subjects_.empty(); }
  // Whether some admin or viewer bearer token (GATEWAY_ADMIN_API_KEY or a sha256 entry) is known.
  bool HasTokens() const;


 private:
  static Result<std::string> CheckSubject(const nlohmann::json& subject, const std::string& where,
                                          const TokenAuthenticator& so_far, std::string_view variable);
  // Adds the entries of one tokens file; `clients_only` for
  // GATEWAY_CLIENT_API_KEYS_FILE. `variable` names the file in errors.
  Status AddEntries(std::string_view tokens_json, std::string_view variable, bool clients_only);
  std::optional<Principal> Find(std::string_view authorization, std::string_view client_cert_subject,
                                bool clients) const;
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
  std::vector<std::unique_ptr<ClientScope>> scopes_;  // stable addresses for Principal::scope
};

}  // namespace dyad
