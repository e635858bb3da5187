// Test doubles of our own interfaces (never of a cloud API): an in-memory
// SecretStore with injectable failures, an AuditSink that keeps events, and
// a temporary directory.
#pragma once

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "audit/audit_sink.h"
#include "backends/key_manager.h"
#include "backends/secret_store.h"
#include "core/mutex.h"
#include "core/random.h"
#include "registry/rotation_repository.h"
#include "transport/http_transport.h"

namespace dyad::testing {

// Secrets in a map, named `<prefix>/providers/<id>`, each with a revision.
// Conditional by default; `conditional = false` makes it a store without a
// conditional write (Replace is kUnimplemented), as Azure Key Vault is.
class MemoryStore final : public SecretStore {
 public:
  explicit MemoryStore(std::string prefix = "dyad-gateway", bool conditional = true)
      : naming_(std::move(prefix), "/"), conditional_(conditional) {}
  const std::string& Name() const override { return name_; }
  std::string SecretName(std::string_view id) const override { return naming_.Name(id); }
  std::optional<std::string> ProviderIdOf(std::string_view name) const override { return naming_.IdOf(name); }
  std::string ProbeName(std::string_view tag) const override { return naming_.Probe(tag); }
  bool HasConditionalWrites() const override { return conditional_; }

  Result<StoredSecret> Get(const std::string& name) override {
    ++gets;
    if (auto e = Failure()) return *e;
    MutexLock lock(&mu_);
    auto it = data_.find(name);
    if (it == data_.end()) return MakeError(ErrorCode::kNotFound, "no " + name);
    return StoredSecret{it->second.value, std::to_string(it->second.revision)};
  }
  Result<std::string> Create(const std::string& name, std::string_view value) override {
    if (auto e = Failure()) return *e;
    MutexLock lock(&mu_);
    if (data_.count(name)) return MakeError(ErrorCode::kAlreadyExists, "taken");
    return Store(name, value);
  }
  Result<std::string> Replace(const std::string& name, std::string_view value, const std::string& version) override {
    if (auto e = Failure()) return *e;
    MutexLock lock(&mu_);
    if (!conditional_) return MakeError(ErrorCode::kUnimplemented, "no conditional writes");
    auto it = data_.find(name);
    if (it == data_.end()) return MakeError(ErrorCode::kNotFound, "no " + name);
    if (std::to_string(it->second.revision) != version) return MakeError(ErrorCode::kConflict, name + " changed");
    return Store(name, value);
  }
  Result<std::string> Overwrite(const std::string& name, std::string_view value) override {
    if (auto e = Failure()) return *e;
    MutexLock lock(&mu_);
    if (!data_.count(name)) return MakeError(ErrorCode::kNotFound, "no " + name);
    return Store(name, value);
  }
  Status Put(const std::string& name, std::string_view value) override {
    if (auto e = Failure()) return *e;
    MutexLock lock(&mu_);
    Store(name, value);
    return OkStatus();
  }
  Status Delete(const std::string& name) override {
    if (auto e = Failure()) return *e;
    MutexLock lock(&mu_);
    return data_.erase(name) ? OkStatus() : Status(MakeError(ErrorCode::kNotFound, "no " + name));
  }
  Result<std::vector<Listed>> List() override {
    if (auto e = Failure()) return *e;
    MutexLock lock(&mu_);
    std::vector<Listed> out;
    for (auto& [k, v] : data_) {
      if (naming_.IdOf(k)) out.push_back({k, std::nullopt});
    }
    return out;
  }
  void Fail(std::optional<Error> e) {
    MutexLock lock(&mu_);
    fail_ = std::move(e);
  }
  size_t size() {
    MutexLock lock(&mu_);
    return data_.size();
  }
  std::map<std::string, std::string> data() {
    MutexLock lock(&mu_);
    std::map<std::string, std::string> out;
    for (const auto& [k, v] : data_) out.emplace(k, v.value);
    return out;
  }
  std::atomic<int> gets{0};

 private:
  struct Entry {
    std::string value;
    int64_t revision = 0;
  };
  std::string Store(const std::string& name, std::string_view value) DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Entry& e = data_[name];
    e.value = std::string(value);
    e.revision = ++revisions_;  // never reused, also across a delete and a create
    return std::to_string(e.revision);
  }
  std::optional<Error> Failure() DYAD_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    return fail_;
  }
  std::string name_ = "memory";
  PrefixNaming naming_;
  const bool conditional_;
  Mutex mu_;
  std::map<std::string, Entry> data_ DYAD_GUARDED_BY(mu_);
  int64_t revisions_ DYAD_GUARDED_BY(mu_) = 0;
  std::optional<Error> fail_ DYAD_GUARDED_BY(mu_);
};

