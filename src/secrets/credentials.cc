#include "secrets/credentials.h"

#include <boost/json.hpp>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "core/encoding.h"
#include "core/random.h"
#include "registry/settings_repository.h"

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

std::string Fingerprint(const SecretBytes& key, const CredentialFields& fields) {
  SecretBytes text = CredentialsToJson(fields);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(text.data()),
       text.size(), mac, &len);
  std::string hex = HexEncode(std::string_view(reinterpret_cast<const char*>(mac), len)).substr(0, 16);
  OPENSSL_cleanse(mac, sizeof mac);
  return hex;
}

Result<SecretBytes> DeploymentFingerprintKey(SettingsRepository& settings, Random& random) {
  static constexpr char kSetting[] = "validate.fingerprint_key";
  SecretBytes fresh(kFingerprintKeySize);
  DYAD_RETURN_IF_ERROR(random.Fill(fresh.data(), fresh.size()));
  std::string fresh_hex = HexEncode(fresh.view());
  auto stored = settings.PutIfAbsent(kSetting, fresh_hex);  // another instance's, if it was first
  Cleanse(fresh_hex);
  if (!stored.ok()) return stored.error();
  std::string hex = std::move(stored).value();
  auto raw = HexDecode(hex);
  Cleanse(hex);
  if (!raw || raw->size() != kFingerprintKeySize) {
    return MakeError(ErrorCode::kDataLoss, std::string("settings: '") + kSetting + "' is not a 32-byte hex key");
  }
  SecretBytes key(*raw);
  Cleanse(*raw);
  return key;
}

}  // namespace dyad
