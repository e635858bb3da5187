#include "server/auth.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/encoding.h"

namespace dyad {
namespace {

Error NobodyCouldLogIn() {
  return MakeError(ErrorCode::kInvalidArgument,
                   "GATEWAY_ADMIN_TOKENS_FILE holds no token and GATEWAY_ADMIN_API_KEY is not set: nobody could log "
                   "in; add an entry to the tokens file or set GATEWAY_ADMIN_API_KEY");
}

}  // namespace

Result<std::unique_ptr<TokenAuthenticator>> TokenAuthenticator::Create(
    const std::optional<SecretBytes>& admin_api_key, const std::string& tokens_file, bool require_login) {
  std::string text;
  if (!tokens_file.empty()) {
    std::ifstream in(tokens_file, std::ios::binary);
    if (!in) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "GATEWAY_ADMIN_TOKENS_FILE: cannot read '" + tokens_file + "'");
    }
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  return FromTokensJson(admin_api_key, text, require_login);
}

Result<std::unique_ptr<TokenAuthenticator>> TokenAuthenticator::FromTokensJson(
    const std::optional<SecretBytes>& admin_api_key, std::string_view tokens_json, bool require_login) {
  auto auth = std::unique_ptr<TokenAuthenticator>(new TokenAuthenticator());
  if (admin_api_key) auth->entries_.push_back({Sha256(admin_api_key->view()), {"admin", Role::kAdmin}});
  auto bad = [](const std::string& what) {
    return MakeError(ErrorCode::kInvalidArgument, "GATEWAY_ADMIN_TOKENS_FILE: " + what +
                                                      "; expected {\"tokens\":[{\"name\":…,\"role\":\"admin\"|\"viewer\",\"sha256\":<64 hex>}]}");
  };
  if (tokens_json.empty()) {
    if (require_login && auth->entries_.empty()) return NobodyCouldLogIn();
    return auth;
  }
  nlohmann::json doc = nlohmann::json::parse(tokens_json, nullptr, false);
  if (doc.is_discarded()) return bad("not valid JSON");
  if (!doc.is_object() || !doc.contains("tokens") || !doc["tokens"].is_array()) return bad("no \"tokens\" array");
  size_t index = 0;
  for (const auto& t : doc["tokens"]) {
    std::string where = "tokens[" + std::to_string(index++) + "]";
    if (!t.is_object()) return bad(where + " is not an object");
    auto name = t.find("name");
    auto role = t.find("role");
    auto hash = t.find("sha256");
    if (name == t.end() || !name->is_string() || name->get<std::string>().empty())
      return bad(where + ".name must be a non-empty string");
    if (role == t.end() || !role->is_string() || (*role != "admin" && *role != "viewer"))
      return bad(where + ".role must be \"admin\" or \"viewer\"");
    if (hash == t.end() || !hash->is_string()) return bad(where + ".sha256 must be a string");
    auto raw = HexDecode(hash->get<std::string>());
    if (!raw || raw->size() != 32) return bad(where + ".sha256 must be 64 hex characters");
    auth->entries_.push_back({*raw, {name->get<std::string>(), *role == "admin" ? Role::kAdmin : Role::kViewer}});
  }
  if (require_login && auth->entries_.empty()) return NobodyCouldLogIn();
  return auth;
}

std::optional<Principal> TokenAuthenticator::Authenticate(std::string_view authorization) const {
  constexpr std::string_view kBearer = "Bearer ";
  if (authorization.size() <= kBearer.size()) return std::nullopt;
  for (size_t i = 0; i < kBearer.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(authorization[i])) !=
        std::tolower(static_cast<unsigned char>(kBearer[i])))
      return std::nullopt;
  }
  std::string digest = Sha256(authorization.substr(kBearer.size()));
  const Entry* found = nullptr;
  for (const auto& e : entries_) {  // no early exit: every entry is compared
    if (ConstantTimeEquals(digest, e.sha256) && !found) found = &e;
  }
  if (!found) return std::nullopt;
  return found->principal;
}

}  // namespace dyad
