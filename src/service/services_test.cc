#include <gtest/gtest.h>
#include <algorithm>
#include <atomic>


#include "backends/environment/local_keyring.h"
#include "backends/environment/sqlite_secret_store.h"
#include "core/encoding.h"
#include "core/mutex.h"
#include "secrets/envelope.h"
#include "registry/sqlite_provider_repository.h"
#include "service/cache_warmer.h"
#include "service/provider_service.h"
#include "service/secrets_service.h"
#include "registry/sqlite_key_version_repository.h"
#include "registry/sqlite_settings_repository.h"
#include "testing/fake_dynamic_secrets.h"
#include "testing/fakes.h"
#include "testing/gate.h"
#include "testing/log_capture.h"
#include "testing/refusing_threads.h"
#include "testing/service_fixture.h"

namespace dyad {
namespace {

using namespace std::chrono_literals;
constexpr char kCanary[] = "sk-CANARY-7f3a9b";

// A KeyManager in front of a real one whose Probe() can fail, or hang until
// released (a KMS that stopped answering).
class ControlledKeys final : public testing::ForwardingKeys {
 public:
  using ForwardingKeys::ForwardingKeys;
  Status Probe() override {
    gate_.Pass();
    MutexLock lock(&mu_);
    return answer_;
  }
  void Answer(Status s) {
    MutexLock lock(&mu_);
    answer_ = std::move(s);
  }
  // Every Probe() passes it (arrived(): the probes started); closed, they hang.
  testing::Gate& gate() { return gate_; }

 private:
  testing::Gate gate_{/*open=*/true};
  Mutex mu_;
  Status answer_ DYAD_GUARDED_BY(mu_);
};

// A write whose answer is lost after it was applied (a connection that
// dropped after the COMMIT): the caller is told kUnavailable.
Error LostAnswer() { return MakeError(ErrorCode::kUnavailable, "server closed the connection unexpectedly"); }

// A registry in front of a real one that loses the answers of the next
// `lose_writes` inserts and updates, refuses the next `refuse_updates`
// (kUnavailable, nothing written), leaves the next `in_flight_inserts`
// running, and fails reads while `reads_fail` and the next `failing_reads`
// (a registry restarting).
class LosingRegistry final : public ProviderRepository {
 public:
  explicit LosingRegistry(std::unique_ptr<ProviderRepository> inner) : inner_(std::move(inner)) {}
  Status Insert(const Provider& p) override {
    if (in_flight_inserts.fetch_sub(1) > 0) {  // not applied yet: the next insert finds it committed
      in_flight_ = p;
      return LostAnswer();
    }
    CommitInFlight();  // this insert waits for it (the id's unique index)
    return Lose(inner_->Insert(p));
  }
  Result<Provider> Get(const std::string& id) override {
    if (reads_fail || failing_reads.fetch_sub(1) > 0) {
      if (failed_read) failed_read();
      return LostAnswer();
    }
    return inner_->Get(id);
  }
  Status Update(const Provider& p) override {
    if (in_flight_updates.fetch_sub(1) > 0) {  // not applied yet: a settled read waits for it
      in_flight_update_ = p;
      return LostAnswer();
    }
    if (refuse_updates.fetch_sub(1) > 0) {
      if (auto hook = std::exchange(on_refused, nullptr)) hook();
      return LostAnswer();
    }
    return Lose(inner_->Update(p));
  }
  Status Delete(const std::string& id) override { return inner_->Delete(id); }
  Result<ProviderPage> List(int64_t offset, int64_t limit) override { return inner_->List(offset, limit); }
  Status Ping() override { return inner_->Ping(); }

  std::atomic<int> lose_writes{0};
  std::atomic<int> refuse_updates{0};
  // The next insert loses its answer and is still running: reads do not
  // see it, and it commits when another insert waits for it (the id's
  // unique index), or at CommitInFlight().
  std::atomic<int> in_flight_inserts{0};
  // The next update loses its answer and is still running, holding the
  // row: a plain read shows the row from before it; GetSettled waits for it
  // (it commits first).
  std::atomic<int> in_flight_updates{0};
  std::atomic<int> failing_reads{0};
  std::atomic<bool> reads_fail{false};
  // Run once, on the real registry, after the next write whose answer is lost (single-threaded tests).
  std::function<void(ProviderRepository&)> after_lost;
  std::function<void()> on_refused;   // run once, when the next update is refused
  std::function<void()> failed_read;  // run at each read that fails (a busy pool's wait)

  Result<Provider> GetSettled(const std::string& id) override {
    if (auto committed = std::exchange(in_flight_update_, std::nullopt)) EXPECT_TRUE(inner_->Update(*committed).ok());
    return Get(id);
  }
  Status InsertSettled(const Provider& p) override {
    if (unanswered_reinserts.fetch_sub(1) > 0) return LostAnswer();  // nothing written
    if (cancelled_reinserts.fetch_sub(1) > 0) {  // a statement cancelled (57014): not retried
      return MakeError(ErrorCode::kInternal, "canceling statement due to statement timeout");
    }
    return Insert(p);
  }
  bool ReadsAreLocal() const override { return reads_are_local; }
  // The next inserts made again after a lost answer stay unanswered, or
  // are cancelled.
  std::atomic<int> unanswered_reinserts{0};
  std::atomic<int> cancelled_reinserts{0};
  bool reads_are_local = false;  // SQLite's answer when true
  void CommitInFlight() {
    if (auto committed = std::exchange(in_flight_, std::nullopt)) EXPECT_TRUE(inner_->Insert(*committed).ok());
  }

 private:
  Status Lose(Status s) {
    if (!s.ok() || lose_writes.fetch_sub(1) <= 0) return s;
    if (auto hook = std::exchange(after_lost, nullptr)) hook(*inner_);
    return LostAnswer();
  }
  std::unique_ptr<ProviderRepository> inner_;
  std::optional<Provider> in_flight_;         // an insert
  std::optional<Provider> in_flight_update_;  // an update
};

// A store that loses the answers of the next `lose_writes` creates and
// replaces, refuses the next `refuse_replaces` (nothing written), and fails
// reads while `reads_fail` and the next `failing_reads`.
class LosingStore final : public testing::ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;
  Result<StoredSecret> Get(const std::string& name) override {
    if (reads_fail || failing_reads.fetch_sub(1) > 0) {
      if (failed) failed();
      return LostAnswer();
    }
    return inner_.Get(name);
  }
  Result<std::string> Create(const std::string& name, std::string_view value) override {
    return Lose(inner_.Create(name, value));
  }
  Result<std::string> Replace(const std::string& name, std::string_view value, const std::string& version) override {
    if (refuse_replaces.fetch_sub(1) > 0) {
      if (auto hook = std::exchange(on_refused, nullptr)) hook();
      if (failed) failed();
      return LostAnswer();
    }
    if (in_flight_replaces.fetch_sub(1) > 0) {  // not applied yet: a settled read waits for it
      in_flight_ = SecretStore::Swap{name, version, std::string(value)};
      return LostAnswer();
    }
    auto r = inner_.Replace(name, value, version);
    if (auto hook = std::exchange(after_replace, nullptr); r.ok() && hook) hook();
    return Lose(std::move(r));
  }
  Result<StoredSecret> GetSettled(const std::string& name) override {
    if (auto w = std::exchange(in_flight_, std::nullopt)) EXPECT_TRUE(inner_.Replace(w->name, w->value, w->version).ok());
    return Get(name);
  }
  // The next replace loses its answer and is still running: a plain read
  // shows the secret from before it; GetSettled waits for it (it commits first).
  std::atomic<int> in_flight_replaces{0};
  std::atomic<int> lose_writes{0};
  std::atomic<int> refuse_replaces{0};
  std::atomic<int> failing_reads{0};
  std::function<void()> after_replace;  // run once, after the next replace written (single-threaded tests)
  std::function<void()> on_refused;     // run once, when the next replace is refused
  std::function<void()> failed;         // run at each read that fails and each replace refused
  std::atomic<bool> reads_fail{false};

 private:
  Result<std::string> Lose(Result<std::string> r) {
    if (r.ok() && lose_writes.fetch_sub(1) > 0) return LostAnswer();
    return r;
  }
  std::optional<SecretStore::Swap> in_flight_;  // a replace
};

// The leases of one instance, which another instance takes over when told
// (`taken_over`): Renew() then finds them gone.
class TakenOverLeases final : public ProviderLeases {
 public:
  Result<bool> TryAcquire(const std::string&, const std::string&, Clock::Duration) override {
    if (acquiring) acquiring();  // e.g. a wait for a pooled connection before the lease is stamped
    return true;
  }
  Result<bool> Renew(const std::string&, const std::string&, Clock::Duration) override { return !taken_over; }
  Status Release(const std::string&, const std::string&) override { return OkStatus(); }
  std::atomic<bool> taken_over{false};
  std::function<void()> acquiring;
};

// A change feed that keeps what is published (and delivers nothing).
class RecordingFeed final : public ChangeFeed {
 public:
  Status Publish(const Change& change) override {
    published_.Add(change);
    return OkStatus();
  }
  uint64_t Subscribe(Callback) override { return 1; }
  void Unsubscribe(uint64_t) override {}
  Status Start() override { return OkStatus(); }
  void Stop() override {}
  Status CheckNow() override { return OkStatus(); }
  std::vector<Change> published() { return published_.All(); }

