#include "backends/aws/kms_key_manager.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "backends/key_version_book.h"
#include "core/encoding.h"
#include "core/mutex.h"
#include "core/time_format.h"

namespace dyad {
namespace {

using nlohmann::json;

// Encrypted to find the key's ARN, and to probe the key, when DescribeKey is
// not permitted. Not a secret.
constexpr std::string_view kProbePlaintext = "dyad-gateway key probe";

// AWS refused `action` for want of a permission (NotPermitted).
bool NotPermitted(const Error& e, const std::string& action) {
  return NotPermitted(e) && e.message.starts_with(action + ": ");
}

class KmsKeyManager final : public KeyManager {
 public:
  KmsKeyManager(std::string key_id, std::unique_ptr<AwsJsonClient> client,
                std::shared_ptr<KeyVersionRepository> versions, const Clock& clock)
      : key_id_(std::move(key_id)),
        reference_(KmsKeyReference(key_id_)),
        row_key_("aws-kms:" + key_id_),
        client_(std::move(client)),
        repo_(std::move(versions)),
        clock_(clock),
        book_(repo_, row_key_, clock, "KMS key " + key_id_) {}

  const std::string& Kind() const override { return kind_; }
  const std::string& KeyId() const override { return key_id_; }

  Status Init() {
    // Version 1 with no rotation count yet ("": SyncWithKms fills it in).
    KeyVersionRecord first{1, "active", FormatIso8601(clock_.WallNow()), "", 0};
    DYAD_RETURN_IF_ERROR(repo_->CreateFirst(row_key_, first));
    return book_.Reload();
  }

  Result<DataKey> GenerateDataKey(std::string_view context) override {
    DYAD_ASSIGN_OR_RETURN(std::string arn, Arn());
    DYAD_ASSIGN_OR_RETURN(uint32_t version, book_.LivePrimary());
    json request = {{"KeyId", reference_}, {"KeySpec", "AES_256"}};
    WithContext(request, "EncryptionContext", context);
    DYAD_ASSIGN_OR_RETURN(json answer, Send("GenerateDataKey", request, arn));
    DataKey dk;
    DYAD_ASSIGN_OR_RETURN(std::string plain, Bytes(answer, "Plaintext", "GenerateDataKey"));
    dk.plaintext = SecretBytes(plain);
    Cleanse(plain);
    if (dk.plaintext.size() != 32) {
      return MakeError(ErrorCode::kDataLoss, "GenerateDataKey: a data key of " + std::to_string(dk.plaintext.size()) +
                                                 " bytes, not 32");
    }
    DYAD_ASSIGN_OR_RETURN(dk.wrapped, Bytes(answer, "CiphertextBlob", "GenerateDataKey"));
    dk.version = version;
    return dk;
  }

  Result<SecretBytes> Decrypt(uint32_t version, std::string_view wrapped, std::string_view context) override {
    DYAD_RETURN_IF_ERROR(book_.CheckUsable(version));
    DYAD_ASSIGN_OR_RETURN(std::string arn, Arn());
    json request = {{"CiphertextBlob", Base64Encode(wrapped)}, {"KeyId", reference_}};
    WithContext(request, "EncryptionContext", context);
    DYAD_ASSIGN_OR_RETURN(json answer, Send("Decrypt", request, arn));
    DYAD_ASSIGN_OR_RETURN(std::string plain, Bytes(answer, "Plaintext", "Decrypt"));
    SecretBytes key(plain);
    Cleanse(plain);
    return key;
  }

