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

// A subject as RFC 2253 prints it: non-empty, printable, "type=value"; one
// identity per subject, or which one a certificate names would depend on the
// order of the file.
Result<std::string> TokenAuthenticator::CheckSubject(const nlohmann::json& subject, const std::string& where,
                                                     const TokenAuthenticator& so_far) {
  auto bad = [&](const std::string& what) {
    return MakeError(ErrorCode::kInvalidArgument, "GATEWAY_ADMIN_TOKENS_FILE: " + where + ".clientCertSubject " + what +
                                                      "; expected the subject as `openssl x509 -noout -subject "
                                                      "-nameopt RFC2253` prints it, e.g. \"CN=ci-runner,O=Example\"");
  };
  if (!subject.is_string()) return bad("must be a string");
  std::string s = subject.get<std::string>();
  if (s.empty() || s.size() > 4096 || s.find('=') == std::string::npos) return bad("must be a non-empty subject");
  for (unsigned char ch : s) {
    if (ch < 0x20 || ch == 0x7f) return bad("holds a control character");
  }
  for (const auto& e : so_far.subjects_) {
    if (e.subject == s) return bad("is also the subject of identity '" + e.principal.identity + "'");
  }
  return s;
}

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
                                                      "; expected {\"tokens\":[{\"name\":…,\"role\":\"admin\"|\"viewer\",\"sha256\":<64 hex>"
                                                      " and/or \"clientCertSubject\":<RFC 2253 subject>}]}");
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
    auto subject = t.find("clientCertSubject");
    if (hash == t.end() && subject == t.end()) return bad(where + " needs \"sha256\" or \"clientCertSubject\"");
    Principal principal{name->get<std::string>(), *role == "admin" ? Role::kAdmin : Role::kViewer};
    if (hash != t.end()) {
      if (!hash->is_string()) return bad(where + ".sha256 must be a string");
      auto raw = HexDecode(hash->get<std::string>());
      if (!raw || raw->size() != 32) return bad(where + ".sha256 must be 64 hex characters");
      auth->entries_.push_back({*raw, principal});
    }
    if (subject != t.end()) {
      DYAD_ASSIGN_OR_RETURN(std::string s, CheckSubject(*subject, where, *auth));
      auth->subjects_.push_back({std::move(s), principal});
    }
  }
  if (require_login && auth->entries_.empty() && auth->subjects_.empty()) return NobodyCouldLogIn();
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

std::optional<Principal> TokenAuthenticator::Authenticate(std::string_view authorization,
                                                          std::string_view client_cert_subject) const {
  if (!authorization.empty()) return Authenticate(authorization);
  if (client_cert_subject.empty()) return std::nullopt;
  for (const auto& e : subjects_) {
    if (e.subject == client_cert_subject) return e.principal;
  }
  return std::nullopt;
}

}  // namespace dyad
