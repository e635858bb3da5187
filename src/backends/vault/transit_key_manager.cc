#include "backends/vault/transit_key_manager.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "backends/key_binding.h"
#include "backends/key_version_book.h"
#include "core/encoding.h"
#include "core/mutex.h"
#include "core/parallel.h"
#include "core/time_format.h"

namespace dyad {
namespace {

using nlohmann::json;

constexpr uint32_t kMaxVersion = 1u << 30;
// Items per batch_input call: two JSON strings each, under OpenBao's limit
// of 1000 strings in a request body.
constexpr size_t kMaxBatch = 250;

// The N of "vault:vN:…": decimal, no sign or leading zero, something after.
Result<uint32_t> CiphertextVersion(std::string_view c) {
  constexpr std::string_view kPrefix = "vault:v";
  if (!c.starts_with(kPrefix)) return MakeError(ErrorCode::kDataLoss, "not a Transit ciphertext (no 'vault:v' prefix)");
  c.remove_prefix(kPrefix.size());
  size_t colon = c.find(':');
  if (colon == std::string_view::npos || colon == 0 || colon > 9 || colon + 1 == c.size() || c[0] == '0') {
    return MakeError(ErrorCode::kDataLoss, "not a Transit ciphertext (malformed 'vault:vN:' prefix)");
  }
  uint32_t v = 0;
  for (size_t i = 0; i < colon; ++i) {
    if (c[i] < '0' || c[i] > '9') return MakeError(ErrorCode::kDataLoss, "not a Transit ciphertext (version not a number)");
    v = v * 10 + static_cast<uint32_t>(c[i] - '0');
  }
  if (v > kMaxVersion) return MakeError(ErrorCode::kDataLoss, "Transit ciphertext version out of range");
  return v;
}

// What Transit's own messages mean here: a ciphertext that fails
// authentication is data loss; one older than min_decryption_version is a
// retired version; anything else keeps its code.
Error TransitError(Error e) {
  const std::string& m = e.message;
  if (m.find("message authentication failed") != std::string::npos || m.find("invalid ciphertext") != std::string::npos ||
      m.find("unable to decrypt") != std::string::npos) {
    e.code = ErrorCode::kDataLoss;
  } else if (m.find("too old") != std::string::npos || m.find("disallowed by policy") != std::string::npos) {
    e.code = ErrorCode::kFailedPrecondition;
  }
  return e;
}

bool ValidName(std::string_view s, bool slashes) {
  if (s.empty() || s.size() > 256 || s.front() == '/' || s.back() == '/') return false;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-' || (slashes && c == '/');
    if (!ok) return false;
  }
  return s.find("//") == std::string_view::npos && s != "." && s != "..";
}

struct TransitKey {
  uint32_t latest = 0;
  uint32_t min_decryption = 1;
};

// Versions in the registry follow Transit's: version N of the row is
// Transit's key version N, the primary the latest. A version is added when
// Vault is seen to have it (our rotation, someone else's, or an encrypt
// answered under a newer one), and retired when it falls below
// min_decryption_version. The registry never runs ahead of Vault: a key
// whose latest version is below the registry's was deleted and created
// again, and is refused.
class TransitKeyManager final : public KeyManager {
 public:
  TransitKeyManager(TransitOptions options, VaultClient& client, std::shared_ptr<KeyVersionRepository> versions,
                    const Clock& clock, Random& random)
      : options_(std::move(options)),
        key_id_(options_.mount + "/" + options_.key),
        row_key_("vault-transit:" + key_id_),
        keys_path_(options_.mount + "/keys/" + options_.key),
        client_(client),
        repo_(std::move(versions)),
        clock_(clock),
        random_(random),
        book_(repo_, row_key_, clock, "Transit key " + key_id_) {}

  const std::string& Kind() const override { return kind_; }
  const std::string& KeyId() const override { return key_id_; }

  // No Vault call: the key is ensured on first use, so the gateway starts
  // while Vault is down (as the KMS key manager resolves its key lazily).
  Status Init() { return book_.Reload(); }

  Result<DataKey> GenerateDataKey(std::string_view context) override {
    DYAD_RETURN_IF_ERROR(EnsureKey());
    return FreshDataKey(random_, kBoundDekSize, context);
  }

