// Two instances on one registry database (each with its own in-process
// locks, keyring and cache): their read-modify-writes of one provider are
// serialised by the provider lease (issue 9 item 3). On every registry
// engine (testing/registry_engines.h). The secret store is each instance's
// SQLite store on SQLite; on PostgreSQL, until the environment backend's
// PostgreSQL store is in, one in-memory store the instances share.
#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "backends/environment/local_keyring.h"
#include "backends/environment/sqlite_secret_store.h"
#include "service/provider_service.h"
#include "service/secrets_service.h"
#include "testing/fakes.h"
#include "testing/registry_engines.h"

namespace dyad {
namespace {

using namespace std::chrono_literals;

// One gateway instance on `registry` (its own pool); its secret store is
// `shared_store` where the engine has none of its own yet.
struct Instance {
  Instance(testing::RegistryInstance registry, SecretStore& shared_store, const Clock& clock,
           ProviderLeaseOptions lease_options = {}) {
    repo = std::move(registry.providers);
    leases = std::move(registry.leases);
    keys = std::move(NewLocalKeyring({"k", SecretBytes(std::string(32, 'm')), {}},
                                     std::move(registry.key_versions), DefaultRandom(), clock)).value();
    if (registry.sqlite) own_store = NewSqliteSecretStore(registry.sqlite, clock, "dyad-gateway");
    store = own_store ? own_store.get() : &shared_store;
    options.leases = leases.get();
    options.lease = lease_options;
    secrets = SecretsService::Create(options, *store, *keys, *repo, audit, metrics, clock, DefaultRandom(),
                                     EnvMap{}).value();
    providers = std::make_unique<ProviderService>(*repo, *secrets, clock, DefaultRandom(), audit);
  }
  SecretsOptions options;
  std::unique_ptr<ProviderRepository> repo;
  std::unique_ptr<ProviderLeases> leases;
  std::unique_ptr<KeyManager> keys;
  std::unique_ptr<SecretStore> own_store;
  SecretStore* store = nullptr;
  testing::MemoryAudit audit;
  Metrics metrics;
  std::unique_ptr<SecretsService> secrets;
  std::unique_ptr<ProviderService> providers;
};

CredentialFields Fields(std::initializer_list<std::pair<std::string, std::string>> kv) {
  CredentialFields f;
  for (const auto& [k, v] : kv) f.emplace(k, SecretBytes(v));
  return f;
}

class ProviderLease : public testing::RegistryContractTest {
 protected:
  // Another instance's registry, on `clock`.
  testing::RegistryInstance Registry(const Clock& clock) { return NewInstance(clock).value(); }
  testing::MemoryStore shared_store_{"dyad-gateway"};
};

// A provider with credentials {"api_key": "v1"}, made through `providers`.
Result<Provider> CreateWithKey(ProviderService& providers, const std::string& slug, const std::string& type) {
  ProviderPatch p;
  p.name = p.slug = slug;
  p.type = type;
  p.adapter_config_json = R"({"baseUrl":"http://127.0.0.1:9"})";
  p.credentials = Fields({{"api_key", "v1"}});
  return providers.Create(p, Caller{});
}

TEST_P(ProviderLease, AWriterWaitsForAnotherInstancesLeaseWithTheInjectedClock) {
  FakeClock& clock = fake_clock_;
  ProviderLeaseOptions polling;
  polling.poll = std::chrono::milliseconds(250);  // fewer database round trips over the fake minute
  Instance a(Registry(clock), shared_store_, clock, polling);
  auto made = CreateWithKey(*a.providers, "one", "http-sdk");
  ASSERT_TRUE(made.ok()) << made.error().message;
  // Another instance holds the lease, then vanishes without releasing it.
  ASSERT_TRUE(*a.leases->TryAcquire(made->id, "gone-instance", 30s));
  const auto before = clock.Slept();
  auto rotated = a.providers->RotateCredentials(made->id, Fields({{"api_key", "v2"}}), Caller{});
  ASSERT_TRUE(rotated.ok()) << rotated.error().message;
  EXPECT_GE(clock.Slept() - before, 30s);  // waited (on the fake clock) for the lease to expire
  EXPECT_EQ(rotated->credentials_version, 2);
  // A lease kept past max_wait is a conflict, not a write behind its back.
  ASSERT_TRUE(*a.leases->TryAcquire(made->id, "slow-instance", 10min));
  auto refused = a.providers->RotateCredentials(made->id, Fields({{"api_key", "v3"}}), Caller{});
  EXPECT_EQ(refused.code(), ErrorCode::kConflict);
  EXPECT_EQ(a.repo->Get(made->id)->credentials_version, 2);
}

TEST_P(ProviderLease, RotationsOnOneInstanceAndRenamesOnAnotherLoseNoWrite) {
  SystemClock clock;
  Instance a(Registry(clock), shared_store_, clock), b(Registry(clock), shared_store_, clock);
  ProviderPatch p;
  p.name = p.slug = "shared";
  p.type = "http-sdk";
  p.adapter_config_json = R"({"baseUrl":"http://127.0.0.1:9"})";
  p.credentials = Fields({{"api_key", "k0"}});
  auto made = a.providers->Create(p, Caller{});
  ASSERT_TRUE(made.ok()) << made.error().message;
  const std::string id = made->id;
  constexpr int kRounds = 100;
  std::thread renamer([&] {
    for (int i = 0; i < kRounds; ++i) {
      ProviderPatch rename;
      rename.name = "name-" + std::to_string(i);
      EXPECT_TRUE(a.providers->Update(id, rename, Caller{}).ok());
    }
  });
  for (int i = 1; i <= kRounds; ++i) {
    // Alternate field sets, so a row written from a stale read shows.
    std::string key = "k";
    key += std::to_string(i);  // not "k" + to_string(i): GCC 12 warns falsely (-Wrestrict) on it
    auto f = i % 2 ? Fields({{"api_key", key}, {"org", "o"}}) : Fields({{"api_key", key}});
    EXPECT_TRUE(b.providers->RotateCredentials(id, f, Caller{}).ok());
  }
  renamer.join();
  auto row = a.repo->Get(id);
  ASSERT_TRUE(row.ok());
  EXPECT_EQ(row->credentials_version, 1 + kRounds);
  EXPECT_EQ(row->name, "name-" + std::to_string(kRounds - 1));
  auto read = a.secrets->Get(id, Caller{});
  ASSERT_TRUE(read.ok()) << read.error().message;
  std::vector<std::string> stored;
  for (const auto& [k, v] : read->credentials->fields) stored.push_back(k);
  EXPECT_EQ(row->credential_fields, stored);
  EXPECT_EQ(read->credentials->version, 1 + kRounds);
  EXPECT_EQ(std::string(read->credentials->fields.at("api_key").view()), "k" + std::to_string(kRounds));
}


// A store in front of another whose first call a subclass stalls in waits
// until the test lets it go: the writer stalls holding its lease, past the
// lease's TTL.
class StallingStoreBase : public testing::ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;
  std::promise<void> reached_, resume_;

