// TokenAuthenticator: bearer tokens to identities with a role.
//
// Tokens come from GATEWAY_ADMIN_API_KEY (identity "admin", role admin) and a
// tokens file of named identities holding only SHA-256 hashes of tokens:
//   {"tokens":[{"name":"ci","role":"viewer","sha256":"<64 hex>"}]}
// A presented token is hashed and compared with every entry in constant time.
// Immutable after construction; thread-safe.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

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


 private:
  struct Entry {
    std::string sha256;  // raw 32 bytes
    Principal principal;
  };
  std::vector<Entry> entries_;
};

}  // namespace dyad