  Result<WrappedKey> WrapKey(const SecretBytes& key, std::string_view context) override {
    DYAD_RETURN_IF_ERROR(EnsureKey());
    std::vector<json> input(1);
    input[0]["plaintext"] = Base64Encode(BindKey(key, context).view());
    // An encrypt answered under an older version than the registry's primary
    // raced another instance's rotation (kConflict from Learn): asked once
    // more, Vault's latest is the new primary.
    Result<std::string> wrapped = std::string();
    Result<uint32_t> version = 0u;
    for (int attempt = 0; attempt < 2; ++attempt) {
      wrapped = std::move(Batch("transit.encrypt", "encrypt", input, "ciphertext", 1).front());
      if (!wrapped.ok()) break;
      version = Learn(*wrapped);
      if (version.ok() || version.code() != ErrorCode::kConflict) break;
    }
    WipeStrings(input[0]);
    if (!wrapped.ok()) return wrapped.error();
    if (!version.ok()) return version.error();
    return WrappedKey{std::move(wrapped).value(), *version};
  }

  Result<SecretBytes> Decrypt(uint32_t version, std::string_view wrapped, std::string_view context) override {
    DYAD_RETURN_IF_ERROR(EnsureKey());  // first: a process that only reads learns the versions here
    DYAD_RETURN_IF_ERROR(CheckWrapped(version, wrapped));
    std::vector<json> input(1);
    input[0]["ciphertext"] = std::string(wrapped);
    auto plain = std::move(DecryptBatch(input, 1).front());
    if (!plain.ok()) return plain.error();
    return UnbindKey(*plain, context, "Transit");
  }

  // One batch decrypt for them all.
  std::vector<Result<SecretBytes>> DecryptMany(const std::vector<DecryptItem>& items, size_t parallelism) override {
    std::vector<Result<SecretBytes>> out(items.size(), Result<SecretBytes>(SecretBytes()));
    if (Status s = EnsureKey(); !s.ok()) {
      for (auto& r : out) r = s.error();
      return out;
    }
    std::vector<size_t> sent;
    std::vector<json> input;
    for (size_t i = 0; i < items.size(); ++i) {
      if (Status s = CheckWrapped(items[i].version, items[i].wrapped); !s.ok()) {
        out[i] = s.error();
        continue;
      }
      json one;
      one["ciphertext"] = std::string(items[i].wrapped);
      input.push_back(std::move(one));
      sent.push_back(i);
    }
    if (sent.empty()) return out;
    auto plains = DecryptBatch(input, parallelism);
    for (size_t k = 0; k < sent.size(); ++k) {
      out[sent[k]] = plains[k].ok() ? UnbindKey(*plains[k], items[sent[k]].context, "Transit")
                                    : Result<SecretBytes>(plains[k].error());
      plains[k] = SecretBytes();
    }
    return out;
  }

  Result<WrappedKey> ReEncrypt(uint32_t version, std::string_view wrapped, std::string_view from_context,
                               std::string_view to_context) override {
    return std::move(ReEncryptMany({ReEncryptItem{version, wrapped, from_context, to_context}}, 1).front());
  }

  // `rewrap` (one batch call) for the items that keep their context while
  // the policy allows it; the others, and all of them once rewrap was
  // refused, by one batch decrypt and one batch encrypt, the DEKs passing
  // through this process (wiped after).
  std::vector<Result<WrappedKey>> ReEncryptMany(const std::vector<ReEncryptItem>& items, size_t parallelism) override {
    std::vector<Result<WrappedKey>> out(items.size(), Result<WrappedKey>(WrappedKey{}));
    if (Status s = EnsureKey(); !s.ok()) {
      for (auto& r : out) r = s.error();
      return out;
    }
    std::vector<size_t> rewrap, moved;
    for (size_t i = 0; i < items.size(); ++i) {
      if (Status s = CheckWrapped(items[i].version, items[i].wrapped); !s.ok()) {
        out[i] = s.error();
      } else if (items[i].from_context == items[i].to_context && !rewrap_denied_.load()) {
        rewrap.push_back(i);
      } else {
        moved.push_back(i);
      }
    }
    if (!rewrap.empty()) {
      std::vector<json> input(rewrap.size());
      for (size_t k = 0; k < rewrap.size(); ++k) input[k]["ciphertext"] = std::string(items[rewrap[k]].wrapped);
      auto answers = Batch("transit.rewrap", "rewrap", input, "ciphertext", parallelism);
      for (size_t k = 0; k < rewrap.size(); ++k) {
        Result<std::string>& a = answers[k];
        if (!a.ok() && a.code() == ErrorCode::kPermissionDenied) {
          if (!rewrap_denied_.exchange(true)) {
            spdlog::warn("Transit key {}: rewrap is not permitted ({}); data keys are re-encrypted with decrypt + "
                         "encrypt instead, passing through this process; the token needs 'update' on {}/rewrap/{} to "
                         "keep them inside Vault", key_id_, a.error().message, options_.mount, options_.key);
          }
          moved.push_back(rewrap[k]);
        } else {
          out[rewrap[k]] = Wrapped(std::move(a));
        }
      }
    }
    if (!moved.empty()) Move(items, moved, parallelism, out);
    return out;
  }

