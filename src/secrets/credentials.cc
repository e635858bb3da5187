#include "secrets/credentials.h"

#include <boost/json.hpp>

#include "core/encoding.h"

namespace dyad {
namespace json = boost::json;

SecretBytes CredentialsToJson(const CredentialFields& fields) {
  std::string out = "{";
  for (const auto& [name, value] : fields) {
    if (out.size() > 1) out += ',';
    out += json::serialize(json::string_view(name));
    out += ':';
    std::string v = json::serialize(json::string_view(value.view().data(), value.size()));
    out += v;
    Cleanse(v);
  }
  out += '}';
  SecretBytes result(out);
  Cleanse(out);
  return result;
}

Result<CredentialFields> CredentialsFromJson(std::string_view text) {
  json::error_code ec;
  json::value doc = json::parse(json::string_view(text.data(), text.size()), ec);
  if (ec || !doc.is_object()) return MakeError(ErrorCode::kDataLoss, "credentials payload is not a JSON object");
  CredentialFields fields;
  for (auto& kv : doc.get_object()) {
    auto* s = kv.value().if_string();
    if (!s) {
      return MakeError(ErrorCode::kDataLoss, "credentials field '" + std::string(kv.key()) + "' is not a string");
    }
    fields.emplace(std::string(kv.key()), SecretBytes(std::string_view(s->data(), s->size())));
    std::fill(s->begin(), s->end(), '\0');
  }
  return fields;
}

std::string Fingerprint(const CredentialFields& fields) {
  SecretBytes text = CredentialsToJson(fields);
  return HexEncode(Sha256(text.view())).substr(0, 16);
}

}  // namespace dyad
