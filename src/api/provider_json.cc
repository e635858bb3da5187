#include "api/provider_json.h"

#include <nlohmann/json.hpp>
#include <map>
#include <unordered_set>
#include <vector>

namespace dyad {
namespace {

using nlohmann::json;

// A SAX pass over a request body that only checks the JSON limits, before a
// DOM is built: nlohmann's SAX parser keeps its own stack on the heap, so a
// hostile nesting depth costs memory, never the call stack. It stops at the
// first limit crossed and says which.
class LimitsCheck final : public nlohmann::json_sax<json> {
 public:
  explicit LimitsCheck(const JsonLimits& limits) : limits_(limits) {}
  const std::string& failure() const { return failure_; }
  bool syntax_error() const { return syntax_error_; }
  // Where the syntax error is (the byte at which the parser stopped, from 1).
  size_t error_position() const { return error_position_; }

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t& s) override { return CheckString(s); }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override {
    keys_.emplace_back();
    return Enter();
  }
  bool key(string_t& k) override {
    if (!CheckString(k)) return false;
    if (++members_ > limits_.max_members) {
      return Fail("more than " + std::to_string(limits_.max_members) + " object members in all");
    }
    if (!keys_.back().insert(k).second) return Fail("holds a duplicate key '" + k.substr(0, 64) + "'");
    return true;
  }
  bool end_object() override {
    keys_.pop_back();
    --depth_;
    return true;
  }
  bool start_array(std::size_t) override { return Enter(); }
  bool end_array() override {
    --depth_;
    return true;
  }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception&) override {
    syntax_error_ = true;
    error_position_ = position;
    return false;
  }

 private:
  bool Enter() {
    if (++depth_ > limits_.max_depth) return Fail("nested deeper than " + std::to_string(limits_.max_depth) + " levels");
    return true;
  }
  bool CheckString(const string_t& s) {
    if (s.size() > limits_.max_string_bytes) {
      return Fail("holds a string longer than " + std::to_string(limits_.max_string_bytes) + " bytes");
    }
    return true;
  }
  bool Fail(std::string what) {
    failure_ = std::move(what);
    return false;
  }

  const JsonLimits& limits_;
  size_t depth_ = 0;
  size_t members_ = 0;
  std::vector<std::unordered_set<std::string>> keys_;  // per open object
  std::string failure_;
  bool syntax_error_ = false;
  size_t error_position_ = 0;
};

constexpr std::string_view kPlaceholder = "[STORED_EXTERNALLY]";  // what a response shows for a value
constexpr size_t kMaxCredentialValue = 64 * 1024;

Error Invalid(const std::string& field, const std::string& what) {
  return MakeError(ErrorCode::kInvalidArgument, "field '" + field + "' " + what);
}

// [a-z0-9-], with at least one letter or digit ("-" would name no
// DYAD_PROVIDER_<SLUG>_ variable anyone could tell apart).
bool ValidSlug(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  bool alnum = false;
  for (char c : s) {
    bool letter_or_digit = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!letter_or_digit && c != '-') return false;
    alnum = alnum || letter_or_digit;
  }
  return alnum;
}

// The <FIELD> part of the DYAD_PROVIDER_<SLUG>_<FIELD> fallback variable:
// upper-cased, every other character as '_' (as SecretsService reads it).
std::string EnvFieldName(std::string_view field) {
  std::string out;
  for (char c : field) {
    auto u = static_cast<unsigned char>(c);
    out.push_back(std::isalnum(u) ? static_cast<char>(std::toupper(u)) : '_');
  }
  return out;
}

bool ValidFieldName(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) return false;
  }
  return true;
}

Result<std::string> String(const json& j, const std::string& field, size_t max, bool allow_empty) {
  if (!j.is_string()) return Invalid(field, "must be a string");
  auto s = j.get<std::string>();
  if (!allow_empty && s.empty()) return Invalid(field, "must not be empty");
  if (s.size() > max) return Invalid(field, "must be at most " + std::to_string(max) + " characters");
  return s;
}

