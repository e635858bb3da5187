#include "service/backend_migration.h"

#include <gtest/gtest.h>

#include "backends/environment/local_keyring.h"
#include "registry/sqlite_key_version_repository.h"
#include "registry/sqlite_migration_progress_repository.h"
#include "registry/sqlite_provider_repository.h"
#include "service/provider_service.h"
#include "testing/fakes.h"
#include "testing/memory_backend.h"

namespace dyad {
namespace {

constexpr char kCanary[] = "sk-CANARY-migrate-4e1d";

// The target store: fails every Create after `creates_left` (a run killed
// midway), fails Get of one name (a target that cannot be read back), or
// calls `on_create` (another writer of the source meanwhile).
class TargetStore final : public testing::ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;
  Result<std::string> Create(const std::string& name, std::string_view value) override {
    ++creates;
    if (on_create) on_create();
    if (creates_left >= 0 && creates_left-- == 0) {
      creates_left = 0;
      return MakeError(ErrorCode::kUnavailable, "target store down");
    }
    return inner_.Create(name, value);
  }
  Result<StoredSecret> Get(const std::string& name) override {
    if (name == unreadable) return MakeError(ErrorCode::kUnavailable, "target read refused");
    return inner_.Get(name);
  }
  int creates_left = -1;  // -1: never fails
  int creates = 0;
  std::string unreadable;
  std::function<void()> on_create;
};

class BackendMigrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = *SqliteDb::Open(dir_.File("t.db"));
    repo_ = NewSqliteProviderRepository(db_);
    keys_ = std::move(NewLocalKeyring({"k", SecretBytes(std::string(32, 'm')), {}}, NewSqliteKeyVersionRepository(db_),
                                      DefaultRandom(), clock_)).value();
    target_keys_ = std::move(testing::NewMemoryKeyManager("t", DefaultRandom())).value();
    secrets_ = std::make_unique<SecretsService>(SecretsOptions{}, source_, *keys_, *repo_, audit_, metrics_, clock_,
                                                DefaultRandom(), EnvMap{});
    providers_ = std::make_unique<ProviderService>(*repo_, *secrets_, clock_, DefaultRandom(), audit_);
    records_ = NewSqliteMigrationProgressRepository(db_, clock_);
  }
  std::string Create(const std::string& slug, const std::string& key) {
    ProviderPatch p;
    p.name = p.slug = slug;
    p.type = "http-sdk";
    p.credentials = CredentialFields{};
    p.credentials->emplace("api_key", SecretBytes(key));
    auto r = providers_->Create(p, Caller{});
    EXPECT_TRUE(r.ok()) << r.error().message;
    return r->id;
  }
  MigrationReport Run(MigrationOptions options = {}) {
    BackendMigration m(*secrets_, *repo_, *records_, {target_, *target_keys_, SealMode::kEnvelope, DefaultRandom()});
    auto r = m.Run(options, nullptr, Caller{});
    EXPECT_TRUE(r.ok()) << r.error().message;
    for (const auto& item : r->items) EXPECT_EQ(item.detail.find(kCanary), std::string::npos);
    return *r;
  }
  // The api_key the target holds for `id`, opened under the target's key.
  std::string TargetKey(const std::string& id) {
    const std::string name = target_inner_.SecretName(id);
    auto stored = target_inner_.Get(name);
    if (!stored.ok()) return "<" + stored.error().message + ">";
    Sealer sealer(*target_keys_, DefaultRandom());
    auto opened = sealer.Open(name, stored->value);
    if (!opened.ok()) return "<" + opened.error().message + ">";
    return std::string(CredentialsFromJson(opened->payload.view())->at("api_key").view());
  }
  static int64_t Count(const MigrationReport& r, const std::string& outcome) {
    return std::count_if(r.items.begin(), r.items.end(), [&](const MigrationItem& i) { return i.outcome == outcome; });
  }

  testing::TempDir dir_;
  FakeClock clock_;
  std::shared_ptr<SqliteDb> db_;
  std::unique_ptr<ProviderRepository> repo_;
  std::unique_ptr<KeyManager> keys_, target_keys_;
  testing::MemoryStore source_;
  testing::MemoryStore target_inner_{"moved"};
  TargetStore target_{target_inner_};
  testing::MemoryAudit audit_;
  Metrics metrics_;
  std::unique_ptr<SecretsService> secrets_;
  std::unique_ptr<ProviderService> providers_;
  std::unique_ptr<MigrationProgressRepository> records_;
};