  Result<uint32_t> Rotate() override {
    DYAD_RETURN_IF_ERROR(EnsureKey());
    const uint32_t before = book_.Primary();
    if (auto rotated = Call("transit.rotate", "POST", keys_path_ + "/rotate", nullptr); !rotated.ok()) {
      return rotated.error();
    }
    DYAD_ASSIGN_OR_RETURN(TransitKey key, ReadKey());
    if (key.latest <= before) {
      return MakeError(ErrorCode::kUnavailable, "Transit key " + key_id_ + ": rotated, but its latest version is still " +
                                                    std::to_string(key.latest));
    }
    DYAD_RETURN_IF_ERROR(Sync(key));
    spdlog::info("Transit key {} rotated: version {}", key_id_, key.latest);
    return key.latest;
  }

  // A retired version stays retired.
  Status BeginRetire(uint32_t version) override {
    DYAD_ASSIGN_OR_RETURN(std::string now, CurrentState(version));
    if (now == "retired") return OkStatus();
    return book_.SetState(version, "retiring");
  }

  // Retired in the gateway only (the registry): Vault still decrypts it, so
  // another instance with its own registry keeps reading its blobs.
  // With retire_in_vault, said once: a rotation calls this (not
  // RetireEverywhere) when it could not list the store.
  Status Retire(uint32_t version) override {
    DYAD_RETURN_IF_ERROR(book_.SetState(version, "retired"));
    if (options_.retire_in_vault && !retire_local_warned_.exchange(true)) {
      spdlog::warn("Transit key {}: version {} retired in the gateway only, Vault still decrypts it "
                   "(VAULT_TRANSIT_RETIRE): the rotation could not list the secret store, so another instance's "
                   "credentials may still use it; VAULT_TRANSIT_RETIRE needs 'list' on "
                   "<kv mount>/metadata/<prefix>/providers",
                   key_id_, version);
    }
    return OkStatus();
  }

  // Retire(), then Vault's min_decryption_version is raised (with
  // retire_in_vault) to the oldest version the registry does not have
  // retired, never past a version still active or retiring: retiring 2 while
  // 1 is kept raises nothing, and retiring 1 later raises it past both.
  Status RetireEverywhere(uint32_t version) override {
    DYAD_RETURN_IF_ERROR(book_.SetState(version, "retired"));
    if (!options_.retire_in_vault) return OkStatus();
    uint32_t oldest_live = book_.Primary();
    for (const auto& [v, row] : book_.Versions()) {
      if (row.state != "retired") {
        oldest_live = v;
        break;
      }
    }
    DYAD_ASSIGN_OR_RETURN(TransitKey key, ReadKey());
    if (oldest_live <= key.min_decryption) return OkStatus();
    json body = {{"min_decryption_version", oldest_live}};
    auto set = Call("transit.config", "POST", keys_path_ + "/config", &body);
    if (!set.ok()) {
      return MakeError(set.code(), "key version " + std::to_string(version) +
                                       " is retired in the gateway, but Vault still decrypts it: " + set.error().message);
    }
    spdlog::info("Transit key {}: min_decryption_version raised to {}", key_id_, oldest_live);
    key.min_decryption = oldest_live;
    return Sync(key);
  }

  Result<std::string> CurrentState(uint32_t version) override { return book_.CurrentState(version); }

  // Reads the key (creating it if this process has not yet): it answers,
  // encrypts and decrypts; its versions are recorded on the way.
  Status Probe() override {
    if (!Ensured()) return EnsureKey();
    DYAD_ASSIGN_OR_RETURN(TransitKey key, ReadKey());
    return Sync(key);
  }