 private:
  testing::Recorded<Change> published_;
};

class ServicesTest : public testing::ServiceFixture {
 protected:
  void SetUp() override {
    ServiceFixture::SetUp();
    Build({});
  }
  static SecretsOptions Options() {
    SecretsOptions o;
    o.cache.ttl = 300s;
    return o;
  }
  void Build(const EnvMap& env) { ServiceFixture::Build(Options(), env); }
  static ProviderPatch NewProvider(const std::string& slug, const std::string& key = kCanary) {
    ProviderPatch p;
    p.name = slug;
    p.slug = slug;
    p.type = "http-sdk";
    p.adapter_config_json = R"({"baseUrl":"http://127.0.0.1:9"})";
    p.credentials = ApiKeyFields(key);
    return p;
  }
  Provider Create(const std::string& slug, const std::string& key = kCanary) {
    auto r = providers_->Create(NewProvider(slug, key), caller_);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    return r.ok() ? *r : Provider{};
  }
  // The registry's only row (what a create whose answer was lost left), else nullopt.
  std::optional<Provider> OnlyRow() {
    auto listed = repo_->List(0, 10);
    if (!listed.ok() || listed->items.size() != 1) return std::nullopt;
    return listed->items.front();
  }
  static CredentialFields ApiKeyFields(const std::string& key) {
    CredentialFields f;
    f.emplace("api_key", SecretBytes(key));
    return f;
  }
  // Rotates p's credentials (version 1) to api_key "v2", then puts the
  // validly sealed version-1 value back behind the gateway's back; returns it.
  std::string RollBackToVersion1(const Provider& p) {
    std::string name = secrets_->SecretName(p.id);
    std::string v1 = store_.data().at(name);
    EXPECT_TRUE(providers_->RotateCredentials(p.id, ApiKeyFields("v2"), caller_).ok());
    EXPECT_TRUE(store_.Put(name, v1).ok());
    return v1;
  }
  std::string ApiKey(const CredentialRead& r) { return std::string(r.credentials->fields.at("api_key").view()); }
  // The api_key a read from the store (not the cache) gives, or the error's code.
  std::string StoredKey(const std::string& id) {
    secrets_->cache().Clear();
    auto r = secrets_->Get(id, caller_);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    return r.ok() ? ApiKey(*r) : std::string(ErrorCodeName(r.code()));
  }
  // The services built again over a LosingRegistry in front of the registry
  // (and over `store`, if given), with `options`.
  LosingRegistry& LoseRegistryAnswers(SecretStore* store = nullptr, SecretsOptions options = Options()) {
    auto registry = std::make_unique<LosingRegistry>(std::move(repo_));
    LosingRegistry& losing = *registry;
    repo_ = std::move(registry);
    ServiceFixture::Build(std::move(options), {}, store);
    return losing;
  }
  // Health after a probe that started now has answered.
  SecretsHealth Probed(SecretsService& s) {
    s.Health();
    EXPECT_TRUE(s.AwaitProbe(30s));
    return s.Health();
  }

