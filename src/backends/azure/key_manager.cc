#include "backends/azure/key_manager.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "backends/azure/base64url.h"
#include "backends/azure/secret_store.h"
#include "backends/key_binding.h"
#include "backends/key_version_book.h"
#include "core/encoding.h"
#include "core/mutex.h"
#include "core/time_format.h"

namespace dyad {
namespace {

using nlohmann::json;

constexpr const char* kRole = "Key Vault Crypto Officer";
constexpr size_t kMaxWrappedChars = 4000;  // base64url of an RSA-16384 wrap fits
// A key version's attributes (enabled) are read again after this long
// before a local wrap relies on them.
constexpr std::chrono::seconds kMaterialMaxAge{60};

bool IsRsa(const std::string& kty) { return kty == "RSA" || kty == "RSA-HSM"; }
bool IsOct(const std::string& kty) { return kty == "oct" || kty == "oct-HSM"; }

// A Key Vault object version: 32 hex in Azure; letters and digits here.
bool ValidVersion(std::string_view v) {
  return !v.empty() && v.size() <= 64 &&
         std::all_of(v.begin(), v.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; });
}

// host[:port] of an http(s) URL, lower-cased; "" when it is not one.
std::string HostOf(std::string_view url) {
  for (std::string_view scheme : {"https://", "http://"}) {
    if (url.starts_with(scheme)) {
      url.remove_prefix(scheme.size());
      return AsciiLower(url.substr(0, url.find('/')));
    }
  }
  return "";
}

// A key version as Key Vault describes it (GET /keys/{name}/{version}).
struct Material {
  std::string version;
  std::string kty;
  std::shared_ptr<EVP_PKEY> rsa;  // the public key, for a local wrap
  bool enabled = true;
  bool wraps = true;  // key_ops allow wrapKey and unwrapKey (or are not given)
  Clock::Instant read_at;
};

std::shared_ptr<EVP_PKEY> RsaPublicKey(const std::string& n, const std::string& e) {
  std::unique_ptr<BIGNUM, decltype(&BN_free)> bn_n(
      BN_bin2bn(reinterpret_cast<const unsigned char*>(n.data()), static_cast<int>(n.size()), nullptr), BN_free);
  std::unique_ptr<BIGNUM, decltype(&BN_free)> bn_e(
      BN_bin2bn(reinterpret_cast<const unsigned char*>(e.data()), static_cast<int>(e.size()), nullptr), BN_free);
  if (!bn_n || !bn_e || BN_num_bits(bn_n.get()) < 2048 || BN_num_bits(bn_n.get()) > 16384 || !BN_is_odd(bn_e.get()) ||
      BN_is_one(bn_e.get())) {
    return nullptr;
  }
  std::unique_ptr<OSSL_PARAM_BLD, decltype(&OSSL_PARAM_BLD_free)> bld(OSSL_PARAM_BLD_new(), OSSL_PARAM_BLD_free);
  if (!bld || OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()) != 1) {
    return nullptr;
  }
  std::unique_ptr<OSSL_PARAM, decltype(&OSSL_PARAM_free)> params(OSSL_PARAM_BLD_to_param(bld.get()), OSSL_PARAM_free);
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr),
                                                                   EVP_PKEY_CTX_free);
  EVP_PKEY* key = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &key, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
    return nullptr;
  }
  return std::shared_ptr<EVP_PKEY>(key, EVP_PKEY_free);
}

// RSA-OAEP with SHA-256 and MGF1-SHA-256 (Key Vault's RSA-OAEP-256).
Result<std::string> OaepWrap(EVP_PKEY* key, std::string_view plain) {
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(EVP_PKEY_CTX_new(key, nullptr), EVP_PKEY_CTX_free);
  size_t n = 0;
  auto* in = reinterpret_cast<const unsigned char*>(plain.data());
  if (!ctx || EVP_PKEY_encrypt_init(ctx.get()) != 1 ||
      EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_OAEP_PADDING) != 1 ||
      EVP_PKEY_CTX_set_rsa_oaep_md(ctx.get(), EVP_sha256()) != 1 ||
      EVP_PKEY_CTX_set_rsa_mgf1_md(ctx.get(), EVP_sha256()) != 1 ||
      EVP_PKEY_encrypt(ctx.get(), nullptr, &n, in, plain.size()) != 1) {
    return MakeError(ErrorCode::kInternal, "RSA-OAEP-256: cannot set up the local wrap");
  }
  std::string out(n, '\0');
  if (EVP_PKEY_encrypt(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &n, in, plain.size()) != 1) {
    return MakeError(ErrorCode::kInternal, "RSA-OAEP-256: the local wrap failed");
  }
  out.resize(n);
  return out;
}

