// A test fixture with what a key rotation runs on, on every registry engine
// (testing/registry_engines.h: …/sqlite always, …/postgresql when
// DYAD_TEST_PG_URL is set): one registry database holding the provider
// registry and the key versions, a local keyring (master key of 32 'm'
// bytes), the environment provider's secret store, and a SecretsService
// over them (default options, no environment fallback). The rotation and
// scheduler tests build their KeyRotationService on it; a suite deriving
// from it is instantiated with DYAD_INSTANTIATE_ON_REGISTRY_ENGINES.
// `ClockT` is the clock every part is given (SystemClock or FakeClock); set
// a FakeClock's time before calling SetUp(). Not thread-safe to set up.
//
// The secret store is SQLite's on SQLite; on PostgreSQL, until the
// environment backend's PostgreSQL store is in, an in-memory one shared by
// every instance the test makes (the registry, key versions, rotation lock
// and leases are PostgreSQL's).
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "backends/environment/local_keyring.h"
#include "backends/environment/sqlite_secret_store.h"
#include "metrics/metrics.h"
#include "service/secrets_service.h"
#include "testing/fakes.h"
#include "testing/registry_engines.h"

namespace dyad::testing {

template <typename ClockT>
class RotationFixture : public RegistryContractTest {
 protected:
  void SetUp() override {
    RegistryContractTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    registry_ = Instance();
    repo_ = std::move(registry_.providers);
    keys_ = NewKeyring();
    if (registry_.sqlite) store_ = NewSqliteSecretStore(registry_.sqlite, clock_, "dyad-gateway");
    else store_ = std::make_unique<MemoryStore>("dyad-gateway");
    secrets_ = SecretsService::Create(SecretsOptions{}, *store_, *keys_, *repo_, audit_, metrics_, clock_,
                                      DefaultRandom(), EnvMap{}).value();
  }

  // Another instance on the test's database (its own pool), its clocks
  // `clock` (by default the fixture's); aborts the test binary, saying why,
  // when the database cannot be opened.
  RegistryInstance Instance(const Clock& clock) { return NewInstance(clock).value(); }
  RegistryInstance Instance() { return Instance(clock_); }

  // Another process's view of the keyring: its own object and pool on the
  // same database.
  std::unique_ptr<KeyManager> NewKeyring() {
    return std::move(NewLocalKeyring({"k", SecretBytes(std::string(32, 'm')), {}, ReserveBlock()},
                                     std::move(Instance().key_versions), DefaultRandom(), clock_))
        .value();
  }
  // The keyring's reserve block (LocalKeyringOptions::reserve_block).
  virtual uint64_t ReserveBlock() const { return 4096; }

  // SQL both engines read alike, on the test's database.
  Status Sql(const std::string& sql) { return ExecSql(registry_, sql); }
  // The first column of the first row; nullopt without a row.
  std::optional<int64_t> SqlInt(const std::string& sql) {
    auto r = QueryInt(registry_, sql);
    EXPECT_TRUE(r.ok()) << r.error().message;
    return r.ok() ? *r : std::nullopt;
  }

  ClockT clock_;
  RegistryInstance registry_;  // the first instance: its pool and handle
  std::unique_ptr<ProviderRepository> repo_;
  std::unique_ptr<KeyManager> keys_;
  std::unique_ptr<SecretStore> store_;
  MemoryAudit audit_;
  Metrics metrics_;
  std::unique_ptr<SecretsService> secrets_;
};

}  // namespace dyad::testing
