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
#include <vector>

#include "audit/audit_sink.h"
#include "backends/secret_store.h"
#include "core/mutex.h"
#include "core/random.h"
#include "transport/http_transport.h"

namespace dyad::testing {

class MemoryStore final : public SecretStore {
 public:
  const std::string& Name() const override { return name_; }
  Result<std::string> Get(const std::string& name) override {
    ++gets;
    if (auto e = Failure()) return *e;
    MutexLock lock(&mu_);
    auto it = data_.find(name);
    if (it == data_.end()) return MakeError(ErrorCode::kNotFound, "no " + name);
    return it->second;
  }
  Status Create(const std::string& name, std::string_view value) override {
    if (auto e = Failure()) return *e;
    MutexLock lock(&mu_);
    if (data_.count(name)) return MakeError(ErrorCode::kAlreadyExists, "taken");
    data_[name] = std::string(value);
    return OkStatus();
  }
  Status Put(const std::string& name, std::string_view value) override {
    if (auto e = Failure()) return *e;
    MutexLock lock(&mu_);
    data_[name] = std::string(value);
    return OkStatus();
  }
  Status Delete(const std::string& name) override {
    if (auto e = Failure()) return *e;
    MutexLock lock(&mu_);
    return data_.erase(name) ? OkStatus() : Status(MakeError(ErrorCode::kNotFound, "no " + name));
  }
  Result<std::vector<std::string>> List(std::string_view prefix) override {
    if (auto e = Failure()) return *e;
    MutexLock lock(&mu_);
    std::vector<std::string> out;
    for (auto& [k, v] : data_) {
      if (k.rfind(prefix, 0) == 0) out.push_back(k);
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
    return data_;
  }
  std::atomic<int> gets{0};

 private:
  std::optional<Error> Failure() DYAD_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    return fail_;
  }
  std::string name_ = "memory";
  Mutex mu_;
  std::map<std::string, std::string> data_ DYAD_GUARDED_BY(mu_);
  std::optional<Error> fail_ DYAD_GUARDED_BY(mu_);
};

class MemoryAudit final : public AuditSink {
 public:
  void Record(const AuditEvent& e) override {
    MutexLock lock(&mu_);
    events_.push_back(e);
  }
  bool Healthy() const override { return true; }
  std::vector<AuditEvent> events() {
    MutexLock lock(&mu_);
    return events_;
  }

 private:
  Mutex mu_;
  std::vector<AuditEvent> events_ DYAD_GUARDED_BY(mu_);
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