  // ReEncrypt keeps the data key inside KMS. Where the policy denies it
  // (kms:ReEncrypt* is not in the seed's policy), Decrypt + Encrypt does the
  // same with the data key passing through this process, wiped after; the
  // denial is remembered, so later calls go straight to the fallback.
  Result<WrappedKey> ReEncrypt(uint32_t version, std::string_view wrapped, std::string_view from_context,
                               std::string_view to_context) override {
    DYAD_RETURN_IF_ERROR(book_.CheckUsable(version));
    DYAD_ASSIGN_OR_RETURN(std::string arn, Arn());
    DYAD_ASSIGN_OR_RETURN(uint32_t primary, book_.LivePrimary());
    WrappedKey out;
    out.version = primary;
    if (!reencrypt_denied_.load()) {
      json request = {{"CiphertextBlob", Base64Encode(wrapped)},
                      {"SourceKeyId", reference_},
                      {"DestinationKeyId", reference_}};
      WithContext(request, "SourceEncryptionContext", from_context);
      WithContext(request, "DestinationEncryptionContext", to_context);
      auto answer = Send("ReEncrypt", request, arn);
      if (answer.ok()) {
        DYAD_ASSIGN_OR_RETURN(out.wrapped, Bytes(*answer, "CiphertextBlob", "ReEncrypt"));
        return out;
      }
      if (!NotPermitted(answer.error(), "ReEncrypt")) return answer.error();
      WarnOnce(reencrypt_denied_, "kms:ReEncrypt*", answer.error(),
               "data keys are re-encrypted with kms:Decrypt + kms:Encrypt instead, passing through this process");
    }
    DYAD_ASSIGN_OR_RETURN(SecretBytes dek, Decrypt(version, wrapped, from_context));
    if (dek.size() != 32) {
      return MakeError(ErrorCode::kDataLoss, "Decrypt: a data key of " + std::to_string(dek.size()) + " bytes, not 32");
    }
    return WrapKey(dek, to_context);
  }

  // kms:Encrypt (in the seed's policy).
  Result<WrappedKey> WrapKey(const SecretBytes& key, std::string_view context) override {
    DYAD_ASSIGN_OR_RETURN(std::string arn, Arn());
    WrappedKey out;
    DYAD_ASSIGN_OR_RETURN(out.version, book_.LivePrimary());
    json request = {{"KeyId", reference_}};
    request["Plaintext"] = Base64Encode(key.view());
    WithContext(request, "EncryptionContext", context);
    auto answer = Send("Encrypt", request, arn);
    Cleanse(request["Plaintext"].get_ref<std::string&>());
    if (!answer.ok()) return answer.error();
    DYAD_ASSIGN_OR_RETURN(out.wrapped, Bytes(*answer, "CiphertextBlob", "Encrypt"));
    if (out.wrapped.empty()) return MakeError(ErrorCode::kUnavailable, "Encrypt: the answer's CiphertextBlob is empty");
    return out;
  }

  Result<uint32_t> Rotate() override {
    DYAD_ASSIGN_OR_RETURN(std::string arn, Arn());
    auto rotated = client_->Call("RotateKeyOnDemand", json{{"KeyId", arn}}.dump());
    if (!rotated.ok()) {
      if (rotated.code() != ErrorCode::kUnimplemented) return rotated.error();
      spdlog::warn("KMS endpoint does not implement RotateKeyOnDemand ({}); the new key version re-encrypts under "
                   "the key material KMS uses now", rotated.error().message);
    }
    // ListKeyRotations may lag behind an on-demand rotation: never record
    // fewer rotations than the one just made, or a later sync would take
    // it for another.
    Result<int64_t> listed = MakeError(ErrorCode::kPermissionDenied, "kms:ListKeyRotations is not permitted");
    if (!list_denied_.load()) listed = KmsRotations(arn);
    DYAD_ASSIGN_OR_RETURN(uint32_t next, repo_->Advance(row_key_, [&](const std::optional<KeyVersionRecord>& row)
                                                                      -> Result<KeyVersionChange> {
      Latest latest = ReadLatest(row);
      int64_t count = latest.rotations + (rotated.ok() ? 1 : 0);
      if (listed.ok()) count = std::max(count, *listed);
      return KeyVersionChange{std::nullopt, NewVersion(count)};
    }));
    DYAD_RETURN_IF_ERROR(book_.Reload());
    spdlog::info("KMS key {} rotated: version {}", key_id_, next);
    return next;
  }

  Status Retire(uint32_t version) override { return book_.SetState(version, "retired"); }
  Status BeginRetire(uint32_t version) override { return book_.SetState(version, "retiring"); }

  // From the registry database, not from memory (see KeyManager).
  Result<std::string> CurrentState(uint32_t version) override { return book_.CurrentState(version); }

