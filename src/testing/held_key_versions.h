// HeldKeyVersions: a KeyVersionRepository in front of another whose next
// List(), once armed (HoldNextList), reads the versions and then waits with
// what it read until Release(): a thread's view of the versions is then
// known to be older than whatever the test does meanwhile (another thread's
// Rotate, a retire mark, another instance's version). Everything else is
// forwarded as it is. Thread-safe; no errors of its own.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/mutex.h"
#include "registry/key_version_repository.h"
#include "testing/gate.h"

namespace dyad::testing {

class HeldKeyVersions final : public KeyVersionRepository {
 public:
  explicit HeldKeyVersions(std::shared_ptr<KeyVersionRepository> inner) : inner_(std::move(inner)) {}

  void HoldNextList() {
    MutexLock lock(&mu_);
    armed_ = true;
  }
  // Waits (at most a minute) until the held List has read; false if none did.
  bool WaitUntilHeld() { return gate_.WaitArrived(); }
  void Release() { gate_.Open(); }

  Result<std::vector<KeyVersionRecord>> List(const std::string& key_id) override {
    bool hold = false;
    {
      MutexLock lock(&mu_);
      hold = armed_;
      armed_ = false;
    }
    auto listed = inner_->List(key_id);
    if (hold) gate_.Pass();
    return listed;
  }
  Result<bool> CreateFirst(const std::string& key_id, const KeyVersionRecord& first) override {
    return inner_->CreateFirst(key_id, first);
  }
  Result<uint32_t> Advance(const std::string& key_id, const Decide& decide) override {
    return inner_->Advance(key_id, decide);
  }
  Status SetState(const std::string& key_id, uint32_t version, const std::string& state) override {
    return inner_->SetState(key_id, version, state);
  }
  Status SetMaterial(const std::string& key_id, uint32_t version, const std::string& material) override {
    return inner_->SetMaterial(key_id, version, material);
  }
  Status ReserveEncryptions(const std::string& key_id, uint32_t version, uint64_t floor, uint64_t block) override {
    return inner_->ReserveEncryptions(key_id, version, floor, block);
  }

 private:
  const std::shared_ptr<KeyVersionRepository> inner_;
  Mutex mu_;
  bool armed_ DYAD_GUARDED_BY(mu_) = false;
  Gate gate_;  // the held List
};

}  // namespace dyad::testing
