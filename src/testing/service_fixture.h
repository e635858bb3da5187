// A test fixture with the services one gateway process runs on: a SQLite
// registry in a temporary directory, a local keyring (master key of 32 'm'
// bytes), an in-memory secret store, an in-memory audit sink, metrics and a
// FakeClock. Build() (re)creates the SecretsService and ProviderService as a
// process started with those options and that environment sees them, over
// `store_` or the store a test passes (which must outlive them). Not
// thread-safe to set up.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "backends/environment/local_keyring.h"
#include "metrics/metrics.h"
#include "registry/sqlite_key_version_repository.h"
#include "registry/sqlite_provider_repository.h"
#include "service/provider_service.h"
#include "service/secrets_service.h"
#include "testing/fakes.h"

namespace dyad::testing {

class ServiceFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = *SqliteDb::Open(dir_.File("t.db"));
    repo_ = NewSqliteProviderRepository(db_);
    keys_ = std::move(NewLocalKeyring({"k", SecretBytes(std::string(32, 'm')), {}},
                                      NewSqliteKeyVersionRepository(db_), DefaultRandom(), clock_)).value();
  }

  // Before the members of a derived fixture (a store or source the
  // services use) go.
  void TearDown() override {
    providers_.reset();
    secrets_.reset();
  }

  void Build(SecretsOptions options, const EnvMap& env = {}, SecretStore* store = nullptr) {
    providers_.reset();
    secrets_.reset();
    secrets_ = SecretsService::Create(std::move(options), store ? *store : store_, *keys_, *repo_, audit_, metrics_,
                                      clock_, DefaultRandom(), env).value();
    providers_ = std::make_unique<ProviderService>(*repo_, *secrets_, clock_, DefaultRandom(), audit_, upstream_);
  }

  TempDir dir_;
  FakeClock clock_;
  std::shared_ptr<SqliteDb> db_;
  std::unique_ptr<ProviderRepository> repo_;
  std::unique_ptr<KeyManager> keys_;
  MemoryStore store_;
  MemoryAudit audit_;
  Metrics metrics_;
  Caller caller_{"tester", "rid-1"};
  ProviderUpstream upstream_;  // the policy, resolver and client Build() gives the ProviderService
  std::unique_ptr<SecretsService> secrets_;
  std::unique_ptr<ProviderService> providers_;
};

}  // namespace dyad::testing
