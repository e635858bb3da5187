// Principal: who made a request, as TokenAuthenticator (server/auth.h) found
// it, with the role that decides what it may call.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dyad {

enum class Role { kViewer, kAdmin, kClient };

// A client token's allow-lists; nullopt: no limit (defined in auth.cc).
struct ClientScope {
  std::optional<std::vector<std::string>> providers;  // provider slugs
  std::optional<std::vector<std::string>> models;
  bool AllowsProvider(std::string_view slug) const;
};

struct Principal {
  std::string identity;
  Role role = Role::kViewer;
  // Role kClient only: the entry's allow-lists (owned by the authenticator,
  // which outlives every request); null: no limit.
  const ClientScope* scope = nullptr;
};

}  // namespace dyad
