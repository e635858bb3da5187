// A fixture on every registry engine (testing/registry_engines.h) with two
// gateway instances on the test's database, each with its own pool and the
// environment backend's secret store under the "dyad-gateway" prefix: what a
// second instance does to the first's secrets. `store(i)` is instance i % 2's.
// Not thread-safe to set up; the stores are thread-safe.
#pragma once

#include <memory>
#include <string>

#include "testing/registry_engines.h"

namespace dyad::testing {

class TwoInstanceStores : public RegistryContractTest {
 protected:
  void SetUp() override {
    RegistryContractTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    for (int i = 0; i < 2; ++i) {
      auto made = NewInstance();
      ASSERT_TRUE(made.ok()) << made.error().message;
      inst_[i] = std::move(made).value();
      store_[i] = inst_[i].secret_store("dyad-gateway");
    }
  }
  // Instance i % 2's store.
  SecretStore& store(int i) { return *store_[i % 2]; }
  std::string Name(const std::string& id) { return store(0).SecretName(id); }

  RegistryInstance inst_[2];
  std::unique_ptr<SecretStore> store_[2];
};

}  // namespace dyad::testing