// "<kid version>:<base64url>" → the version and the wrapped bytes.
Result<std::pair<std::string, std::string>> SplitWrapped(std::string_view wrapped) {
  auto colon = wrapped.find(':');
  if (colon == std::string_view::npos || !ValidVersion(wrapped.substr(0, colon)) || colon + 1 == wrapped.size() ||
      wrapped.size() - colon - 1 > kMaxWrappedChars) {
    return MakeError(ErrorCode::kDataLoss, "not an Azure Key Vault wrapped key ('<key version>:<base64url>')");
  }
  auto bytes = Base64UrlDecode(wrapped.substr(colon + 1));
  if (!bytes) return MakeError(ErrorCode::kDataLoss, "the Azure Key Vault wrapped key is not base64url");
  return std::make_pair(std::string(wrapped.substr(0, colon)), std::move(*bytes));
}

class AzureKeyManager final : public KeyManager {
 public:
  AzureKeyManager(AzureKeyOptions options, AzureClient& client, std::shared_ptr<KeyVersionRepository> versions,
                  const Clock& clock, Random& random)
      : options_(std::move(options)),
        key_id_(HostOf(client.options().vault_url) + "/" + options_.key_name),
        row_key_("azure-kv:" + key_id_),
        keys_path_("/keys/" + options_.key_name),
        client_(client),
        repo_(std::move(versions)),
        clock_(clock),
        random_(random),
        book_(repo_, row_key_, clock, "Key Vault key " + key_id_, "gateway version") {}

  const std::string& Kind() const override { return kind_; }
  const std::string& KeyId() const override { return key_id_; }

  // No Key Vault call: the key is read on first use, so the gateway starts
  // while Key Vault is down.
  Status Init() { return book_.Reload(); }

  Result<DataKey> GenerateDataKey(std::string_view context) override {
    return FreshDataKey(random_, kBoundDekSize, context);
  }

  Result<WrappedKey> WrapKey(const SecretBytes& key, std::string_view context) override {
    DYAD_RETURN_IF_ERROR(EnsureKey());
    DYAD_ASSIGN_OR_RETURN(uint32_t primary, LivePrimary());
    DYAD_ASSIGN_OR_RETURN(std::string kid_version, KidVersion(primary));
    WrappedKey out;
    out.version = primary;
    DYAD_ASSIGN_OR_RETURN(out.wrapped, Wrap(primary, kid_version, BindKey(key, context)));
    return out;
  }

  Result<SecretBytes> Decrypt(uint32_t version, std::string_view wrapped, std::string_view context) override {
    DYAD_RETURN_IF_ERROR(EnsureKey());  // a key not used yet has its version 1 recorded first
    DYAD_RETURN_IF_ERROR(book_.CheckUsable(version));
    DYAD_ASSIGN_OR_RETURN(std::string recorded, KidVersion(version));
    DYAD_ASSIGN_OR_RETURN(auto parts, SplitWrapped(wrapped));
    auto& [kid_version, bytes] = parts;
    if (kid_version != recorded) {
      return MakeError(ErrorCode::kDataLoss, "the data key was wrapped under Key Vault key version " + kid_version +
                                                 ", not " + recorded + " (gateway version " + std::to_string(version) +
                                                 ")");
    }
    DYAD_ASSIGN_OR_RETURN(Material m, MaterialOf(version, kid_version, std::nullopt));
    json body = {{"alg", Alg(m.kty)}, {"value", Base64UrlEncode(bytes)}};
    auto answer = Call("keys.unwrap", "POST", keys_path_ + "/" + kid_version + "/unwrapkey", &body);
    if (!answer.ok()) {
      Error e = KeyError(answer.error(), version, kid_version);
      if (e.code == ErrorCode::kInvalidArgument) {
        e.code = ErrorCode::kDataLoss;  // Key Vault could not unwrap what it was given
      }
      return e;
    }
    DYAD_ASSIGN_OR_RETURN(std::string plain, Field(*answer, "keys.unwrap", kid_version));
    SecretBytes bound(plain);
    Cleanse(plain);
    return UnbindKey(bound, context, "Key Vault");
  }

