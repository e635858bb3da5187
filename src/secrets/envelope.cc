#include "secrets/envelope.h"

#include <boost/json.hpp>

#include "core/encoding.h"

namespace dyad {
namespace json = boost::json;
namespace {

Error Bad(std::string_view field, std::string_view what) {
  return MakeError(ErrorCode::kDataLoss, "envelope: field \"" + std::string(field) + "\" " + std::string(what));
}

Result<std::string_view> StringField(const json::object& o, std::string_view name, size_t max_len) {
  auto* v = o.if_contains(name);
  if (!v) return Bad(name, "is missing");
  auto* s = v->if_string();
  if (!s) return Bad(name, "must be a string");
  if (s->empty() || s->size() > max_len) return Bad(name, "has a bad length");
  return std::string_view(*s);
}

Result<int64_t> IntField(const json::object& o, std::string_view name, int64_t min, int64_t max) {
  auto* v = o.if_contains(name);
  if (!v) return Bad(name, "is missing");
  int64_t n;
  if (auto* i = v->if_int64()) n = *i;
  else if (auto* u = v->if_uint64(); u && *u <= static_cast<uint64_t>(INT64_MAX)) n = static_cast<int64_t>(*u);
  else return Bad(name, "must be an integer");
  if (n < min || n > max) return Bad(name, "is out of range");
  return n;
}

Result<std::string> Base64Field(const json::object& o, std::string_view name, size_t min_raw, size_t max_raw) {
  DYAD_ASSIGN_OR_RETURN(std::string_view text, StringField(o, name, 4 * (max_raw / 3 + 1)));
  auto raw = Base64Decode(text);
  if (!raw) return Bad(name, "is not valid base64");
  if (raw->size() < min_raw || raw->size() > max_raw) return Bad(name, "has a bad decoded length");
  return *raw;
}

// A JSON string literal; plain identifiers (the usual case) skip the escaper.
void AppendJsonString(std::string& out, std::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == '"' || c == '\\' || c >= 0x7f) {
      out += json::serialize(json::string_view(s.data(), s.size()));
      return;
    }
  }
  out += '"';
  out += s;
  out += '"';
}

}  // namespace

std::string SerializeEnvelope(const Envelope& e) {
  std::string out;
  out.reserve(128 + e.key_id.size() + 4 * (e.wrapped_dek.size() + e.ciphertext.size()) / 3);
  out += "{\"v\":" + std::to_string(e.format_version);
  out += ",\"kms\":";
  AppendJsonString(out, e.kms);
  out += ",\"kid\":";
  AppendJsonString(out, e.key_id);
  out += ",\"kver\":" + std::to_string(e.key_version);
  out += ",\"cv\":" + std::to_string(e.credentials_version);
  out += ",\"dek\":\"" + Base64Encode(e.wrapped_dek);
  out += "\",\"iv\":\"" + Base64Encode(e.nonce);
  out += "\",\"ct\":\"" + Base64Encode(e.ciphertext) + "\"";
  if (e.context_bound) out += ",\"ctx\":1";
  out += '}';
  return out;
}

Result<Envelope> ParseEnvelope(std::string_view text) {
  if (text.size() > kMaxEnvelopeBytes) {
    return MakeError(ErrorCode::kDataLoss, "envelope: larger than " + std::to_string(kMaxEnvelopeBytes) + " bytes");
  }
  unsigned char buf[4096];
  json::monotonic_resource mr(buf, sizeof buf);
  json::parse_options opt;
  opt.max_depth = 2;
  json::error_code ec;
  json::value doc = json::parse(json::string_view(text.data(), text.size()), ec, &mr, opt);
  if (ec) return MakeError(ErrorCode::kDataLoss, "envelope: not valid JSON (" + ec.message() + ")");
  auto* o = doc.if_object();
  if (!o) return MakeError(ErrorCode::kDataLoss, "envelope: not a JSON object");
  static constexpr std::string_view kKnown[] = {"v", "kms", "kid", "kver", "cv", "dek", "iv", "ct", "ctx"};
  for (const auto& kv : *o) {
    bool known = false;
    for (auto k : kKnown) known = known || kv.key() == k;
    if (!known) return Bad(std::string_view(kv.key().data(), std::min<size_t>(kv.key().size(), 32)), "is unknown");
  }
  Envelope e;
  DYAD_ASSIGN_OR_RETURN(int64_t v, IntField(*o, "v", 0, INT32_MAX));
  if (v != 1) return Bad("v", "is " + std::to_string(v) + "; this build reads format 1");
  e.format_version = 1;
  DYAD_ASSIGN_OR_RETURN(std::string_view kms, StringField(*o, "kms", 32));
  e.kms = kms;
  DYAD_ASSIGN_OR_RETURN(std::string_view kid, StringField(*o, "kid", 2048));
  e.key_id = kid;
  DYAD_ASSIGN_OR_RETURN(int64_t kver, IntField(*o, "kver", 1, UINT32_MAX));
  e.key_version = static_cast<uint32_t>(kver);
  DYAD_ASSIGN_OR_RETURN(e.credentials_version, IntField(*o, "cv", 0, INT64_MAX));
  DYAD_ASSIGN_OR_RETURN(e.wrapped_dek, Base64Field(*o, "dek", 1, kMaxWrappedKeyBytes));
  DYAD_ASSIGN_OR_RETURN(e.nonce, Base64Field(*o, "iv", 12, 12));
  DYAD_ASSIGN_OR_RETURN(e.ciphertext, Base64Field(*o, "ct", 16, kMaxEnvelopeBytes));
  if (o->contains("ctx")) {
    DYAD_ASSIGN_OR_RETURN(int64_t ctx, IntField(*o, "ctx", 1, 1));
    e.context_bound = ctx == 1;
  }
  return e;
}

std::string EnvelopeAad(std::string_view secret_name, int64_t credentials_version) {
  std::string aad = "dyad-envelope-v1";
  uint32_t n = static_cast<uint32_t>(secret_name.size());
  for (int i = 3; i >= 0; --i) aad.push_back(static_cast<char>(n >> (8 * i)));
  aad.append(secret_name);
  auto cv = static_cast<uint64_t>(credentials_version);
  for (int i = 7; i >= 0; --i) aad.push_back(static_cast<char>(cv >> (8 * i)));
  return aad;
}

}  // namespace dyad
