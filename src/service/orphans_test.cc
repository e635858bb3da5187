// Orphaned secrets (a stored secret without a provider row): start-up only
// counts them; `secrets gc` (CollectOrphans) deletes old ones through the
// store's normal Delete and never a secret whose create is still running.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "backends/environment/local_keyring.h"
#include "backends/environment/sqlite_secret_store.h"
#include "registry/sqlite_provider_repository.h"
#include "service/provider_service.h"
#include "service/secrets_service.h"
#include "registry/sqlite_key_version_repository.h"
#include "testing/fakes.h"
#include "testing/service_fixture.h"

namespace dyad {
namespace {

using namespace std::chrono_literals;

// The SQLite store, counting how secrets are deleted.
class CountingStore final : public testing::ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;
  Status Delete(const std::string& n) override {
    ++deletes;
    return inner_.Delete(n);
  }
  Status DeleteNow(const std::string& n) override {
    ++deletes_now;
    return inner_.DeleteNow(n);
  }
  std::atomic<int> deletes{0}, deletes_now{0};
};

class OrphansTest : public testing::ServiceFixture {
 protected:
  void SetUp() override {
    ServiceFixture::SetUp();
    caller_ = Caller{"test", "rid"};
    sqlite_ = NewSqliteSecretStore(db_, clock_, "dyad-gateway");
    counting_ = std::make_unique<CountingStore>(*sqlite_);
    Build(60s);
  }
  void Build(std::chrono::seconds min_age) {
    SecretsOptions o;
    o.min_orphan_age = min_age;
    ServiceFixture::Build(o, {}, counting_.get());
  }
  Result<Provider> Create(const std::string& slug) {
    ProviderPatch p;
    p.name = p.slug = slug;
    p.type = "http-sdk";
    p.adapter_config_json = R"({"baseUrl":"http://127.0.0.1:9"})";
    p.credentials = CredentialFields{};
    p.credentials->emplace("api_key", SecretBytes(std::string_view("sk-" + slug)));
    return providers_->Create(p, caller_);
  }
  // A secret with no provider row, as a failed compensation leaves it.
  void Ghost(const std::string& id) { ASSERT_TRUE(counting_->Put("dyad-gateway/providers/" + id, "{}").ok()); }
  bool Stored(const std::string& id) { return counting_->Get("dyad-gateway/providers/" + id).ok(); }

  std::unique_ptr<SecretStore> sqlite_;
  std::unique_ptr<CountingStore> counting_;
};

TEST_F(OrphansTest, StartReportsAndDeletesNothing) {
  auto p = Create("openai");
  ASSERT_TRUE(p.ok());
  Ghost("ghost");
  clock_.Advance(48h);
  EXPECT_EQ(secrets_->Health().orphaned_secrets, -1);
  auto n = secrets_->ReportOrphans();
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1u);
  EXPECT_EQ(secrets_->Health().orphaned_secrets, 1);
  EXPECT_TRUE(Stored("ghost"));
  EXPECT_EQ(counting_->deletes + counting_->deletes_now, 0);
}

TEST_F(OrphansTest, GcDeletesOnlyOrphansOlderThanTheGraceThroughDelete) {
  auto p = Create("openai");
  ASSERT_TRUE(p.ok());
  Ghost("old");
  clock_.Advance(30min);
  Ghost("young");
  clock_.Advance(31min);  // old: 61 min, young: 31 min, the provider's secret: 61 min

  auto dry = secrets_->CollectOrphans(1h, /*dry_run=*/true, caller_);
  ASSERT_TRUE(dry.ok()) << dry.error().message;
  ASSERT_EQ(dry->items.size(), 2u);
  EXPECT_EQ(dry->items[0].name, "dyad-gateway/providers/old");
  EXPECT_EQ(dry->items[0].outcome, "would delete");
  EXPECT_EQ(dry->items[1].outcome, "too young");
  EXPECT_TRUE(Stored("old"));

  auto gc = secrets_->CollectOrphans(1h, /*dry_run=*/false, caller_);
  ASSERT_TRUE(gc.ok());
  EXPECT_EQ(gc->deleted, 1);
  EXPECT_EQ(gc->kept, 1);
  EXPECT_FALSE(Stored("old"));
  EXPECT_TRUE(Stored("young"));
  EXPECT_TRUE(Stored(p->id));
  EXPECT_EQ(counting_->deletes, 1);
  EXPECT_EQ(counting_->deletes_now, 0) << "gc keeps the store's recovery window";
  bool audited = false;
  for (const auto& e : audit_.events()) audited |= e.action == "secret.delete" && e.resource == "old";
  EXPECT_TRUE(audited);
}

TEST_F(OrphansTest, GcNeverGoesBelowTheMinimumAge) {
  Ghost("fresh");
  clock_.Advance(10s);
  auto gc = secrets_->CollectOrphans(0s, false, caller_);
  ASSERT_TRUE(gc.ok());
  EXPECT_EQ(gc->grace, 60s);
  EXPECT_EQ(gc->items.at(0).outcome, "too young");
  EXPECT_TRUE(Stored("fresh"));
}

// Creates in this process hold the provider lock from their secret to their
// row: a gc with no grace at all re-checks the row under that lock, so none
// of them loses its secret.
TEST_F(OrphansTest, GcBesideCreatesLosesNoSecret) {
  Build(0s);
  std::atomic<bool> done{false};
  std::vector<std::string> ids;
  std::thread creator([&] {
    for (int i = 0; i < 300; ++i) {
      auto p = Create("p-" + std::to_string(i));
      if (p.ok()) ids.push_back(p->id);
    }
    done = true;
  });
  int runs = 0;
  while (!done) {
    auto gc = secrets_->CollectOrphans(0s, false, caller_);
    ASSERT_TRUE(gc.ok()) << gc.error().message;
    ++runs;
  }
  creator.join();
  ASSERT_EQ(ids.size(), 300u);
  EXPECT_GT(runs, 1);
  for (const auto& id : ids) EXPECT_TRUE(Stored(id)) << id << " lost its secret to gc";
}

}  // namespace
}  // namespace dyad