  // Azure has no rewrap: unwrap, then wrap under the primary.
  Result<WrappedKey> ReEncrypt(uint32_t version, std::string_view wrapped, std::string_view from_context,
                               std::string_view to_context) override {
    DYAD_ASSIGN_OR_RETURN(SecretBytes dek, Decrypt(version, wrapped, from_context));
    return WrapKey(dek, to_context);
  }

  // With a pinned version (ENCRYPTION_KEY_ID …/keys/NAME/VERSION) refused:
  // the pin says which version wraps. Otherwise the new kid version is
  // recorded only while the latest recorded is still the one before the
  // POST; when a sync recorded it (or a newer one) meanwhile, nothing is
  // added and the ordinal it got is returned.
  Result<uint32_t> Rotate() override {
    if (!options_.key_version_pinned.empty()) {
      return MakeError(ErrorCode::kFailedPrecondition,
                       "Key Vault key " + key_id_ + " is pinned to version " + options_.key_version_pinned +
                           " by ENCRYPTION_KEY_ID: rotating it would not change the version that wraps; set "
                           "ENCRYPTION_KEY_ID to the key's name (or the new version's id) instead");
    }
    DYAD_RETURN_IF_ERROR(EnsureKey());
    DYAD_RETURN_IF_ERROR(book_.Reload());
    std::string before;
    if (auto versions = book_.Versions(); !versions.empty()) before = versions.rbegin()->second.material;
    DYAD_ASSIGN_OR_RETURN(json answer, Call("keys.rotate", "POST", keys_path_ + "/rotate", nullptr));
    DYAD_ASSIGN_OR_RETURN(Material m, ParseBundle(answer, "keys.rotate"));
    const std::string kid_version = m.version;
    Remember(m);
    DYAD_RETURN_IF_ERROR(Record(kid_version, before));
    DYAD_ASSIGN_OR_RETURN(uint32_t ordinal, OrdinalOf(kid_version));
    const uint32_t primary = book_.Primary();
    spdlog::info("Key Vault key {} rotated: Key Vault version {} is gateway version {}; the primary is {}", key_id_,
                 kid_version, ordinal, primary);
    return primary;  // the new primary (a newer version a sync recorded meanwhile, when there is one)
  }

  // Only in the registry: the key may be shared, so nothing is disabled in Azure.
  Status Retire(uint32_t version) override { return SetState(version, "retired"); }
  Status BeginRetire(uint32_t version) override {
    DYAD_ASSIGN_OR_RETURN(std::string now, CurrentState(version));
    if (now == "retired") return OkStatus();
    return SetState(version, "retiring");
  }

  Result<std::string> CurrentState(uint32_t version) override { return book_.CurrentState(version); }

  // GET /keys/{name}: the key answers, is enabled and wraps; its version
  // 1 is recorded on the way when this is the first use.
  Status Probe() override {
    DYAD_RETURN_IF_ERROR(EnsureKey());
    auto answer = Call("keys.get", "GET", keys_path_, nullptr);
    if (!answer.ok()) return LatestError(answer.error());
    DYAD_ASSIGN_OR_RETURN(Material m, ParseBundle(*answer, "keys.get"));
    return Usable(m);
  }

  // Key Vault is asked at most once a second (status pages poll this).
  Result<KeyState> Describe() override {
    if (book_.SyncDue()) {
      Status s = SyncWithVault();
      if (!s.ok() && !sync_warned_.exchange(true)) {
        spdlog::warn("Key Vault key {}: cannot read its versions, the registry's stand is shown: {}", key_id_,
                     s.error().message);
      }
    }
    return KnownState();
  }

  Result<KeyState> KnownState() override { return book_.KnownState(kind_, key_id_); }
  void MarkStale() override { book_.MarkStale(); }

 private:
  Result<json> Call(const std::string& op, const char* method, const std::string& path, const json* body,
                    std::string query = "") {
    AzureCall call;
    call.op = op;
    call.method = method;
    call.path = path;
    call.body = body;
    call.query = std::move(query);
    call.role = kRole;
    return client_.Call(call);
  }