  // What a test's services may be built over: members, so that they outlive
  // the services, which TearDown destroys (the service unsubscribes from
  // its feed as it goes; a test's locals would be gone by then).
  RecordingFeed feed_;
  testing::FakeDynamicSecrets dynamic_;
  LosingStore losing_store_{store_};
  testing::MemoryStore unconditional_store_{"dyad-gateway", /*conditional=*/false};
  TakenOverLeases leases_;
  std::optional<testing::RefusingThreads> threads_;  // emplaced by a test whose services it starts threads for
};

TEST_F(ServicesTest, CreateStoresSealedSecretAndPlaceholderRow) {
  Provider p = Create("openai");
  EXPECT_EQ(p.credential_fields, std::vector<std::string>{"api_key"});
  EXPECT_EQ(p.credentials_version, 1);
  auto data = store_.data();
  ASSERT_EQ(data.size(), 1u);
  EXPECT_EQ(data.begin()->first, "dyad-gateway/providers/" + p.id);
  EXPECT_EQ(data.begin()->second.find(kCanary), std::string::npos);
  auto r = secrets_->Get(p.id, caller_);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(ApiKey(*r), kCanary);
  EXPECT_EQ(r->source, "store");
  EXPECT_EQ(secrets_->Get(p.id, caller_)->source, "cache");
}

TEST_F(ServicesTest, FailedCreateLeavesNoSecretBehind) {
  Create("openai");
  ProviderPatch dup;
  dup.name = "again";
  dup.slug = "openai";
  dup.type = "proxy";
  dup.adapter_config_json = R"({"baseUrl":"http://127.0.0.1:9"})";
  dup.credentials = CredentialFields{};
  dup.credentials->emplace("api_key", SecretBytes("x"));
  auto r = providers_->Create(dup, caller_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(store_.size(), 1u);
}

TEST_F(ServicesTest, FailedStoreWriteLeavesNoRow) {
  store_.Fail(MakeError(ErrorCode::kUnavailable, "down"));
  ProviderPatch p;
  p.name = p.slug = "x";
  p.type = "proxy";
  p.adapter_config_json = R"({"baseUrl":"http://127.0.0.1:9"})";
  p.credentials = CredentialFields{};
  p.credentials->emplace("api_key", SecretBytes("v"));
  EXPECT_EQ(providers_->Create(p, caller_).code(), ErrorCode::kUnavailable);
  store_.Fail(std::nullopt);
  EXPECT_EQ(repo_->List(0, 10)->total, 0);
}

TEST_F(ServicesTest, FailedRowUpdateRestoresTheOldSecret) {
  Create("a");
  Provider b = Create("b", "old-b");
  ProviderPatch patch;
  patch.slug = "a";  // taken: the row update fails after the secret write
  patch.credentials = CredentialFields{};
  patch.credentials->emplace("api_key", SecretBytes("new-b"));
  EXPECT_EQ(providers_->Update(b.id, patch, caller_).code(), ErrorCode::kAlreadyExists);
  auto r = secrets_->Get(b.id, caller_);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(ApiKey(*r), "old-b");
  EXPECT_EQ(repo_->Get(b.id)->credentials_version, 1);
}

// A row update whose answer was lost: committed already, or still running
// on the server (holding the row, a plain read shows the row from before
// it). Read back, the row says so, and the write stands: restoring the old
// secret under the new row would make every read a "rollback". The
// read-back waits for an update in flight (GetSettled).
TEST_F(ServicesTest, ARowUpdateWhoseAnswerWasLostIsReadBackNotUndone) {
  LosingRegistry& losing = LoseRegistryAnswers();
  for (const bool still_running : {false, true}) {
    SCOPED_TRACE(still_running ? "still running" : "committed");
    Provider p = Create(still_running ? "running" : "committed", "old");
    (still_running ? losing.in_flight_updates : losing.lose_writes) = 1;
    auto rotated = providers_->RotateCredentials(p.id, ApiKeyFields("new"), caller_);
    ASSERT_TRUE(rotated.ok()) << rotated.error().message;
    EXPECT_EQ(rotated->credentials_version, 2);
    EXPECT_EQ(rotated->revision, repo_->Get(p.id)->revision);
    EXPECT_EQ(StoredKey(p.id), "new");
  }
  for (const auto& e : audit_.events()) {
    EXPECT_NE(e.action, "secret.tampered");
    EXPECT_NE(e.action, "secret.restore_failed");
  }
}

// The update landed, its answer was lost, and another writer (the lease
// ran out meanwhile) moved the row on before it was read back: the row names
// this write's credentials, so the secret is not put back under it.
TEST_F(ServicesTest, ARowUpdateOvertakenBeforeItWasReadBackKeepsItsSecret) {
  Provider p = Create("openai", "old");
  LosingRegistry& losing = LoseRegistryAnswers();
  losing.lose_writes = 1;
  losing.after_lost = [&](ProviderRepository& real) {
    Provider now = *real.Get(p.id);
    now.name = "renamed by another writer";
    ASSERT_TRUE(real.Update(now).ok());
  };
  auto rotated = providers_->RotateCredentials(p.id, ApiKeyFields("new"), caller_);
  ASSERT_FALSE(rotated.ok());
  EXPECT_EQ(rotated.code(), ErrorCode::kUnavailable);
  EXPECT_NE(rotated.error().message.find("is unknown"), std::string::npos) << rotated.error().message;
  EXPECT_EQ(StoredKey(p.id), "new");
  EXPECT_EQ(repo_->Get(p.id)->credentials_version, 2);
}

// The update's answer was lost and the row cannot be read back either:
// whether it was written is unknown, and said so. The new secret stays: if
// the row was written, putting the old one back would make every read fail
// as a rollback; if not, a secret ahead of its row reads as the newer write.
TEST_F(ServicesTest, ARowUpdateOfUnknownOutcomeKeepsTheNewSecretAndSaysSo) {
  Provider p = Create("openai", "old");
  LosingRegistry& losing = LoseRegistryAnswers();
  // The row read under the lock succeeds; the update's answer and every read after it are lost.
  auto edit = providers_->Edit(p.id, std::nullopt, [&](const Provider&, const CredentialFields&, const StoredBytes&) {
    ProviderPatch patch;
    patch.credentials = ApiKeyFields("new");
    losing.lose_writes = 1;
    losing.reads_fail = true;
    return Result<ProviderPatch>(std::move(patch));
  }, caller_);
  ASSERT_FALSE(edit.ok());
  EXPECT_EQ(edit.code(), ErrorCode::kUnavailable);
  EXPECT_NE(edit.error().message.find("whether provider '" + p.id + "' was written is unknown"), std::string::npos)
      << edit.error().message;
  EXPECT_GE(clock_.Slept(), 1s) << "read back for a while, through the clock";
  losing.reads_fail = false;
  EXPECT_EQ(StoredKey(p.id), "new");  // not a rollback
  EXPECT_EQ(repo_->Get(p.id)->credentials_version, 2);
}

// A merge (PATCH) retried after one of unknown outcome: the first stored
// its secret, its row update was refused and the row could not be read
// back, so the secret stayed ahead of its row. The retry merges to the
// same credentials; it must still bring the row up to the secret (its
// version and field names), not answer success with the row naming the
// old credentials.
TEST_F(ServicesTest, AMergeRetriedAfterAnUnknownOutcomeBringsTheRowUpToItsSecret) {
  Provider p = Create("openai", "old");
  LosingRegistry& losing = LoseRegistryAnswers();
  bool lose = true;
  auto merge = [&](const Provider&, const CredentialFields& masked, const StoredBytes&) {
    ProviderPatch patch;
    patch.credentials = masked;
    (*patch.credentials)["api_key"] = SecretBytes("new");
    (*patch.credentials)["organization"] = SecretBytes("org-1");
    if (lose) {  // after the row was read under the lock
      losing.refuse_updates = 1;
      losing.reads_fail = true;
    }
    return Result<ProviderPatch>(std::move(patch));
  };
  const std::vector<std::string> named{"api_key", "organization"};
  auto first = providers_->Edit(p.id, named, merge, caller_);
  ASSERT_FALSE(first.ok());
  EXPECT_NE(first.error().message.find("was written is unknown"), std::string::npos) << first.error().message;
  losing.reads_fail = false;
  lose = false;
  EXPECT_EQ(StoredKey(p.id), "new");  // the secret is ahead of its row
  EXPECT_EQ(repo_->Get(p.id)->credentials_version, 1);

  auto retried = providers_->Edit(p.id, named, merge, caller_);
  ASSERT_TRUE(retried.ok()) << retried.error().message;
  const Provider row = *repo_->Get(p.id);
  EXPECT_EQ(row.credentials_version, 3);  // past the secret's version 2, which was served
  EXPECT_EQ(row.credential_fields, named);
  EXPECT_EQ(retried->credentials_version, 3);
  EXPECT_EQ(StoredKey(p.id), "new");

  // In step again: a merge that changes nothing now writes nothing.
  auto again = providers_->Edit(p.id, named, merge, caller_);
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(repo_->Get(p.id)->credentials_version, 3);
}

// The same retry when the secret refers to a dynamic secret this instance
// has leased for it: stored again at the version after it, since replacing
// credentials ends this instance's leases up to the version it serves.
// Stored again at that same version, every later read here failed as
// "replaced or deleted" until the next write.
TEST_F(ServicesTest, AMergeRetriedAfterAnUnknownOutcomeKeepsServingItsDynamicSecret) {
  testing::FakeDynamicSecrets& source = dynamic_;
  SecretsOptions o = Options();
  o.dynamic = &source;
  LosingRegistry& losing = LoseRegistryAnswers(nullptr, o);
  Provider p = Create("db", "plain");
  // The retry matches the secret ahead, or names another field.
  for (const auto& [lost_field, retried_field] : {std::pair{"password", "password"}, std::pair{"username", "password"}}) {
    SCOPED_TRACE(lost_field);
    std::string field = lost_field;
    bool lose = true;
    auto merge = [&](const Provider&, const CredentialFields& masked, const StoredBytes&) {
      ProviderPatch patch;
      patch.credentials = masked;
      (*patch.credentials)["api_key"] = EncodeReference({"database/creds/readonly", field});
      if (std::exchange(lose, false)) {
        losing.refuse_updates = 1;
        losing.reads_fail = true;
      }
      return Result<ProviderPatch>(std::move(patch));
    };
    const std::vector<std::string> named{"api_key"};
    ASSERT_FALSE(providers_->Edit(p.id, named, merge, caller_).ok());
    losing.reads_fail = false;
    const int64_t row_version = repo_->Get(p.id)->credentials_version;
    EXPECT_FALSE(StoredKey(p.id).empty());  // ahead of its row, its lease taken here
    field = retried_field;
    auto retried = providers_->Edit(p.id, named, merge, caller_);
    ASSERT_TRUE(retried.ok()) << retried.error().message;
    EXPECT_GT(repo_->Get(p.id)->credentials_version, row_version);
    EXPECT_EQ(StoredKey(p.id).rfind(testing::kDynamicCanary, 0), 0u);
  }
  // A rotation (a replace, which does not open the secret) retried the same way.
  auto rotate = [&](const char* field) {
    CredentialFields f;
    f.emplace("api_key", EncodeReference({"database/creds/readonly", field}));
    return providers_->RotateCredentials(p.id, f, caller_);
  };
  losing.refuse_updates = 1;
  losing.on_refused = [&] { losing.reads_fail = true; };  // nor can the row be read back
  ASSERT_FALSE(rotate("username").ok());
  losing.reads_fail = false;
  EXPECT_FALSE(StoredKey(p.id).empty());  // ahead of its row, its lease taken here
  auto rotated = rotate("password");
  ASSERT_TRUE(rotated.ok()) << rotated.error().message;
  EXPECT_EQ(StoredKey(p.id).rfind(testing::kDynamicCanary, 0), 0u);
}

// A rotation whose row was certainly not written puts back the credentials
// it replaced. The write ended their dynamic-secret leases on this instance
// (revoked as replaced); the credentials put back must still resolve here,
// with new leases, not be refused as "replaced or deleted" on every read
// until the next rotation.
TEST_F(ServicesTest, CredentialsPutBackByAnUndoResolveTheirDynamicSecretsAgain) {
  SecretsOptions o = Options();
  o.dynamic = &dynamic_;
  LosingRegistry& losing = LoseRegistryAnswers(nullptr, o);
  ProviderPatch patch = NewProvider("db");
  (*patch.credentials)["api_key"] = EncodeReference({"database/creds/readonly", "password"});
  auto created = providers_->Create(patch, caller_);
  ASSERT_TRUE(created.ok()) << created.error().message;
  const std::string first = StoredKey(created->id);
  EXPECT_EQ(first, std::string(testing::kDynamicCanary) + "-p1");
  EXPECT_EQ(dynamic_.revoked().size(), 0u);

  losing.refuse_updates = 1;  // the row read back shows it unwritten: the secret is undone
  auto rotated = providers_->RotateCredentials(created->id, ApiKeyFields("plain"), caller_);
  ASSERT_FALSE(rotated.ok());
  EXPECT_EQ(repo_->Get(created->id)->credentials_version, 1);
  EXPECT_EQ(dynamic_.revoked(), std::vector<std::string>{"database/creds/readonly/1"});  // ended as replaced

  auto read = secrets_->Get(created->id, caller_);
  ASSERT_TRUE(read.ok()) << read.error().message;
  EXPECT_EQ(ApiKey(*read), std::string(testing::kDynamicCanary) + "-p2");  // a new lease: the old one is gone
  EXPECT_EQ(read->credentials->version, 1);
}

// A replace (PUT, rotate) stores past a secret ahead of its row, by the
// version its envelope header names, but only a plausible one: a header
// further than 1,000 versions ahead (forged, or sealed by a bug) is ignored,
// so it cannot push the credentials version towards its limit.
TEST_F(ServicesTest, AReplaceStoresPastASecretAheadOfItsRowOnlyByAPlausibleVersion) {
  Provider p = Create("openai", "first");
  const std::string name = secrets_->SecretName(p.id);
  for (const auto& [ahead, expected] : {std::pair<int64_t, int64_t>{5000, 2}, std::pair<int64_t, int64_t>{3, 6}}) {
    SCOPED_TRACE(ahead);
    const int64_t row = repo_->Get(p.id)->credentials_version;
    auto sealed = secrets_->sealer().Seal(name, row + ahead, SecretBytes(R"({"api_key":"ahead"})"));
    ASSERT_TRUE(sealed.ok()) << sealed.error().message;
    ASSERT_TRUE(store_.Put(name, *sealed).ok());
    auto rotated = providers_->RotateCredentials(p.id, ApiKeyFields("next"), caller_);
    ASSERT_TRUE(rotated.ok()) << rotated.error().message;
    EXPECT_EQ(rotated->credentials_version, expected);
    EXPECT_EQ(repo_->Get(p.id)->credentials_version, expected);
    EXPECT_EQ(StoredKey(p.id), "next");
  }
}

// Clearing the credentials of a provider whose secret is ahead of its row
// (a write whose row update failed): the secret read is the one deleted,
// and the row moves past its version, so no later write reuses a version
// already served.
TEST_F(ServicesTest, AClearOverASecretAheadOfItsRowDeletesItAndMovesPastIt) {
  Provider p = Create("openai", "first");
  const std::string name = secrets_->SecretName(p.id);
  auto sealed = secrets_->sealer().Seal(name, 4, SecretBytes(R"({"api_key":"ahead"})"));
  ASSERT_TRUE(sealed.ok()) << sealed.error().message;
  ASSERT_TRUE(store_.Put(name, *sealed).ok());
  ProviderPatch clear;
  clear.credentials = CredentialFields{};
  auto cleared = providers_->Update(p.id, clear, caller_);
  ASSERT_TRUE(cleared.ok()) << cleared.error().message;
  EXPECT_TRUE(cleared->credential_fields.empty());
  EXPECT_EQ(cleared->credentials_version, 5);
  EXPECT_EQ(store_.data().count(name), 0u) << "the secret ahead of its row was left";
  auto rotated = providers_->RotateCredentials(p.id, ApiKeyFields("again"), caller_);
  ASSERT_TRUE(rotated.ok()) << rotated.error().message;
  EXPECT_EQ(rotated->credentials_version, 6);
  secrets_->cache().Clear();
  auto r = secrets_->Get(p.id, caller_);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(ApiKey(*r), "again");
}

// The registry and the store restarting under a rotation (the cluster
// test's PostgreSQL restart): the secret is written, the row update
// refused, and neither the row nor the store answers at once. The outcome
// is read back and the old secret put back once they answer again, before
// the error is returned: the acknowledged credentials are never left
// replaced by a write that failed.
TEST_F(ServicesTest, ARotationRefusedWhileTheRegistryRestartsIsUndoneOnceItAnswers) {
  LosingStore& store = losing_store_;
  LosingRegistry& losing = LoseRegistryAnswers(&store);
  Provider p = Create("openai", "acknowledged");
  ASSERT_FALSE(p.id.empty());
  auto rotated = providers_->Edit(p.id, std::nullopt, [&](const Provider&, const CredentialFields&, const StoredBytes&) {
    ProviderPatch patch;
    patch.credentials = ApiKeyFields("failed");
    losing.refuse_updates = 1;
    losing.failing_reads = 3;
    store.after_replace = [&] { store.refuse_replaces = 2; };  // the secret is written; its undo refused twice
    return Result<ProviderPatch>(std::move(patch));
  }, caller_);
  ASSERT_FALSE(rotated.ok());
  EXPECT_EQ(rotated.code(), ErrorCode::kUnavailable);
  EXPECT_EQ(rotated.error().message.find("unknown"), std::string::npos) << rotated.error().message;
  EXPECT_EQ(StoredKey(p.id), "acknowledged");
  EXPECT_EQ(repo_->Get(p.id)->credentials_version, 1);
  for (const auto& e : audit_.events()) EXPECT_NE(e.action, "secret.restore_failed");
}

// The settle rounds of one write share its deadline: the lease's TTL less
// its margin after it was taken (20 s by default). Every failed answer here
// takes 2.5 s (a busy pool). The store read-back and the row read-back each
// succeed at their fourth attempt (about 7.5 s each); the undo is refused
// throughout. On its own it would try for 8 s (four attempts); the write's
// deadline leaves it two, and no attempt begins past it.
TEST_F(ServicesTest, TheSettleRoundsOfAWriteStopAtItsDeadline) {
  LosingStore& store = losing_store_;
  LosingRegistry& losing = LoseRegistryAnswers(&store);
  Provider p = Create("openai", "old");
  ASSERT_FALSE(p.id.empty());
  const Clock::Instant start = clock_.Now();
  const Clock::Instant deadline = start + 20s;  // ProviderLeaseOptions: a 30 s TTL less a 10 s margin
  std::vector<Clock::Instant> began;  // every failed attempt
  auto busy = [&] {
    began.push_back(clock_.Now());
    clock_.Advance(2500ms);
  };
  store.failed = busy;
  losing.failed_read = busy;
  auto rotated = providers_->Edit(p.id, std::nullopt, [&](const Provider&, const CredentialFields&, const StoredBytes&) {
    ProviderPatch patch;
    patch.credentials = ApiKeyFields("new");
    store.lose_writes = 1;  // the secret is written, its answer lost
    store.after_replace = [&] {
      store.failing_reads = 3;
      store.refuse_replaces = 100;  // every undo
    };
    losing.refuse_updates = 1;  // the row is not written
    losing.failing_reads = 3;
    return Result<ProviderPatch>(std::move(patch));
  }, caller_);
  ASSERT_FALSE(rotated.ok());
  EXPECT_NE(rotated.error().message.find("is unknown"), std::string::npos) << rotated.error().message;
  EXPECT_EQ(100 - store.refuse_replaces, 2) << "undo attempts";
  EXPECT_EQ(began.size(), 3u + 3u + 2u);
  for (const auto& t : began) {
    EXPECT_LT(t, deadline) << "an attempt began " << std::chrono::duration<double>(t - start).count() << " s in";
  }
  EXPECT_LT(clock_.Now(), deadline + 2500ms);
  bool audited = false;
  for (const auto& e : audit_.events()) audited = audited || e.action == "secret.restore_failed";
  EXPECT_TRUE(audited);
}

// A write's deadline counts from when its lease was asked for: the lease's
// end is stamped before TryAcquire's wait for a pooled connection (up to
// 10 s), and a deadline counted from its answer would leave no margin.
TEST_F(ServicesTest, AWritesDeadlineCountsFromTheAskForItsLease) {
  TakenOverLeases leases;
  leases.acquiring = [&] { clock_.Advance(10s); };
  ProviderLeaseOptions options;
  ProviderLocks locks(&leases, clock_, DefaultRandom(), options);
  const Clock::Instant asked = clock_.Now();
  auto held = locks.Hold("p");
  ASSERT_TRUE(held.ok()) << held.error().message;
  EXPECT_EQ((*held)->deadline(), asked + options.ttl - options.margin);
}

// The lease ran out while the write settled and another instance took it
// over: the undo, fenced by the lease in a store without conditional
// writes, is refused. That is not a version conflict to pass over: the
// write's outcome is unknown, said so, logged and audited.
TEST_F(ServicesTest, AnUndoRefusedForALostLeaseSaysTheOutcomeIsUnknown) {
  testing::MemoryStore& plain = unconditional_store_;
  TakenOverLeases& leases = leases_;
  SecretsOptions o = Options();
  o.leases = &leases;
  LosingRegistry& losing = LoseRegistryAnswers(&plain, o);
  Provider p = Create("openai", "old");
  ASSERT_FALSE(p.id.empty());
  testing::LogCapture log;
  losing.refuse_updates = 1;  // the row is not written: the secret is to be put back
  losing.on_refused = [&] { leases.taken_over = true; };
  auto rotated = providers_->RotateCredentials(p.id, ApiKeyFields("new-secret-value"), caller_);
  ASSERT_FALSE(rotated.ok());
  EXPECT_EQ(rotated.code(), ErrorCode::kUnavailable);
  EXPECT_NE(rotated.error().message.find("whether provider '" + p.id + "' was written is unknown"), std::string::npos)
      << rotated.error().message;
  EXPECT_NE(log.Text().find("its lease ran out while the write settled"), std::string::npos) << log.Text();
  EXPECT_EQ(log.Text().find("new-secret-value"), std::string::npos);
  std::optional<AuditEvent> failed;
  for (const auto& e : audit_.events()) {
    if (e.action == "secret.restore_failed") failed = e;
  }
  ASSERT_TRUE(failed.has_value());
  EXPECT_EQ(failed->resource, p.id);
  EXPECT_EQ(failed->error_code, "CONFLICT");
}

// An undo tried again while the store does not answer tells the other
// instances once, when it ends, not at every attempt.
TEST_F(ServicesTest, ARestoreRetriedPublishesOneChange) {
  LosingStore& store = losing_store_;
  RecordingFeed& feed = feed_;
  SecretsOptions o = Options();
  o.changes = &feed;
  LosingRegistry& losing = LoseRegistryAnswers(&store, o);
  Provider p = Create("openai", "acknowledged");
  ASSERT_FALSE(p.id.empty());
  const size_t before = feed.published().size();
  int refused = 0;
  auto rotated = providers_->Edit(p.id, std::nullopt, [&](const Provider&, const CredentialFields&, const StoredBytes&) {
    ProviderPatch patch;
    patch.credentials = ApiKeyFields("failed");
    losing.refuse_updates = 1;
    store.after_replace = [&] {
      store.refuse_replaces = 3;  // the undo is refused three times, then done
      store.failed = [&] { ++refused; };
    };
    return Result<ProviderPatch>(std::move(patch));
  }, caller_);
  ASSERT_FALSE(rotated.ok());
  EXPECT_EQ(refused, 3);
  EXPECT_EQ(StoredKey(p.id), "acknowledged");
  std::vector<Change> changes = feed.published();
  ASSERT_GE(changes.size(), before);
  changes.erase(changes.begin(), changes.begin() + static_cast<std::ptrdiff_t>(before));
  ASSERT_EQ(changes.size(), 2u) << "one for the write, one for its undo";
  for (const auto& c : changes) {
    EXPECT_EQ(c.kind, Change::Kind::kCredentials);
    EXPECT_EQ(c.subject, p.id);
  }
}

// An insert whose answer was lost: applied already, or still running on
// the server, where a read does not see it yet. Undone then, its secret
// would be deleted and the row committed after it would name a secret that
// is gone. Read back, or inserted again (the row waits for the first on the
// id's unique index and finds it committed), the create stands.
TEST_F(ServicesTest, AnInsertWhoseAnswerWasLostIsNotUndone) {
  for (const bool still_running : {false, true}) {
    SCOPED_TRACE(still_running ? "still running" : "applied");
    LosingRegistry& losing = LoseRegistryAnswers();
    (still_running ? losing.in_flight_inserts : losing.lose_writes) = 1;
    Provider p = Create(still_running ? "running" : "applied", "first");
    ASSERT_FALSE(p.id.empty());
    losing.CommitInFlight();  // (already committed: nothing left to commit)
    EXPECT_TRUE(repo_->Get(p.id).ok());
    EXPECT_EQ(StoredKey(p.id), "first");
  }
  for (const auto& e : audit_.events()) EXPECT_NE(e.action, "secret.orphaned");
}

// An insert whose answer was lost, inserted again with no answer either: on
// an engine whose writes end with their call (SQLite) the row is read back
// and the create succeeds; on a network database (PostgreSQL) no read can
// see an insert still running, so the outcome is unknown and the secret is
// kept. The first insert was applied in both.
TEST_F(ServicesTest, AnInsertUnansweredTwiceIsReadBackOnlyWhereReadsAreLocal) {
  // The second insert unanswered, or (a network database) cancelled: a
  // failure that says nothing of the first insert either.
  for (const auto& [local, cancelled] : {std::pair{true, false}, std::pair{false, false}, std::pair{false, true}}) {
    SCOPED_TRACE(local ? "reads are local" : cancelled ? "network database, cancelled" : "network database");
    LosingRegistry& losing = LoseRegistryAnswers();
    losing.reads_are_local = local;
    losing.lose_writes = 1;
    (cancelled ? losing.cancelled_reinserts : losing.unanswered_reinserts) = 1000;
    const std::string slug = local ? "local" : cancelled ? "cancelled" : "remote";
    auto created = providers_->Create(NewProvider(slug, "first"), caller_);
    if (local) {
      ASSERT_TRUE(created.ok()) << created.error().message;
    } else {
      ASSERT_FALSE(created.ok());
      EXPECT_EQ(created.code(), ErrorCode::kUnavailable);
      EXPECT_NE(created.error().message.find("was written is unknown"), std::string::npos) << created.error().message;
    }
    auto page = repo_->List(0, 100);
    ASSERT_TRUE(page.ok()) << page.error().message;
    std::optional<Provider> row;
    for (const auto& p : page->items) {
      if (p.slug == slug) row = p;
    }
    ASSERT_TRUE(row) << "the first insert was applied";
    EXPECT_EQ(StoredKey(row->id), "first");
  }
  for (const auto& e : audit_.events()) EXPECT_NE(e.action, "secret.orphaned");
}

// An insert whose answer was lost and whose row cannot be read back: the
// error says the outcome is unknown, and the secret is kept, since a row
// that was written would otherwise name a secret that is gone (every read
// failing). One not written leaves an orphan for the secrets gc.
TEST_F(ServicesTest, AnInsertOfUnknownOutcomeSaysSoAndKeepsItsSecret) {
  LosingRegistry& losing = LoseRegistryAnswers();
  losing.lose_writes = 1;
  losing.reads_fail = true;
  auto created = providers_->Create(NewProvider("openai", "first"), caller_);
  ASSERT_FALSE(created.ok());
  EXPECT_EQ(created.code(), ErrorCode::kUnavailable);
  EXPECT_NE(created.error().message.find("was written is unknown"), std::string::npos) << created.error().message;
  losing.reads_fail = false;
  const std::optional<Provider> row = OnlyRow();  // the insert was applied
  ASSERT_TRUE(row);
  EXPECT_EQ(StoredKey(row->id), "first");
  for (const auto& e : audit_.events()) EXPECT_NE(e.action, "secret.orphaned");
}

// A store write whose answer was lost is read back, and found written: the
// write goes on to the row instead of leaving the secret ahead of it.
TEST_F(ServicesTest, AStoreWriteWhoseAnswerWasLostIsReadBack) {
  LosingStore& store = losing_store_;
  ServiceFixture::Build(Options(), {}, &store);
  store.lose_writes = 1;
  Provider created = Create("openai", "first");
  ASSERT_FALSE(created.id.empty());
  // Applied, then its answer lost; and lost while it still ran (a cut
  // connection to a database-backed store), which only a settled read waits
  // for: read at once, the secret looked unwritten, the rotation was
  // reported failed, and then the write committed under the client.
  for (const bool still_running : {false, true}) {
    SCOPED_TRACE(still_running ? "still running" : "applied");
    const std::string key = still_running ? "third" : "second";
    (still_running ? store.in_flight_replaces : store.lose_writes) = 1;
    auto rotated = providers_->RotateCredentials(created.id, ApiKeyFields(key), caller_);
    ASSERT_TRUE(rotated.ok()) << rotated.error().message;
    const int64_t version = still_running ? 3 : 2;
    EXPECT_EQ(repo_->Get(created.id)->credentials_version, version);
    secrets_->cache().Clear();
    auto r = secrets_->Get(created.id, caller_);
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(ApiKey(*r), key);
    EXPECT_EQ(r->credentials->version, version);
  }
}

// A store write that failed with kUnavailable is read back. Plain JSON (the
// store encrypts) gives the same bytes for the same credentials, so a new
// version there may be this write or another's: the error says the outcome
// is unknown. The version read unchanged means nothing was written, in
// either mode; an envelope store that cannot be read says unknown too.
TEST_F(ServicesTest, AStoreWriteOfUnknownOutcomeSaysSoAndOnlyThen) {
  LosingStore& store = losing_store_;
  SecretsOptions o;
  o.seal_mode = SealMode::kProvider;
  ServiceFixture::Build(o, {}, &store);
  Provider p = Create("openai", "first");
  ASSERT_FALSE(p.id.empty());
  const std::string unknown = "whether secret '" + secrets_->SecretName(p.id) + "' was written is unknown";
  store.lose_writes = 1;  // applied, its answer lost
  auto rotated = providers_->RotateCredentials(p.id, ApiKeyFields("second"), caller_);
  ASSERT_FALSE(rotated.ok());
  EXPECT_EQ(rotated.code(), ErrorCode::kUnavailable);
  EXPECT_NE(rotated.error().message.find(unknown), std::string::npos) << rotated.error().message;
  store.refuse_replaces = 1;  // refused: the version read back is the one read
  rotated = providers_->RotateCredentials(p.id, ApiKeyFields("third"), caller_);
  ASSERT_FALSE(rotated.ok());
  EXPECT_EQ(rotated.code(), ErrorCode::kUnavailable);
  EXPECT_EQ(rotated.error().message.find("unknown"), std::string::npos) << rotated.error().message;

  ServiceFixture::Build(SecretsOptions{}, {}, &store);
  Provider q = Create("sealed", "first");
  ASSERT_FALSE(q.id.empty());
  store.refuse_replaces = 1;
  rotated = providers_->RotateCredentials(q.id, ApiKeyFields("second"), caller_);
  ASSERT_FALSE(rotated.ok());
  EXPECT_EQ(rotated.code(), ErrorCode::kUnavailable);
  EXPECT_EQ(rotated.error().message.find("unknown"), std::string::npos) << rotated.error().message;
  store.refuse_replaces = 1;
  store.on_refused = [&] { store.reads_fail = true; };  // and the store stays unreadable
  rotated = providers_->RotateCredentials(q.id, ApiKeyFields("third"), caller_);
  store.reads_fail = false;
  ASSERT_FALSE(rotated.ok());
  EXPECT_NE(rotated.error().message.find("whether secret '" + secrets_->SecretName(q.id) + "' was written is unknown"),
            std::string::npos) << rotated.error().message;
}

TEST_F(ServicesTest, RotateInvalidatesTheCacheAndBumpsVersion) {
  Provider p = Create("openai", "v1");
  EXPECT_EQ(ApiKey(*secrets_->Get(p.id, caller_)), "v1");
  CredentialFields next;
  next.emplace("api_key", SecretBytes("v2"));
  auto rotated = providers_->RotateCredentials(p.id, next, caller_);
  ASSERT_TRUE(rotated.ok());
  EXPECT_EQ(rotated->credentials_version, 2);
  auto r = secrets_->Get(p.id, caller_);
  EXPECT_EQ(ApiKey(*r), "v2");
  EXPECT_EQ(r->credentials->version, 2);
}

TEST_F(ServicesTest, DeleteRemovesRowAndSecret) {
  Provider p = Create("openai");
  ASSERT_TRUE(providers_->Delete(p.id, caller_).ok());
  EXPECT_EQ(store_.size(), 0u);
  EXPECT_EQ(providers_->Delete(p.id, caller_).code(), ErrorCode::kNotFound);
}

// `migrate --delete-source` deletes through the store's conditional delete
// (the environment backend's): audited as a plain delete is.
TEST_F(ServicesTest, AConditionalDeleteIsAudited) {
  auto store = NewSqliteSecretStore(db_, clock_, "dyad-gateway");
  auto secrets_owner = SecretsService::Create(SecretsOptions{}, *store, *keys_, *repo_, audit_, metrics_, clock_,
                                              DefaultRandom(), {}).value();
  SecretsService& secrets = *secrets_owner;
  ProviderService providers(*repo_, secrets, clock_, DefaultRandom(), audit_);
  ProviderPatch patch;
  patch.name = patch.slug = "openai";
  patch.type = "http-sdk";
  patch.adapter_config_json = R"({"baseUrl":"http://127.0.0.1:9"})";
  patch.credentials = ApiKeyFields(kCanary);
  auto p = providers.Create(patch, caller_);
  ASSERT_TRUE(p.ok()) << p.error().message;
  auto held = secrets.locks().Hold(p->id);
  ASSERT_TRUE(held.ok());
  auto raw = secrets.ReadRaw(p->id);
  ASSERT_TRUE(raw.ok() && raw->has_value());
  ASSERT_TRUE(secrets.DeleteIfUnchanged(p->id, **raw, caller_, **held).ok());
  EXPECT_FALSE(*secrets.ReadRaw(p->id));
  auto events = audit_.events();
  auto deletes = std::count_if(events.begin(), events.end(), [&](const AuditEvent& e) {
    return e.action == "secret.delete" && e.resource == p->id && e.actor == "tester" && e.outcome == "success";
  });
  EXPECT_EQ(deletes, 1);
}

TEST_F(ServicesTest, HealthProbesTheBackendAtMostOncePerSecond) {
  int before = store_.gets.load();
  EXPECT_EQ(Probed(*secrets_).status, "healthy");
  for (int i = 0; i < 50; ++i) EXPECT_EQ(secrets_->Health().status, "healthy");
  EXPECT_EQ(store_.gets.load() - before, 1);
  store_.Fail(MakeError(ErrorCode::kPermissionDenied, "AccessDenied"));
  EXPECT_EQ(secrets_->Health().status, "healthy");  // the probe of a moment ago still stands
  clock_.Advance(std::chrono::seconds(1));
  auto h = Probed(*secrets_);
  EXPECT_EQ(h.status, "unhealthy");
  EXPECT_EQ(h.store_error, "AccessDenied");
  EXPECT_EQ(store_.gets.load() - before, 2);
}

// A store with replicas: their status from one check at most each
// replication_interval, whatever the number of probes or providers.
class ReplicaStore final : public testing::ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;
  bool KeepsReplicas() const override { return true; }
  Result<ReplicationReport> CheckReplication() override {
    gate_.Pass();
    MutexLock lock(&mu_);
    if (took_ && clock_) clock_->Advance(*took_);
    if (sample_.empty()) return ReplicationReport{};
    return ReplicationReport{sample_, {{"eu-west-1", status_, "m"}}};
  }
  // Every check passes it (arrived(): the checks started); closed, they hang.
  testing::Gate& gate() { return gate_; }
  // Each check takes `took` on `clock`.
  void Takes(FakeClock* clock, std::chrono::milliseconds took) {
    MutexLock lock(&mu_);
    clock_ = clock;
    took_ = took;
  }
  void Set(std::string sample, std::string status) {
    MutexLock lock(&mu_);
    sample_ = std::move(sample);
    status_ = std::move(status);
  }

 private:
  testing::Gate gate_{/*open=*/true};
  Mutex mu_;
  std::string sample_ DYAD_GUARDED_BY(mu_), status_ DYAD_GUARDED_BY(mu_);
  FakeClock* clock_ DYAD_GUARDED_BY(mu_) = nullptr;
  std::optional<std::chrono::milliseconds> took_ DYAD_GUARDED_BY(mu_);
};

TEST_F(ServicesTest, HealthShowsReplicasCheckedOnASampleAtMostOnceAMinute) {
  ReplicaStore replicas(store_);
  SecretsOptions o;
  auto s_owner = SecretsService::Create(o, replicas, *keys_, *repo_, audit_, metrics_, clock_, DefaultRandom(),
                                        EnvMap{}).value();
  SecretsService& s = *s_owner;
  auto h = Probed(s);  // no secret yet: asked again within seconds
  ASSERT_TRUE(h.replication);
  EXPECT_EQ(h.replication->report.sample, "");
  EXPECT_EQ(h.status, "healthy");
  replicas.Set("dyad-gateway/providers/a", "InSync");
  clock_.Advance(std::chrono::seconds(6));
  h = Probed(s);
  EXPECT_EQ(replicas.gate().arrived(), 2);
  ASSERT_TRUE(h.replication);
  EXPECT_EQ(h.replication->report.replicas.at(0).status, "InSync");
  EXPECT_EQ(h.status, "healthy");
  replicas.Set("dyad-gateway/providers/a", "Failed");
  for (int i = 0; i < 10; ++i) {  // ten probes within the minute: no new check
    clock_.Advance(std::chrono::seconds(5));
    EXPECT_EQ(Probed(s).status, "healthy");
  }
  EXPECT_EQ(replicas.gate().arrived(), 2);
  clock_.Advance(std::chrono::seconds(11));
  h = Probed(s);
  EXPECT_EQ(replicas.gate().arrived(), 3);
  EXPECT_EQ(h.replication->report.replicas.at(0).status, "Failed");
  EXPECT_EQ(h.status, "degraded");
}

// Found by review: the replica check ran inside the key manager's phase, so
// a slow DescribeSecret was reported as a hanging KMS (unhealthy).
TEST_F(ServicesTest, TheReplicaCheckIsItsOwnPhaseWithItsOwnTimeAndStatus) {
  ReplicaStore replicas(store_);
  replicas.Set("dyad-gateway/providers/a", "InSync");
  replicas.Takes(&clock_, std::chrono::milliseconds(250));
  auto s_owner = SecretsService::Create(SecretsOptions{}, replicas, *keys_, *repo_, audit_, metrics_, clock_,
                                        DefaultRandom(), EnvMap{}).value();
  SecretsService& s = *s_owner;
  auto h = Probed(s);
  ASSERT_TRUE(h.replication);
  EXPECT_EQ(h.replication->status, "healthy");
  EXPECT_DOUBLE_EQ(h.replication->duration_ms, 250);
  EXPECT_EQ(h.status, "healthy");

  replicas.Takes(nullptr, std::chrono::milliseconds(0));
  replicas.gate().Close();
  clock_.Advance(std::chrono::minutes(1));
  EXPECT_EQ(s.Health().status, "healthy");  // asks for a probe, answers with the last one at once
  ASSERT_TRUE(replicas.gate().WaitArrived(2));
  clock_.Advance(3s);
  h = s.Health();
  EXPECT_TRUE(h.key_error.empty()) << h.key_error;  // the key manager answered
  EXPECT_TRUE(h.store_error.empty()) << h.store_error;
  ASSERT_TRUE(h.replication);
  EXPECT_EQ(h.replication->error, "the replica check (" + h.provider + ") has not answered the health probe for 3 s");
  EXPECT_EQ(h.replication->status, "degraded");
  EXPECT_EQ(h.status, "degraded");
  replicas.gate().Open();
  ASSERT_TRUE(s.AwaitProbe(30s));
  h = s.Health();
  EXPECT_EQ(h.replication->status, "healthy");
  EXPECT_TRUE(h.replication->error.empty());
}

TEST_F(ServicesTest, HealthNeverWaitsForAHangingKeyManager) {
  ControlledKeys keys(*keys_);
  auto s_owner = SecretsService::Create(SecretsOptions{}, store_, keys, *repo_, audit_, metrics_, clock_,
                                        DefaultRandom(), {}).value();
  SecretsService& s = *s_owner;
  EXPECT_EQ(Probed(s).status, "healthy");
  keys.gate().Close();
  clock_.Advance(1s);
  EXPECT_EQ(s.Health().status, "healthy");  // asks for a probe, answers with the last one at once
  ASSERT_TRUE(keys.gate().WaitArrived(2));
  clock_.Advance(3s);
  auto started = std::chrono::steady_clock::now();
  auto h = s.Health();  // the probe hangs in the KMS: Health does not
  EXPECT_LT(std::chrono::steady_clock::now() - started, 1s);
  EXPECT_EQ(h.status, "unhealthy");
  EXPECT_EQ(h.key_error, "the key manager has not answered the health probe for 3 s");
  EXPECT_TRUE(h.store_error.empty());
  EXPECT_EQ(keys.gate().arrived(), 2);  // no pile of probes behind the one that hangs
  keys.gate().Open();
  ASSERT_TRUE(s.AwaitProbe(30s));
  EXPECT_EQ(s.Health().status, "healthy");
}

TEST_F(ServicesTest, HealthShowsAKeyRotationAtOnce) {
  EXPECT_EQ(Probed(*secrets_).key_state->primary_version, 1u);
  ASSERT_TRUE(keys_->Rotate().ok());
  auto h = secrets_->Health();  // the probe of a moment ago stands; the versions are read now
  EXPECT_EQ(h.key_state->primary_version, 2u);
  EXPECT_EQ(h.key_state->versions.size(), 2u);
}

TEST_F(ServicesTest, UnreachableKmsMakesTheKeyManagerUnhealthy) {
  ControlledKeys keys(*keys_);
  auto s_owner = SecretsService::Create(SecretsOptions{}, store_, keys, *repo_, audit_, metrics_, clock_,
                                        DefaultRandom(), {}).value();
  SecretsService& s = *s_owner;
  keys.Answer(MakeError(ErrorCode::kUnavailable, "KMS: connection refused"));
  auto h = Probed(s);
  EXPECT_EQ(h.status, "unhealthy");
  EXPECT_EQ(h.key_error, "KMS: connection refused");
  ASSERT_TRUE(h.key_state.has_value());  // the versions the registry knows are still shown
  EXPECT_TRUE(h.store_error.empty());
}

TEST_F(ServicesTest, FallbackOnUnavailabilityOnly) {
  Provider p = Create("open-ai");
  Build({{"DYAD_PROVIDER_OPEN_AI_API_KEY", "from-env"}});
  store_.Fail(MakeError(ErrorCode::kUnavailable, "connection refused"));
  auto r = secrets_->Get(p.id, caller_);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->source, "fallback");
  EXPECT_EQ(ApiKey(*r), "from-env");
  EXPECT_EQ(secrets_->Health().fallback_reads, 1u);
  EXPECT_EQ(Probed(*secrets_).store_error, "connection refused");

