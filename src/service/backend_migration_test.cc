#include "service/backend_migration.h"

#include <gtest/gtest.h>

#include <set>

#include "backends/environment/local_keyring.h"
#include "registry/sqlite_key_version_repository.h"
#include "registry/sqlite_migration_progress_repository.h"
#include "registry/sqlite_provider_repository.h"
#include "secrets/credentials.h"
#include "service/provider_service.h"
#include "testing/fakes.h"
#include "testing/memory_backend.h"

namespace dyad {
namespace {

constexpr char kCanary[] = "sk-CANARY-migrate-4e1d";

// The target store: fails every Create after `creates_left` (a run killed
// midway), fails Get of one name (a target that cannot be read back) or of
// every name (`down`: a target that does not answer), or calls `on_create`
// (another writer of the source meanwhile).
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
    if (down) return MakeError(ErrorCode::kUnavailable, "target store timed out");
    if (name == unreadable) return MakeError(ErrorCode::kUnavailable, "target read refused");
    return inner_.Get(name);
  }
  Result<std::string> Replace(const std::string& name, std::string_view value, const std::string& version) override {
    ++replaces;
    return inner_.Replace(name, value, version);
  }
  int creates_left = -1;  // -1: never fails
  int creates = 0, replaces = 0;
  bool down = false;
  std::string unreadable;
  std::function<void()> on_create;
};

// A source whose deletes are conditional (DeleteIfVersion), as AWS's and
// Vault's are: SecretsService deletes through it without Delete().
class ConditionalDeleteStore final : public testing::ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;
  Status DeleteIfVersion(const std::string& name, const std::string& version) override {
    auto current = inner_.Get(name);
    if (!current.ok()) return current.error();
    if (current->version != version) return MakeError(ErrorCode::kConflict, "changed");
    return inner_.DeleteNow(name);
  }
};

class BackendMigrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = *SqliteDb::Open(dir_.File("t.db"));
    repo_ = NewSqliteProviderRepository(db_);
    keys_ = std::move(NewLocalKeyring({"k", SecretBytes(std::string(32, 'm')), {}}, NewSqliteKeyVersionRepository(db_),
                                      DefaultRandom(), clock_)).value();
    target_keys_ = std::move(testing::NewMemoryKeyManager("t", DefaultRandom())).value();
    secrets_ = SecretsService::Create(SecretsOptions{}, source_, *keys_, *repo_, audit_, metrics_, clock_,
                                      DefaultRandom(), EnvMap{}).value();
    providers_ = std::make_unique<ProviderService>(*repo_, *secrets_, clock_, DefaultRandom(), audit_);
    records_ = NewSqliteMigrationProgressRepository(db_, clock_);
  }
  std::string Create(const std::string& slug, const std::string& key) {
    ProviderPatch p;
    p.name = p.slug = slug;
    p.type = "http-sdk";
    p.adapter_config_json = R"({"baseUrl":"http://127.0.0.1:9"})";
    p.credentials = CredentialFields{};
    p.credentials->emplace("api_key", SecretBytes(key));
    auto r = providers_->Create(p, Caller{});
    EXPECT_TRUE(r.ok()) << r.error().message;
    return r->id;
  }
  MigrationReport Run(MigrationOptions options = {}, SecretsService* source = nullptr,
                      const BackendMigration::Progress& progress = nullptr) {
    BackendMigration m(source ? *source : *secrets_, *repo_, *records_,
                       {target_, *target_keys_, SealMode::kEnvelope, DefaultRandom()});
    auto r = m.Run(options, progress, Caller{"cli-migrate", ""});
    EXPECT_TRUE(r.ok()) << r.error().message;
    for (const auto& item : r->items) EXPECT_EQ(item.detail.find(kCanary), std::string::npos);
    return *r;
  }
  std::string Name() {
    return BackendMigration(*secrets_, *repo_, *records_, {target_, *target_keys_, SealMode::kEnvelope,
                                                           DefaultRandom()}).Name();
  }
  static CredentialFields Key(const std::string& key) {
    CredentialFields f;
    f.emplace("api_key", SecretBytes(key));
    return f;
  }
  // Writes `key` sealed under the target's key, as another writer of the
  // target (or a run killed right after its write) would.
  void PutInTarget(const std::string& id, const std::string& key, int64_t credentials_version) {
    const std::string name = target_inner_.SecretName(id);
    Sealer sealer(*target_keys_, DefaultRandom());
    auto sealed = sealer.Seal(name, credentials_version, CredentialsToJson(Key(key)));
    ASSERT_TRUE(sealed.ok()) << sealed.error().message;
    ASSERT_TRUE(target_inner_.Put(name, *sealed).ok());
  }
  static const MigrationItem& ItemOf(const MigrationReport& r, const std::string& id) {
    for (const auto& item : r.items) {
      if (item.provider_id == id) return item;
    }
    static const MigrationItem none{"", "<no item>", ""};
    return none;
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

// A run killed after its target write, before recording it: the record
// says what was about to be written, so the re-run replaces it (the source
// has changed since).
TEST_F(BackendMigrationTest, AWriteAKilledRunWasAboutToMakeIsReplacedOnResume) {
  std::string id = Create("a", "first");
  ASSERT_TRUE(records_->Put(Name(), MigrationRecord{id, "copying", "1", "", secrets_->Fingerprint(Key("first")), 1})
                  .ok());
  PutInTarget(id, "first", 1);
  ASSERT_TRUE(providers_->RotateCredentials(id, Key(kCanary), Caller{}).ok());
  MigrationReport r = Run({.verify = true});
  EXPECT_EQ(r.copied, 1);
  EXPECT_TRUE(r.Clean());
  EXPECT_EQ(TargetKey(id), kCanary);
}

// The target already serves and a provider's credential was rotated there:
// a re-run keeps it and fails that provider, naming it; the others go on.
TEST_F(BackendMigrationTest, ATargetValueThisMigrationDidNotWriteIsNeverReplaced) {
  std::string a = Create("a", std::string(kCanary) + "-a"), b = Create("b", std::string(kCanary) + "-b");
  ASSERT_TRUE(Run({.verify = true}).Clean());
  PutInTarget(a, "rotated-on-the-target", 2);
  MigrationReport dry = Run({.dry_run = true});
  EXPECT_EQ(ItemOf(dry, a).outcome, "failed");
  MigrationReport r = Run({.verify = true});
  EXPECT_EQ(r.failed, 1);
  EXPECT_EQ(ItemOf(r, a).outcome, "failed");
  EXPECT_NE(ItemOf(r, a).detail.find("provider " + a + " that this migration did not write"), std::string::npos)
      << ItemOf(r, a).detail;
  EXPECT_EQ(ItemOf(r, b).outcome, "skipped");
  EXPECT_FALSE(r.Clean());
  EXPECT_EQ(TargetKey(a), "rotated-on-the-target");
  EXPECT_EQ(TargetKey(b), std::string(kCanary) + "-b");
}

// Nor one that does not open under the target's key and that no record
// names (another deployment's, a torn write of a store without atomic ones).
TEST_F(BackendMigrationTest, AnUnopenableTargetValueNoRecordNamesIsKept) {
  std::string id = Create("a", kCanary);
  ASSERT_TRUE(records_->Put(Name(), MigrationRecord{id, "copying", "1", "", "", 1}).ok());
  ASSERT_TRUE(target_inner_.Put(target_inner_.SecretName(id), "half-written").ok());
  MigrationReport r = Run({.verify = true});
  EXPECT_EQ(r.failed, 1);
  EXPECT_NE(ItemOf(r, id).detail.find("does not open under the target's key"), std::string::npos)
      << ItemOf(r, id).detail;
  EXPECT_FALSE(r.Clean());
  EXPECT_EQ(target_inner_.Get(target_inner_.SecretName(id))->value, "half-written");
}

// Another writer of the target between the read and the write wins.
TEST_F(BackendMigrationTest, ATargetWrittenByAnotherDuringTheCopyIsKept) {
  std::string a = Create("a", kCanary);
  target_.on_create = [&] { PutInTarget(a, "theirs", 1); };
  MigrationReport r = Run();
  EXPECT_EQ(r.failed, 1);
  EXPECT_NE(ItemOf(r, a).detail.find("another writer created its secret in the target"), std::string::npos)
      << ItemOf(r, a).detail;
  EXPECT_EQ(TargetKey(a), "theirs");
}

// After a clean verified run the records keep state and versions, not the
// keyed fingerprints; a re-run still replaces its own writes by version.
TEST_F(BackendMigrationTest, ACleanVerifiedRunKeepsVersionsNotFingerprints) {
  std::string a = Create("a", "old-value"), b = Create("b", "other");
  ASSERT_TRUE(Run().Clean());
  auto unverified = records_->Load(Name());
  ASSERT_EQ(unverified->size(), 2u);
  for (const auto& [id, rec] : *unverified) EXPECT_NE(rec.fingerprint, "") << id;  // no verify: kept
  MigrationReport r = Run({.verify = true});
  ASSERT_TRUE(r.Clean());
  EXPECT_TRUE(r.fingerprints_cleared);
  auto records = records_->Load(Name());
  ASSERT_EQ(records->size(), 2u);
  for (const auto& [id, rec] : *records) {
    EXPECT_EQ(rec.state, "copied") << id;
    EXPECT_EQ(rec.fingerprint, "") << id;
    EXPECT_NE(rec.target_version, "") << id;
    EXPECT_EQ(rec.target_version, target_inner_.Get(target_inner_.SecretName(id))->version) << id;
  }
  ASSERT_TRUE(providers_->RotateCredentials(a, Key("new-value"), Caller{}).ok());
  MigrationReport again = Run({.verify = true});
  EXPECT_EQ(again.copied, 1);
  EXPECT_EQ(again.skipped, 1);
  EXPECT_TRUE(again.Clean());
  EXPECT_EQ(TargetKey(a), "new-value");
}

// A provider created while the copy pass runs is copied by the same run.
TEST_F(BackendMigrationTest, AProviderCreatedDuringTheCopyPassIsCopied) {
  std::string a = Create("a", "A"), late;
  // After the first provider's copy, its lease released (a Create under it
  // may wait on the same lock stripe and time out).
  MigrationReport r = Run({.verify = true}, nullptr, [&](std::string_view pass, size_t done, size_t) {
    if (pass == "copy" && done == 1 && late.empty()) late = Create("late", kCanary);
  });
  ASSERT_NE(late, "");
  EXPECT_EQ(r.copied, 2);
  EXPECT_EQ(r.verify_ok, 2);
  EXPECT_EQ(ItemOf(r, late).outcome, "copied");
  EXPECT_TRUE(r.late.empty());
  EXPECT_TRUE(r.Clean());
  EXPECT_EQ(TargetKey(late), kCanary);
}

// One created after the second listing is reported, and the run is not
// clean (switching now would strand it); the next run copies it.
TEST_F(BackendMigrationTest, AProviderCreatedAfterTheCopyPassesIsReported) {
  Create("a", "A");
  std::string late;
  MigrationReport r = Run({.verify = true}, nullptr, [&](std::string_view pass, size_t done, size_t) {
    if (pass == "verify" && done == 0) late = Create("late", kCanary);
  });
  ASSERT_NE(late, "");
  ASSERT_EQ(r.late.size(), 1u);
  EXPECT_EQ(r.late[0].provider_id, late);
  EXPECT_EQ(r.late[0].outcome, "not copied");
  EXPECT_FALSE(r.Clean());
  EXPECT_FALSE(r.fingerprints_cleared);
  MigrationReport again = Run({.verify = true});
  EXPECT_EQ(again.copied, 1);
  EXPECT_TRUE(again.Clean());
  EXPECT_EQ(TargetKey(late), kCanary);
}

// Every write to the target and every deletion from the source is in the
// audit log as the migration's, also where the source deletes
// conditionally; a failed write too.
TEST_F(BackendMigrationTest, EveryWriteAndDeleteIsAudited) {
  ConditionalDeleteStore conditional(source_);
  auto via_owner = SecretsService::Create(SecretsOptions{}, conditional, *keys_, *repo_, audit_, metrics_, clock_,
                                          DefaultRandom(), EnvMap{}).value();
  SecretsService& via = *via_owner;
  std::string a = Create("a", kCanary), b = Create("b", kCanary);
  const auto count = [&](size_t from, const std::string& action, const std::string& outcome) {
    auto events = audit_.events();
    std::set<std::string> resources;
    for (size_t i = from; i < events.size(); ++i) {
      if (events[i].action == action && events[i].outcome == outcome) {
        EXPECT_EQ(events[i].actor, "cli-migrate");
        EXPECT_EQ(events[i].detail.find(kCanary), std::string::npos);
        resources.insert(events[i].resource);
      }
    }
    return resources;
  };
  size_t before = audit_.events().size();
  target_.creates_left = 0;
  EXPECT_EQ(Run({.verify = true}, &via).failed, 2);
  EXPECT_EQ(count(before, "migration.copy", "failure"), (std::set<std::string>{a, b}));
  target_.creates_left = -1;
  before = audit_.events().size();
  MigrationReport r = Run({.delete_source = true}, &via);
  ASSERT_TRUE(r.Clean());
  EXPECT_EQ(source_.size(), 0u);
  EXPECT_EQ(count(before, "migration.copy", "success"), (std::set<std::string>{a, b}));
  EXPECT_EQ(count(before, "secret.delete", "success"), (std::set<std::string>{a, b}));
}

// A target that does not answer costs one read, not one timeout per
// provider: nothing is attempted.
TEST_F(BackendMigrationTest, AnUnavailableTargetEndsTheRunBeforeAnyCopy) {
  Create("a", kCanary);
  Create("b", kCanary);
  target_.down = true;
  BackendMigration m(*secrets_, *repo_, *records_, {target_, *target_keys_, SealMode::kEnvelope, DefaultRandom()});
  auto r = m.Run({.verify = true}, nullptr, Caller{"cli-migrate", ""});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.code(), ErrorCode::kUnavailable);
  EXPECT_NE(r.error().message.find("did not answer its first read"), std::string::npos) << r.error().message;
  EXPECT_EQ(target_.creates, 0);
  EXPECT_TRUE(records_->Load(Name())->empty());
}