  static const char* Alg(const std::string& kty) { return IsOct(kty) ? "A256KW" : "RSA-OAEP-256"; }

  // Key Vault refuses any operation on a disabled key version with 403,
  // inner error code KeyDisabled (decided on that code, never on the text: a
  // firewall's 403 says "Public network access is disabled").
  static bool KeyDisabled(const Error& e) {
    if (e.code != ErrorCode::kPermissionDenied) return false;
    for (const char* op : {"keys.get", "keys.wrap", "keys.unwrap"}) {
      if (AzureInnerCodeIs(e, op, 403, "KeyDisabled")) return true;
    }
    return false;
  }

  Error KeyError(Error e, uint32_t version, const std::string& kid_version) const {
    if (KeyDisabled(e)) {
      return MakeError(ErrorCode::kFailedPrecondition, "Key Vault key " + key_id_ + " version " + kid_version +
                                                           " (gateway version " + std::to_string(version) +
                                                           ") is disabled in Key Vault");
    }
    return e;
  }

  // A read of the key (its latest or pinned version) refused because that
  // version is disabled.
  Error LatestError(Error e) const {
    if (KeyDisabled(e)) {
      return MakeError(ErrorCode::kFailedPrecondition,
                       "Key Vault key " + key_id_ + ": its " +
                           (options_.key_version_pinned.empty() ? "current version"
                                                                : "version " + options_.key_version_pinned) +
                           " is disabled in Key Vault");
    }
    return e;
  }

  // The key bundle's version, type, public key and state.
  Result<Material> ParseBundle(const json& answer, const std::string& op) const {
    auto bad = [&](const std::string& what) { return MakeError(ErrorCode::kUnavailable, op + ": the answer's " + what); };
    if (!answer.contains("key") || !answer["key"].is_object()) return bad("key is not an object");
    const json& k = answer["key"];
    Material m;
    std::string kid = k.contains("kid") && k["kid"].is_string() ? k["kid"].get<std::string>() : "";
    const std::string prefix = keys_path_ + "/";
    auto at = kid.find(prefix);
    if (at == std::string::npos || HostOf(kid) != HostOf(client_.options().vault_url)) {
      return bad("kid is not a version of key '" + options_.key_name + "' on this vault");
    }
    m.version = kid.substr(at + prefix.size());
    if (!ValidVersion(m.version)) return bad("kid has no valid version");
    m.kty = k.contains("kty") && k["kty"].is_string() ? k["kty"].get<std::string>() : "";
    if (!IsRsa(m.kty) && !IsOct(m.kty)) {
      return MakeError(ErrorCode::kFailedPrecondition, "Key Vault key " + key_id_ + " is of type '" + m.kty +
                                                           "', which cannot wrap keys (RSA, RSA-HSM, oct, oct-HSM can)");
    }
    if (k.contains("key_ops") && k["key_ops"].is_array()) {
      bool wrap = false, unwrap = false;
      for (const auto& op_name : k["key_ops"]) {
        wrap = wrap || op_name == "wrapKey";
        unwrap = unwrap || op_name == "unwrapKey";
      }
      m.wraps = wrap && unwrap;
    }
    if (IsRsa(m.kty) && k.contains("n") && k["n"].is_string() && k.contains("e") && k["e"].is_string()) {
      auto n = Base64UrlDecode(k["n"].get<std::string>());
      auto e = Base64UrlDecode(k["e"].get<std::string>());
      if (n && e) m.rsa = RsaPublicKey(*n, *e);
    }
    if (answer.contains("attributes") && answer["attributes"].is_object()) {
      const json& a = answer["attributes"];
      if (a.contains("enabled") && a["enabled"].is_boolean()) m.enabled = a["enabled"].get<bool>();
    }
    m.read_at = clock_.Now();
    return m;
  }

  Status Usable(const Material& m) const {
    if (!m.enabled) {
      return MakeError(ErrorCode::kFailedPrecondition, "Key Vault key " + key_id_ + " version " + m.version +
                                                           " is disabled in Key Vault");
    }
    if (!m.wraps) {
      return MakeError(ErrorCode::kFailedPrecondition, "Key Vault key " + key_id_ + " does not permit wrapKey and "
                                                                                     "unwrapKey (its key_ops)");
    }
    return OkStatus();
  }

