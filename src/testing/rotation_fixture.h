// A test fixture with what a key rotation runs on: one SQLite database in a
// temporary directory holding the provider registry, a local keyring (master
// key of 32 'm' bytes) and the environment provider's secret store, and a
// SecretsService over them (default options, no environment fallback). The
// rotation and scheduler tests build their KeyRotationService on it. `ClockT`
// is the clock every part is given (SystemClock or FakeClock); set a
// FakeClock's time before calling SetUp(). Not thread-safe to set up.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "backends/environment/local_keyring.h"
#include "backends/environment/sqlite_secret_store.h"
#include "metrics/metrics.h"
#include "registry/sqlite_key_version_repository.h"
#include "registry/sqlite_provider_repository.h"
#include "service/secrets_service.h"
#include "testing/fakes.h"

namespace dyad::testing {

template <typename ClockT>
class RotationFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = *SqliteDb::Open(dir_.File("r.db"));
    repo_ = NewSqliteProviderRepository(db_);
    keys_ = NewKeyring();
    store_ = NewSqliteSecretStore(db_, clock_, "dyad-gateway");
    secrets_ = std::make_unique<SecretsService>(SecretsOptions{}, *store_, *keys_, *repo_, audit_, metrics_, clock_,
                                                DefaultRandom(), EnvMap{});
  }

  // Another process's view of the keyring: its own object on the same database.
  std::unique_ptr<KeyManager> NewKeyring() {
    return std::move(NewLocalKeyring({"k", SecretBytes(std::string(32, 'm')), {}}, NewSqliteKeyVersionRepository(db_),
                                     DefaultRandom(), clock_)).value();
  }

  TempDir dir_;
  ClockT clock_;
  std::shared_ptr<SqliteDb> db_;
  std::unique_ptr<ProviderRepository> repo_;
  std::unique_ptr<KeyManager> keys_;
  std::unique_ptr<SecretStore> store_;
  MemoryAudit audit_;
  Metrics metrics_;
  std::unique_ptr<SecretsService> secrets_;
};

}  // namespace dyad::testing