  // Vault is asked at most once a second (status pages poll this).
  Result<KeyState> Describe() override {
    if (book_.SyncDue()) {
      Status s = Ensured() ? Probe() : EnsureKey();
      if (!s.ok() && !sync_warned_.exchange(true)) {
        spdlog::warn("Transit key {}: cannot read its versions from Vault; the registry's stand: {}", key_id_,
                     s.error().message);
      }
    }
    return KnownState();
  }

  Result<KeyState> KnownState() override { return book_.KnownState(kind_, key_id_); }
  void MarkStale() override { book_.MarkStale(); }

 private:
  Result<json> Call(const std::string& op, const std::string& method, const std::string& path, const json* body) {
    VaultCall call;
    call.op = op;
    call.method = method;
    call.path = path;
    call.body = body;
    return client_.Call(call);
  }

  // GET keys/<key>: its latest and min_decryption versions, checked.
  Result<TransitKey> ReadKey() {
    DYAD_ASSIGN_OR_RETURN(json answer, Call("transit.read-key", "GET", keys_path_, nullptr));
    auto bad = [&](const std::string& what) {
      return MakeError(ErrorCode::kUnavailable, "transit.read-key: the answer's " + what);
    };
    if (!answer.contains("data") || !answer["data"].is_object()) return bad("data is not an object");
    const json& d = answer["data"];
    auto version = [&](const char* field) -> Result<uint32_t> {
      if (!d.contains(field) || !d[field].is_number_integer()) return bad(std::string(field) + " is not a number");
      auto v = d[field].get<int64_t>();
      if (v < 0 || v > kMaxVersion) return bad(std::string(field) + " is out of range");
      return static_cast<uint32_t>(v);
    };
    TransitKey key;
    DYAD_ASSIGN_OR_RETURN(key.latest, version("latest_version"));
    DYAD_ASSIGN_OR_RETURN(key.min_decryption, version("min_decryption_version"));
    if (key.latest < 1) return bad("latest_version is below 1");
    if (key.min_decryption < 1) key.min_decryption = 1;
    if (key.min_decryption > key.latest) return bad("min_decryption_version is above latest_version");
    for (const char* feature : {"supports_encryption", "supports_decryption"}) {
      if (d.contains(feature) && d[feature] == false) {
        return MakeError(ErrorCode::kFailedPrecondition, "Transit key " + key_id_ + " is of type '" +
                                                             d.value("type", std::string("?")) +
                                                             "', which cannot encrypt and decrypt");
      }
    }
    return key;
  }

  bool Ensured() {
    MutexLock lock(&mu_);
    return ensured_;
  }

  // The key exists in Vault (created as aes256-gcm96 when missing) and its
  // versions are in the registry; once per process.
  Status EnsureKey() {
    if (Ensured()) return OkStatus();
    auto key = ReadKey();
    if (!key.ok() && key.code() == ErrorCode::kNotFound) {
      json body = {{"type", "aes256-gcm96"}};
      auto made = Call("transit.create-key", "POST", keys_path_, &body);
      if (!made.ok()) return made.error();
      spdlog::info("Transit key {} created (aes256-gcm96)", key_id_);
      key = ReadKey();
    }
    if (!key.ok()) return key.error();
    DYAD_RETURN_IF_ERROR(Sync(*key));
    MutexLock lock(&mu_);
    ensured_ = true;
    return OkStatus();
  }

  // Makes the registry's versions Vault's: one version per Transit version
  // up to `key.latest`, those below min_decryption_version retired.
  Status Sync(const TransitKey& key) {
    for (;;) {
      bool more = false;
      auto advanced = repo_->Advance(row_key_, [&](const std::optional<KeyVersionRecord>& row) -> Result<KeyVersionChange> {
        const uint32_t have = row ? row->version : 0;
        if (have > key.latest) {
          return MakeError(ErrorCode::kFailedPrecondition,
                           "Transit key " + key_id_ + " has versions up to " + std::to_string(key.latest) +
                               " but the registry records " + std::to_string(have) +
                               ": was the key deleted and created again? Its old data keys cannot be decrypted");
        }
        KeyVersionChange change;
        if (have < key.latest) {
          change.next = KeyVersionRecord{0, "active", FormatIso8601(clock_.WallNow()), "", 0};
          more = have + 1 < key.latest;
        }
        return change;
      });
      if (!advanced.ok()) return advanced.error();
      if (!more) break;
    }
    DYAD_RETURN_IF_ERROR(book_.Reload());
    std::vector<uint32_t> below;
    for (const auto& [v, row] : book_.Versions()) {
      if (v < key.min_decryption && row.state != "retired") below.push_back(v);
    }
    for (uint32_t v : below) {
      spdlog::warn("Transit key {}: version {} is below Vault's min_decryption_version {}: retired", key_id_, v,
                   key.min_decryption);
      DYAD_RETURN_IF_ERROR(repo_->SetState(row_key_, v, "retired"));
    }
    return below.empty() ? OkStatus() : book_.Reload();
  }