TEST_F(BackendMigrationTest, CopiesEveryProviderUnderTheTargetKeyAndVerifies) {
  std::string a = Create("a", std::string(kCanary) + "-a"), b = Create("b", std::string(kCanary) + "-b");
  MigrationReport r = Run({.verify = true});
  EXPECT_EQ(r.copied, 2);
  EXPECT_EQ(r.failed, 0);
  EXPECT_EQ(r.verify_ok, 2);
  EXPECT_TRUE(r.Clean());
  EXPECT_EQ(TargetKey(a), std::string(kCanary) + "-a");
  EXPECT_EQ(TargetKey(b), std::string(kCanary) + "-b");
  for (const auto& [name, value] : target_inner_.data()) {
    EXPECT_TRUE(name.starts_with("moved/providers/")) << name;
    EXPECT_EQ(value.find(kCanary), std::string::npos);  // sealed, not plain
  }
  EXPECT_EQ(source_.size(), 2u);  // the source stays without --delete-source
}

// A --delete-source run killed (or failing) partway through its delete pass:
// the re-run finds the deleted ones copied and finishes, clean.
TEST_F(BackendMigrationTest, ARunAfterAPartialDeletePassFinishes) {
  std::string a = Create("a", std::string(kCanary) + "-a"), b = Create("b", std::string(kCanary) + "-b");
  ASSERT_TRUE(Run({.verify = true}).Clean());
  ASSERT_TRUE(source_.DeleteNow(secrets_->SecretName(a)).ok());  // the delete pass got this far
  MigrationReport again = Run({.delete_source = true});
  EXPECT_EQ(again.failed, 0);
  EXPECT_EQ(again.verify_failed, 0);
  EXPECT_EQ(again.skipped, 2);
  EXPECT_TRUE(again.Clean());
  EXPECT_EQ(source_.size(), 0u);
  EXPECT_EQ(TargetKey(a), std::string(kCanary) + "-a");
  EXPECT_EQ(TargetKey(b), std::string(kCanary) + "-b");
}

TEST_F(BackendMigrationTest, ResumesAfterAKillMidRunWithoutDuplicates) {
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(Create("p" + std::to_string(i), kCanary + std::to_string(i)));
  target_.creates_left = 3;  // the fourth write fails: the run stops short, as a kill would leave it
  MigrationReport first = Run();
  EXPECT_EQ(first.copied, 3);
  EXPECT_EQ(first.failed, 3);
  EXPECT_EQ(first.items[3].detail, "target store: target store down");
  target_.creates_left = -1;
  MigrationReport second = Run({.verify = true});
  EXPECT_EQ(second.skipped, 3);
  EXPECT_EQ(second.copied, 3);
  EXPECT_EQ(second.failed, 0);
  EXPECT_EQ(second.verify_ok, 6);
  EXPECT_EQ(target_inner_.size(), 6u);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(TargetKey(ids[i]), kCanary + std::to_string(i));
}

TEST_F(BackendMigrationTest, AHalfDoneTargetWriteIsReplacedOnResume) {
  std::string id = Create("a", kCanary);
  // A run killed after its target write, before recording it.
  ASSERT_TRUE(records_->Put(BackendMigration(*secrets_, *repo_, *records_,
                                             {target_, *target_keys_, SealMode::kEnvelope, DefaultRandom()}).Name(),
                            MigrationRecord{id, "copying", "1", "", "", 1}).ok());
  ASSERT_TRUE(target_inner_.Put(target_inner_.SecretName(id), "half-written").ok());
  MigrationReport r = Run({.verify = true});
  EXPECT_EQ(r.copied, 1);
  EXPECT_TRUE(r.Clean());
  EXPECT_EQ(TargetKey(id), kCanary);
}