  store_.Fail(MakeError(ErrorCode::kPermissionDenied, "AccessDenied"));
  EXPECT_EQ(secrets_->Get(p.id, caller_).code(), ErrorCode::kPermissionDenied);
  store_.Fail(MakeError(ErrorCode::kNotFound, "gone"));
  EXPECT_EQ(secrets_->Get(p.id, caller_).code(), ErrorCode::kNotFound);
  bool audited = false;
  for (const auto& e : audit_.events()) audited = audited || (e.action == "secret.get" && e.source == "fallback");
  EXPECT_TRUE(audited);
}

TEST_F(ServicesTest, FallbackCanBeSwitchedOff) {
  Provider p = Create("openai");
  SecretsOptions o;
  o.fallback_to_env = false;
  auto s_owner = SecretsService::Create(o, store_, *keys_, *repo_, audit_, metrics_, clock_, DefaultRandom(),
                                        EnvMap{{"DYAD_PROVIDER_OPENAI_API_KEY", "from-env"}}).value();
  SecretsService& s = *s_owner;
  store_.Fail(MakeError(ErrorCode::kUnavailable, "down"));
  EXPECT_EQ(s.Get(p.id, caller_).code(), ErrorCode::kUnavailable);
}

TEST_F(ServicesTest, StaleServedWhenStoreDownAfterTtl) {
  Provider p = Create("openai", "cached");
  ASSERT_TRUE(secrets_->Get(p.id, caller_).ok());
  store_.Fail(MakeError(ErrorCode::kUnavailable, "down"));
  clock_.Advance(301s);
  auto r = secrets_->Get(p.id, caller_);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->source, "stale");
  EXPECT_EQ(ApiKey(*r), "cached");
  EXPECT_EQ(secrets_->Health().stale_serves, 1u);
}