  // The version of a ciphertext Transit just made: the primary, or a newer
  // one (Vault's key rotated by someone else), which is recorded first.
  Result<uint32_t> Learn(const std::string& ciphertext) {
    DYAD_ASSIGN_OR_RETURN(uint32_t v, CiphertextVersion(ciphertext));
    DYAD_ASSIGN_OR_RETURN(uint32_t primary, book_.LivePrimary());
    if (v < primary) {
      // Still usable (not retired, Vault decrypts it, Vault's key is not
      // behind the registry): the call raced another instance's rotation,
      // kConflict, and the caller may ask again.
      auto below = [&](const std::string& why) {
        return MakeError(ErrorCode::kFailedPrecondition, "Transit key " + key_id_ + " wrapped under version " +
                                                             std::to_string(v) + ", below the primary " +
                                                             std::to_string(primary) + " the registry records" + why);
      };
      if (auto row = book_.Find(v); row && row->state == "retired") return below(", and retired");
      DYAD_ASSIGN_OR_RETURN(TransitKey key, ReadKey());
      if (v < key.min_decryption || key.latest < primary) {
        return below(" (min_encryption_version, or a re-created key?)");
      }
      return MakeError(ErrorCode::kConflict, "Transit key " + key_id_ + " wrapped under version " + std::to_string(v) +
                                                 " while another instance rotated it to " + std::to_string(primary));
    }
    if (v > primary) {
      DYAD_ASSIGN_OR_RETURN(TransitKey key, ReadKey());
      if (key.latest < v) return MakeError(ErrorCode::kDataLoss, "Transit answered under version " + std::to_string(v) +
                                                                     ", above the key's latest " + std::to_string(key.latest));
      spdlog::warn("Transit key {}: Vault wraps under version {}, newer than the primary {}: rotated outside the "
                   "gateway? Version {} is now primary; a key rotation run re-encrypts the credentials",
                   key_id_, v, primary, v);
      DYAD_RETURN_IF_ERROR(Sync(key));
    }
    return v;
  }

  Result<WrappedKey> Wrapped(Result<std::string> ciphertext) {
    if (!ciphertext.ok()) return ciphertext.error();
    DYAD_ASSIGN_OR_RETURN(uint32_t v, Learn(*ciphertext));
    return WrappedKey{std::move(ciphertext).value(), v};
  }

  // Decrypt + encrypt of the items `which`: one batch each way.
  void Move(const std::vector<ReEncryptItem>& items, const std::vector<size_t>& which, size_t parallelism,
            std::vector<Result<WrappedKey>>& out) {
    std::vector<json> input(which.size());
    for (size_t k = 0; k < which.size(); ++k) input[k]["ciphertext"] = std::string(items[which[k]].wrapped);
    auto plains = DecryptBatch(input, parallelism);
    std::vector<size_t> sealed;  // positions in `which` that go on to encrypt
    std::vector<json> plain_in;
    for (size_t k = 0; k < which.size(); ++k) {
      const ReEncryptItem& item = items[which[k]];
      if (!plains[k].ok()) {
        out[which[k]] = plains[k].error();
        continue;
      }
      auto dek = UnbindKey(*plains[k], item.from_context, "Transit");
      plains[k] = SecretBytes();
      if (!dek.ok()) {
        out[which[k]] = dek.error();
        continue;
      }
      json one;
      one["plaintext"] = Base64Encode(BindKey(*dek, item.to_context).view());
      plain_in.push_back(std::move(one));
      sealed.push_back(k);
    }
    if (sealed.empty()) return;
    auto wrapped = Batch("transit.encrypt", "encrypt", plain_in, "ciphertext", parallelism);
    for (auto& one : plain_in) WipeStrings(one);
    for (size_t j = 0; j < sealed.size(); ++j) out[which[sealed[j]]] = Wrapped(std::move(wrapped[j]));
  }

