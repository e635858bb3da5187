// Two gateway instances on one registry (two SqliteDb on one file, one
// secret store, a clock each that never moves, so no TTL or periodic
// re-read can hide a missing notification): what one writes the other
// serves at once after its change feed's next check, and a key rotation on
// one makes the other's key manager report the new primary.
#include <gtest/gtest.h>

#include "backends/environment/local_keyring.h"
#include "metrics/metrics.h"
#include "registry/change_feed.h"
#include "registry/sqlite_key_version_repository.h"
#include "registry/sqlite_provider_repository.h"
#include "registry/sqlite_rotation_repository.h"
#include "secrets/envelope.h"
#include "service/key_rotation_service.h"
#include "service/provider_service.h"
#include "service/secrets_service.h"
#include "testing/fakes.h"

namespace dyad {
namespace {

using namespace std::chrono_literals;
using testing::MemoryAudit;
using testing::MemoryStore;
using testing::TempDir;

struct Instance {
  Instance(const std::string& path, MemoryStore& store) {
    db = SqliteDb::Open(path).value();
    repo = NewSqliteProviderRepository(db);
    keys = NewLocalKeyring({"k", SecretBytes(std::string(32, 'm')), {}}, NewSqliteKeyVersionRepository(db),
                           DefaultRandom(), clock)
               .value();
    changes = NewSqliteChangeFeed(db, clock).value();
    SecretsOptions o;
    o.cache.ttl = 300s;
    o.changes = changes.get();
    secrets = SecretsService::Create(o, store, *keys, *repo, audit, metrics, clock, DefaultRandom(), EnvMap{}).value();
    providers = std::make_unique<ProviderService>(*repo, *secrets, clock, DefaultRandom(), audit);
  }
  ~Instance() {
    providers.reset();
    secrets.reset();  // unsubscribes before the feed goes
  }
  Result<std::string> ApiKey(const std::string& id, std::string* source = nullptr) {
    DYAD_ASSIGN_OR_RETURN(CredentialRead read, secrets->Get(id, Caller{}));
    if (source) *source = read.source;
    return std::string(read.credentials->fields.at("api_key").view());
  }

  FakeClock clock;
  std::shared_ptr<SqliteDb> db;
  std::unique_ptr<ProviderRepository> repo;
  std::unique_ptr<KeyManager> keys;
  std::unique_ptr<ChangeFeed> changes;
  MemoryAudit audit;
  Metrics metrics;
  std::unique_ptr<SecretsService> secrets;
  std::unique_ptr<ProviderService> providers;
};

CredentialFields ApiKeyFields(const std::string& key) {
  CredentialFields f;
  f.emplace("api_key", SecretBytes(key));
  return f;
}

class TwoInstancesTest : public ::testing::Test {
 protected:
  TempDir dir_;
  MemoryStore store_;
  Instance a_{dir_.File("registry.db"), store_};
  Instance b_{dir_.File("registry.db"), store_};