 protected:
  void Stall() {
    if (!stalled_.exchange(true)) {
      reached_.set_value();
      resume_.get_future().wait();
    }
  }

 private:
  std::atomic<bool> stalled_{false};
};

// Stalls in its first Replace.
class StallingStore final : public StallingStoreBase {
 public:
  using StallingStoreBase::StallingStoreBase;
  Result<std::string> Replace(const std::string& name, std::string_view value, const std::string& version) override {
    Stall();
    return inner_.Replace(name, value, version);
  }
};

// Instance `a`'s services over `store`: Rotate() starts a credential write on
// a thread of its own and returns once the store stalled it; Resume() lets
// it go and returns its answer (the destructor lets a stalled one go too).
class StalledWriter {
 public:
  StalledWriter(Instance& a, StallingStoreBase& store, const Clock& clock)
      : store_(store),
        secrets_(SecretsService::Create(a.options, store, *a.keys, *a.repo, a.audit, a.metrics, clock, DefaultRandom(),
                                        EnvMap{}).value()),
        providers_(*a.repo, *secrets_, clock, DefaultRandom(), a.audit) {}
  ~StalledWriter() {
    if (answer_.valid() && !resumed_) store_.resume_.set_value();
  }
  void Rotate(const std::string& id, CredentialFields fields) {
    auto reached = store_.reached_.get_future();
    answer_ = std::async(std::launch::async, [this, id, fields = std::move(fields)] {
      return providers_.RotateCredentials(id, fields, Caller{});
    });
    reached.wait();
  }
  Result<Provider> Resume() {
    resumed_ = true;
    store_.resume_.set_value();
    return answer_.get();
  }