TEST_F(ServicesTest, CacheDisabledReadsTheStoreEveryTime) {
  Provider p = Create("openai");
  SecretsOptions o;
  o.cache_enabled = false;
  auto s_owner = SecretsService::Create(o, store_, *keys_, *repo_, audit_, metrics_, clock_, DefaultRandom(),
                                        {}).value();
  SecretsService& s = *s_owner;
  int before = store_.gets;
  ASSERT_TRUE(s.Get(p.id, caller_).ok());
  ASSERT_TRUE(s.Get(p.id, caller_).ok());
  EXPECT_EQ(store_.gets - before, 2);
  EXPECT_EQ(s.Health().cache_size, 0u);
}

TEST_F(ServicesTest, ValidateChecksRequiredFields) {
  ProviderPatch p;
  p.name = p.slug = "proxy-one";
  p.type = "proxy";
  p.adapter_config_json = R"({"baseUrl":"http://127.0.0.1:9"})";
  // Credentials without it (or with it empty) are not stored; a provider
  // without stored credentials (nor variables) misses it.
  p.credentials = CredentialFields{};
  p.credentials->emplace("api_key", SecretBytes(""));
  p.credentials->emplace("token", SecretBytes("t"));
  EXPECT_EQ(providers_->Create(p, caller_).code(), ErrorCode::kInvalidArgument);
  p.credentials.reset();
  auto created = providers_->Create(p, caller_);
  ASSERT_TRUE(created.ok()) << created.error().message;
  auto report = providers_->Validate(created->id, caller_);
  ASSERT_TRUE(report.ok());
  EXPECT_FALSE(report->valid);
  EXPECT_EQ(report->checks.back().message, "missing: api_key");
  p.credentials = CredentialFields{};
  p.credentials->emplace("token", SecretBytes("t"));
  // The fields required are those auth.template sends, not always api_key.
  p.slug = "proxy-two";
  p.adapter_config_json = R"({"baseUrl":"http://127.0.0.1:9","auth":{"header":"x-token","template":"{token}"}})";
  auto templated = providers_->Create(p, caller_);
  ASSERT_TRUE(templated.ok()) << templated.error().message;
  report = providers_->Validate(templated->id, caller_);
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->valid) << report->checks.back().message;
  EXPECT_EQ(providers_->Validate("nope", caller_).code(), ErrorCode::kNotFound);
  Provider good = Create("good");
  EXPECT_TRUE(providers_->Validate(good.id, caller_)->valid);
}