  // DescribeKey, every time (one cheap call): the key answers, is the one
  // first resolved (an alias moved to another key is not), and is enabled.
  // Where DescribeKey is not permitted, an Encrypt of a constant answers the
  // same questions (a disabled key or one pending deletion refuses it),
  // without the key's state by name.
  Status Probe() override {
    if (describe_denied_.load()) return ProbeByEncrypt();
    auto described = client_->Call("DescribeKey", json{{"KeyId", reference_}}.dump());
    if (!described.ok()) {
      if (!NotPermitted(described.error(), "DescribeKey")) return described.error();
      DescribeDenied(described.error());
      return ProbeByEncrypt();
    }
    auto j = json::parse(*described, nullptr, false);
    if (!j.is_object() || !j.contains("KeyMetadata") || !j["KeyMetadata"].is_object()) {
      return MakeError(ErrorCode::kUnavailable, "DescribeKey: the answer has no KeyMetadata");
    }
    const json& meta = j["KeyMetadata"];
    std::string arn = meta.value("Arn", "");
    {
      MutexLock lock(&mu_);
      if (!arn_.empty() && arn != arn_) {
        return MakeError(ErrorCode::kFailedPrecondition, "KMS key " + key_id_ + " is now '" + arn +
                                                             "', not the key '" + arn_ + "' this process resolved");
      }
    }
    std::string state = meta.value("KeyState", "Enabled");
    if (state != "Enabled") {
      return MakeError(ErrorCode::kFailedPrecondition, "KMS key " + key_id_ + " is " + state + ", not Enabled");
    }
    return OkStatus();
  }

  Result<KeyState> Describe() override {
    if (book_.SyncDue()) SyncWithKms();
    return KnownState();
  }

  Result<KeyState> KnownState() override { return book_.KnownState(kind_, key_id_); }
  void MarkStale() override { book_.MarkStale(); }

 private:
  // For aws-kms rows the `sealed` column holds how many rotations
  // ListKeyRotations showed when the version was made ("" before the first
  // look): a larger count later means KMS rotated the key on its own
  // (automatic rotation), which becomes a new version here.
  struct Latest {
    uint32_t version = 0;
    int64_t rotations = 0;
    bool known = false;
  };

  static Latest ReadLatest(const std::optional<KeyVersionRecord>& row) {
    Latest latest;
    if (!row) return latest;
    latest.version = row->version;
    const std::string& count = row->material;
    latest.known = !count.empty();
    if (latest.known) latest.rotations = std::strtoll(count.c_str(), nullptr, 10);
    return latest;
  }

  // The next version, made when KMS listed `rotations` rotations.
  KeyVersionRecord NewVersion(int64_t rotations) {
    return KeyVersionRecord{0, "active", FormatIso8601(clock_.WallNow()), std::to_string(rotations), 0};
  }

  // The number of rotations KMS lists for the key (every page).
  Result<int64_t> KmsRotations(const std::string& arn) {
    int64_t count = 0;
    json req = {{"KeyId", arn}, {"Limit", 1000}};
    for (int page = 0; page < 1000; ++page) {
      auto text = client_->Call("ListKeyRotations", req.dump());
      if (!text.ok()) {
        if (NotPermitted(text.error(), "ListKeyRotations")) {
          WarnOnce(list_denied_, "kms:ListKeyRotations", text.error(),
                   "key versions come from this gateway's own rotations (RotateKeyOnDemand) only: a rotation KMS "
                   "makes on its own is not seen until the next rotation run");
        }
        return text.error();
      }
      auto j = json::parse(*text, nullptr, false);
      if (!j.is_object()) return MakeError(ErrorCode::kUnavailable, "ListKeyRotations: the answer is not JSON");
      if (j.contains("Rotations") && j["Rotations"].is_array()) count += static_cast<int64_t>(j["Rotations"].size());
      if (!j.value("Truncated", false) || !j.contains("NextMarker")) return count;
      req["Marker"] = j["NextMarker"];
    }
    return count;
  }