 private:
  StallingStoreBase& store_;
  std::unique_ptr<SecretsService> secrets_;
  ProviderService providers_;
  std::future<Result<Provider>> answer_;
  bool resumed_ = false;
};

// Issue 9 item 3: a writer that stalls past its lease's TTL (a pause, a slow
// backend call) and resumes after another instance took the lease over and
// wrote gets kConflict; the other instance's acknowledged write stands.
TEST_P(ProviderLease, AWriterWhoseLeaseRanOutCannotOverwriteTheOneThatTookItOver) {
  FakeClock& clock = fake_clock_;
  Instance a(Registry(clock), shared_store_, clock), b(Registry(clock), shared_store_, clock);
  auto made = CreateWithKey(*a.providers, "fenced", "http-sdk");
  ASSERT_TRUE(made.ok()) << made.error().message;

  StallingStore stalling(*a.store);
  StalledWriter writer(a, stalling, clock);
  writer.Rotate(made->id, Fields({{"api_key", "from-a"}}));  // A holds the lease and has read the row and the secret
  clock.Advance(ProviderLeaseOptions{}.ttl + 1s);
  auto took_over = b.providers->RotateCredentials(made->id, Fields({{"api_key", "from-b"}}), Caller{});
  ASSERT_TRUE(took_over.ok()) << took_over.error().message;
  auto late = writer.Resume();
  EXPECT_EQ(late.code(), ErrorCode::kConflict) << (late.ok() ? "acknowledged" : late.error().message);

  auto row = b.repo->Get(made->id);
  EXPECT_EQ(row->credentials_version, 2);
  auto read = b.secrets->Get(made->id, Caller{});
  ASSERT_TRUE(read.ok()) << read.error().message;
  EXPECT_EQ(read->credentials->fields.at("api_key").view(), "from-b");
  EXPECT_EQ(read->credentials->version, 2);
}

// The same on a store without conditional writes (Azure's kind, or AWS under
// the seed's policy), where the lease is the only fence: the late writer's
// read-compare finds B's version, and a late Overwrite would first have to
// renew a lease B now holds.
TEST_P(ProviderLease, OnALeaseOnlyStoreALateWriterCannotOverwriteEither) {
  FakeClock& clock = fake_clock_;
  Instance a(Registry(clock), shared_store_, clock), b(Registry(clock), shared_store_, clock);
  testing::MemoryStore shared("dyad-gateway", /*conditional=*/false);
  auto b_secrets_owner = SecretsService::Create(b.options, shared, *b.keys, *b.repo, b.audit, b.metrics, clock,
                                                DefaultRandom(), EnvMap{}).value();
  SecretsService& b_secrets = *b_secrets_owner;
  ProviderService b_providers(*b.repo, b_secrets, clock, DefaultRandom(), b.audit);
  auto made = CreateWithKey(b_providers, "lease-only", "http-sdk");
  ASSERT_TRUE(made.ok()) << made.error().message;

  StallingStore stalling(shared);
  StalledWriter writer(a, stalling, clock);
  writer.Rotate(made->id, Fields({{"api_key", "from-a"}}));
  clock.Advance(ProviderLeaseOptions{}.ttl + 1s);
  auto took_over = b_providers.RotateCredentials(made->id, Fields({{"api_key", "from-b"}}), Caller{});
  ASSERT_TRUE(took_over.ok()) << took_over.error().message;
  auto late = writer.Resume();
  EXPECT_EQ(late.code(), ErrorCode::kConflict) << (late.ok() ? "acknowledged" : late.error().message);

  b_secrets.cache().Clear();
  auto read = b_secrets.Get(made->id, Caller{});
  ASSERT_TRUE(read.ok()) << read.error().message;
  EXPECT_EQ(read->credentials->fields.at("api_key").view(), "from-b");
  EXPECT_EQ(read->credentials->version, 2);
}

// A lease that ran out and was taken over cannot be confirmed: a write only
// the lease fences is refused.
TEST_P(ProviderLease, ConfirmFailsOnceAnotherInstanceTookTheLeaseOver) {
  FakeClock& clock = fake_clock_;
  Instance a(Registry(clock), shared_store_, clock);
  auto held = a.secrets->locks().Hold("p1");
  ASSERT_TRUE(held.ok()) << held.error().message;
  EXPECT_TRUE((*held)->Confirm().ok());
  clock.Advance(ProviderLeaseOptions{}.ttl + 1s);
  ASSERT_TRUE(*a.leases->TryAcquire("p1", "another-instance", 30s));
  EXPECT_EQ((*held)->Confirm().code(), ErrorCode::kConflict);
}

// A validate on one instance after a credential rotation through another
// reads the new credentials, not the copy it cached before.
TEST_P(ProviderLease, ValidateAfterARotationElsewhereSeesTheNewCredentials) {
  FakeClock& clock = fake_clock_;
  Instance a(Registry(clock), shared_store_, clock), b(Registry(clock), shared_store_, clock);
  ProviderPatch p;
  p.name = p.slug = "seen";
  p.type = "http-sdk";
  p.adapter_config_json = R"({"baseUrl":"http://127.0.0.1:9"})";
  p.credentials = Fields({{"api_key", "old"}});
  auto made = a.providers->Create(p, Caller{});
  ASSERT_TRUE(made.ok()) << made.error().message;
  auto first = a.providers->Validate(made->id, Caller{});
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(a.providers->Validate(made->id, Caller{}).ok());  // now from A's cache
  ASSERT_TRUE(b.providers->RotateCredentials(made->id, Fields({{"api_key", "new"}}), Caller{}).ok());
  auto after = a.providers->Validate(made->id, Caller{});
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->credentials_version, 2);
  EXPECT_NE(after->fingerprint, first->fingerprint);
}