  // Batch decrypt: each item's plaintext, base64-decoded.
  std::vector<Result<SecretBytes>> DecryptBatch(const std::vector<json>& input, size_t parallelism) {
    auto answers = Batch("transit.decrypt", "decrypt", input, "plaintext", parallelism);
    std::vector<Result<SecretBytes>> out(answers.size(), Result<SecretBytes>(SecretBytes()));
    for (size_t i = 0; i < answers.size(); ++i) {
      Result<std::string>& a = answers[i];
      if (!a.ok()) {
        out[i] = a.error();
        continue;
      }
      auto bytes = Base64Decode(*a);
      Cleanse(*a);
      if (!bytes) {
        out[i] = MakeError(ErrorCode::kDataLoss, "transit.decrypt: the answer's plaintext is not base64");
        continue;
      }
      out[i] = SecretBytes(*bytes);
      Cleanse(*bytes);
    }
    return out;
  }

  // Transit calls (`verb` under the mount, for the key) for many inputs:
  // each item's `field`, or its error. One item goes alone; more go as
  // batch_input, at most kMaxBatch to a call (OpenBao refuses a request
  // body of more than 1000 JSON strings: "refused JSON input due to high
  // complexity"), the calls on up to `parallelism` threads. Plaintext
  // strings of the answers are wiped; the caller wipes its input.
  std::vector<Result<std::string>> Batch(const std::string& op, const std::string& verb, const std::vector<json>& input,
                                         const char* field, size_t parallelism) {
    const std::string path = options_.mount + "/" + verb + "/" + options_.key;
    std::vector<Result<std::string>> out(input.size(), Result<std::string>(std::string()));
    if (input.size() == 1) {
      out[0] = One(op, path, input[0], field);
      return out;
    }
    const size_t calls = (input.size() + kMaxBatch - 1) / kMaxBatch;
    ParallelFor(calls, parallelism, [&](size_t c) {
      const size_t begin = c * kMaxBatch, end = std::min(input.size(), begin + kMaxBatch);
      BatchCall(op, path, input, begin, end, field, out);
    });
    return out;
  }

  // One batch_input call for input[begin, end), with
  // partial_failure_response_code 200 so that HashiCorp Vault answers a
  // partly failed batch with its results (OpenBao 2.7 always does, and
  // warns that it ignores the parameter). Vault answers a batch whose items
  // all failed with a 400 that names none of them: then each is sent alone,
  // for its own error.
  void BatchCall(const std::string& op, const std::string& path, const std::vector<json>& input, size_t begin,
                 size_t end, const char* field, std::vector<Result<std::string>>& out) {
    json body = {{"batch_input", json::array()}, {"partial_failure_response_code", 200}};
    for (size_t i = begin; i < end; ++i) body["batch_input"].push_back(input[i]);
    auto answer = Call(op, "POST", path, &body);
    WipeStrings(body);  // a copy of the input, which may hold data keys
    if (!answer.ok() && answer.code() == ErrorCode::kInvalidArgument) {
      for (size_t i = begin; i < end; ++i) out[i] = One(op, path, input[i], field);
      return;
    }
    if (!answer.ok()) {
      for (size_t i = begin; i < end; ++i) out[i] = TransitError(answer.error());
      return;
    }
    const json* results = nullptr;
    if (answer->contains("data") && (*answer)["data"].is_object() && (*answer)["data"].contains("batch_results")) {
      results = &(*answer)["data"]["batch_results"];
    }
    if (!results || !results->is_array() || results->size() != end - begin) {
      for (size_t i = begin; i < end; ++i) {
        out[i] = MakeError(ErrorCode::kUnavailable, op + ": the answer's batch_results do not match the batch_input");
      }
    } else {
      for (size_t i = begin; i < end; ++i) out[i] = Field(op, (*results)[i - begin], field);
    }
    WipeStrings(*answer);
  }

