// Test doubles of our own interfaces (never of a cloud API): an in-memory
// SecretStore with injectable failures, an AuditSink that keeps events, and
// a temporary directory.
#pragma once

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <random>

#include "audit/audit_sink.h"
#include "backends/secret_store.h"

namespace dyad::testing {

class MemoryStore final : public SecretStore {
 public:
  const std::string& Name() const override { return name_; }
  Result<std::string> Get(const std::string& name) override {
    ++gets;
    if (auto e = Failure()) return *e;
    std::lock_guard lock(mu_);
    auto it = data_.find(name);
    if (it == data_.end()) return MakeError(ErrorCode::kNotFound, "no " + name);
    return it->second;
  }
  Status Create(const std::string& name, std::string_view value) override {
    if (auto e = Failure()) return *e;
    std::lock_guard lock(mu_);
    if (data_.count(name)) return MakeError(ErrorCode::kAlreadyExists, "taken");
    data_[name] = std::string(value);
    return OkStatus();
  }
  Status Put(const std::string& name, std::string_view value) override {
    if (auto e = Failure()) return *e;
    std::lock_guard lock(mu_);
    data_[name] = std::string(value);
    return OkStatus();
  }
  Status Delete(const std::string& name) override {
    if (auto e = Failure()) return *e;
    std::lock_guard lock(mu_);
    return data_.erase(name) ? OkStatus() : Status(MakeError(ErrorCode::kNotFound, "no " + name));
  }
  Result<std::vector<std::string>> List(std::string_view prefix) override {
    if (auto e = Failure()) return *e;
    std::lock_guard lock(mu_);
    std::vector<std::string> out;
    for (auto& [k, v] : data_) {
      if (k.rfind(prefix, 0) == 0) out.push_back(k);
    }
    return out;
  }
  void Fail(std::optional<Error> e) {
    std::lock_guard lock(mu_);
    fail_ = std::move(e);
  }
  size_t size() {
    std::lock_guard lock(mu_);
    return data_.size();
  }
  std::map<std::string, std::string> data() {
    std::lock_guard lock(mu_);
    return data_;
  }
  std::atomic<int> gets{0};

 private:
  std::optional<Error> Failure() {
    std::lock_guard lock(mu_);
    return fail_;
  }
  std::string name_ = "memory";
  std::mutex mu_;
  std::map<std::string, std::string> data_;
  std::optional<Error> fail_;
};

class MemoryAudit final : public AuditSink {
 public:
  void Record(const AuditEvent& e) override {
    std::lock_guard lock(mu_);
    events_.push_back(e);
  }
  bool Healthy() const override { return true; }
  std::vector<AuditEvent> events() {
    std::lock_guard lock(mu_);
    return events_;
  }

 private:
  std::mutex mu_;
  std::vector<AuditEvent> events_;
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

}  // namespace dyad::testing