// A target that goes away midway: the copy pass stops after three
// providers in a row failed as unavailable.
TEST_F(BackendMigrationTest, TheCopyPassStopsAfterThreeUnavailableInARow) {
  for (int i = 0; i < 6; ++i) Create("p" + std::to_string(i), kCanary + std::to_string(i));
  target_.creates_left = 1;
  MigrationReport r = Run({.verify = true});
  EXPECT_EQ(target_.creates, 1 + BackendMigration::kMaxUnavailableInARow);
  EXPECT_EQ(r.copied, 1);
  EXPECT_EQ(r.failed, 3);
  EXPECT_EQ(r.items.size(), 4u);
  EXPECT_NE(r.stopped.find("2 provider(s) not attempted"), std::string::npos) << r.stopped;
  EXPECT_FALSE(r.verified);
  EXPECT_FALSE(r.Clean());
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
  target_.on_create = [&] {  // a writer without the lease
    if (writes++ == 0) {
      const std::string name = secrets_->SecretName(a);
      ASSERT_TRUE(source_.Put(name, *secrets_->sealer().Seal(name, 1, CredentialsToJson(Key("second")))).ok());
    }
  };
  MigrationReport r = Run({.verify = true});
  EXPECT_EQ(r.copied, 1);
  EXPECT_EQ(target_.creates, 1);
  EXPECT_EQ(target_.replaces, 1);  // the second write replaced the first, this run's own
  EXPECT_TRUE(r.Clean());
  EXPECT_EQ(TargetKey(a), "second");
}