  // Makes a rotation KMS did on its own a new version. Best effort: with
  // KMS unreachable, or ListKeyRotations not allowed or not implemented,
  // the versions stay as the registry has them (not allowed: KMS is not
  // asked again, and the versions are the gateway's own rotations only).
  void SyncWithKms() {
    if (list_denied_.load()) return;
    auto arn = Arn();
    if (!arn.ok()) return;
    auto listed = KmsRotations(*arn);
    if (!listed.ok()) {
      if (list_denied_.load()) return;  // said once, by KmsRotations
      if (!sync_warned_.exchange(true)) {
        spdlog::warn("KMS key {}: cannot list its rotations, so rotations KMS makes on its own are not seen: {}",
                     key_id_, listed.error().message);
      }
      return;
    }
    auto s = repo_->Advance(row_key_, [&](const std::optional<KeyVersionRecord>& row) -> Result<KeyVersionChange> {
      Latest latest = ReadLatest(row);
      KeyVersionChange change;
      if (!latest.known) {
        change.latest_material = std::to_string(*listed);
        return change;
      }
      if (*listed <= latest.rotations) return change;
      spdlog::warn("KMS key {} was rotated outside the gateway ({} rotations listed, {} known): version {} is now "
                   "primary; a key rotation run re-encrypts the credentials", key_id_, *listed, latest.rotations,
                   latest.version + 1);
      change.next = NewVersion(*listed);
      return change;
    });
    if (!s.ok()) spdlog::warn("KMS key {}: cannot record its versions: {}", key_id_, s.error().message);
  }

  // The ARN of the key ENCRYPTION_KEY_ID names, resolved once: from
  // DescribeKey, or where that is not permitted from the KeyId of an Encrypt
  // answer (the key KMS resolved the reference to, as DescribeKey would).
  Result<std::string> Arn() DYAD_LOCKS_EXCLUDED(mu_) {
    {
      MutexLock lock(&mu_);
      if (!arn_.empty()) return arn_;
    }
    std::string arn;
    if (!describe_denied_.load()) {
      auto text = client_->Call("DescribeKey", json{{"KeyId", reference_}}.dump());
      if (text.ok()) {
        auto j = json::parse(*text, nullptr, false);
        if (j.is_object() && j.contains("KeyMetadata") && j["KeyMetadata"].is_object()) {
          arn = j["KeyMetadata"].value("Arn", "");
        }
        if (arn.empty()) return MakeError(ErrorCode::kUnavailable, "DescribeKey: the answer has no KeyMetadata.Arn");
      } else if (NotPermitted(text.error(), "DescribeKey")) {
        DescribeDenied(text.error());
      } else {
        return text.error();
      }
    }
    if (arn.empty()) {
      DYAD_ASSIGN_OR_RETURN(arn, EncryptProbe());
    }
    DYAD_RETURN_IF_ERROR(CheckResolved(arn));
    MutexLock lock(&mu_);
    if (arn_.empty()) arn_ = arn;
    return arn_;
  }

  // A resolved ARN names a key (not an alias), and the very key that a key
  // id or key ARN in ENCRYPTION_KEY_ID names.
  Status CheckResolved(const std::string& arn) const {
    bool ok = arn.starts_with("arn:") && arn.find(":key/") != std::string::npos;
    if (ok && reference_.starts_with("arn:") && reference_.find(":key/") != std::string::npos) ok = arn == reference_;
    else if (ok && !reference_.starts_with("arn:") && !reference_.starts_with("alias/")) {
      ok = arn.ends_with(":key/" + reference_);
    }
    if (!ok) {
      return MakeError(ErrorCode::kDataLoss, "KMS answered for key '" + arn + "', which is not a key that '" +
                                                 reference_ + "' names");
    }
    return OkStatus();
  }

  // kms:Encrypt of a constant: the ARN of the key that answered.
  Result<std::string> EncryptProbe() {
    json request = {{"KeyId", reference_}, {"Plaintext", Base64Encode(kProbePlaintext)}};
    DYAD_ASSIGN_OR_RETURN(std::string text, client_->Call("Encrypt", request.dump()));
    auto j = json::parse(text, nullptr, false);
    if (!j.is_object()) return MakeError(ErrorCode::kUnavailable, "Encrypt: the answer is not a JSON object");
    std::string answered = j.value("KeyId", "");
    if (answered.empty() || !j.contains("CiphertextBlob")) {
      return MakeError(ErrorCode::kUnavailable, "Encrypt: the answer has no KeyId or CiphertextBlob");
    }
    return answered;
  }

  Status ProbeByEncrypt() DYAD_LOCKS_EXCLUDED(mu_) {
    DYAD_ASSIGN_OR_RETURN(std::string answered, EncryptProbe());
    MutexLock lock(&mu_);
    if (!arn_.empty() && answered != arn_) {
      return MakeError(ErrorCode::kFailedPrecondition, "KMS key " + key_id_ + " is now '" + answered +
                                                           "', not the key '" + arn_ + "' this process resolved");
    }
    return OkStatus();
  }