// Forwards every call to another store: a base for test stores that
// intercept one or two calls (to stall, count or fail them).
class ForwardingStore : public SecretStore {
 public:
  explicit ForwardingStore(SecretStore& inner) : inner_(inner) {}
  const std::string& Name() const override { return inner_.Name(); }
  std::string SecretName(std::string_view id) const override { return inner_.SecretName(id); }
  std::optional<std::string> ProviderIdOf(std::string_view name) const override { return inner_.ProviderIdOf(name); }
  std::string ProbeName(std::string_view tag) const override { return inner_.ProbeName(tag); }
  bool HasConditionalWrites() const override { return inner_.HasConditionalWrites(); }
  Result<StoredSecret> Get(const std::string& name) override { return inner_.Get(name); }
  Result<StoredSecret> GetSettled(const std::string& name) override { return inner_.GetSettled(name); }
  Result<std::string> Create(const std::string& name, std::string_view value) override {
    return inner_.Create(name, value);
  }
  Result<std::string> Replace(const std::string& name, std::string_view value, const std::string& version) override {
    return inner_.Replace(name, value, version);
  }
  Result<std::string> Overwrite(const std::string& name, std::string_view value) override {
    return inner_.Overwrite(name, value);
  }
  Status Put(const std::string& name, std::string_view value) override { return inner_.Put(name, value); }
  Status Delete(const std::string& name) override { return inner_.Delete(name); }
  Status DeleteNow(const std::string& name) override { return inner_.DeleteNow(name); }
  Status DeleteIfVersion(const std::string& name, const std::string& version) override {
    return inner_.DeleteIfVersion(name, version);
  }
  Result<std::vector<Listed>> List() override { return inner_.List(); }
  Result<std::vector<Result<StoredSecret>>> GetMany(const std::vector<std::string>& names) override {
    return inner_.GetMany(names);
  }
  Result<std::vector<bool>> ReplaceMany(const std::vector<Swap>& items) override { return inner_.ReplaceMany(items); }

 protected:
  SecretStore& inner_;
};

// Forwards every call to another rotation repository (owned): a base for
// test repositories that intercept one or two calls (to stall, count or fail them).
class ForwardingRotations : public RotationRepository {
 public:
  explicit ForwardingRotations(std::unique_ptr<RotationRepository> inner) : inner_(std::move(inner)) {}
  Result<std::optional<std::string>> Begin(const RotationRun& run, const std::string& owner, Clock::Duration takeover,
                                           const std::string& note, const StartConditions& start_if,
                                           const std::optional<std::string>& if_running) override {
    return inner_->Begin(run, owner, takeover, note, start_if, if_running);
  }
  Status SaveProgress(const RotationRun& run, const std::string& owner, bool final) override {
    return inner_->SaveProgress(run, owner, final);
  }
  Result<bool> Heartbeat(const std::string& run_id, const std::string& owner) override {
    return inner_->Heartbeat(run_id, owner);
  }
  Status Release(const std::string& run_id, const std::string& owner) override {
    return inner_->Release(run_id, owner);
  }
  Result<std::optional<std::string>> LockHolder(Clock::Duration takeover) override {
    return inner_->LockHolder(takeover);
  }
  Result<std::optional<RotationRun>> LatestRunning() override { return inner_->LatestRunning(); }
  Result<RotationSuccesses> Successes() override { return inner_->Successes(); }
  Result<std::vector<RotationRun>> History(int limit) override { return inner_->History(limit); }

 protected:
  std::unique_ptr<RotationRepository> inner_;
};