// Rewritten with the same credentials (a key rotation's rewrap): what was
// written already holds them.
TEST_F(BackendMigrationTest, ASourceRewrappedDuringTheCopyNeedsNoSecondWrite) {
  std::string a = Create("a", "first");
  int writes = 0;
  target_.on_create = [&] {
    if (writes++ == 0) {
      ASSERT_TRUE(source_.Put(secrets_->SecretName(a), source_.Get(secrets_->SecretName(a))->value).ok());
    }
  };
  MigrationReport r = Run({.verify = true});
  EXPECT_EQ(r.copied, 1);
  EXPECT_EQ(target_.creates, 1);
  EXPECT_EQ(target_.replaces, 0);
  EXPECT_TRUE(r.Clean());
  EXPECT_EQ(records_->Load(Name())->at(a).source_version, source_.Get(secrets_->SecretName(a))->version);
}

TEST_F(BackendMigrationTest, DeleteSourceIsRefusedAfterAFailedVerify) {
  std::string a = Create("a", kCanary), b = Create("b", kCanary);
  MigrationReport r = Run({.delete_source = true}, nullptr, [&](std::string_view pass, size_t, size_t) {
    if (pass == "verify") target_.unreadable = target_inner_.SecretName(b);  // copied, then unreadable
  });
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
  EXPECT_EQ(r.without_credentials, 1);
  EXPECT_EQ(r.skipped, 0);  // nothing to copy is not a copy left alone
  EXPECT_EQ(r.failed, 1);
  EXPECT_EQ(r.items.at(1).provider_id, gone);
  EXPECT_EQ(r.items.at(1).detail, "source: the source holds no secret for it");
}

