#include "testing/memory_backend.h"

#include <map>

#include "core/env_vars.h"
#include "core/mutex.h"
#include "secrets/aes_gcm.h"

namespace dyad::testing {
namespace {

// Key versions in memory; a wrapped key is nonce ‖ AES-GCM(master of its
// version, DEK) with "version:context" as AAD.
class MemoryKeyManager final : public KeyManager {
 public:
  MemoryKeyManager(std::string key_id, Random& random) : key_id_(std::move(key_id)), random_(random) {}

  Status Init() {
    MutexLock lock(&mu_);
    DYAD_RETURN_IF_ERROR(AddVersion());
    return OkStatus();
  }

  const std::string& Kind() const override { return kind_; }
  const std::string& KeyId() const override { return key_id_; }

  Result<DataKey> GenerateDataKey(std::string_view context) override {
    DYAD_ASSIGN_OR_RETURN(SecretBytes dek, Fresh(kAesKeySize));
    MutexLock lock(&mu_);
    DYAD_ASSIGN_OR_RETURN(std::string wrapped, Wrap(primary_, dek, context));
    return DataKey{std::move(dek), std::move(wrapped), primary_};
  }

  Result<WrappedKey> WrapKey(const SecretBytes& key, std::string_view context) override {
    MutexLock lock(&mu_);
    DYAD_ASSIGN_OR_RETURN(std::string wrapped, Wrap(primary_, key, context));
    return WrappedKey{std::move(wrapped), primary_};
  }

  Result<SecretBytes> Decrypt(uint32_t version, std::string_view wrapped, std::string_view context) override {
    MutexLock lock(&mu_);
    return Unwrap(version, wrapped, context);
  }

  Result<WrappedKey> ReEncrypt(uint32_t version, std::string_view wrapped, std::string_view from_context,
                               std::string_view to_context) override {
    MutexLock lock(&mu_);
    DYAD_ASSIGN_OR_RETURN(SecretBytes dek, Unwrap(version, wrapped, from_context));
    DYAD_ASSIGN_OR_RETURN(std::string rewrapped, Wrap(primary_, dek, to_context));
    return WrappedKey{std::move(rewrapped), primary_};
  }

  Result<uint32_t> Rotate() override {
    MutexLock lock(&mu_);
    return AddVersion();
  }

  Status Retire(uint32_t version) override { return SetState(version, "retired"); }
  Status BeginRetire(uint32_t version) override { return SetState(version, "retiring"); }

  Result<KeyState> Describe() override {
    MutexLock lock(&mu_);
    KeyState state{kind_, key_id_, primary_, {}};
    for (const auto& [v, entry] : versions_) state.versions.push_back(entry.info);
    return state;
  }

 private:
  struct Entry {
    SecretBytes master;
    KeyVersionInfo info;
  };

  Result<SecretBytes> Fresh(size_t size) {
    SecretBytes out(size);
    DYAD_RETURN_IF_ERROR(random_.Fill(out.data(), out.size()));
    return out;
  }

  static std::string Aad(uint32_t version, std::string_view context) {
    return std::to_string(version) + ":" + std::string(context);
  }

  Result<uint32_t> AddVersion() DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    DYAD_ASSIGN_OR_RETURN(SecretBytes master, Fresh(kAesKeySize));
    uint32_t version = primary_ + 1;
    versions_[version] = Entry{std::move(master), KeyVersionInfo{version, "active", "", 0}};
    primary_ = version;
    return version;
  }

  Result<std::string> Wrap(uint32_t version, const SecretBytes& dek, std::string_view context)
      DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Entry& entry = versions_.at(version);
    DYAD_ASSIGN_OR_RETURN(SecretBytes nonce, Fresh(kGcmNonceSize));
    std::string n(nonce.view());
    DYAD_ASSIGN_OR_RETURN(std::string sealed, AesGcmSeal(entry.master, n, Aad(version, context), dek.view()));
    ++entry.info.encryptions;
    return n + sealed;
  }

  Result<SecretBytes> Unwrap(uint32_t version, std::string_view wrapped, std::string_view context)
      DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = versions_.find(version);
    if (it == versions_.end()) return MakeError(ErrorCode::kNotFound, "no key version " + std::to_string(version));
    if (it->second.info.state == "retired") {
      return MakeError(ErrorCode::kFailedPrecondition, "key version " + std::to_string(version) + " is retired");
    }
    if (wrapped.size() < kGcmNonceSize + kGcmTagSize) return MakeError(ErrorCode::kDataLoss, "wrapped key too short");
    return AesGcmOpen(it->second.master, wrapped.substr(0, kGcmNonceSize), Aad(version, context),
                      wrapped.substr(kGcmNonceSize));
  }

  Status SetState(uint32_t version, const char* state) {
    MutexLock lock(&mu_);
    auto it = versions_.find(version);
    if (it == versions_.end()) return MakeError(ErrorCode::kNotFound, "no key version " + std::to_string(version));
    if (version == primary_) {
      return MakeError(ErrorCode::kFailedPrecondition, "key version " + std::to_string(version) + " is the primary");
    }
    it->second.info.state = state;
    return OkStatus();
  }

  const std::string kind_ = "memory";
  const std::string key_id_;
  Random& random_;
  Mutex mu_;
  std::map<uint32_t, Entry> versions_ DYAD_GUARDED_BY(mu_);
  uint32_t primary_ DYAD_GUARDED_BY(mu_) = 0;
};

class MemoryBackendFactory final : public BackendFactory {
 public:
  explicit MemoryBackendFactory(std::shared_ptr<MemoryBackendLog> log) : log_(std::move(log)) {}
  const std::string& Name() const override { return name_; }

  Status Check(const Config& config) const override {
    if (config.encryption_mode == "provider") {
      return BadVariable("SECRETS_ENCRYPTION_MODE", "the memory backend has no encryption of its own; use envelope");
    }
    if (config.secrets_prefix.empty()) return BadVariable("SECRETS_PREFIX", "must not be empty");
    return OkStatus();
  }

  Result<Backend> Open(const BackendContext& context) const override {
    Backend b;
    DYAD_ASSIGN_OR_RETURN(b.keys, NewMemoryKeyManager(context.config.encryption_key_id, context.random));
    // Without a conditional write, as Azure Key Vault: its writers hold the
    // provider lease, which the contract suite and the services prove.
    auto store = std::make_unique<MemoryStore>(context.config.secrets_prefix, /*conditional=*/false);
    if (log_) {
      log_->last_store = store.get();
      ++log_->opened;
    }
    b.store = std::move(store);
    return b;
  }

 private:
  const std::string name_ = "memory";
  std::shared_ptr<MemoryBackendLog> log_;
};

}  // namespace

Result<std::unique_ptr<KeyManager>> NewMemoryKeyManager(std::string key_id, Random& random) {
  auto keys = std::make_unique<MemoryKeyManager>(std::move(key_id), random);
  DYAD_RETURN_IF_ERROR(keys->Init());
  return std::unique_ptr<KeyManager>(std::move(keys));
}

Status RegisterMemoryBackend(BackendRegistry& registry, std::shared_ptr<MemoryBackendLog> log) {
  return registry.Register(std::make_unique<MemoryBackendFactory>(std::move(log)));
}

}  // namespace dyad::testing