  void DescribeDenied(const Error& e) {
    WarnOnce(describe_denied_, "kms:DescribeKey", e,
             "the key's ARN is learnt from an Encrypt answer and health probes the key with kms:Encrypt, without "
             "its state by name");
  }

  // One log line per missing permission, the first time it is missed; the
  // flag then sends later calls straight to what works without it.
  void WarnOnce(std::atomic<bool>& denied, const char* permission, const Error& e, const char* instead) {
    if (denied.exchange(true)) return;
    spdlog::warn("KMS key {}: {} is not permitted ({}); {}. Grant {} for the full feature", key_id_, permission,
                 e.message, instead, permission);
  }

  // Calls `action` and checks that the key that answered is ours: a
  // ciphertext of another key must never decrypt as one of ours.
  Result<json> Send(const std::string& action, const json& request, const std::string& arn) {
    std::string body = request.dump();  // Encrypt's holds a data key
    auto sent = client_->Call(action, body);
    Cleanse(body);
    DYAD_ASSIGN_OR_RETURN(std::string text, std::move(sent));
    auto j = json::parse(text, nullptr, false);
    Cleanse(text);
    if (!j.is_object()) return MakeError(ErrorCode::kUnavailable, action + ": the answer is not a JSON object");
    std::string answered = j.value("KeyId", "");
    if (answered != arn) {
      return MakeError(ErrorCode::kDataLoss, action + ": answered by KMS key '" + answered + "', not the configured '" +
                                                 arn + "'");
    }
    return j;
  }

  // The secret a data key protects, as its EncryptionContext: KMS then
  // refuses to unwrap it under any other name. Nothing for an empty context.
  static void WithContext(json& request, const char* field, std::string_view context) {
    if (!context.empty()) request[field] = json{{"secret", std::string(context)}};
  }

  static Result<std::string> Bytes(json& answer, const char* field, const std::string& action) {
    auto it = answer.find(field);
    if (it == answer.end() || !it->is_string()) {
      return MakeError(ErrorCode::kUnavailable, action + ": the answer has no " + field);
    }
    auto bytes = Base64Decode(it->get<std::string>());
    Cleanse(it->get_ref<std::string&>());
    if (!bytes) return MakeError(ErrorCode::kUnavailable, action + ": " + field + " is not base64");
    return std::move(*bytes);
  }

  const std::string kind_ = "aws-kms";
  const std::string key_id_, reference_, row_key_;
  std::unique_ptr<AwsJsonClient> client_;
  std::shared_ptr<KeyVersionRepository> repo_;
  const Clock& clock_;
  KeyVersionBook book_;  // the versions, as the registry has them
  std::atomic<bool> sync_warned_{false};
  // Permissions KMS refused (once refused, not asked for again).
  std::atomic<bool> describe_denied_{false}, reencrypt_denied_{false}, list_denied_{false};
  Mutex mu_;
  std::string arn_ DYAD_GUARDED_BY(mu_);
};

}  // namespace

std::string KmsKeyReference(const std::string& key_id) {
  bool uuid = key_id.size() == 36 && key_id.find_first_not_of("0123456789abcdefABCDEF-") == std::string::npos;
  if (uuid || key_id.starts_with("arn:") || key_id.starts_with("alias/") || key_id.starts_with("mrk-")) return key_id;
  return "alias/" + key_id;
}

Result<std::unique_ptr<KeyManager>> NewKmsKeyManager(std::string key_id, std::unique_ptr<AwsJsonClient> client,
                                                     std::shared_ptr<KeyVersionRepository> versions,
                                                     const Clock& clock) {
  if (key_id.empty()) return MakeError(ErrorCode::kInvalidArgument, "ENCRYPTION_KEY_ID: is empty");
  if (!versions) return MakeError(ErrorCode::kInvalidArgument, "KMS key manager: no key version repository");
  auto km = std::make_unique<KmsKeyManager>(std::move(key_id), std::move(client), std::move(versions), clock);
  DYAD_RETURN_IF_ERROR(km->Init());
  return std::unique_ptr<KeyManager>(std::move(km));
}

}  // namespace dyad