  void Remember(const Material& m) DYAD_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    materials_[m.version] = m;
  }

  // The key version `kid_version` (gateway version `version`), from memory
  // when read less than `max_age` ago (any age when nullopt).
  Result<Material> MaterialOf(uint32_t version, const std::string& kid_version,
                              std::optional<Clock::Duration> max_age) DYAD_LOCKS_EXCLUDED(mu_) {
    {
      MutexLock lock(&mu_);
      auto it = materials_.find(kid_version);
      if (it != materials_.end() && (!max_age || clock_.Now() - it->second.read_at < *max_age)) return it->second;
    }
    auto answer = Call("keys.get", "GET", keys_path_ + "/" + kid_version, nullptr);
    if (!answer.ok()) return KeyError(answer.error(), version, kid_version);
    DYAD_ASSIGN_OR_RETURN(Material m, ParseBundle(*answer, "keys.get"));
    if (m.version != kid_version) {
      return MakeError(ErrorCode::kDataLoss, "keys.get: asked for key version " + kid_version + ", answered " + m.version);
    }
    Remember(m);
    return m;
  }

  // "<kid version>:<base64url>" of `plain` wrapped under `kid_version`:
  // locally with the public key (RSA, when asked for), else by Key Vault.
  Result<std::string> Wrap(uint32_t version, const std::string& kid_version, const SecretBytes& plain) {
    DYAD_ASSIGN_OR_RETURN(Material m, MaterialOf(version, kid_version, kMaterialMaxAge));
    DYAD_RETURN_IF_ERROR(Usable(m));
    if (options_.wrap_locally && m.rsa) {
      DYAD_ASSIGN_OR_RETURN(std::string wrapped, OaepWrap(m.rsa.get(), plain.view()));
      return kid_version + ":" + Base64UrlEncode(wrapped);
    }
    json body = {{"alg", Alg(m.kty)}, {"value", Base64UrlEncode(plain.view())}};
    auto answer = Call("keys.wrap", "POST", keys_path_ + "/" + kid_version + "/wrapkey", &body);
    Cleanse(body["value"].get_ref<std::string&>());
    if (!answer.ok()) return KeyError(answer.error(), version, kid_version);
    DYAD_ASSIGN_OR_RETURN(std::string wrapped, Field(*answer, "keys.wrap", kid_version));
    if (wrapped.empty()) return MakeError(ErrorCode::kUnavailable, "keys.wrap: the answer's value is empty");
    return kid_version + ":" + Base64UrlEncode(wrapped);
  }

  // The base64url `value` of a wrap or unwrap answer, decoded; its `kid`,
  // when given, must be the version asked for.
  Result<std::string> Field(json& answer, const std::string& op, const std::string& kid_version) const {
    auto v = answer.find("value");
    if (v == answer.end() || !v->is_string()) return MakeError(ErrorCode::kUnavailable, op + ": the answer has no value");
    auto bytes = Base64UrlDecode(v->get<std::string>());
    Cleanse(v->get_ref<std::string&>());
    if (!bytes) return MakeError(ErrorCode::kUnavailable, op + ": the answer's value is not base64url");
    if (auto kid = answer.find("kid"); kid != answer.end() && kid->is_string() &&
                                       !kid->get<std::string>().ends_with(keys_path_ + "/" + kid_version)) {
      Cleanse(*bytes);
      return MakeError(ErrorCode::kDataLoss, op + ": answered by key '" + kid->get<std::string>() + "', not version " +
                                                 kid_version + " of " + key_id_);
    }
    return std::move(*bytes);
  }

  bool Ensured() DYAD_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    return ensured_;
  }

  // Version 1 is the key as first used (the pinned version, or the
  // latest); recorded once for every instance on the registry.
  Status EnsureKey() {
    if (Ensured()) return OkStatus();
    DYAD_RETURN_IF_ERROR(book_.Reload());
    if (book_.Versions().empty()) {
      std::string path = keys_path_;
      if (!options_.key_version_pinned.empty()) path += "/" + options_.key_version_pinned;
      auto answer = Call("keys.get", "GET", path, nullptr);
      if (!answer.ok()) return LatestError(answer.error());
      DYAD_ASSIGN_OR_RETURN(Material m, ParseBundle(*answer, "keys.get"));
      DYAD_RETURN_IF_ERROR(Usable(m));
      Remember(m);
      KeyVersionRecord first{1, "active", FormatIso8601(clock_.WallNow()), m.version, 0};
      if (auto made = repo_->CreateFirst(row_key_, first); !made.ok()) return made.error();
      DYAD_RETURN_IF_ERROR(book_.Reload());
    } else if (!options_.key_version_pinned.empty() && !OrdinalOf(options_.key_version_pinned).ok()) {
      spdlog::warn("Key Vault key {}: the configured version {} is not among the versions the registry records; the "
                   "registry's primary wraps new data keys", key_id_, options_.key_version_pinned);
    }
    MutexLock lock(&mu_);
    ensured_ = true;
    return OkStatus();
  }

  // Records `kid_version` as the next gateway version unless it is already
  // recorded; with `after`, only while the latest recorded is still that
  // Key Vault version (a sync that raced with another instance adds nothing).
  Status Record(const std::string& kid_version, std::optional<std::string> after) {
    DYAD_ASSIGN_OR_RETURN(std::vector<KeyVersionRecord> recorded, repo_->List(row_key_));
    for (const auto& r : recorded) {
      if (r.material == kid_version) return book_.Reload();  // already an ordinal: never a second one
    }
    auto advanced = repo_->Advance(row_key_, [&](const std::optional<KeyVersionRecord>& latest) -> Result<KeyVersionChange> {
      KeyVersionChange change;
      if (latest && latest->material == kid_version) return change;
      if (after && (!latest || latest->material != *after)) return change;
      change.next = KeyVersionRecord{0, "active", FormatIso8601(clock_.WallNow()), kid_version, 0};
      return change;
    });
    if (!advanced.ok()) return advanced.error();
    return book_.Reload();
  }

  // Makes the key's current version in Key Vault (GET /keys/{name}), when
  // it is not one the registry records, the next gateway version: a
  // rotation made in Azure (a rotation policy's, the portal's). The current
  // version is what Key Vault itself names the latest; the versions list
  // cannot order versions made within one second (its times are seconds),
  // and versions made between two looks were never used here.
  Status SyncWithVault() {
    DYAD_RETURN_IF_ERROR(EnsureKey());
    // A pinned version (ENCRYPTION_KEY_ID …/keys/NAME/VERSION) stays the one
    // that wraps: no other Azure version becomes primary here.
    if (!options_.key_version_pinned.empty()) return OkStatus();
    auto answer = Call("keys.get", "GET", keys_path_, nullptr);
    if (!answer.ok()) return LatestError(answer.error());
    DYAD_ASSIGN_OR_RETURN(Material m, ParseBundle(*answer, "keys.get"));
    const auto versions = book_.Versions();
    if (versions.empty()) return OkStatus();
    const std::string latest = versions.rbegin()->second.material;
    for (const auto& [v, row] : versions) {
      if (row.material == m.version) return OkStatus();
    }
    if (!m.enabled || !m.wraps) return OkStatus();  // it could wrap nothing
    Remember(m);
    DYAD_RETURN_IF_ERROR(Record(m.version, latest));
    if (auto ordinal = OrdinalOf(m.version); ordinal.ok()) {
      spdlog::warn("Key Vault key {} has a version made outside the gateway ({}): gateway version {} is now primary; "
                   "a key rotation run re-encrypts the credentials", key_id_, m.version, *ordinal);
    }
    return OkStatus();
  }

  // The primary as the registry has it (see KeyVersionBook), never none.
  Result<uint32_t> LivePrimary() {
    DYAD_ASSIGN_OR_RETURN(uint32_t primary, book_.LivePrimary());
    if (primary == 0) return MakeError(ErrorCode::kFailedPrecondition, "Key Vault key " + key_id_ + " has no version yet");
    return primary;
  }

  // The Key Vault version a gateway version stands for (its material).
  Result<std::string> KidVersion(uint32_t version) {
    auto row = book_.Find(version);
    if (!row) return MakeError(ErrorCode::kNotFound, book_.NoVersion(version));
    if (!ValidVersion(row->material)) {
      return MakeError(ErrorCode::kDataLoss, "the registry records no Key Vault version for gateway version " +
                                                 std::to_string(version) + " of " + key_id_);
    }
    return row->material;
  }

  Result<uint32_t> OrdinalOf(const std::string& kid_version) {
    for (const auto& [v, row] : book_.Versions()) {
      if (row.material == kid_version) return v;
    }
    return MakeError(ErrorCode::kNotFound, "Key Vault key version " + kid_version + " is not recorded");
  }

  // An unknown version is refused here (the registry would ignore it).
  Status SetState(uint32_t version, const char* state) {
    DYAD_RETURN_IF_ERROR(book_.Reload());
    if (version != book_.Primary() && !book_.Find(version)) {
      return MakeError(ErrorCode::kNotFound, book_.NoVersion(version));
    }
    return book_.SetState(version, state);
  }

  const std::string kind_ = "azure-kv";
  const AzureKeyOptions options_;
  const std::string key_id_, row_key_, keys_path_;
  AzureClient& client_;
  std::shared_ptr<KeyVersionRepository> repo_;
  const Clock& clock_;
  Random& random_;
  KeyVersionBook book_;  // the gateway's versions; each one's material is its Key Vault version
  std::atomic<bool> sync_warned_{false};
  Mutex mu_;
  bool ensured_ DYAD_GUARDED_BY(mu_) = false;
  std::map<std::string, Material> materials_ DYAD_GUARDED_BY(mu_);  // by Key Vault version
};

}  // namespace