// Its DYAD_PROVIDER_* variables do not move with it: not "no credentials".
TEST_F(BackendMigrationTest, AProviderReadingOnlyTheEnvironmentFailsNamingItsVariables) {
  ProviderPatch p;
  p.name = p.slug = "envy";
  p.type = "http-sdk";
  p.adapter_config_json = R"({"baseUrl":"http://127.0.0.1:9"})";
  ASSERT_TRUE(providers_->Create(p, Caller{}).ok());
  SecretsOptions o;
  o.env_is_source = true;
  auto from_env = SecretsService::Create(o, source_, *keys_, *repo_, audit_, metrics_, clock_, DefaultRandom(),
                                        EnvMap{{"DYAD_PROVIDER_ENVY_API_KEY", "sk-env-canary"}}).value();
  MigrationReport r = Run({}, from_env.get());
  ASSERT_EQ(r.items.size(), 1u);
  EXPECT_EQ(r.items[0].outcome, "failed");
  EXPECT_EQ(r.items[0].code, ErrorCode::kFailedPrecondition);
  EXPECT_EQ(r.items[0].detail, "source: nothing stored (its credentials come from DYAD_PROVIDER_ENVY_* variables: "
                               "store them first, with `migrate import-env`)");
  EXPECT_EQ(r.failed, 1);
  EXPECT_EQ(r.without_credentials, 0);
  // Without its variables there is nothing to copy.
  EXPECT_EQ(Run().items.at(0).outcome, "no credentials");
  // A type that sends no credentials upstream (local: /v1 answers 501).
  ProviderPatch local;
  local.name = local.slug = "localone";
  local.type = "local";
  ASSERT_TRUE(providers_->Create(local, Caller{}).ok());
  auto local_env = SecretsService::Create(o, source_, *keys_, *repo_, audit_, metrics_, clock_, DefaultRandom(),
                                          EnvMap{{"DYAD_PROVIDER_LOCALONE_API_KEY", "sk-env-canary"}}).value();
  MigrationReport locals = Run({}, local_env.get());
  EXPECT_EQ(locals.failed, 0);
  EXPECT_EQ(locals.without_credentials, 2);
}

TEST_F(BackendMigrationTest, TheSourceItselfIsRefusedAsTarget) {
  Create("a", kCanary);
  BackendMigration m(*secrets_, *repo_, *records_, {source_, *keys_, SealMode::kEnvelope, DefaultRandom()});
  auto r = m.Run({}, nullptr, Caller{});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.code(), ErrorCode::kInvalidArgument);
}

TEST_F(BackendMigrationTest, TheSourcesStoreUnderAnotherNameIsRefusedBeforeADeleteSource) {
  std::string a = Create("a", kCanary);
  testing::ForwardingStore same(source_);  // one store, reached another way (another host name, say)
  BackendMigration m(*secrets_, *repo_, *records_, {same, *target_keys_, SealMode::kEnvelope, DefaultRandom()});
  auto r = m.Run({.verify = true, .delete_source = true}, nullptr, Caller{"cli-migrate", ""});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(r.error().message.find("would delete the only copy"), std::string::npos) << r.error().message;
  EXPECT_TRUE(source_.Get(secrets_->SecretName(a)).ok());  // kept
  EXPECT_EQ(source_.List()->size(), 1u);                    // and the probe is gone
  // A store of its own is not taken for the source's.
  MigrationOptions options;
  options.delete_source = true;
  EXPECT_EQ(Run(options).source_deleted, 1);
}

TEST_F(BackendMigrationTest, RunsToTwoPlacesThatNameSecretsAlikeKeepTheirOwnRecords) {
  auto name = [&](std::string route) {
    return BackendMigration(*secrets_, *repo_, *records_,
                            {target_, *target_keys_, SealMode::kEnvelope, DefaultRandom(), std::move(route)}).Name();
  };
  EXPECT_NE(name("environment -> vault https://a:8200"), name("environment -> vault https://b:8200"));
}

TEST_F(BackendMigrationTest, ASourceIsNeverDeletedOnTheStrengthOfACopyThisMigrationDidNotWrite) {
  std::string a = Create("a", kCanary);
  // The same credentials put there by another run (another route) — as a
  // replica of the source or the source under another address would show them.
  BackendMigration other(*secrets_, *repo_, *records_,
                         {target_, *target_keys_, SealMode::kEnvelope, DefaultRandom(), "elsewhere"});
  ASSERT_TRUE(other.Run({}, nullptr, Caller{"cli-migrate", ""}).ok());
  MigrationOptions options;
  options.delete_source = true;
  for (int run = 0; run < 2; ++run) {  // and a re-run does not take the held value for its own
    MigrationReport r = Run(options);
    EXPECT_EQ(r.skipped, 1);
    EXPECT_EQ(r.verify_ok, 1);
    EXPECT_EQ(r.source_deleted, 0);
    ASSERT_EQ(r.delete_failures.size(), 1u);
    EXPECT_NE(r.delete_failures[0].detail.find("not written by this migration"), std::string::npos)
        << r.delete_failures[0].detail;
    EXPECT_FALSE(r.Clean());
    EXPECT_TRUE(source_.Get(secrets_->SecretName(a)).ok());
  }
}

}  // namespace
}  // namespace dyad