// Forwards every call to another key manager: a base for test key managers
// that intercept one or two calls (to stall, count or fail them).
class ForwardingKeys : public KeyManager {
 public:
  explicit ForwardingKeys(KeyManager& inner) : inner_(inner) {}
  const std::string& Kind() const override { return inner_.Kind(); }
  const std::string& KeyId() const override { return inner_.KeyId(); }
  Result<DataKey> GenerateDataKey(std::string_view context) override { return inner_.GenerateDataKey(context); }
  Result<SecretBytes> Decrypt(uint32_t version, std::string_view wrapped, std::string_view context) override {
    return inner_.Decrypt(version, wrapped, context);
  }
  Result<WrappedKey> ReEncrypt(uint32_t version, std::string_view wrapped, std::string_view from,
                               std::string_view to) override {
    return inner_.ReEncrypt(version, wrapped, from, to);
  }
  std::vector<Result<WrappedKey>> ReEncryptMany(const std::vector<ReEncryptItem>& items, size_t parallelism) override {
    return inner_.ReEncryptMany(items, parallelism);
  }
  std::vector<Result<SecretBytes>> DecryptMany(const std::vector<DecryptItem>& items, size_t parallelism) override {
    return inner_.DecryptMany(items, parallelism);
  }
  Result<WrappedKey> WrapKey(const SecretBytes& key, std::string_view context) override {
    return inner_.WrapKey(key, context);
  }
  Result<uint32_t> Rotate() override { return inner_.Rotate(); }
  Status Retire(uint32_t version) override { return inner_.Retire(version); }
  Status RetireEverywhere(uint32_t version) override { return inner_.RetireEverywhere(version); }
  Result<KeyState> Describe() override { return inner_.Describe(); }
  Result<KeyState> KnownState() override { return inner_.KnownState(); }
  Status Probe() override { return inner_.Probe(); }
  void MarkStale() override { inner_.MarkStale(); }
  Status BeginRetire(uint32_t version) override { return inner_.BeginRetire(version); }
  Result<std::string> CurrentState(uint32_t version) override { return inner_.CurrentState(version); }

 protected:
  KeyManager& inner_;
};

// The names a store lists, in its order.
inline std::vector<std::string> ListedNames(SecretStore& store) {
  std::vector<SecretStore::Listed> listed = store.List().value();
  std::vector<std::string> names;
  for (auto& l : listed) names.push_back(std::move(l.name));
  return names;
}

// What a fake was handed, in order; thread-safe: Add from any thread, All
// gives a copy of everything added so far.
template <class T>
class Recorded {
 public:
  void Add(T item) {
    MutexLock lock(&mu_);
    items_.push_back(std::move(item));
  }
  std::vector<T> All() {
    MutexLock lock(&mu_);
    return items_;
  }

 private:
  Mutex mu_;
  std::vector<T> items_ DYAD_GUARDED_BY(mu_);
};

class MemoryAudit final : public AuditSink {
 public:
  void Record(const AuditEvent& e) override { events_.Add(e); }
  bool Healthy() const override { return true; }
  std::vector<AuditEvent> events() { return events_.All(); }

 private:
  Recorded<AuditEvent> events_;
};

class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            ("dyad-test-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string File(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// An HttpTransport that answers from a script and records what it was sent.
// A reply or an error per call, in order; once the script is used up, the
// last one repeats.
class ScriptedTransport final : public HttpTransport {
 public:
  void Then(int status, std::string body, HttpHeaders headers = {}) {
    MutexLock lock(&mu_);
    script_.push_back(Step{HttpReply{status, std::move(headers), std::move(body)}, std::nullopt});
  }
  void ThenFail(Error e) {
    MutexLock lock(&mu_);
    script_.push_back(Step{HttpReply{}, std::move(e)});
  }
  Result<HttpReply> Send(const HttpCall& call) override {
    MutexLock lock(&mu_);
    calls.push_back(call);
    if (!script_.empty()) {
      last_ = script_.front();
      script_.erase(script_.begin());
    }
    if (!last_) return MakeError(ErrorCode::kInternal, "nothing scripted");
    if (last_->error) return *last_->error;
    return last_->reply;
  }
  static std::string HeaderOf(const HttpCall& call, std::string_view name) {
    for (const auto& [k, v] : call.headers) {
      if (k == name) return v;
    }
    return "";
  }
  // What Send was given, in order. Written under the lock; read it only
  // while no Send runs (the tests look after the calls they made).
  std::vector<HttpCall> calls;

 private:
  Mutex mu_;
  struct Step {
    HttpReply reply;
    std::optional<Error> error;
  };
  std::vector<Step> script_ DYAD_GUARDED_BY(mu_);
  std::optional<Step> last_ DYAD_GUARDED_BY(mu_);
};

// A Random that returns the same byte everywhere.
class ConstantRandom final : public Random {
 public:
  explicit ConstantRandom(uint8_t byte) : byte_(byte) {}
  Status Fill(uint8_t* out, size_t n) override {
    std::fill(out, out + n, byte_);
    return OkStatus();
  }

 private:
  uint8_t byte_;
};

}  // namespace dyad::testing