Result<AzureKeyOptions> ParseAzureKeyId(const std::string& key_id, const std::string& vault_url) {
  auto bad = [&](const std::string& why) {
    return MakeError(ErrorCode::kInvalidArgument, "ENCRYPTION_KEY_ID: '" + key_id.substr(0, 200) + "' " + why);
  };
  AzureKeyOptions out;
  if (key_id.find("://") == std::string::npos) {
    if (!IsValidKeyVaultName(key_id)) return bad("is not a Key Vault key name (1-127 of letters, digits and '-')");
    out.key_name = key_id;
    return out;
  }
  std::string host = HostOf(key_id);
  if (host.empty()) return bad("is not an https:// key id");
  if (host != HostOf(vault_url)) return bad("is a key on another vault than AZURE_KEY_VAULT_URL (" + vault_url + ")");
  std::string path = key_id.substr(key_id.find("://") + 3 + host.size());
  if (path.find_first_of("?#") != std::string::npos) return bad("has a query or fragment");
  while (path.ends_with('/')) path.pop_back();
  if (!path.starts_with("/keys/")) return bad("is not a key id (https://VAULT/keys/NAME[/VERSION])");
  path = path.substr(6);
  auto slash = path.find('/');
  out.key_name = path.substr(0, slash);
  if (slash != std::string::npos) out.key_version_pinned = path.substr(slash + 1);
  if (!IsValidKeyVaultName(out.key_name)) return bad("names no valid key");
  if (slash != std::string::npos && !ValidVersion(out.key_version_pinned)) return bad("names no valid key version");
  return out;
}

Result<std::unique_ptr<KeyManager>> NewAzureKeyManager(AzureKeyOptions options, AzureClient& client,
                                                       std::shared_ptr<KeyVersionRepository> versions,
                                                       const Clock& clock, Random& random) {
  if (!IsValidKeyVaultName(options.key_name)) {
    return MakeError(ErrorCode::kInvalidArgument, "ENCRYPTION_KEY_ID: '" + options.key_name.substr(0, 200) +
                                                      "' is not a Key Vault key name (1-127 of letters, digits and '-')");
  }
  if (!options.key_version_pinned.empty() && !ValidVersion(options.key_version_pinned)) {
    return MakeError(ErrorCode::kInvalidArgument, "ENCRYPTION_KEY_ID: the key version is not valid");
  }
  if (!versions) return MakeError(ErrorCode::kInvalidArgument, "Key Vault key manager: no key version repository");
  auto km = std::make_unique<AzureKeyManager>(std::move(options), client, std::move(versions), clock, random);
  DYAD_RETURN_IF_ERROR(km->Init());
  return std::unique_ptr<KeyManager>(std::move(km));
}

}  // namespace dyad