TEST_F(ServicesTest, TestConnectionRunsEveryStepAndCleansUp) {
  auto steps = secrets_->TestConnection(caller_);
  ASSERT_EQ(steps.size(), 5u);
  for (const auto& s : steps) EXPECT_TRUE(s.ok) << s.name << ": " << s.error;
  EXPECT_EQ(store_.size(), 0u);
  store_.Fail(MakeError(ErrorCode::kUnavailable, "down"));
  steps = secrets_->TestConnection(caller_);
  EXPECT_FALSE(steps.back().ok);
  EXPECT_EQ(steps.back().name, "store.write");
}

TEST_F(ServicesTest, CanaryNeverInAuditEvents) {
  Provider p = Create("openai");
  ASSERT_TRUE(secrets_->Get(p.id, caller_).ok());
  ASSERT_TRUE(providers_->Validate(p.id, caller_).ok());
  for (const auto& e : audit_.events()) {
    for (const auto& s : {e.actor, e.action, e.resource, e.source, e.detail, e.error_code}) {
      EXPECT_EQ(s.find(kCanary), std::string::npos);
    }
  }
  EXPECT_EQ(metrics_.Render().find(kCanary), std::string::npos);
}

TEST_F(ServicesTest, RolledBackSecretIsRefusedAuditedAndCounted) {
  Provider p = Create("openai", "v1");
  RollBackToVersion1(p);
  secrets_->cache().Clear();
  auto r = secrets_->Get(p.id, caller_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.code(), ErrorCode::kDataLoss);
  EXPECT_NE(r.error().message.find("version 1, older than the registry's 2"), std::string::npos);
  bool audited = false;
  for (const auto& e : audit_.events()) {
    audited = audited || (e.action == "secret.tampered" && e.resource == p.id && e.detail.rfind("rollback: ", 0) == 0);
  }
  EXPECT_TRUE(audited);
  EXPECT_NE(metrics_.Render().find("dyad_secrets_tampered_total{reason=\"rollback\"} 1"), std::string::npos);
  auto report = providers_->Validate(p.id, caller_);
  ASSERT_TRUE(report.ok());
  EXPECT_FALSE(report->valid);
  // The current value (or a newer one a writer has not yet recorded) is served.
  ASSERT_TRUE(providers_->RotateCredentials(p.id, ApiKeyFields("v2"), caller_).ok());
  EXPECT_EQ(ApiKey(*secrets_->Get(p.id, caller_)), "v2");
}

