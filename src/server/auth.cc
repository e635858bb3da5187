#include "server/auth.h"

#include <algorithm>
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

Result<std::string> ReadFile(const std::string& path, std::string_view variable) {
  if (path.empty()) return std::string();
  std::ifstream in(path, std::ios::binary);
  if (!in) return MakeError(ErrorCode::kInvalidArgument, std::string(variable) + ": cannot read '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool Listed(const std::optional<std::vector<std::string>>& list, std::string_view name) {
  return !list || std::find(list->begin(), list->end(), name) != list->end();
}

}  // namespace

bool ClientScope::AllowsProvider(std::string_view slug) const { return Listed(providers, slug); }

// A subject as RFC 2253 prints it: non-empty, printable, "type=value"; one
// identity per subject, or which one a certificate names would depend on the
// order of the file.
Result<std::string> TokenAuthenticator::CheckSubject(const nlohmann::json& subject, const std::string& where,
                                                     const TokenAuthenticator& so_far, std::string_view variable) {
  auto bad = [&](const std::string& what) {
    return MakeError(ErrorCode::kInvalidArgument, std::string(variable) + ": " + where + ".clientCertSubject " + what +
                                                      "; expected the subject as `openssl x509 -noout -subject "
                                                      "-nameopt RFC2253` prints it, e.g. \"CN=ci-runner,O=Example\"");
  };
  if (!subject.is_string()) return bad("must be a string");
  std::string s = subject.get<std::string>();
  if (s.empty() || s.size() > 4096 || s.find('=') == std::string::npos) return bad("must be a non-empty subject");
  for (unsigned char ch : s) {
    if (ch < 0x20 || ch == 0x7f) return bad("holds a control character");
  }
  // "CN=a, O=b" (as `openssl x509 -subject` prints by default) never
  // matches: RFC 2253 separates with a bare comma ("\," escapes one).
  for (size_t i = s.find(", "); i != std::string::npos; i = s.find(", ", i + 1)) {
    size_t slashes = 0;
    while (slashes < i && s[i - 1 - slashes] == '\\') ++slashes;
    if (slashes % 2 == 0) return bad("has a space after a separating comma, which RFC 2253 never prints");
  }
  for (const auto& e : so_far.subjects_) {
    if (e.subject == s) return bad("is also the subject of identity '" + e.principal.identity + "'");
  }
  return s;
}

Result<std::unique_ptr<TokenAuthenticator>> TokenAuthenticator::Create(
    const std::optional<SecretBytes>& admin_api_key, const std::string& tokens_file, bool require_login,
    const std::string& client_tokens_file) {
  DYAD_ASSIGN_OR_RETURN(std::string text, ReadFile(tokens_file, "GATEWAY_ADMIN_TOKENS_FILE"));
  DYAD_ASSIGN_OR_RETURN(std::string clients, ReadFile(client_tokens_file, "GATEWAY_CLIENT_API_KEYS_FILE"));
  return FromTokensJson(admin_api_key, text, require_login, clients);
}

Result<std::unique_ptr<TokenAuthenticator>> TokenAuthenticator::FromTokensJson(
    const std::optional<SecretBytes>& admin_api_key, std::string_view tokens_json, bool require_login,
    std::string_view client_tokens_json) {
  auto auth = std::unique_ptr<TokenAuthenticator>(new TokenAuthenticator());
  if (admin_api_key) auth->entries_.push_back({Sha256(admin_api_key->view()), {"admin", Role::kAdmin}});
  if (!tokens_json.empty()) DYAD_RETURN_IF_ERROR(auth->AddEntries(tokens_json, "GATEWAY_ADMIN_TOKENS_FILE", false));
  if (!client_tokens_json.empty()) {
    DYAD_RETURN_IF_ERROR(auth->AddEntries(client_tokens_json, "GATEWAY_CLIENT_API_KEYS_FILE", true));
  }
  bool admin_login = std::any_of(auth->entries_.begin(), auth->entries_.end(),
                                 [](const Entry& e) { return e.principal.role != Role::kClient; }) ||
                     std::any_of(auth->subjects_.begin(), auth->subjects_.end(),
                                 [](const SubjectEntry& e) { return e.principal.role != Role::kClient; });
  if (require_login && !admin_login) return NobodyCouldLogIn();
  return auth;
}