// A C0 control character or DEL: in a name shown in listings, logs and
// terminals, one would hide or forge text (a NUL cuts it in C tools).
// `lines`: tabs and line breaks allowed (free text, as a description).
bool HasControlCharacter(std::string_view s, bool lines = false) {
  for (unsigned char c : s) {
    if (lines && (c == '\t' || c == '\n' || c == '\r')) continue;
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

// `check_ids`: model ids are checked for control characters (not stored ones).
Result<std::string> Models(const json& j, bool check_ids) {
  if (!j.is_array()) return Invalid("models", "must be an array");
  if (j.size() > 1000) return Invalid("models", "has more than 1000 entries");
  for (size_t i = 0; i < j.size(); ++i) {
    const json& m = j[i];
    std::string where = "models[" + std::to_string(i) + "]";
    if (!m.is_object()) return Invalid(where, "must be an object");
    for (auto it = m.begin(); it != m.end(); ++it) {
      const std::string& k = it.key();
      if (k == "dyadModelId" || k == "adapterModelId") {
        DYAD_ASSIGN_OR_RETURN(std::string id, String(it.value(), where + "." + k, 256, false));
        // Matched against what clients send, listed by GET /v1/models and
        // sent upstream: no model id has one.
        if (check_ids && HasControlCharacter(id)) {
          return Invalid(where + "." + k, "must not contain control characters");
        }
      } else if (k == "maxTokens" || k == "contextWindow") {
        if (!it.value().is_number_integer() || it.value().get<int64_t>() <= 0) {
          return Invalid(where + "." + k, "must be a positive integer");
        }
      } else {
        return Invalid(where + "." + k, "is unknown; models take dyadModelId, adapterModelId, maxTokens, contextWindow");
      }
    }
    if (!m.contains("dyadModelId")) return Invalid(where + ".dyadModelId", "is required");
    if (!m.contains("adapterModelId")) return Invalid(where + ".adapterModelId", "is required");
  }
  return j.dump();
}

// {"vault":"<path>","field":"<name>"}: exactly these two keys, strings,
// checked by CheckReference; encoded for CredentialFields.
Result<SecretBytes> ReferenceFrom(const json& j, const std::string& where) {
  const bool shape = j.size() == 2 && j.contains("vault") && j.contains("field");
  if (!shape) {
    return Invalid(where, "is an object: a reference takes exactly {\"vault\":\"<path>\",\"field\":\"<name>\"}");
  }
  if (!j["vault"].is_string()) return Invalid(where + ".vault", "must be a string");
  if (!j["field"].is_string()) return Invalid(where + ".field", "must be a string");
  CredentialReference ref{j["vault"].get<std::string>(), j["field"].get<std::string>()};
  if (Status ok = CheckReference(ref); !ok.ok()) return Invalid(where, ok.error().message);
  return EncodeReference(ref);
}

Result<CredentialFields> CredentialFieldsFrom(const json& j) {
  if (!j.is_object()) return Invalid("credentials", "must be an object of string values (or references)");
  if (j.size() > kMaxCredentialFields) return Invalid("credentials", "has more than 64 fields");
  CredentialFields out;
  std::map<std::string, std::string> env_names;  // EnvFieldName -> field
  for (auto it = j.begin(); it != j.end(); ++it) {
    std::string where = "credentials." + it.key().substr(0, 64);
    if (!ValidFieldName(it.key())) return Invalid(where, "is not a valid name; use 1-64 of letters, digits, '_', '-', '.'");
    auto [clash, fresh] = env_names.emplace(EnvFieldName(it.key()), it.key());
    if (!fresh) {
      return Invalid(where, "clashes with credentials." + clash->second + ": both map to DYAD_PROVIDER_<SLUG>_" +
                                clash->first + "; rename one");
    }
    if (it.value().is_object()) {
      DYAD_ASSIGN_OR_RETURN(SecretBytes ref, ReferenceFrom(it.value(), where));
      out.emplace(it.key(), std::move(ref));
      continue;
    }
    if (!it.value().is_string()) {
      return Invalid(where, "must be a string, or a reference {\"vault\":\"<path>\",\"field\":\"<name>\"}");
    }
    const auto& v = it.value().get_ref<const std::string&>();
    if (v == kPlaceholder) {
      return Invalid(where, "holds the placeholder " + std::string(kPlaceholder) +
                                " that responses show, not a value; send the value (PATCH: leave the field out to "
                                "keep it)");
    }
    if (v.size() > kMaxCredentialValue) return Invalid(where, "is longer than 65536 bytes");
    out.emplace(it.key(), SecretBytes(v));
  }
  return out;
}

}  // namespace

Result<json> ParseJsonObject(std::string_view body, const JsonLimits& limits) {
  LimitsCheck check(limits);
  bool ok = json::sax_parse(body.begin(), body.end(), &check, nlohmann::detail::input_format_t::json, true);
  if (!ok && !check.failure().empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "the request body " + check.failure());
  }
  // The position only: the parser's own words quote the input (a
  // credential, perhaps).
  if (!ok) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "malformed JSON in the request body (at byte " + std::to_string(check.error_position()) + ")");
  }
  json j = json::parse(body.begin(), body.end(), nullptr, false);
  if (j.is_discarded()) return MakeError(ErrorCode::kInvalidArgument, "malformed JSON in the request body");
  if (!j.is_object()) return MakeError(ErrorCode::kInvalidArgument, "the request body must be a JSON object");
  return j;
}