  Result<std::string> One(const std::string& op, const std::string& path, const json& input, const char* field) {
    auto answer = Call(op, "POST", path, &input);
    if (!answer.ok()) return TransitError(answer.error());
    if (!answer->contains("data") || !(*answer)["data"].is_object()) {
      WipeStrings(*answer);
      return MakeError(ErrorCode::kUnavailable, op + ": the answer has no data");
    }
    auto out = Field(op, (*answer)["data"], field);
    WipeStrings(*answer);
    return out;
  }

  // An item of an answer: its `field` string, or its "error".
  static Result<std::string> Field(const std::string& op, const json& item, const char* field) {
    if (!item.is_object()) return MakeError(ErrorCode::kUnavailable, op + ": an answer item is not an object");
    if (item.contains("error") && item["error"].is_string() && !item["error"].get_ref<const std::string&>().empty()) {
      std::string e = item["error"].get<std::string>();
      if (e.size() > 300) e.resize(300);
      return TransitError(MakeError(ErrorCode::kInvalidArgument, op + ": " + e));
    }
    if (!item.contains(field) || !item[field].is_string()) {
      return MakeError(ErrorCode::kUnavailable, op + ": the answer has no " + field);
    }
    return item[field].get<std::string>();
  }

  static void WipeStrings(json& j) {
    if (j.is_string()) Cleanse(j.get_ref<std::string&>());
    else if (j.is_structured()) {
      for (auto& v : j) WipeStrings(v);
    }
  }

  // A version the registry has not retired, which the ciphertext's own
  // "vault:vN:" names.
  Status CheckWrapped(uint32_t version, std::string_view wrapped) {
    DYAD_RETURN_IF_ERROR(CheckUsable(version));
    DYAD_ASSIGN_OR_RETURN(uint32_t named, CiphertextVersion(wrapped));
    if (named != version) {
      return MakeError(ErrorCode::kDataLoss, "the wrapped key is Transit version " + std::to_string(named) +
                                                 ", not version " + std::to_string(version) + " as recorded");
    }
    return OkStatus();
  }

  // A version this process has not seen may come from another instance's
  // rotation: the registry is read again before refusing it.
  Status CheckUsable(uint32_t version) {
    if (auto fresh = book_.LivePrimary(); !fresh.ok()) return fresh.error();  // another instance's retirement
    return book_.CheckUsable(version, [&]() -> Status {
      // Above the known primary: another instance with its own registry
      // may have rotated; Vault is asked (at most once a second).
      if (version > book_.Primary() && VaultCheckDue()) {
        DYAD_ASSIGN_OR_RETURN(TransitKey key, ReadKey());
        DYAD_RETURN_IF_ERROR(Sync(key));
      }
      return OkStatus();
    });
  }

  bool VaultCheckDue() DYAD_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    auto now = clock_.Now();
    if (last_vault_check_ && now - *last_vault_check_ < std::chrono::seconds(1)) return false;
    last_vault_check_ = now;
    return true;
  }

  const std::string kind_ = "vault-transit";
  const TransitOptions options_;
  const std::string key_id_, row_key_, keys_path_;
  VaultClient& client_;
  std::shared_ptr<KeyVersionRepository> repo_;
  const Clock& clock_;
  Random& random_;
  KeyVersionBook book_;  // the versions, as the registry has them
  std::atomic<bool> rewrap_denied_{false}, sync_warned_{false}, retire_local_warned_{false};
  Mutex mu_;
  bool ensured_ DYAD_GUARDED_BY(mu_) = false;
  std::optional<Clock::Instant> last_vault_check_ DYAD_GUARDED_BY(mu_);  // for an unknown version
};

}  // namespace

Result<std::unique_ptr<KeyManager>> NewTransitKeyManager(TransitOptions options, VaultClient& client,
                                                         std::shared_ptr<KeyVersionRepository> versions,
                                                         const Clock& clock, Random& random) {
  if (!ValidName(options.key, false)) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "ENCRYPTION_KEY_ID: a Transit key name of letters, digits and ._- is required");
  }
  if (!ValidName(options.mount, true)) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "VAULT_TRANSIT_MOUNT: a mount path of letters, digits, ._- and '/' is required");
  }
  if (!versions) return MakeError(ErrorCode::kInvalidArgument, "Transit key manager: no key version repository");
  auto km = std::make_unique<TransitKeyManager>(std::move(options), client, std::move(versions), clock, random);
  DYAD_RETURN_IF_ERROR(km->Init());
  return std::unique_ptr<KeyManager>(std::move(km));
}

}  // namespace dyad