// PATCH merges with what is stored: the edit sees each value masked, and
// the stored values come back in the write.
TEST_F(ServicesTest, EditSeesTheStoredCredentialsMaskedAndKeepsThem) {
  Provider p = Create("openai", kCanary);
  CredentialFields seen;
  StoredBytes seen_bytes;
  auto edited = providers_->Edit(p.id, std::vector<std::string>{"org"},
                                 [&](const Provider& row, const CredentialFields& stored, const StoredBytes& bytes) {
    seen = stored;
    seen_bytes = bytes;
    ProviderPatch patch;
    patch.credentials = stored;
    patch.credentials->emplace("org", SecretBytes("o-1"));
    return Result<ProviderPatch>(std::move(patch));
  }, caller_);
  ASSERT_TRUE(edited.ok()) << edited.error().message;
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen.at("api_key").view(), kStoredValue);
  EXPECT_EQ(seen_bytes, (StoredBytes{{"api_key", std::string_view(kCanary).size()}}));
  EXPECT_EQ(edited->credentials_version, 2);
  auto r = secrets_->Get(p.id, caller_);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(ApiKey(*r), kCanary);
  EXPECT_EQ(r->credentials->fields.at("org").view(), "o-1");
}

// A stored value put back behind the gateway's back is not merged into a
// new version (which would launder the rollback): refused, nothing written.
TEST_F(ServicesTest, EditRefusesARolledBackSecretWithoutCallingTheEdit) {
  Provider p = Create("openai", "v1");
  std::string name = secrets_->SecretName(p.id);
  std::string v1 = RollBackToVersion1(p);
  bool called = false;
  auto edit = [&](const Provider&, const CredentialFields& stored, const StoredBytes&) {
    called = true;
    ProviderPatch patch;
    patch.credentials = stored;
    return Result<ProviderPatch>(std::move(patch));
  };
  auto r = providers_->Edit(p.id, std::vector<std::string>{}, edit, caller_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.code(), ErrorCode::kDataLoss);
  EXPECT_NE(r.error().message.find("version 1, older than the registry's 2"), std::string::npos);
  EXPECT_FALSE(called);
  EXPECT_EQ(store_.data().at(name), v1);
  EXPECT_EQ(repo_->Get(p.id)->credentials_version, 2);
  ASSERT_TRUE(store_.Put(name, "{\"not\":\"an envelope\"}").ok());
  r = providers_->Edit(p.id, std::vector<std::string>{}, edit, caller_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.code(), ErrorCode::kDataLoss) << r.error().message;
  EXPECT_FALSE(called);
}

TEST_F(ServicesTest, StartupKeyCheckNamesBothKeys) {
  EXPECT_TRUE(secrets_->CheckStoredKeys(3).ok());  // nothing stored yet
  for (int i = 0; i < 5; ++i) Create("p" + std::to_string(i));
  EXPECT_TRUE(secrets_->CheckStoredKeys(3).ok());
  auto other = NewLocalKeyring({"k-changed", SecretBytes(std::string(32, 'm')), {}},
                               NewSqliteKeyVersionRepository(db_), DefaultRandom(), clock_);
  ASSERT_TRUE(other.ok());
  auto s_owner = SecretsService::Create(SecretsOptions{}, store_, **other, *repo_, audit_, metrics_, clock_,
                                        DefaultRandom(), {}).value();
  SecretsService& s = *s_owner;
  Status wrong = s.CheckStoredKeys(3);
  EXPECT_EQ(wrong.code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(wrong.error().message.find("local key 'k'"), std::string::npos) << wrong.error().message;
  EXPECT_NE(wrong.error().message.find("local key 'k-changed'"), std::string::npos) << wrong.error().message;
  store_.Fail(MakeError(ErrorCode::kUnavailable, "down"));
  EXPECT_EQ(s.CheckStoredKeys(3).code(), ErrorCode::kUnavailable);  // not a mismatch: starts, health shows it
}

TEST_F(ServicesTest, StartupKeyCheckRefusesARecreatedKeyring) {
  for (int i = 0; i < 3; ++i) Create("p" + std::to_string(i));
  // One damaged data key among good ones is that secret's problem, not the key's.
  auto name = secrets_->SecretName(repo_->List(0, 10)->items.at(0).id);
  auto e = *ParseEnvelope(store_.data().at(name));
  e.wrapped_dek[0] ^= 1;
  ASSERT_TRUE(store_.Put(name, SerializeEnvelope(e)).ok());
  EXPECT_TRUE(secrets_->CheckStoredKeys(3).ok());

  ASSERT_TRUE(db_->With<bool>([](SqliteConnection& c) -> Result<bool> {
                   DYAD_RETURN_IF_ERROR(c.Exec("DELETE FROM key_versions"));
                   return true;
                 }).ok());
  auto fresh = NewLocalKeyring({"k", SecretBytes(std::string(32, 'm')), {}},
                               NewSqliteKeyVersionRepository(db_), DefaultRandom(), clock_);
  ASSERT_TRUE(fresh.ok());  // the same id, a new random version 1
  auto s_owner = SecretsService::Create(SecretsOptions{}, store_, **fresh, *repo_, audit_, metrics_, clock_,
                                        DefaultRandom(), {}).value();
  SecretsService& s = *s_owner;
  Status wrong = s.CheckStoredKeys(3);
  EXPECT_EQ(wrong.code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(wrong.error().message.find("local key 'k' does not unwrap the data keys"), std::string::npos)
      << wrong.error().message;
}

TEST_F(ServicesTest, FingerprintIsKeyedPerDeployment) {
  auto key = DeploymentFingerprintKey(*NewSqliteSettingsRepository(db_), DefaultRandom());
  ASSERT_TRUE(key.ok()) << key.error().message;
  EXPECT_EQ(key->size(), kFingerprintKeySize);
  // made once: instances on one database agree
  EXPECT_TRUE(*DeploymentFingerprintKey(*NewSqliteSettingsRepository(db_), DefaultRandom()) == *key);
  testing::TempDir elsewhere;
  auto other_db = SqliteDb::Open(elsewhere.File("t.db"));
  ASSERT_TRUE(other_db.ok());
  auto other = DeploymentFingerprintKey(*NewSqliteSettingsRepository(*other_db), DefaultRandom());
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(*other == *key);

  SecretsOptions o;
  o.fingerprint_key = *key;
  providers_.reset();
  secrets_.reset();
  secrets_ = SecretsService::Create(o, store_, *keys_, *repo_, audit_, metrics_, clock_, DefaultRandom(),
                                    EnvMap{}).value();
  providers_ = std::make_unique<ProviderService>(*repo_, *secrets_, clock_, DefaultRandom(), audit_);
  Provider p = Create("openai");
  std::string fp = providers_->Validate(p.id, caller_)->fingerprint;
  CredentialFields fields;
  fields.emplace("api_key", SecretBytes(kCanary));
  EXPECT_EQ(fp.size(), 16u);
  EXPECT_EQ(fp, Fingerprint(*key, fields));
  EXPECT_NE(fp, Fingerprint(*other, fields));  // another deployment: another fingerprint
  EXPECT_NE(fp, HexEncode(Sha256(CredentialsToJson(fields).view())).substr(0, 16));  // not the plain hash
}

}  // namespace
}  // namespace dyad