TEST_F(BackendMigrationTest, AValueChangedInTheSourceAfterItsCopyIsCopiedAgain) {
  std::string a = Create("a", "old-value"), b = Create("b", "other");
  EXPECT_EQ(Run().copied, 2);
  CredentialFields changed;
  changed.emplace("api_key", SecretBytes("new-value"));
  ASSERT_TRUE(providers_->RotateCredentials(a, changed, Caller{}).ok());
  // Before the re-run, verify sees the difference.
  MigrationReport stale = Run({.dry_run = true});
  EXPECT_EQ(Count(stale, "would copy"), 1);
  EXPECT_EQ(Count(stale, "would skip"), 1);
  MigrationReport again = Run({.verify = true});
  EXPECT_EQ(again.copied, 1);
  EXPECT_EQ(again.skipped, 1);
  EXPECT_EQ(again.verify_ok, 2);
  EXPECT_EQ(TargetKey(a), "new-value");
}

TEST_F(BackendMigrationTest, ASourceWrittenDuringTheCopyIsCopiedAgainBeforeItIsRecorded) {
  std::string a = Create("a", "first");
  int writes = 0;
  target_.on_create = [&] {
    if (writes++ == 0) {
      ASSERT_TRUE(source_.Put(secrets_->SecretName(a), source_.Get(secrets_->SecretName(a))->value).ok());
    }
  };
  MigrationReport r = Run({.verify = true});
  EXPECT_EQ(r.copied, 1);
  EXPECT_EQ(target_.creates, 2);  // the second write found the target taken and replaced it
  EXPECT_TRUE(r.Clean());
}

TEST_F(BackendMigrationTest, DeleteSourceIsRefusedAfterAFailedVerify) {
  std::string a = Create("a", kCanary), b = Create("b", kCanary);
  target_.unreadable = target_inner_.SecretName(b);
  MigrationReport r = Run({.delete_source = true});
  EXPECT_EQ(r.copied, 2);
  EXPECT_EQ(r.verify_failed, 1);
  EXPECT_EQ(r.verify_failures.at(0).provider_id, b);
  EXPECT_NE(r.delete_refused, "");
  EXPECT_EQ(r.source_deleted, 0);
  EXPECT_FALSE(r.Clean());
  EXPECT_EQ(source_.size(), 2u);
  target_.unreadable.clear();
  MigrationReport ok = Run({.delete_source = true});
  EXPECT_TRUE(ok.Clean());
  EXPECT_EQ(ok.source_deleted, 2);
  EXPECT_EQ(source_.size(), 0u);
  EXPECT_EQ(TargetKey(a), kCanary);
}

TEST_F(BackendMigrationTest, DryRunWritesNothing) {
  Create("a", kCanary);
  Create("b", kCanary);
  MigrationReport r = Run({.dry_run = true, .verify = true, .delete_source = true});
  EXPECT_EQ(r.copied, 2);
  EXPECT_EQ(Count(r, "would copy"), 2);
  EXPECT_FALSE(r.verified);
  EXPECT_EQ(target_inner_.size(), 0u);
  EXPECT_EQ(source_.size(), 2u);
  EXPECT_TRUE(records_->Load(BackendMigration(*secrets_, *repo_, *records_,
                                              {target_, *target_keys_, SealMode::kEnvelope, DefaultRandom()}).Name())
                  ->empty());
}

TEST_F(BackendMigrationTest, ProvidersWithoutCredentialsAndUnreadableSourcesAreReported) {
  ProviderPatch p;
  p.name = p.slug = "bare";
  p.type = "local";
  ASSERT_TRUE(providers_->Create(p, Caller{}).ok());
  std::string gone = Create("gone", kCanary);
  ASSERT_TRUE(source_.Delete(secrets_->SecretName(gone)).ok());
  MigrationReport r = Run();
  EXPECT_EQ(Count(r, "no credentials"), 1);
  EXPECT_EQ(r.failed, 1);
  EXPECT_EQ(r.items.at(1).provider_id, gone);
  EXPECT_EQ(r.items.at(1).detail, "source: the source holds no secret for it");
}

TEST_F(BackendMigrationTest, TheSourceItselfIsRefusedAsTarget) {
  Create("a", kCanary);
  BackendMigration m(*secrets_, *repo_, *records_, {source_, *keys_, SealMode::kEnvelope, DefaultRandom()});
  auto r = m.Run({}, nullptr, Caller{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace dyad