// Found by review: a writer clearing credentials (empty map) deleted the
// secret without a version; if it stalled in that delete past its lease and
// another instance rotated meanwhile, the acknowledged rotation was deleted.
// Now the row goes first and the delete is conditional on the version read.
class StallingDeleteStore final : public StallingStoreBase {
 public:
  using StallingStoreBase::StallingStoreBase;
  Status Delete(const std::string& name) override {
    Stall();
    return inner_.Delete(name);
  }
  Status DeleteIfVersion(const std::string& name, const std::string& version) override {
    Stall();
    return inner_.DeleteIfVersion(name, version);
  }
};

TEST_P(ProviderLease, ALateCredentialClearCannotDeleteAnotherInstancesAcknowledgedRotation) {
  FakeClock& clock = fake_clock_;
  Instance a(Registry(clock), shared_store_, clock), b(Registry(clock), shared_store_, clock);
  auto made = CreateWithKey(*a.providers, "cleared", "http-sdk");
  ASSERT_TRUE(made.ok()) << made.error().message;

  StallingDeleteStore stalling(*a.store);
  StalledWriter writer(a, stalling, clock);
  writer.Rotate(made->id, CredentialFields{});
  clock.Advance(ProviderLeaseOptions{}.ttl + 1s);
  auto took_over = b.providers->RotateCredentials(made->id, Fields({{"api_key", "from-b"}}), Caller{});
  ASSERT_TRUE(took_over.ok()) << took_over.error().message;
  // A's clear may stand (its row update landed first); B's later write must.
  (void)writer.Resume();
  b.secrets->cache().Clear();
  auto read = b.secrets->Get(made->id, Caller{});
  ASSERT_TRUE(read.ok()) << "B's acknowledged rotation is gone: " << read.error().message;
  EXPECT_EQ(read->credentials->fields.at("api_key").view(), "from-b");
}
// Clearing credentials moves the row first and deletes the secret after: a
// read in between finds no credentials, and is not alarmed as a rollback.
TEST_P(ProviderLease, AReadBetweenAClearsRowAndItsDeleteFindsNoCredentialsNotTampering) {
  FakeClock& clock = fake_clock_;
  Instance a(Registry(clock), shared_store_, clock), b(Registry(clock), shared_store_, clock);
  auto made = CreateWithKey(*a.providers, "clearing", "proxy");
  ASSERT_TRUE(made.ok()) << made.error().message;
  StallingDeleteStore stalling(*a.store);
  StalledWriter writer(a, stalling, clock);
  writer.Rotate(made->id, CredentialFields{});  // the row says no credentials; the secret is still there
  b.secrets->cache().Clear();
  auto read = b.secrets->Get(made->id, Caller{});
  EXPECT_EQ(read.code(), ErrorCode::kNotFound) << (read.ok() ? "served" : read.error().message);
  for (const auto& e : b.audit.events()) EXPECT_NE(e.action, "secret.tampered");
  ASSERT_TRUE(writer.Resume().ok());
  EXPECT_EQ(a.store->Get(a.secrets->SecretName(made->id)).code(), ErrorCode::kNotFound);
}

// Found by review: a credential write whose row update meets kConflict from a
// row-only update elsewhere keeps its secret: the caller is told it failed,
// yet readers get its credentials.
TEST_P(ProviderLease, ARowConflictFromARenameRestoresTheFailedWritersSecret) {
  FakeClock& clock = fake_clock_;
  Instance a(Registry(clock), shared_store_, clock), b(Registry(clock), shared_store_, clock);
  auto made = CreateWithKey(*a.providers, "renamed", "http-sdk");
  ASSERT_TRUE(made.ok()) << made.error().message;

  StallingStore stalling(*a.store);
  StalledWriter writer(a, stalling, clock);
  writer.Rotate(made->id, Fields({{"api_key", "from-a"}}));
  clock.Advance(ProviderLeaseOptions{}.ttl + 1s);
  ProviderPatch rename;
  rename.name = "renamed-by-b";
  auto renamed = b.providers->Update(made->id, rename, Caller{});
  ASSERT_TRUE(renamed.ok()) << renamed.error().message;
  auto late = writer.Resume();
  ASSERT_FALSE(late.ok());
  b.secrets->cache().Clear();
  auto read = b.secrets->Get(made->id, Caller{});
  ASSERT_TRUE(read.ok()) << read.error().message;
  EXPECT_EQ(read->credentials->fields.at("api_key").view(), "v1") << "a write reported as failed is live";
}

DYAD_INSTANTIATE_ON_REGISTRY_ENGINES(ProviderLease);

}  // namespace
}  // namespace dyad