namespace dyad {
namespace {

// Issue 13: SECRETS_CACHE_WARM.
TEST_F(ServicesTest, WarmingLoadsEnabledProvidersUpToTheCacheSizeSoTheirFirstReadIsAHit) {
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(Create("warm-" + std::to_string(i)).id);
  ProviderPatch off;
  off.enabled = false;
  auto disabled = providers_->Update(ids[3], off, caller_);
  ASSERT_TRUE(disabled.ok()) << disabled.error().message;
  secrets_->ClearCache(caller_);
  CacheWarmer warmer({/*max_entries=*/2, /*concurrency=*/4, /*blocks_ready=*/true}, *secrets_, *repo_, metrics_);
  EXPECT_TRUE(warmer.Ready());  // nothing asked yet
  warmer.Start();
  warmer.WaitIdle();
  EXPECT_TRUE(warmer.Ready());
  auto p = warmer.progress();
  EXPECT_FALSE(p.warming);
  EXPECT_EQ(p.total, 2u);
  EXPECT_EQ(p.loaded, 2u);
  EXPECT_EQ(secrets_->cache().Size(), 2u);
  auto first = secrets_->Get(ids[0], caller_);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->source, "cache");
  auto events = audit_.events();
  EXPECT_EQ(std::count_if(events.begin(), events.end(), [](const AuditEvent& e) { return e.action == "cache.warm"; }),
            2);
}

// Reads wait until opened; then fail with kUnavailable while `fail` is set.
class GatedStore final : public testing::ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;
  Result<StoredSecret> Get(const std::string& name) override {
    gate_.Pass();
    {
      MutexLock lock(&mu_);
      if (fail_) return MakeError(ErrorCode::kUnavailable, "store down");
    }
    return inner_.Get(name);
  }
  void Open(bool fail) {
    {
      MutexLock lock(&mu_);
      fail_ = fail;
    }
    gate_.Open();
  }

 private:
  testing::Gate gate_;
  Mutex mu_;
  bool fail_ DYAD_GUARDED_BY(mu_) = false;
};

TEST_F(ServicesTest, WarmingHoldsReadinessUntilItsPassEndsAndCountsFailuresWithoutFailing) {
  std::string id = Create("warm-fail").id;
  GatedStore gated(store_);
  auto s_owner = SecretsService::Create(SecretsOptions{}, gated, *keys_, *repo_, audit_, metrics_, clock_,
                                        DefaultRandom(), EnvMap{}).value();
  SecretsService& s = *s_owner;
  CacheWarmer warmer({10, 4, /*blocks_ready=*/true}, s, *repo_, metrics_);
  warmer.Start();
  EXPECT_FALSE(warmer.Ready());  // its load waits on the store
  EXPECT_TRUE(warmer.progress().warming);
  EXPECT_NE(metrics_.Render().find("dyad_cache_warming 1"), std::string::npos);
  gated.Open(/*fail=*/true);
  warmer.WaitIdle();
  EXPECT_TRUE(warmer.Ready());  // a failed pass is over: readiness is the backend's to say
  EXPECT_EQ(warmer.progress().failed, 1u);
  std::string text = metrics_.Render();
  EXPECT_NE(text.find(R"(dyad_cache_warm_loads_total{outcome="error"} 1)"), std::string::npos) << text;
  EXPECT_NE(text.find("dyad_cache_warming 0"), std::string::npos);
  EXPECT_EQ(s.cache().Size(), 0u);
  CacheWarmer lenient({10, 4, /*blocks_ready=*/false}, s, *repo_, metrics_);
  lenient.Start();
  EXPECT_TRUE(lenient.Ready());  // not asked to hold readiness
  lenient.WaitIdle();
  (void)id;
}

// The first read returns what the store held when asked, but only once
// opened: a warm load that read the old value before a write publishes it
// after the write's invalidation.
class HeldAfterReadStore final : public testing::ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;
  Result<StoredSecret> Get(const std::string& name) override {
    auto r = inner_.Get(name);
    if (first_.exchange(false)) gate_.Pass();
    return r;
  }
  // The first Get passes it, having read.
  testing::Gate& gate() { return gate_; }

 private:
  std::atomic<bool> first_{true};
  testing::Gate gate_;
};

// Read-your-writes across a warm pass (SECRETS_CACHE_WARM after
// clear-cache): the write lands while the warm load holds the old value;
// the load's late publish must not be served after the write returned.
TEST_F(ServicesTest, AWarmLoadHoldingTheOldValueIsNotServedAfterAWriteThatRaced) {
  Provider p = Create("warm-race");
  HeldAfterReadStore held(store_);
  SecretsOptions o;
  o.cache.ttl = 300s;
  auto s_owner = SecretsService::Create(o, held, *keys_, *repo_, audit_, metrics_, clock_, DefaultRandom(),
                                        EnvMap{}).value();
  SecretsService& s = *s_owner;
  ProviderService writer(*repo_, s, clock_, DefaultRandom(), audit_);
  CacheWarmer warmer({10, 1, /*blocks_ready=*/false}, s, *repo_, metrics_);
  warmer.Start();
  ASSERT_TRUE(held.gate().WaitArrived());  // the warm load has read kCanary and waits
  CredentialFields next;
  next.emplace("api_key", SecretBytes("sk-after-the-warm-read"));
  auto rotated = writer.RotateCredentials(p.id, next, caller_);
  ASSERT_TRUE(rotated.ok()) << rotated.error().message;
  held.gate().Open();
  warmer.WaitIdle();
  auto r = s.Get(p.id, caller_);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(ApiKey(*r), "sk-after-the-warm-read");
}

// A warming pass whose thread the system refuses: that Start() warms
// nothing and holds nothing back (readiness, WaitIdle), says so once at warn
// however often it is asked, and the next Start() once threads can be had warms.
TEST_F(ServicesTest, AWarmerWhoseThreadCannotStartHoldsNothingBackAndTriesAgainAtTheNextStart) {
  std::string id = Create("warm-later").id;
  secrets_->ClearCache(caller_);
  testing::LogCapture log;
  testing::RefusingThreads threads;
  CacheWarmer::Options o{10, 4, /*blocks_ready=*/true};
  o.start_thread = threads.starter();
  CacheWarmer warmer(o, *secrets_, *repo_, metrics_);
  warmer.Start();
  warmer.Start();
  EXPECT_TRUE(warmer.Ready());
  ASSERT_FALSE(warmer.progress().warming);  // else WaitIdle would wait for a pass that never runs
  warmer.WaitIdle();
  EXPECT_EQ(secrets_->cache().Size(), 0u);
  EXPECT_EQ(threads.asked(), 2);
  EXPECT_EQ(log.Count("cache warming: cannot start a thread"), 1u) << log.Text();
  threads.Allow();
  warmer.Start();
  warmer.WaitIdle();
  EXPECT_EQ(warmer.progress().loaded, 1u);
  EXPECT_EQ(secrets_->cache().Size(), 1u);
  auto first = secrets_->Get(id, caller_);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->source, "cache");
}

// The refresh-ahead worker's thread refused: Create() says so as a value
// (`serve` prints it and exits) instead of std::thread's throw ending the
// process, and the half-built service is destroyed cleanly.
TEST_F(ServicesTest, ARefusedRefreshAheadThreadIsCreatesError) {
  testing::RefusingThreads threads;
  SecretsOptions o;
  o.start_thread = threads.starter();
  auto refused = SecretsService::Create(o, store_, *keys_, *repo_, audit_, metrics_, clock_, DefaultRandom(), EnvMap{});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.code(), ErrorCode::kUnavailable);
  EXPECT_EQ(refused.error().message,
            "cannot start the credential cache's refresh-ahead thread: Resource temporarily unavailable");
  EXPECT_EQ(threads.asked(), 1);
  threads.Allow();
  auto created = SecretsService::Create(o, store_, *keys_, *repo_, audit_, metrics_, clock_, DefaultRandom(),
                                        EnvMap{});
  ASSERT_TRUE(created.ok()) << created.error().message;
  EXPECT_EQ(threads.asked(), 2);
}

// The health probe's thread refused: Health() answers at once, unhealthy,
// saying why (logged once), and the next Health() starts the probe.
TEST_F(ServicesTest, AHealthProbeWhoseThreadCannotStartIsTriedAgainAtTheNextHealthCheck) {
  testing::LogCapture log;
  testing::RefusingThreads& threads = threads_.emplace(/*refuse_from=*/2);  // the refresh-ahead worker's thread starts
  SecretsOptions o;
  o.start_thread = threads.starter();
  ServiceFixture::Build(o);
  for (int i = 0; i < 2; ++i) {
    auto h = secrets_->Health();
    EXPECT_EQ(h.status, "unhealthy");
    EXPECT_NE(h.store_error.find("cannot start a thread for the health probe: Resource temporarily unavailable"),
              std::string::npos) << h.store_error;
  }
  EXPECT_EQ(threads.asked(), 3);
  EXPECT_EQ(log.Count("cannot start the health probe's thread"), 1u) << log.Text();
  threads.Allow();
  auto h = Probed(*secrets_);
  EXPECT_EQ(h.status, "healthy") << h.store_error << " / " << h.key_error;
  EXPECT_EQ(threads.asked(), 4);
}

TEST_F(ServicesTest, WarmingRefusesWithTheCacheDisabled) {
  std::string id = Create("warm-off").id;
  SecretsOptions o;
  o.cache_enabled = false;
  auto s_owner = SecretsService::Create(o, store_, *keys_, *repo_, audit_, metrics_, clock_, DefaultRandom(),
                                        EnvMap{}).value();
  SecretsService& s = *s_owner;
  Status st = s.Warm(id);
  EXPECT_EQ(st.code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(st.error().message.find("SECRETS_CACHE_ENABLED"), std::string::npos);
}

}  // namespace
}  // namespace dyad