std::string JsonLimitCrossed(std::string_view text, const JsonLimits& limits) {
  LimitsCheck check(limits);
  json::sax_parse(text.begin(), text.end(), &check, nlohmann::detail::input_format_t::json, true);
  return check.failure();
}

Result<ProviderPatch> ParseProviderBody(std::string_view body, BodyKind kind) {
  DYAD_ASSIGN_OR_RETURN(json j, ParseJsonObject(body));
  return ParseProviderJson(j, kind);
}

Result<ProviderPatch> ParseProviderJson(const json& j, BodyKind kind, const json* patch) {
  ProviderPatch p;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const json& v = it.value();
    const bool stored = patch && !patch->contains(k);
    if (k == "name") {
      DYAD_ASSIGN_OR_RETURN(std::string name, String(v, k, 200, false));
      if (!stored && HasControlCharacter(name)) return Invalid(k, "must not contain control characters");
      p.name = std::move(name);
    } else if (k == "slug") {
      DYAD_ASSIGN_OR_RETURN(std::string slug, String(v, k, 64, false));
      if (!ValidSlug(slug)) {
        return Invalid(k, "must match [a-z0-9-]+ with at least one letter or digit (at most 64 characters)");
      }
      p.slug = slug;
    } else if (k == "type") {
      DYAD_ASSIGN_OR_RETURN(std::string type, String(v, k, 32, false));
      if (type != "spawn-cli" && type != "http-sdk" && type != "proxy" && type != "local") {
        return Invalid(k, "must be one of spawn-cli, http-sdk, proxy, local");
      }
      p.type = type;
    } else if (k == "description") {
      DYAD_ASSIGN_OR_RETURN(p.description, String(v, k, 2000, true));
      if (!stored && HasControlCharacter(*p.description, /*lines=*/true)) {
        return Invalid(k, "must not contain control characters other than tabs and line breaks");
      }
    } else if (k == "enabled") {
      if (!v.is_boolean()) return Invalid(k, "must be true or false");
      p.enabled = v.get<bool>();
    } else if (k == "models") {
      DYAD_ASSIGN_OR_RETURN(p.models_json, Models(v, /*check_ids=*/!stored));
    } else if (k == "adapterConfig") {
      if (!v.is_object()) return Invalid(k, "must be an object");
      p.adapter_config_json = v.dump();
    } else if (k == "credentials") {
      DYAD_ASSIGN_OR_RETURN(p.credentials, CredentialFieldsFrom(v));
    } else if (k == "id" || k == "createdAt" || k == "updatedAt" || k == "credentialsVersion") {
      continue;  // read-only: a client may send back what it read
    } else {
      return Invalid(k.substr(0, 64), "is unknown");
    }
  }
  if (kind == BodyKind::kCreate) {
    if (!p.name) return Invalid("name", "is required");
    if (!p.slug) return Invalid("slug", "is required");
    if (!p.type) return Invalid("type", "is required");
  }
  return p;
}

Result<RotateBody> ParseRotateBody(std::string_view body) {
  DYAD_ASSIGN_OR_RETURN(json j, ParseJsonObject(body));
  if (!j.contains("credentials")) return Invalid("credentials", "is required");
  RotateBody out;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "validate") {
      if (!it.value().is_boolean()) return Invalid("validate", "must be true or false");
      out.validate = it.value().get<bool>();
    } else if (it.key() != "credentials") {
      return Invalid(it.key().substr(0, 64), "is unknown");
    }
  }
  DYAD_ASSIGN_OR_RETURN(out.credentials, CredentialFieldsFrom(j["credentials"]));
  if (out.credentials.empty()) return Invalid("credentials", "must hold at least one field");
  return out;
}

Result<CredentialFields> ParseCredentialsBody(std::string_view body) {
  DYAD_ASSIGN_OR_RETURN(RotateBody parsed, ParseRotateBody(body));
  if (parsed.validate) return Invalid("validate", "is unknown");
  return std::move(parsed.credentials);
}

json ProviderToJson(const Provider& p) {
  json creds = json::object();
  for (const auto& f : p.credential_fields) creds[f] = kPlaceholder;
  return {{"id", p.id},
          {"name", p.name},
          {"slug", p.slug},
          {"type", p.type},
          {"description", p.description},
          {"enabled", p.enabled},
          {"models", json::parse(p.models_json, nullptr, false)},
          {"adapterConfig", json::parse(p.adapter_config_json, nullptr, false)},
          {"credentials", creds},
          {"credentialsVersion", p.credentials_version},
          {"createdAt", p.created_at},
          {"updatedAt", p.updated_at}};
}

}  // namespace dyad