  std::string CreateOnA(const std::string& slug, const std::string& key) {
    ProviderPatch p;
    p.name = slug;
    p.slug = slug;
    p.type = "http-sdk";
    p.adapter_config_json = R"({"baseUrl":"http://127.0.0.1:9"})";
    p.credentials = ApiKeyFields(key);
    auto r = a_.providers->Create(p, Caller{});
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    return r.ok() ? r->id : "";
  }
};

TEST_F(TwoInstancesTest, BServesTheCredentialAWroteWithoutWaitingForItsTtl) {
  const std::string id = CreateOnA("openai", "sk-old");
  ASSERT_FALSE(id.empty());
  std::string source;
  ASSERT_EQ(b_.ApiKey(id, &source).value(), "sk-old");
  ASSERT_EQ(b_.ApiKey(id, &source).value(), "sk-old");
  ASSERT_EQ(source, "cache");

  ASSERT_TRUE(a_.providers->RotateCredentials(id, ApiKeyFields("sk-new"), Caller{}).ok());
  EXPECT_EQ(a_.ApiKey(id).value(), "sk-new");  // the writer's own cache was dropped at the write
  // Without the feed B would serve its cached value for 300 s (its clock never moves).
  EXPECT_EQ(b_.ApiKey(id, &source).value(), "sk-old");
  EXPECT_EQ(source, "cache");
  ASSERT_TRUE(b_.changes->CheckNow().ok());
  EXPECT_EQ(b_.ApiKey(id, &source).value(), "sk-new");
  EXPECT_EQ(source, "store");
  // A's feed does not hand A its own change back (no needless miss).
  ASSERT_EQ(a_.ApiKey(id, &source).value(), "sk-new");
  ASSERT_TRUE(a_.changes->CheckNow().ok());
  EXPECT_EQ(a_.ApiKey(id, &source).value(), "sk-new");
  EXPECT_EQ(source, "cache");
}

TEST_F(TwoInstancesTest, BStopsServingACredentialADeleted) {
  const std::string id = CreateOnA("anthropic", "sk-gone");
  ASSERT_FALSE(id.empty());
  ASSERT_EQ(b_.ApiKey(id).value(), "sk-gone");
  ASSERT_TRUE(a_.providers->Delete(id, Caller{}).ok());
  std::string source;
  EXPECT_EQ(b_.ApiKey(id, &source).value(), "sk-gone");  // cached, until told
  ASSERT_TRUE(b_.changes->CheckNow().ok());
  auto read = b_.secrets->Get(id, Caller{});
  EXPECT_FALSE(read.ok());
}

TEST_F(TwoInstancesTest, AGapInTheFeedDropsBsWholeCache) {
  const std::string x = CreateOnA("x", "sk-x1"), y = CreateOnA("y", "sk-y1");
  ASSERT_EQ(b_.ApiKey(x).value(), "sk-x1");
  ASSERT_EQ(b_.ApiKey(y).value(), "sk-y1");
  // Written behind the feed's back (as if its row were lost), then a
  // kEverything (what a reconnect delivers).
  ASSERT_TRUE(a_.providers->RotateCredentials(y, ApiKeyFields("sk-y2"), Caller{}).ok());
  ASSERT_TRUE(b_.db->Transaction([](SqliteConnection& c) { return c.Exec("DELETE FROM registry_changes"); }).ok());
  ASSERT_TRUE(a_.changes->Publish({Change::Kind::kEverything, ""}).ok());
  ASSERT_TRUE(b_.changes->CheckNow().ok());
  std::string source;
  EXPECT_EQ(b_.ApiKey(y, &source).value(), "sk-y2");
  EXPECT_EQ(source, "store");
  EXPECT_EQ(b_.ApiKey(x, &source).value(), "sk-x1");
  EXPECT_EQ(source, "store");  // dropped too
}

TEST_F(TwoInstancesTest, ARotationOnAMakesBReportTheNewPrimaryAtOnce) {
  const std::string id = CreateOnA("openai", "sk-1");
  ASSERT_FALSE(id.empty());
  ASSERT_EQ(b_.keys->Describe().value().primary_version, 1u);
  KeyRotationService::Options ro{100, 1};
  ro.retire_grace = 10ms;  // A's fake clock
  KeyRotationService rotation(ro, NewSqliteRotationRepository(a_.db, a_.clock), *a_.secrets, a_.audit, a_.clock);
  auto run = rotation.Run(false, "manual", Caller{});
  ASSERT_TRUE(run.ok()) << run.error().message;
  ASSERT_EQ(run->status, "completed");
  ASSERT_EQ(run->to_version, 2u);
  // B's clock has not moved: its key manager's periodic re-read is not due.
  EXPECT_EQ(b_.keys->Describe().value().primary_version, 1u);
  ASSERT_TRUE(b_.changes->CheckNow().ok());
  auto state = b_.keys->Describe();
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->primary_version, 2u);
  for (const auto& v : state->versions) {
    if (v.version == 1) EXPECT_EQ(v.state, "retired");
  }
  // And B seals under it: a write through B lands on version 2.
  ASSERT_TRUE(b_.providers->RotateCredentials(id, ApiKeyFields("sk-2"), Caller{}).ok());
  auto stored = store_.Get(b_.secrets->SecretName(id));
  ASSERT_TRUE(stored.ok());
  auto env = ParseEnvelope(stored->value);
  ASSERT_TRUE(env.ok());
  EXPECT_EQ(env->key_version, 2u);
  ASSERT_TRUE(a_.changes->CheckNow().ok());
  EXPECT_EQ(a_.ApiKey(id).value(), "sk-2");
}

TEST_F(TwoInstancesTest, AKeyEpochOfAnotherKeyLeavesBsKeyAlone) {
  ASSERT_TRUE(a_.keys->Rotate().ok());  // behind the feed's back
  ASSERT_TRUE(a_.changes->Publish({Change::Kind::kKeyEpoch, "some-other-key"}).ok());
  ASSERT_TRUE(b_.changes->CheckNow().ok());
  EXPECT_EQ(b_.keys->Describe().value().primary_version, 1u);
  ASSERT_TRUE(a_.changes->Publish({Change::Kind::kKeyEpoch, "k"}).ok());
  ASSERT_TRUE(b_.changes->CheckNow().ok());
  EXPECT_EQ(b_.keys->Describe().value().primary_version, 2u);
}

}  // namespace
}  // namespace dyad