Status TokenAuthenticator::AddEntries(std::string_view tokens_json, std::string_view variable, bool clients_only) {
  auto bad = [&](const std::string& what) {
    return MakeError(ErrorCode::kInvalidArgument,
                     std::string(variable) + ": " + what + "; expected {\"tokens\":[{\"name\":…,\"role\":" +
                         (clients_only ? "\"client\"" : "\"admin\"|\"viewer\"|\"client\"") +
                         ",\"sha256\":<64 hex> and/or \"clientCertSubject\":<RFC 2253 subject>" +
                         ", for a client optionally \"providers\":[slug…],\"models\":[name…]}]}");
  };
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
    if (role == t.end() || !role->is_string() || (*role != "admin" && *role != "viewer" && *role != "client"))
      return bad(where + ".role must be \"admin\", \"viewer\" or \"client\"");
    if (clients_only && *role != "client") {
      return bad(where + " ('" + name->get<std::string>().substr(0, 64) + "') has role '" +
                 role->get<std::string>() + "': this file may hold only role \"client\"");
    }
    auto subject = t.find("clientCertSubject");
    if (hash == t.end() && subject == t.end()) return bad(where + " needs \"sha256\" or \"clientCertSubject\"");
    Role r = *role == "admin" ? Role::kAdmin : *role == "viewer" ? Role::kViewer : Role::kClient;
    Principal principal{name->get<std::string>(), r, nullptr};
    auto providers = t.find("providers");
    auto models = t.find("models");
    if (r != Role::kClient && (providers != t.end() || models != t.end())) {
      return bad(where + ": \"providers\" and \"models\" are for role \"client\" only");
    }
    if (r == Role::kClient && (providers != t.end() || models != t.end())) {
      auto scope = std::make_unique<ClientScope>();
      for (auto [it, field, out] : {std::tuple{providers, "providers", &scope->providers},
                                    std::tuple{models, "models", &scope->models}}) {
        if (it == t.end()) continue;
        if (!it->is_array()) return bad(where + "." + field + " must be an array of strings");
        out->emplace();
        for (const auto& v : *it) {
          if (!v.is_string() || v.get<std::string>().empty()) {
            return bad(where + "." + field + " must be an array of non-empty strings");
          }
          (*out)->push_back(v.get<std::string>());
        }
      }
      principal.scope = scope.get();
      scopes_.push_back(std::move(scope));
    }
    if (hash != t.end()) {
      if (!hash->is_string()) return bad(where + ".sha256 must be a string");
      auto raw = HexDecode(hash->get<std::string>());
      if (!raw || raw->size() != 32) return bad(where + ".sha256 must be 64 hex characters");
      // One identity per token in a realm, or which one a token is would
      // depend on the order of the entries (a token may be a client too).
      for (const auto& e : entries_) {
        if (e.sha256 == *raw && (e.principal.role == Role::kClient) == (r == Role::kClient)) {
          return bad(where + ".sha256 is also the token of identity '" + e.principal.identity.substr(0, 64) + "'");
        }
      }
      entries_.push_back({*raw, principal});
    }
    if (subject != t.end()) {
      DYAD_ASSIGN_OR_RETURN(std::string s, CheckSubject(*subject, where, *this, variable));
      subjects_.push_back({std::move(s), principal});
    }
  }
  return OkStatus();
}

bool TokenAuthenticator::HasTokens() const {
  return std::any_of(entries_.begin(), entries_.end(),
                     [](const Entry& e) { return e.principal.role != Role::kClient; });
}

std::optional<Principal> TokenAuthenticator::Find(std::string_view authorization,
                                                  std::string_view client_cert_subject, bool clients) const {
  if (authorization.empty()) {
    if (client_cert_subject.empty()) return std::nullopt;
    for (const auto& e : subjects_) {
      if (e.subject == client_cert_subject && (e.principal.role == Role::kClient) == clients) return e.principal;
    }
    return std::nullopt;
  }
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
    bool match = ConstantTimeEquals(digest, e.sha256);
    if (match && !found && (e.principal.role == Role::kClient) == clients) found = &e;
  }
  if (!found) return std::nullopt;
  return found->principal;
}

std::optional<Principal> TokenAuthenticator::Authenticate(std::string_view authorization) const {
  if (authorization.empty()) return std::nullopt;
  return Find(authorization, "", false);
}

std::optional<Principal> TokenAuthenticator::Authenticate(std::string_view authorization,
                                                          std::string_view client_cert_subject) const {
  return Find(authorization, client_cert_subject, false);
}

std::optional<Principal> TokenAuthenticator::AuthenticateClient(std::string_view authorization,
                                                                std::string_view client_cert_subject) const {
  return Find(authorization, client_cert_subject, true);
}

}  // namespace dyad
