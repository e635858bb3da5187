#include "secrets/credentials.h"

#include <boost/json.hpp>

#include <algorithm>
#include <cctype>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "core/encoding.h"
#include "core/random.h"
#include "registry/settings_repository.h"

namespace dyad {
namespace json = boost::json;
namespace {

constexpr char kReferenceTag = '\xFF';

bool PathChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
}

Error BadReference(const std::string& what) { return MakeError(ErrorCode::kInvalidArgument, what); }

}  // namespace

Status CheckReference(const CredentialReference& ref) {
  const std::string& p = ref.path;
  if (p.empty() || p.size() > kMaxReferencePath) {
    return BadReference("'vault' must be a path of 1-" + std::to_string(kMaxReferencePath) + " bytes");
  }
  for (size_t start = 0; start <= p.size();) {
    size_t end = p.find('/', start);
    if (end == std::string::npos) end = p.size();
    std::string_view seg(p.data() + start, end - start);
    if (seg.empty() || seg == "." || seg == ".." || !std::all_of(seg.begin(), seg.end(), PathChar)) {
      return BadReference("'vault' must be segments of letters, digits, '.', '_', '-' separated by single '/' "
                          "(no leading or trailing '/', no '.' or '..' segment)");
    }
    // At any depth: "ns1/auth/token/lookup-self" is a child namespace's.
    for (const char* reserved : {"sys", "auth", "identity", "cubbyhole"}) {
      if (seg == reserved) {
        return BadReference("'vault' may not name a path under " + std::string(seg) +
                            "/ at any depth (the backend's own tokens and settings, never a provider credential)");
      }
    }
    start = end + 1;
  }
  if (ref.field.empty() || ref.field.size() > kMaxReferenceField ||
      !std::all_of(ref.field.begin(), ref.field.end(), PathChar)) {
    return BadReference("'field' must be 1-" + std::to_string(kMaxReferenceField) +
                        " of letters, digits, '.', '_', '-'");
  }
  return OkStatus();
}

SecretBytes EncodeReference(const CredentialReference& ref) {
  std::string out;
  out.reserve(ref.path.size() + ref.field.size() + 2);
  out += kReferenceTag;
  out += ref.path;
  out += '\0';
  out += ref.field;
  return SecretBytes(out);  // names only: nothing to wipe
}

std::optional<CredentialReference> DecodeReference(const SecretBytes& value) {
  std::string_view v = value.view();
  if (v.empty() || v[0] != kReferenceTag) return std::nullopt;
  size_t nul = v.find('\0', 1);
  if (nul == std::string_view::npos) return std::nullopt;
  return CredentialReference{std::string(v.substr(1, nul - 1)), std::string(v.substr(nul + 1))};
}

bool HasReferences(const CredentialFields& fields) {
  return std::any_of(fields.begin(), fields.end(), [](const auto& kv) { return DecodeReference(kv.second).has_value(); });
}

std::vector<std::string> FieldNames(const CredentialFields& fields) {
  std::vector<std::string> names;
  names.reserve(fields.size());
  for (const auto& [name, value] : fields) names.push_back(name);
  return names;
}

SecretBytes CredentialsToJson(const CredentialFields& fields) {
  std::string out = "{";
  for (const auto& [name, value] : fields) {
    if (out.size() > 1) out += ',';
    out += json::serialize(json::string_view(name));
    out += ':';
    if (auto ref = DecodeReference(value)) {  // keys sorted, as everywhere in the canonical form
      out += "{\"field\":" + json::serialize(json::string_view(ref->field)) +
             ",\"vault\":" + json::serialize(json::string_view(ref->path)) + "}";
      continue;
    }
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
    if (auto* o = kv.value().if_object()) {
      auto where = "credentials field '" + std::string(kv.key()) + "'";
      auto* path = o->if_contains("vault");
      auto* field = o->if_contains("field");
      if (o->size() != 2 || !path || !field || !path->is_string() || !field->is_string()) {
        return MakeError(ErrorCode::kDataLoss, where + " is an object other than {\"vault\":…,\"field\":…}");
      }
      CredentialReference ref{std::string(path->get_string()), std::string(field->get_string())};
      if (Status ok = CheckReference(ref); !ok.ok()) {
        return MakeError(ErrorCode::kDataLoss, where + ": " + ok.error().message);
      }
      fields.emplace(std::string(kv.key()), EncodeReference(ref));
      continue;
    }
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
