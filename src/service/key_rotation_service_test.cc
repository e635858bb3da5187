#include "service/key_rotation_service.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <latch>
#include <set>
#include <thread>

#include "backends/environment/local_keyring.h"
#include "secrets/envelope.h"
#include "core/mutex.h"
#include "core/time_format.h"
#include "service/provider_service.h"
#include "service/rotation_scheduler.h"
#include "testing/fakes.h"
#include "testing/gate.h"
#include "testing/refusing_threads.h"
#include "testing/rotation_fixture.h"

namespace dyad {
namespace {

// A SecretStore in front of another that holds the `hold_at`-th GetMany (a
// rotation reads one batch per call) until the test opens the gate: the
// rotation is then known to be between two batches, its earlier ones saved.
class GatedStore final : public testing::ForwardingStore {
 public:
  GatedStore(SecretStore& inner, int hold_at) : ForwardingStore(inner), hold_at_(hold_at) {}
  Result<std::vector<Result<StoredSecret>>> GetMany(const std::vector<std::string>& names) override {
    bool hold = false;
    {
      MutexLock lock(&mu_);
      hold = ++calls_ == hold_at_;
    }
    if (hold) gate_.Pass();
    auto got = inner_.GetMany(names);
    if (hold) {
      MutexLock lock(&mu_);
      returned_ = true;
    }
    return got;
  }
  // Whether the held call has returned.
  bool Returned() {
    MutexLock lock(&mu_);
    return returned_;
  }
  // Waits (at most a minute) for the held call; false if it never came.
  bool WaitUntilHeld() { return gate_.WaitArrived(); }
  void Open() { gate_.Open(); }

 private:
  const int hold_at_;
  Mutex mu_;
  int calls_ DYAD_GUARDED_BY(mu_) = 0;
  bool returned_ DYAD_GUARDED_BY(mu_) = false;
  testing::Gate gate_;  // the hold_at-th call
};

// A RotationRepository in front of another that calls `on_release` before
// each Release, counts the heartbeats that found the lock gone, and answers
// beats itself (writing nothing) while `hold_beats`.
class WatchedRotations final : public testing::ForwardingRotations {
 public:
  using ForwardingRotations::ForwardingRotations;
  Result<bool> Heartbeat(const std::string& run_id, const std::string& owner) override {
    ++beats_in_flight;
    if (hold_beats) {
      --beats_in_flight;
      return true;  // as if beaten: writes nothing
    }
    auto held = inner_->Heartbeat(run_id, owner);
    if (held.ok() && !*held) ++lost_beats;
    --beats_in_flight;
    return held;
  }
  Status Release(const std::string& run_id, const std::string& owner) override {
    if (on_release) on_release();
    return inner_->Release(run_id, owner);
  }

  std::function<void()> on_release;  // set before the run starts
  std::atomic<bool> hold_beats{false};
  std::atomic<int> lost_beats{0}, beats_in_flight{0};
};

// A SecretStore in front of another that records the threads its GetMany
// calls came from.
class ThreadRecordingStore final : public testing::ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;
  Result<std::vector<Result<StoredSecret>>> GetMany(const std::vector<std::string>& names) override {
    {
      MutexLock lock(&mu_);
      threads_.insert(std::this_thread::get_id());
    }
    return inner_.GetMany(names);
  }
  std::set<std::thread::id> threads() {
    MutexLock lock(&mu_);
    return threads_;
  }

 private:
  Mutex mu_;
  std::set<std::thread::id> threads_ DYAD_GUARDED_BY(mu_);
};

// One thread per provider rotating its credentials until Stop(); the last
// value each had acknowledged is in last_written.
class CredentialWriters {
 public:
  CredentialWriters(ProviderService& providers, std::vector<std::string> ids, std::chrono::microseconds pause)
      : last_written(ids.size()) {
    for (size_t w = 0; w < ids.size(); ++w) {
      threads_.emplace_back([this, &providers, id = ids[w], pause, w] {
        for (int n = 1; !stop_; ++n) {
          CredentialFields f;
          std::string value = "writer-" + std::to_string(w) + "-" + std::to_string(n);
          f.emplace("api_key", SecretBytes(value));
          if (providers.RotateCredentials(id, f, Caller{}).ok()) last_written[w] = value;
          if (pause.count() > 0) std::this_thread::sleep_for(pause);
        }
      });
    }
  }
  ~CredentialWriters() { Stop(); }
  void Stop() {
    if (stop_.exchange(true)) return;
    for (auto& t : threads_) t.join();
  }
  std::vector<std::string> last_written;  // read after Stop()

 private:
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

class RotationTest : public testing::RotationFixture<SystemClock> {
 protected:
  void SetUp() override {
    RotationFixture::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    providers_ = std::make_unique<ProviderService>(*repo_, *secrets_, clock_, DefaultRandom(), audit_);
    rotation_ = NewRotation();
  }
  static KeyRotationService::Options RotationOptions() {
    KeyRotationService::Options o{250, 4};
    o.retire_grace = std::chrono::milliseconds(20);  // real time here: keep the suite quick
    return o;
  }
  std::unique_ptr<KeyRotationService> NewRotation() {
    return std::make_unique<KeyRotationService>(RotationOptions(), std::move(Instance().rotations), *secrets_,
                                                audit_, clock_);
  }
  int64_t LockHeartbeat() { return SqlInt("SELECT heartbeat_at FROM rotation_lock WHERE id=1").value_or(-1); }
  // Runs `rotation`; at the first progress report `when` picks, another
  // instance takes the lease over (TakeOver, below). An error if none was
  // picked; the run must stop as failed with "lock lost".
  Result<RotationRun> RunTakenOverWhen(KeyRotationService& rotation,
                                       const std::function<bool(const RotationRun&)>& when);
  std::vector<std::string> Seed(int n) {
    std::vector<std::string> ids;
    for (int i = 0; i < n; ++i) {
      ProviderPatch p;
      p.name = p.slug = "p-" + std::to_string(i);
      p.type = "http-sdk";
      p.adapter_config_json = R"({"baseUrl":"http://127.0.0.1:9"})";
      p.credentials = CredentialFields{};
      p.credentials->emplace("api_key", SecretBytes("key-" + std::to_string(i) + "-v0"));
      ids.push_back(providers_->Create(p, Caller{})->id);
    }
    return ids;
  }
  // What a process killed mid-run leaves: 10 secrets, the key rotated to v2,
  // the first 4 (`names`, sorted) moved, the run "running" at its cursor
  // ("dead-run") and its lock stale.
  void LeaveADeadRun(std::vector<std::string>& names) {
    Seed(10);
    names = testing::ListedNames(*store_);
    std::sort(names.begin(), names.end());
    ASSERT_EQ(keys_->Rotate().value(), 2u);
    for (size_t i = 0; i < 4; ++i) {
      ASSERT_TRUE(store_->Put(names[i], *secrets_->sealer().Rewrap(names[i], store_->Get(names[i])->value, 2, false)).ok());
    }
    ASSERT_TRUE(Sql("INSERT INTO rotation_runs(id, trigger, status, force, started_at, from_version, to_version, "
                    "done, cursor) VALUES('dead-run','manual','running',FALSE,'2026-01-01T00:00:00.000Z',1,2,4,'" +
                    names[3] + "')").ok());
    ASSERT_TRUE(Sql("INSERT INTO rotation_lock(id, run_id, owner, heartbeat_at) VALUES(1,'dead-run','gone:1:x', 0)").ok());
  }
  // The run resumed from LeaveADeadRun's, completed: only the 6 secrets
  // after its cursor moved, onto the version it had made (no new one).
  void ExpectTheDeadRunCompletedAsResumed(const RotationRun& run) {
    EXPECT_EQ(run.trigger, "resumed");
    EXPECT_EQ(run.status, "completed") << run.error;
    EXPECT_EQ(run.to_version, 2u);
    EXPECT_EQ(run.reencrypted, 6);
    EXPECT_EQ(keys_->Describe()->primary_version, 2u);  // no second KMS version
    EXPECT_EQ(VersionsInUse(), (std::map<uint32_t, int>{{2u, 10}}));
  }
  std::map<uint32_t, int> VersionsInUse() {
    std::map<uint32_t, int> out;
    for (const auto& name : testing::ListedNames(*store_)) out[ParseEnvelope(store_->Get(name)->value)->key_version]++;
    return out;
  }

  std::unique_ptr<ProviderService> providers_;
  std::unique_ptr<KeyRotationService> rotation_;
};

TEST_P(RotationTest, TenThousandProvidersWithReadersAndWriters) {
  // 10,000 on PostgreSQL is the cluster black-box test's (three processes,
  // one killed); here it would add minutes to the sanitizer runs.
  const int n = GetParam() == "postgresql" ? 2000 : 10000;
  auto ids = Seed(n);
  SecretsOptions uncached;
  uncached.cache_enabled = false;  // every read opens a blob mid-rotation
  auto reader_owner = SecretsService::Create(uncached, *store_, *keys_, *repo_, audit_, metrics_, clock_,
                                             DefaultRandom(), EnvMap{}).value();
  SecretsService& reader = *reader_owner;
  std::atomic<bool> stop{false};
  std::atomic<int64_t> reads{0}, failed_reads{0};
  std::vector<std::thread> threads;
  for (int r = 0; r < 8; ++r) {
    threads.emplace_back([&, r] {
      size_t i = static_cast<size_t>(r) * 1249;
      while (!stop) {
        auto v = reader.Get(ids[i++ % ids.size()], Caller{});
        ++reads;
        if (!v.ok()) ++failed_reads;
        std::this_thread::sleep_for(std::chrono::microseconds(200));  // 2 cores: leave the rotation some
      }
    });
  }
  // Writers run through the whole re-encryption pass and stop before the
  // retirement step: one descheduled between its seal and its store write
  // for longer than the (fake, instant) grace would leave version 1
  // 'retiring' for the next run, which is correct but not what this checks.
  CredentialWriters writers(*providers_, {ids[0], ids[1]}, std::chrono::microseconds(500));
  const std::vector<std::string>& last_written = writers.last_written;
  auto stop_writing = [&] { writers.Stop(); };
  auto run = rotation_->Run(false, "manual", Caller{}, [&](const RotationRun& r) {
    if (r.done == r.total) stop_writing();
  });
  stop = true;
  stop_writing();
  for (auto& t : threads) t.join();
  ASSERT_TRUE(run.ok()) << run.error().message;
  EXPECT_EQ(run->status, "completed") << run->error;
  EXPECT_EQ(run->from_version, 1u);
  EXPECT_EQ(run->to_version, 2u);
  EXPECT_EQ(run->total, n);
  EXPECT_EQ(run->failed, 0);
  EXPECT_EQ(run->reencrypted + run->skipped, n);
  EXPECT_GT(reads, 0);
  EXPECT_EQ(failed_reads, 0);
  for (int w = 0; w < 2; ++w) {  // no lost update
    secrets_->cache().Invalidate(ids[static_cast<size_t>(w)]);
    auto got = secrets_->Get(ids[static_cast<size_t>(w)], Caller{});
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(got->credentials->fields.at("api_key").view(), last_written[w]);
  }
  EXPECT_EQ(VersionsInUse(), (std::map<uint32_t, int>{{2u, n}}));
  auto state = keys_->Describe();
  EXPECT_EQ(state->versions[0].state, "retired") << run->error;
  EXPECT_EQ(state->primary_version, 2u);
  auto verify = secrets_->VerifyAll();
  EXPECT_EQ(verify->ok, n);
}

TEST_P(RotationTest, OneRotationAtATimeInProcessAndAcrossInstances) {
  Seed(2000);
  auto first = rotation_->Start(false, "manual", Caller{});
  ASSERT_TRUE(first.ok());
  auto second = rotation_->Start(false, "manual", Caller{});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.code(), ErrorCode::kConflict);
  EXPECT_NE(second.error().message.find(first->id), std::string::npos);
  // A second instance on the same database (another process, as far as the lock knows).
  auto other = NewRotation();
  auto third = other->Start(false, "manual", Caller{});
  EXPECT_EQ(third.code(), ErrorCode::kConflict);
  rotation_->WaitIdle();
  auto history = rotation_->History(10);
  ASSERT_EQ(history->size(), 1u);
  EXPECT_EQ(history->front().status, "completed");
  EXPECT_TRUE(other->Start(false, "manual", Caller{}).ok());  // free again
  other->WaitIdle();
}

// On a store without conditional writes (Azure's kind, AWS under the seed's
// policy) each secret is re-encrypted under its provider's lease, and
// credential writes running meanwhile are neither lost nor left on the old
// key version.
TEST_P(RotationTest, OnALeaseOnlyStoreWritersDuringARotationLoseNothing) {
  rotation_.reset();
  providers_.reset();
  secrets_.reset();
  store_ = std::make_unique<testing::MemoryStore>("dyad-gateway", /*conditional=*/false);
  auto leases = std::move(Instance().leases);
  SecretsOptions options;
  options.leases = leases.get();
  secrets_ = SecretsService::Create(options, *store_, *keys_, *repo_, audit_, metrics_, clock_, DefaultRandom(),
                                    EnvMap{}).value();
  providers_ = std::make_unique<ProviderService>(*repo_, *secrets_, clock_, DefaultRandom(), audit_);
  auto rotation_options = RotationOptions();
  std::atomic<int> workers{0};  // Read reads nothing ahead here: no thread for it
  rotation_options.start_worker = [&workers] {
    ++workers;
    return Worker::Start();
  };
  rotation_ = std::make_unique<KeyRotationService>(rotation_options, std::move(Instance().rotations), *secrets_,
                                                   audit_, clock_);
  auto ids = Seed(300);
  CredentialWriters writers(*providers_, {ids[0], ids[1]}, std::chrono::microseconds(0));
  const std::vector<std::string>& last_written = writers.last_written;
  auto stop_writing = [&] { writers.Stop(); };
  auto run = rotation_->Run(false, "manual", Caller{}, [&](const RotationRun& r) {
    if (r.done == r.total) stop_writing();
  });
  stop_writing();
  ASSERT_TRUE(run.ok()) << run.error().message;
  EXPECT_EQ(run->status, "completed") << run->error;
  EXPECT_EQ(run->failed, 0);
  EXPECT_EQ(run->reencrypted + run->skipped, 300);
  EXPECT_EQ(VersionsInUse(), (std::map<uint32_t, int>{{2, 300}}));
  EXPECT_EQ(workers.load(), 0);
  for (int w = 0; w < 2; ++w) {
    ASSERT_FALSE(last_written[w].empty());
    secrets_->cache().Invalidate(ids[static_cast<size_t>(w)]);
    auto got = secrets_->Get(ids[static_cast<size_t>(w)], Caller{});
    ASSERT_TRUE(got.ok()) << got.error().message;
    EXPECT_EQ(got->credentials->fields.at("api_key").view(), last_written[w]);
  }
  rotation_.reset();
  providers_.reset();
  secrets_.reset();
}

TEST_P(RotationTest, ResumesARunWhoseProcessDiedAndSaysSo) {
  Seed(1000);
  // What a process killed after two batches leaves: a running row, its lock,
  // progress up to the cursor.
  auto run = rotation_->Run(false, "manual", Caller{});  // v1 -> v2, for a realistic cursor
  ASSERT_TRUE(run.ok());
  auto names = testing::ListedNames(*store_);
  std::sort(names.begin(), names.end());
  ASSERT_TRUE(keys_->Rotate().ok());  // v3 made; the dead run had moved the first 500
  for (size_t i = 0; i < 500; ++i) {
    ASSERT_TRUE(store_->Put(names[i], *secrets_->sealer().Rewrap(names[i], store_->Get(names[i])->value, 3, false)).ok());
  }
  ASSERT_TRUE(Sql("INSERT INTO rotation_runs(id, trigger, status, force, started_at, from_version, to_version, "
                  "done, cursor) VALUES('dead-run','manual','running',FALSE,'2026-01-01T00:00:00.000Z',2,3,500,'" +
                  names[499] + "')").ok());
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  ASSERT_TRUE(Sql("INSERT INTO rotation_lock(id, run_id, owner, heartbeat_at) VALUES(1,'dead-run','" +
                  std::string(host) + ":999999:x', 0)").ok());
  auto resumed = rotation_->ResumeInterrupted(Caller{});
  ASSERT_TRUE(resumed.ok()) << resumed.error().message;
  ASSERT_TRUE(resumed->has_value());
  rotation_->WaitIdle();
  auto history = *rotation_->History(10);
  ASSERT_EQ(history.size(), 3u);
  EXPECT_EQ(history[0].trigger, "resumed");
  EXPECT_EQ(history[0].status, "completed");
  EXPECT_EQ(history[0].to_version, 3u);
  EXPECT_EQ(history[0].reencrypted, 500);  // only what the dead run had not visited
  EXPECT_EQ(history[1].id, "dead-run");
  EXPECT_EQ(history[1].status, "interrupted");
  EXPECT_NE(history[1].error.find("resumed as run " + **resumed), std::string::npos);
  EXPECT_EQ(VersionsInUse(), (std::map<uint32_t, int>{{3u, 1000}}));
  EXPECT_EQ(secrets_->VerifyAll()->failed, 0);
  EXPECT_EQ(keys_->Describe()->versions[1].state, "retired");
}

TEST_P(RotationTest, ShutdownMidRunSavesProgressAndTheNextStartResumes) {
  Seed(3000);
  auto names = testing::ListedNames(*store_);
  std::sort(names.begin(), names.end());
  {
    // The stop lands, for certain, after two batches of 250: the store holds
    // the third batch's read (read ahead while the second is written) until
    // the stop has been asked for, and a batch read ahead after a stop is
    // left for the next start.
    GatedStore gated(*store_, 3);
    auto secrets_owner = SecretsService::Create(SecretsOptions{}, gated, *keys_, *repo_, audit_, metrics_, clock_,
                                                DefaultRandom(), EnvMap{}).value();
    SecretsService& secrets = *secrets_owner;
    auto rotation = std::make_unique<KeyRotationService>(KeyRotationService::Options{250, 4},
                                                         std::move(Instance().rotations), secrets, audit_, clock_);
    ASSERT_TRUE(rotation->Start(false, "manual", Caller{}).ok());
    bool held = gated.WaitUntilHeld();
    rotation->RequestStop();
    gated.Open();
    ASSERT_TRUE(held) << "the rotation never read its third batch";
    rotation.reset();  // graceful stop: the batch being written completes, then the run stops
  }
  auto next = NewRotation();
  auto history = *next->History(5);
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(history[0].status, "running");  // left for the next start, not failed, not finished
  EXPECT_EQ(history[0].done, 500);
  EXPECT_EQ(history[0].cursor, names[499]);
  EXPECT_EQ(history[0].reencrypted, 500);
  EXPECT_EQ(VersionsInUse(), (std::map<uint32_t, int>{{1u, 2500}, {2u, 500}}));
  EXPECT_TRUE(next->Current().has_value());  // another "process" sees it as running

  auto resumed = next->ResumeInterrupted(Caller{});
  ASSERT_TRUE(resumed.ok()) << resumed.error().message;
  ASSERT_TRUE(resumed->has_value());
  next->WaitIdle();
  history = *next->History(5);
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[0].id, **resumed);
  EXPECT_EQ(history[0].trigger, "resumed");
  EXPECT_EQ(history[0].status, "completed");
  EXPECT_EQ(history[0].to_version, 2u);
  EXPECT_EQ(history[0].reencrypted, 2500);  // only what the stopped run had not written
  EXPECT_EQ(history[1].status, "interrupted");
  EXPECT_NE(history[1].error.find("resumed as run " + **resumed), std::string::npos);
  EXPECT_EQ(VersionsInUse(), (std::map<uint32_t, int>{{2u, 3000}}));
  EXPECT_EQ(keys_->Describe()->versions[0].state, "retired");
}

TEST_P(RotationTest, RetiresAVersionOnlyOnceARecountFindsNoBlobOnIt) {
  Seed(20);
  ASSERT_TRUE(keys_->Rotate().ok());
  auto names = testing::ListedNames(*store_);
  std::sort(names.begin(), names.end());
  // A run whose cursor claims everything was visited, though nothing moved.
  ASSERT_TRUE(Sql("INSERT INTO rotation_runs(id, trigger, status, force, started_at, from_version, to_version, "
                  "cursor) VALUES('r','manual','running',FALSE,'x',1,2,'" + names.back() + "')").ok());
  ASSERT_TRUE(rotation_->ResumeInterrupted(Caller{})->has_value());
  rotation_->WaitIdle();
  // The recount after the cursor found every blob still on v1: they were
  // moved first, and only then was v1 retired.
  EXPECT_EQ(VersionsInUse(), (std::map<uint32_t, int>{{2u, 20}}));
  EXPECT_EQ(keys_->Describe()->versions[0].state, "retired");
  EXPECT_EQ(rotation_->History(1)->front().status, "completed");
  EXPECT_EQ(secrets_->VerifyAll()->failed, 0);
}

// A KeyManager in front of another that records the size of every
// ReEncryptMany and counts single ReEncrypt calls.
class CountingKeys final : public testing::ForwardingKeys {
 public:
  using ForwardingKeys::ForwardingKeys;
  Result<WrappedKey> ReEncrypt(uint32_t version, std::string_view wrapped, std::string_view from,
                               std::string_view to) override {
    ++singles;
    return inner_.ReEncrypt(version, wrapped, from, to);
  }
  std::vector<Result<WrappedKey>> ReEncryptMany(const std::vector<ReEncryptItem>& items, size_t parallelism) override {
    {
      MutexLock lock(&mu_);
      batches.push_back(items.size());
    }
    return inner_.ReEncryptMany(items, parallelism);
  }
  std::vector<Result<SecretBytes>> DecryptMany(const std::vector<DecryptItem>& items, size_t parallelism) override {
    {
      MutexLock lock(&mu_);
      checks.push_back(items.size());
    }
    return inner_.DecryptMany(items, parallelism);
  }
  Status Retire(uint32_t version) override {
    {
      MutexLock lock(&mu_);
      retired.push_back(version);
    }
    return inner_.Retire(version);
  }
  Status RetireEverywhere(uint32_t version) override {
    {
      MutexLock lock(&mu_);
      retired_everywhere.push_back(version);
    }
    Status s = inner_.RetireEverywhere(version);
    if (after_retire) after_retire(version);
    return s;
  }
  Status BeginRetire(uint32_t version) override {
    {
      MutexLock lock(&mu_);
      begun.push_back(version);
    }
    Status s = inner_.BeginRetire(version);
    if (after_begin_retire) after_begin_retire(version);
    return s;
  }

  std::atomic<int> singles{0};
  std::vector<size_t> batches, checks;  // read once the rotation is over
  std::vector<uint32_t> begun, retired, retired_everywhere;
  // Called once the inner call returned (set before the rotation starts).
  std::function<void(uint32_t)> after_begin_retire, after_retire;

 private:
  Mutex mu_;
};

// On a store with conditional writes, a chunk's data keys move in one
// ReEncryptMany and are checked in one DecryptMany (one KMS batch call each
// where there is one).
TEST_P(RotationTest, AChunkMovesItsDataKeysInOneReEncryptMany) {
  CountingKeys counting(*keys_);
  secrets_ = SecretsService::Create(SecretsOptions{}, *store_, counting, *repo_, audit_, metrics_, clock_,
                                    DefaultRandom(), EnvMap{}).value();
  providers_ = std::make_unique<ProviderService>(*repo_, *secrets_, clock_, DefaultRandom(), audit_);
  rotation_ = NewRotation();
  ASSERT_TRUE(store_->HasConditionalWrites());
  Seed(520);
  auto run = rotation_->Run(false, "manual", Caller{}, nullptr);
  ASSERT_TRUE(run.ok()) << run.error().message;
  EXPECT_EQ(run->status, "completed") << run->error;
  EXPECT_EQ(run->reencrypted, 520);
  EXPECT_EQ(counting.singles.load(), 0);
  EXPECT_EQ(counting.batches, (std::vector<size_t>{250, 250, 20}));
  EXPECT_EQ(counting.checks, counting.batches);  // each moved key unwrapped again, in one call per chunk
  EXPECT_EQ(VersionsInUse(), (std::map<uint32_t, int>{{2u, 520}}));
  EXPECT_EQ(secrets_->VerifyAll()->failed, 0);
}

// Issue 9 item 3: instance B goes on writing with the keyring it loaded
// before instance A rotated and retired; nothing it wrote may be lost.
TEST_P(RotationTest, AWriterOnAnotherInstanceNeverLosesABlobToRetirement) {
  auto ids = Seed(300);
  auto b_keys = NewKeyring();
  SecretsOptions uncached;
  uncached.cache_enabled = false;
  auto b_secrets_owner = SecretsService::Create(uncached, *store_, *b_keys, *repo_, audit_, metrics_, clock_,
                                                DefaultRandom(), EnvMap{}).value();
  SecretsService& b_secrets = *b_secrets_owner;
  ProviderService b_providers(*repo_, b_secrets, clock_, DefaultRandom(), audit_);
  std::atomic<bool> stop{false};
  std::atomic<int> writes{0}, failed_writes{0}, created{0};
  std::thread writer([&] {
    for (int i = 0; !stop; ++i) {
      CredentialFields f;
      f.emplace("api_key", SecretBytes("b-" + std::to_string(i)));
      bool ok;
      if (i % 4 == 0) {
        ProviderPatch p;
        p.name = p.slug = "b-" + std::to_string(i);
        p.type = "http-sdk";
        p.adapter_config_json = R"({"baseUrl":"http://127.0.0.1:9"})";
        p.credentials = std::move(f);
        ok = b_providers.Create(p, Caller{}).ok();
        if (ok) ++created;
      } else {
        ok = b_providers.RotateCredentials(ids[static_cast<size_t>(i) % ids.size()], f, Caller{}).ok();
      }
      ++writes;
      if (!ok) ++failed_writes;
    }
  });
  auto run = rotation_->Run(false, "manual", Caller{});
  ASSERT_TRUE(run.ok()) << run.error().message;
  const int at_end = writes.load();
  while (writes.load() < at_end + 200) std::this_thread::yield();  // B writes on after v1 was retired
  stop = true;
  writer.join();
  EXPECT_EQ(failed_writes.load(), 0);
  EXPECT_EQ(run->status, "completed") << run->error;
  EXPECT_EQ(keys_->Describe()->versions[0].state, "retired");
  // A third process, started afterwards, opens everything.
  auto c_keys = NewKeyring();
  auto c_secrets_owner = SecretsService::Create(uncached, *store_, *c_keys, *repo_, audit_, metrics_, clock_,
                                                DefaultRandom(), EnvMap{}).value();
  SecretsService& c_secrets = *c_secrets_owner;
  auto verify = c_secrets.VerifyAll();
  ASSERT_TRUE(verify.ok());
  EXPECT_EQ(verify->total, 300 + created.load());
  EXPECT_EQ(verify->failed, 0) << verify->first_error;
}

// Issue 9 item 11: the owner is a random lease id, never a pid that may
// have been reused: a lock whose heartbeat is stale is taken over even when
// it names a live process of this host.
TEST_P(RotationTest, AStaleLockIsTakenOverWhateverPidItNames) {
  Seed(3);
  FakeClock fake;
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(fake.WallNow().time_since_epoch()).count();
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  ASSERT_TRUE(Sql("INSERT INTO rotation_lock(id, run_id, owner, heartbeat_at) VALUES(1,'old','" + std::string(host) +
                  ":" + std::to_string(getpid()) + ":x', " + std::to_string(now - 3600) + ")").ok());
  KeyRotationService rotation(RotationOptions(), std::move(Instance(fake).rotations), *secrets_, audit_, fake);
  auto run = rotation.Run(false, "manual", Caller{});
  ASSERT_TRUE(run.ok()) << run.error().message;
  EXPECT_EQ(run->status, "completed");
  EXPECT_EQ(LockHeartbeat(), -1);  // released
}

// Issue 9 item 11: the heartbeat comes from its own thread, so a batch
// slower than the takeover time does not lose the lock.
TEST_P(RotationTest, HeartbeatOutlivesABatchSlowerThanTheTakeoverTime) {
  Seed(600);
  FakeClock fake;
  auto options = RotationOptions();
  options.heartbeat_interval = std::chrono::milliseconds(1);
  options.lock_takeover = std::chrono::seconds(60);
  KeyRotationService rotation(options, std::move(Instance(fake).rotations), *secrets_, audit_, fake);
  std::latch in_batch(1), release(1);
  std::atomic<int> batches{0};
  Result<RotationRun> run = MakeError(ErrorCode::kInternal, "unset");
  std::thread t([&] {
    run = rotation.Run(false, "manual", Caller{}, [&](const RotationRun& r) {
      if (r.status == "running" && batches++ == 0) {
        in_batch.count_down();
        release.wait();  // a batch that takes ten minutes
      }
    });
  });
  in_batch.wait();
  fake.Advance(std::chrono::minutes(10));
  // SQLite's heartbeat is the fake clock's (seconds); PostgreSQL's the
  // server's (milliseconds): there the test makes it stale by hand and waits
  // for the ticker to write a fresh one.
  const bool server_clock = GetParam() == "postgresql";
  if (server_clock) EXPECT_TRUE(Sql("UPDATE rotation_lock SET heartbeat_at = 0").ok());
  const int64_t now = server_clock
                          ? 1
                          : std::chrono::duration_cast<std::chrono::seconds>(fake.WallNow().time_since_epoch()).count();
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (LockHeartbeat() < now && std::chrono::steady_clock::now() < give_up) std::this_thread::yield();
  EXPECT_GE(LockHeartbeat(), now);
  // another instance
  KeyRotationService other(options, std::move(Instance(fake).rotations), *secrets_, audit_, fake);
  EXPECT_EQ(other.Start(false, "manual", Caller{}).code(), ErrorCode::kConflict);
  release.count_down();
  t.join();
  ASSERT_TRUE(run.ok()) << run.error().message;
  EXPECT_EQ(run->status, "completed");
  EXPECT_EQ(VersionsInUse(), (std::map<uint32_t, int>{{2u, 600}}));
}

// Issue 14 review: what another instance does when this one's heartbeat went
// stale (a database outage longer than the takeover time): it takes the
// lease over and resumes `r` as run "resumed-run".
void TakeOver(testing::RegistryInstance other, const RotationRun& r, const std::function<Status(const std::string&)>& sql) {
  ASSERT_TRUE(sql("UPDATE rotation_lock SET heartbeat_at = 0").ok());  // stale on either engine's clock
  RotationRun resumed = r;
  resumed.id = "resumed-run";
  resumed.trigger = "resumed";
  resumed.status = "running";
  resumed.started_at = "2026-01-01T00:00:00.000Z";
  auto begun = other.rotations->Begin(resumed, "lease-other", std::chrono::seconds(10), "resumed as run resumed-run",
                                      {}, r.id);
  ASSERT_TRUE(begun.ok()) << begun.error().message;
  ASSERT_FALSE(begun->has_value());
}

Result<RotationRun> RotationTest::RunTakenOverWhen(KeyRotationService& rotation,
                                                   const std::function<bool(const RotationRun&)>& when) {
  bool taken = false;
  auto sql = [this](const std::string& q) { return Sql(q); };
  auto run = rotation.Run(false, "manual", Caller{}, [&](const RotationRun& r) {
    if (taken || !when(r)) return;
    taken = true;
    TakeOver(Instance(), r, sql);
  });
  if (!taken) return MakeError(ErrorCode::kInternal, "the run never reached the takeover point");
  if (run.ok()) {
    EXPECT_EQ(run->status, "failed");
    EXPECT_NE(run->error.find("lock lost"), std::string::npos) << run->error;
  }
  return run;
}

// The lease is taken over between two batches: the next save is refused and
// the run stops as "lock lost", writing nothing more — the run the new owner
// marked interrupted keeps its progress and status, the resumed run and its
// lease are untouched, and no key version is retired.
TEST_P(RotationTest, ARunWhoseLockWasTakenOverMidRunStopsAndWritesNothingMore) {
  Seed(1000);
  auto options = RotationOptions();
  options.heartbeat_interval = std::chrono::hours(1);  // no ticker beat: the save itself must find the loss
  KeyRotationService rotation(options, std::move(Instance().rotations), *secrets_, audit_, clock_);
  auto run = RunTakenOverWhen(rotation, [](const RotationRun& r) { return r.done == 250; });
  ASSERT_TRUE(run.ok()) << run.error().message;
  auto history = *rotation.History(10);
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[0].id, "resumed-run");
  EXPECT_EQ(history[0].status, "running");
  EXPECT_EQ(history[1].id, run->id);
  EXPECT_EQ(history[1].status, "interrupted");  // not overwritten by the old owner
  EXPECT_EQ(history[1].done, 250);
  EXPECT_EQ(history[1].error, "resumed as run resumed-run");
  EXPECT_EQ(SqlInt("SELECT COUNT(*) FROM rotation_lock WHERE run_id='resumed-run' AND owner='lease-other'").value_or(-1), 1);
  EXPECT_EQ(keys_->Describe()->versions[0].state, "active");  // nothing retired
  EXPECT_EQ(secrets_->VerifyAll()->failed, 0);  // what it re-encrypted before stopping opens
}

// The lease is taken over after the last batch was saved, right before the
// retirement: the old owner retires nothing and does not finish the run.
TEST_P(RotationTest, AnOwnerWhoseLockWasTakenOverBeforeRetiringRetiresNothing) {
  Seed(600);
  auto options = RotationOptions();
  options.heartbeat_interval = std::chrono::hours(1);
  KeyRotationService rotation(options, std::move(Instance().rotations), *secrets_, audit_, clock_);
  auto run =
      RunTakenOverWhen(rotation, [](const RotationRun& r) { return r.status == "running" && r.done == r.total; });
  ASSERT_TRUE(run.ok()) << run.error().message;
  auto keys = *keys_->Describe();
  ASSERT_GE(keys.versions.size(), 2u);
  EXPECT_EQ(keys.versions[0].state, "active");  // neither retiring nor retired
  EXPECT_EQ(VersionsInUse(), (std::map<uint32_t, int>{{2u, 600}}));
  auto history = *rotation.History(10);
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[1].status, "interrupted");
  EXPECT_EQ(history[1].finished_at, "2026-01-01T00:00:00.000Z");  // the takeover's, not the old owner's
  EXPECT_EQ(rotation.Successes()->count, 0);
  EXPECT_EQ(SqlInt("SELECT COUNT(*) FROM rotation_lock WHERE owner='lease-other'").value_or(-1), 1);
}

// Starts from several threads, back to back: each Launch replaces the
// worker thread of the last run (a data race ThreadSanitizer reported).
TEST_P(RotationTest, ConcurrentStartsShareTheWorkerSafely) {
  Seed(3);
  std::vector<std::thread> threads;
  std::atomic<int> started{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10; ++i) {
        if (rotation_->Start(false, "manual", Caller{}).ok()) ++started;
      }
    });
  }
  for (auto& t : threads) t.join();
  rotation_->WaitIdle();
  EXPECT_GE(started.load(), 1);
  EXPECT_EQ(secrets_->VerifyAll()->failed, 0);
}

TEST_P(RotationTest, SchedulerFollowsCronAndToggleAndRotatesAWornKey) {
  Seed(5);
  auto at = [](const char* iso_minute) {  // "2026-03-02T02:30"
    std::tm tm{};
    strptime(iso_minute, "%Y-%m-%dT%H:%M", &tm);
    return std::chrono::system_clock::from_time_t(timegm(&tm));
  };
  FakeClock fake;
  fake.SetWall(at("2026-03-01T00:00"));
  RotationScheduler scheduler(*rotation_, *keys_, std::move(Instance().settings),
                              RotationTiming{*CronSchedule::Parse("30 2 * * MON")}, false, 1000000, fake);
  ASSERT_TRUE(scheduler.NextRun().has_value());
  EXPECT_EQ(FormatIso8601(*scheduler.NextRun()), "2026-03-02T02:30:00.000Z");
  EXPECT_FALSE(scheduler.Tick(at("2026-03-02T02:29")).has_value());  // not yet
  EXPECT_FALSE(scheduler.Tick(at("2026-03-02T02:30")).has_value());  // due, but disabled
  EXPECT_EQ(FormatIso8601(*scheduler.NextRun()), "2026-03-09T02:30:00.000Z");
  ASSERT_TRUE(scheduler.SetEnabled(true).ok());
  RotationScheduler reopened(*rotation_, *keys_, std::move(Instance().settings),
                             RotationTiming{*CronSchedule::Parse("30 2 * * MON")}, false, 1000000, fake);
  EXPECT_TRUE(*reopened.Enabled());  // the toggle is stored, not the environment's
  auto id = scheduler.Tick(at("2026-03-09T02:30"));
  ASSERT_TRUE(id.has_value());
  rotation_->WaitIdle();
  EXPECT_EQ(rotation_->History(1)->front().trigger, "scheduled");
  EXPECT_EQ(keys_->Describe()->primary_version, 2u);

  // Key wear: a limit of 5000 is reached by the next block reservation.
  ASSERT_TRUE(scheduler.SetEnabled(false).ok());
  RotationScheduler worn(*rotation_, *keys_, std::move(Instance().settings),
                         RotationTiming{*CronSchedule::Parse("30 2 * * MON")}, false, 5000, fake);
  EXPECT_FALSE(worn.KeyWorn());
  for (int i = 0; i < 4100; ++i) ASSERT_TRUE(keys_->GenerateDataKey().ok());
  EXPECT_GE(keys_->Describe()->versions.back().encryptions, 4100u);
  EXPECT_TRUE(worn.KeyWorn());
  ASSERT_TRUE(worn.Tick(at("2026-03-10T00:00")).has_value());  // not due, not enabled: worn
  rotation_->WaitIdle();
  EXPECT_EQ(keys_->Describe()->primary_version, 3u);
  EXPECT_FALSE(worn.KeyWorn());
}

// More secrets than the wear limit allows: the rotation that makes a
// version wears it with its own re-encryptions, and a rotation for wear at
// every tick would follow. The first is made; the version it made is not
// rotated again for wear.
// The keyring as `serve` makes it for a wear limit of 4: encryptions
// recorded one at a time (ReserveBlockFor).
class SmallWearLimitTest : public RotationTest {
 protected:
  uint64_t ReserveBlock() const override { return ReserveBlockFor(4); }
};

TEST_P(SmallWearLimitTest, AVersionWornByItsOwnRotationIsNotRotatedAgainForWear) {
  Seed(5);
  FakeClock fake;
  RotationScheduler worn(*rotation_, *keys_, std::move(Instance().settings), RotationTiming{std::nullopt, std::chrono::hours(24 * 365)},
                         false, 4, fake);
  ASSERT_TRUE(worn.KeyWorn());
  ASSERT_TRUE(worn.Tick(fake.WallNow()).has_value());
  rotation_->WaitIdle();
  ASSERT_EQ(keys_->Describe()->primary_version, 2u);
  EXPECT_EQ(rotation_->History(1)->front().reencrypted, 5);
  EXPECT_FALSE(worn.KeyWorn());
  EXPECT_FALSE(worn.Tick(fake.WallNow()).has_value());
  EXPECT_EQ(keys_->Describe()->primary_version, 2u);
  // The limit still holds for what is encrypted since: as many again as
  // its threshold, and the version is worn.
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(keys_->GenerateDataKey().ok());
  EXPECT_FALSE(worn.KeyWorn());
  ASSERT_TRUE(keys_->GenerateDataKey().ok());
  EXPECT_TRUE(worn.KeyWorn());
}

TEST_P(RotationTest, DryRunCountsAndWritesNothing) {
  Seed(30);
  auto before = store_->List()->size();
  auto report = rotation_->DryRun();
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->primary_version, 1u);
  EXPECT_EQ(report->secrets_per_version.at(1), 30);
  EXPECT_EQ(report->would_reencrypt, 30);
  EXPECT_EQ(keys_->Describe()->primary_version, 1u);
  EXPECT_EQ(store_->List()->size(), before);
  EXPECT_TRUE(rotation_->History(5)->empty());
}

// Found by review: a store that may not list (AWS under the seed's policy, where
// ListSecrets is optional): the registry alone names the secrets a rotation
// scans. A create writes its secret, checks its key version (still active),
// then stalls before its row; the rotation retires that version meanwhile,
// finding no blob on it. The create then succeeds, sealed under a retired
// version.
class UnlistableStore final : public testing::ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;
  Result<std::vector<Listed>> List() override {
    return MakeError(ErrorCode::kPermissionDenied, "secretsmanager:ListSecrets is not permitted");
  }
};

class StallOnPutAudit final : public AuditSink {
 public:
  void Record(const AuditEvent& e) override {
    if (e.action == "secret.put" && !stalled_.exchange(true)) {
      reached_.set_value();
      resume_.get_future().wait();
    }
  }
  bool Healthy() const override { return true; }
  std::promise<void> reached_, resume_;
  std::atomic<bool> stalled_{false};
};

TEST_P(RotationTest, WithoutListingACreateWhoseRowLandsAfterTheRecountIsNotLeftOnARetiredVersion) {
  SystemClock& clock = clock_;
  ProviderRepository* repo = repo_.get();
  KeyManager* keys = keys_.get();
  testing::MemoryStore memory;
  UnlistableStore store(memory);
  testing::MemoryAudit audit;
  StallOnPutAudit stalling_audit;
  Metrics metrics;
  SecretsOptions uncached;
  uncached.cache_enabled = false;
  auto creator_owner = SecretsService::Create(uncached, store, *keys, *repo, stalling_audit, metrics, clock,
                                              DefaultRandom(), EnvMap{}).value();
  SecretsService& creator = *creator_owner;
  ProviderService creating(*repo, creator, clock, DefaultRandom(), stalling_audit);
  auto secrets_owner = SecretsService::Create(uncached, store, *keys, *repo, audit, metrics, clock, DefaultRandom(),
                                              EnvMap{}).value();
  SecretsService& secrets = *secrets_owner;
  KeyRotationService::Options o{250, 4};
  o.retire_grace = std::chrono::milliseconds(20);
  KeyRotationService rotation(o, std::move(Instance().rotations), secrets, audit, clock);

  auto reached = stalling_audit.reached_.get_future();
  ProviderPatch p;
  p.name = p.slug = "late-row";
  p.type = "http-sdk";
  p.adapter_config_json = R"({"baseUrl":"http://127.0.0.1:9"})";
  CredentialFields f;
  f.emplace("api_key", SecretBytes(std::string("sk-late")));
  p.credentials = f;
  auto made = std::async(std::launch::async, [&] { return creating.Create(p, Caller{}); });
  reached.wait();  // the secret is stored under version 1 and checked 'active'; no row yet
  auto run = rotation.Run(false, "manual", Caller{}, nullptr);
  ASSERT_TRUE(run.ok()) << run.error().message;
  EXPECT_EQ(run->status, "completed") << run->error;
  stalling_audit.resume_.set_value();
  auto created = made.get();
  ASSERT_TRUE(created.ok()) << created.error().message;  // acknowledged
  auto state = keys->Describe();
  ASSERT_TRUE(state.ok());
  auto read = secrets.Get(created->id, Caller{});
  EXPECT_TRUE(read.ok()) << "the acknowledged create cannot be read: " << read.error().message;
}

// Found by review: a KMS-wide retire (Transit's min_decryption_version) made
// when the store refused its list strands another instance's secrets, which
// only its own registry names. The version is then retired in the gateway
// only; with the store listed, everywhere.
class RetireScopeTest : public RotationTest {
 protected:
  void Check(bool listable) {
    CountingKeys counting(*keys_);
    UnlistableStore unlistable(*store_);
    SecretStore& store = listable ? static_cast<SecretStore&>(*store_) : unlistable;
    rotation_.reset();
    providers_.reset();
    secrets_ = SecretsService::Create(SecretsOptions{}, store, counting, *repo_, audit_, metrics_, clock_,
                                      DefaultRandom(), EnvMap{}).value();
    providers_ = std::make_unique<ProviderService>(*repo_, *secrets_, clock_, DefaultRandom(), audit_);
    rotation_ = NewRotation();
    Seed(3);
    auto run = rotation_->Run(false, "manual", Caller{}, nullptr);
    ASSERT_TRUE(run.ok()) << run.error().message;
    EXPECT_EQ(run->status, "completed") << run->error;
    EXPECT_EQ(run->reencrypted, 3);
    EXPECT_EQ(keys_->CurrentState(1).value(), "retired");
    if (listable) {
      EXPECT_TRUE(counting.retired.empty());
      EXPECT_EQ(counting.retired_everywhere, (std::vector<uint32_t>{1}));
    } else {
      EXPECT_EQ(counting.retired, (std::vector<uint32_t>{1}));
      EXPECT_TRUE(counting.retired_everywhere.empty());
    }
    rotation_.reset();
    providers_.reset();
    secrets_.reset();
  }
};

TEST_P(RetireScopeTest, ListRefusedRetiresInTheGatewayOnly) { Check(false); }
TEST_P(RetireScopeTest, StoreListedRetiresEverywhere) { Check(true); }

// Review 2 item 1: a stop asked for while batch 3 is read ahead (its GetMany
// held by the store) ends the run only once that read has returned: the lock
// is released, and WaitIdle returns, with no thread of the run left in the
// SecretsService; batch 3 is left for the next start.
TEST_P(RotationTest, AStopAskedDuringTheReadAheadEndsTheRunOnlyOnceTheReadHasEnded) {
  Seed(1000);
  GatedStore gated(*store_, 3);  // batch 3's read, ahead while batch 2 is written
  auto secrets_owner = SecretsService::Create(SecretsOptions{}, gated, *keys_, *repo_, audit_, metrics_, clock_,
                                              DefaultRandom(), EnvMap{}).value();
  SecretsService& secrets = *secrets_owner;
  auto watched = std::make_unique<WatchedRotations>(std::move(Instance().rotations));
  WatchedRotations& runs = *watched;
  std::atomic<bool> released{false}, read_over_at_release{false}, read_over_at_idle{false}, stop_asked{false};
  runs.on_release = [&] {
    read_over_at_release = gated.Returned();
    released = true;
  };
  KeyRotationService rotation(RotationOptions(), std::move(watched), secrets, audit_, clock_);
  std::thread waiter;
  Result<RotationRun> run = MakeError(ErrorCode::kInternal, "unset");
  std::thread runner([&] {
    run = rotation.Run(false, "manual", Caller{}, [&](const RotationRun& r) {
      if (r.done != 500 || stop_asked) return;
      rotation.RequestStop();
      waiter = std::thread([&] {
        rotation.WaitIdle();
        read_over_at_idle = gated.Returned();
      });
      stop_asked = true;
    });
  });
  const bool held = gated.WaitUntilHeld();
  auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!stop_asked && std::chrono::steady_clock::now() < give_up) std::this_thread::yield();
  // A run that did not wait for its read-ahead would release the lock now,
  // the read still held: the bound only gives it the time to show it.
  give_up = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  while (!released && std::chrono::steady_clock::now() < give_up) std::this_thread::yield();
  gated.Open();
  runner.join();
  if (waiter.joinable()) waiter.join();
  ASSERT_TRUE(held) << "the rotation never read its third batch";
  ASSERT_TRUE(stop_asked);
  ASSERT_TRUE(run.ok()) << run.error().message;
  EXPECT_TRUE(released);
  EXPECT_TRUE(read_over_at_release) << "the lock was released while the read ahead was still running";
  EXPECT_TRUE(read_over_at_idle) << "WaitIdle returned while the read ahead was still running";
  auto history = *rotation.History(5);
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(history[0].status, "running");
  EXPECT_EQ(history[0].done, 500);
  EXPECT_EQ(VersionsInUse(), (std::map<uint32_t, int>{{1u, 500}, {2u, 500}}));
}

// Review 2 item 2: the lock is found lost (by the heartbeat) after batch 2
// was saved, while batch 3 is read ahead: batch 3 is not written.
TEST_P(RotationTest, ALockLostWhileTheNextBatchIsReadAheadLeavesThatBatchUnwritten) {
  Seed(1000);
  auto watched = std::make_unique<WatchedRotations>(std::move(Instance().rotations));
  WatchedRotations& runs = *watched;
  auto options = RotationOptions();
  options.heartbeat_interval = std::chrono::milliseconds(1);
  KeyRotationService rotation(options, std::move(watched), *secrets_, audit_, clock_);
  bool taken = false, seen = false;
  auto sql = [this](const std::string& q) { return Sql(q); };
  auto run = rotation.Run(false, "manual", Caller{}, [&](const RotationRun& r) {
    if (taken || r.done != 500) return;
    taken = true;
    runs.hold_beats = true;  // this owner's beats must not freshen the lease while it is taken over
    while (runs.beats_in_flight > 0) std::this_thread::yield();
    TakeOver(Instance(), r, sql);
    runs.hold_beats = false;
    // Two beats that found it gone: the first one's loss is recorded by now.
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (runs.lost_beats < 2 && std::chrono::steady_clock::now() < give_up) std::this_thread::yield();
    seen = runs.lost_beats >= 2;
  });
  ASSERT_TRUE(taken);
  ASSERT_TRUE(seen) << "the heartbeat never found the lock gone";
  ASSERT_TRUE(run.ok()) << run.error().message;
  EXPECT_EQ(run->status, "failed");
  EXPECT_NE(run->error.find("lock lost"), std::string::npos) << run->error;
  EXPECT_EQ(VersionsInUse(), (std::map<uint32_t, int>{{1u, 500}, {2u, 500}}));  // batch 3 read, not written
  auto history = *rotation.History(10);
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[1].status, "interrupted");
  EXPECT_EQ(history[1].done, 500);
}

// Review 2 item 3: when the read-ahead's thread cannot be started, the run
// reads each batch on its own thread, in its turn, and completes.
TEST_P(RotationTest, AWorkerThatCannotStartLeavesTheRunReadingEachBatchInItsTurn) {
  Seed(600);
  ThreadRecordingStore recording(*store_);
  auto secrets_owner = SecretsService::Create(SecretsOptions{}, recording, *keys_, *repo_, audit_, metrics_, clock_,
                                              DefaultRandom(), EnvMap{}).value();
  SecretsService& secrets = *secrets_owner;
  auto options = RotationOptions();
  std::atomic<int> asked{0};
  options.start_worker = [&asked]() -> Result<std::unique_ptr<Worker>> {
    ++asked;
    return MakeError(ErrorCode::kUnavailable, "no thread could be started");
  };
  KeyRotationService rotation(options, std::move(Instance().rotations), secrets, audit_, clock_);
  auto run = rotation.Run(false, "manual", Caller{}, nullptr);
  ASSERT_TRUE(run.ok()) << run.error().message;
  EXPECT_EQ(run->status, "completed") << run->error;
  EXPECT_EQ(run->reencrypted, 600);
  EXPECT_EQ(asked.load(), 1);
  EXPECT_EQ(recording.threads(), std::set<std::thread::id>{std::this_thread::get_id()});
  EXPECT_EQ(VersionsInUse(), (std::map<uint32_t, int>{{2u, 600}}));
  EXPECT_EQ(secrets.VerifyAll()->failed, 0);
}

// The counterpart: with its worker, a run reads ahead on another thread.
TEST_P(RotationTest, ARunReadsTheNextBatchOnItsWorker) {
  Seed(600);
  ThreadRecordingStore recording(*store_);
  auto secrets_owner = SecretsService::Create(SecretsOptions{}, recording, *keys_, *repo_, audit_, metrics_, clock_,
                                              DefaultRandom(), EnvMap{}).value();
  SecretsService& secrets = *secrets_owner;
  KeyRotationService rotation(RotationOptions(), std::move(Instance().rotations), secrets, audit_, clock_);
  auto run = rotation.Run(false, "manual", Caller{}, nullptr);
  ASSERT_TRUE(run.ok()) << run.error().message;
  EXPECT_EQ(run->status, "completed") << run->error;
  EXPECT_EQ(recording.threads().size(), 2u);  // the worker's (batches), this one's (the recount)
}

// A rotation asked for when the system refuses its thread answers
// kUnavailable and claims nothing: no lock, no history entry, so another
// instance (and this one, once threads can be had) rotates at once.
TEST_P(RotationTest, AnAdminRotationWhoseThreadCannotStartClaimsNothing) {
  Seed(300);
  testing::RefusingThreads threads;
  auto options = RotationOptions();
  options.start_thread = threads.starter();
  KeyRotationService rotation(options, std::move(Instance().rotations), *secrets_, audit_, clock_);
  auto started = rotation.Start(false, "manual", Caller{});
  ASSERT_FALSE(started.ok());
  EXPECT_EQ(started.code(), ErrorCode::kUnavailable);
  EXPECT_NE(started.error().message.find("cannot start a key rotation: cannot start a thread"), std::string::npos)
      << started.error().message;
  EXPECT_FALSE(rotation.Current());
  EXPECT_TRUE(rotation.History(10)->empty());
  EXPECT_EQ(SqlInt("SELECT COUNT(*) FROM rotation_lock WHERE run_id IS NOT NULL"), 0);
  EXPECT_EQ(keys_->Describe()->primary_version, 1u);
  // Another instance rotates at once: the lock was never taken.
  auto other = NewRotation();
  ASSERT_TRUE(other->Start(false, "manual", Caller{}).ok());
  other->WaitIdle();
  // And this one, once threads can be had again.
  threads.Allow();
  auto again = rotation.Start(false, "manual", Caller{});
  ASSERT_TRUE(again.ok()) << again.error().message;
  rotation.WaitIdle();
  auto history = *rotation.History(10);
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[0].status, "completed") << history[0].error;
  EXPECT_EQ(history[1].status, "completed") << history[1].error;
  EXPECT_EQ(VersionsInUse(), (std::map<uint32_t, int>{{3u, 300}}));
}

// Likewise a run left by a process that is gone: it stays as it was, for
// the next attempt (here another instance's) to resume.
TEST_P(RotationTest, AResumeWhoseThreadCannotStartLeavesTheRunForTheNext) {
  Seed(10);
  ASSERT_TRUE(Sql("INSERT INTO rotation_runs(id, trigger, status, force, started_at, from_version, to_version, "
                  "done, cursor) VALUES('dead-run','manual','running',FALSE,'2026-01-01T00:00:00.000Z',1,0,0,'')").ok());
  ASSERT_TRUE(Sql("INSERT INTO rotation_lock(id, run_id, owner, heartbeat_at) VALUES(1,'dead-run','gone:1:x', 0)").ok());
  testing::RefusingThreads threads;
  auto options = RotationOptions();
  options.start_thread = threads.starter();
  KeyRotationService rotation(options, std::move(Instance().rotations), *secrets_, audit_, clock_);
  auto resumed = rotation.ResumeInterrupted(Caller{});
  ASSERT_FALSE(resumed.ok());
  EXPECT_EQ(resumed.code(), ErrorCode::kUnavailable);
  auto history = *rotation.History(10);
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(history[0].id, "dead-run");
  EXPECT_EQ(history[0].status, "running");
  auto other = NewRotation();
  auto by_other = other->ResumeInterrupted(Caller{});
  ASSERT_TRUE(by_other.ok()) << by_other.error().message;
  ASSERT_TRUE(by_other->has_value());
  other->WaitIdle();
  history = *rotation.History(10);
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[0].status, "completed") << history[0].error;
  EXPECT_EQ(history[1].status, "interrupted");
  EXPECT_EQ(VersionsInUse(), (std::map<uint32_t, int>{{2u, 10}}));
}

// A run whose heartbeat cannot be started would hold a lock that goes stale
// mid-run: it ends as failed before it rotates anything, releases the lock,
// and the next run (another instance's, or this one's) completes.
TEST_P(RotationTest, ARunWhoseHeartbeatCannotStartFailsBeforeRotatingAndReleasesTheLock) {
  Seed(300);
  for (bool background : {false, true}) {
    SCOPED_TRACE(background ? "Start" : "Run");
    // Run: the heartbeat is the first thread asked for; Start: the second,
    // after the run's own.
    testing::RefusingThreads threads(background ? 2 : 1);
    auto options = RotationOptions();
    options.start_thread = threads.starter();
    KeyRotationService rotation(options, std::move(Instance().rotations), *secrets_, audit_, clock_);
    const uint32_t primary = keys_->Describe()->primary_version;
    RotationRun failed;
    if (background) {
      ASSERT_TRUE(rotation.Start(false, "manual", Caller{}).ok());
      rotation.WaitIdle();
      failed = rotation.History(1)->front();
    } else {
      auto run = rotation.Run(false, "manual", Caller{});
      ASSERT_TRUE(run.ok()) << run.error().message;
      failed = *run;
    }
    EXPECT_EQ(failed.status, "failed");
    EXPECT_NE(failed.error.find("cannot start a thread for the rotation lock's heartbeat"), std::string::npos)
        << failed.error;
    EXPECT_EQ(rotation.History(1)->front().status, "failed");
    EXPECT_EQ(keys_->Describe()->primary_version, primary);  // nothing rotated
    EXPECT_EQ(VersionsInUse(), (std::map<uint32_t, int>{{primary, 300}}));
    EXPECT_EQ(SqlInt("SELECT COUNT(*) FROM rotation_lock WHERE run_id IS NOT NULL"), 0);
    auto other = NewRotation();
    auto next = other->Run(false, "manual", Caller{});
    ASSERT_TRUE(next.ok()) << next.error().message;
    EXPECT_EQ(next->status, "completed") << next->error;
    threads.Allow();
    auto again = rotation.Run(false, "manual", Caller{});
    ASSERT_TRUE(again.ok()) << again.error().message;
    EXPECT_EQ(again->status, "completed") << again->error;
    EXPECT_EQ(VersionsInUse(), (std::map<uint32_t, int>{{primary + 2, 300}}));
  }
}

// A resumed run (after a crash or a takeover) whose heartbeat cannot be
// started must not be lost: saved as failed, its cursor would be gone and the
// next run would rotate the KMS key again and re-encrypt every secret. It
// releases the lock, stays "running" with the error, and the next attempt
// resumes it at its cursor onto the version it had rotated to.
TEST_P(RotationTest, AResumedRunWhoseHeartbeatCannotStartStaysResumableAtItsCursor) {
  std::vector<std::string> names;
  ASSERT_NO_FATAL_FAILURE(LeaveADeadRun(names));
  // The first thread (the runs' own) starts; the second (the heartbeat) is refused.
  testing::RefusingThreads threads(2);
  auto options = RotationOptions();
  options.start_thread = threads.starter();
  options.resume_backoff = Clock::Duration::zero();  // the next attempt is this instance's, at once
  KeyRotationService rotation(options, std::move(Instance().rotations), *secrets_, audit_, clock_);
  auto resumed = rotation.ResumeInterrupted(Caller{});
  ASSERT_TRUE(resumed.ok()) << resumed.error().message;
  ASSERT_TRUE(resumed->has_value());
  rotation.WaitIdle();
  EXPECT_EQ(threads.asked(), 2);
  auto history = *rotation.History(10);
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[0].id, **resumed);
  EXPECT_EQ(history[0].status, "running");
  EXPECT_NE(history[0].error.find("cannot start a thread for the rotation lock's heartbeat"), std::string::npos)
      << history[0].error;
  EXPECT_EQ(history[0].to_version, 2u);
  EXPECT_EQ(history[0].cursor, names[3]);
  EXPECT_EQ(SqlInt("SELECT COUNT(*) FROM rotation_lock WHERE run_id IS NOT NULL"), 0);  // released
  EXPECT_EQ(keys_->Describe()->primary_version, 2u);  // nothing rotated
  int reported = 0;
  for (const auto& e : audit_.events()) {
    if (e.action == "key.rotate" && e.resource == **resumed && e.outcome == "failure" &&
        e.detail.find("cannot start a thread for the rotation lock's heartbeat") != std::string::npos) {
      ++reported;
    }
  }
  EXPECT_EQ(reported, 1);
  // The next attempt (here: this instance, once threads can be had) resumes it.
  threads.Allow();
  auto again = rotation.ResumeInterrupted(Caller{});
  ASSERT_TRUE(again.ok()) << again.error().message;
  ASSERT_TRUE(again->has_value()) << "the paused run was not left to resume";
  rotation.WaitIdle();
  history = *rotation.History(10);
  ASSERT_EQ(history.size(), 3u);
  ExpectTheDeadRunCompletedAsResumed(history[0]);
  EXPECT_EQ(history[1].id, **resumed);
  EXPECT_EQ(history[1].status, "interrupted");
  EXPECT_EQ(secrets_->VerifyAll()->failed, 0);
}

// Review (key-rotation hardening, 1): a fresh start that found a paused run
// (a resume whose heartbeat could not start: "running", the lock free)
// marked it interrupted and began another rotation — a second KMS key
// version, every credential re-encrypted again. The admin's perform (Start)
// resumes it instead, and answers with the resume's id. Review (key-rotation
// follow-ups, 2): the answer says it is a resume, with that run's own force
// (not the one asked for), so the operator knows to ask again.
TEST_P(RotationTest, AFreshStartResumesAPausedRunInsteadOfRotatingAgain) {
  std::vector<std::string> names;
  ASSERT_NO_FATAL_FAILURE(LeaveADeadRun(names));
  testing::RefusingThreads threads(2);  // the runs' thread starts; the heartbeat is refused
  auto options = RotationOptions();
  options.start_thread = threads.starter();
  KeyRotationService rotation(options, std::move(Instance().rotations), *secrets_, audit_, clock_);
  auto paused = rotation.ResumeInterrupted(Caller{});
  ASSERT_TRUE(paused.ok() && paused->has_value());
  rotation.WaitIdle();
  ASSERT_EQ(rotation.History(1)->front().status, "running");
  threads.Allow();
  auto started = rotation.Start(/*force=*/true, "manual", Caller{});
  ASSERT_TRUE(started.ok()) << started.error().message;
  EXPECT_EQ(started->trigger, kResumedTrigger);
  EXPECT_FALSE(started->force);  // the paused run's
  rotation.WaitIdle();
  auto history = *rotation.History(10);
  ASSERT_EQ(history.size(), 3u);
  EXPECT_EQ(history[0].id, started->id);
  ExpectTheDeadRunCompletedAsResumed(history[0]);
  EXPECT_EQ(history[1].id, **paused);
  EXPECT_EQ(history[1].status, "interrupted");
}

// Likewise a run (the CLI's `secrets rotate`) on another instance, with the
// dead run's lock stale: it resumes that run rather than supersede it.
TEST_P(RotationTest, AFreshRunResumesARunLeftRunningInsteadOfRotatingAgain) {
  std::vector<std::string> names;
  ASSERT_NO_FATAL_FAILURE(LeaveADeadRun(names));
  auto run = rotation_->Run(true, "manual", Caller{});
  ASSERT_TRUE(run.ok()) << run.error().message;
  ExpectTheDeadRunCompletedAsResumed(*run);
  EXPECT_FALSE(run->force);  // the resumed run's
  auto history = *rotation_->History(10);
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[1].id, "dead-run");
  EXPECT_EQ(history[1].status, "interrupted");
  // Once nothing is left, a run is a fresh rotation.
  auto fresh = rotation_->Run(false, "manual", Caller{});
  ASSERT_TRUE(fresh.ok()) << fresh.error().message;
  EXPECT_EQ(fresh->trigger, "manual");
  EXPECT_EQ(fresh->status, "completed") << fresh->error;
  EXPECT_EQ(fresh->to_version, 3u);
}

// A stop asked before a run begins (a Launch racing the destructor) is seen
// before the KMS key is rotated: nothing is rotated, the run is left
// "running" with the lock free, and the next start resumes it.
TEST_P(RotationTest, AStopAskedBeforeARunBeginsRotatesNothing) {
  Seed(10);
  auto stopped = NewRotation();
  stopped->RequestStop();
  auto run = stopped->Run(false, "manual", Caller{});
  ASSERT_TRUE(run.ok()) << run.error().message;
  EXPECT_EQ(run->status, "running");
  EXPECT_EQ(keys_->Describe()->primary_version, 1u);  // no KMS rotation
  EXPECT_EQ(SqlInt("SELECT COUNT(*) FROM rotation_lock WHERE run_id IS NOT NULL"), 0);
  stopped.reset();
  auto next = NewRotation();
  auto history = *next->History(10);
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(history[0].status, "running");
  EXPECT_EQ(history[0].to_version, 0u);
  auto resumed = next->ResumeInterrupted(Caller{});
  ASSERT_TRUE(resumed.ok()) << resumed.error().message;
  ASSERT_TRUE(resumed->has_value());
  next->WaitIdle();
  history = *next->History(10);
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[0].status, "completed") << history[0].error;
  EXPECT_EQ(history[0].to_version, 2u);
  EXPECT_EQ(VersionsInUse(), (std::map<uint32_t, int>{{2u, 10}}));
}

// Issue 14 review: a retirement step had no bound below the lock's takeover
// time, so a KMS call slower than that could land after another instance took
// the lease over, and the steps after it followed. Here a step's KMS call
// takes longer than `lock_takeover` (the fake clock moves on by it) and
// another instance, finding the lease stale, takes it over meanwhile: that
// step is the old owner's last; it marks or retires no further version.
class RetireFenceTest : public testing::RotationFixture<FakeClock> {
 protected:
  enum class Slow { kBeginRetire, kRetire };
  void Check(Slow slow) {
    CountingKeys counting(*keys_);
    secrets_ = SecretsService::Create(SecretsOptions{}, *store_, counting, *repo_, audit_, metrics_, clock_,
                                      DefaultRandom(), EnvMap{}).value();
    ProviderService providers(*repo_, *secrets_, clock_, DefaultRandom(), audit_);
    for (int i = 0; i < 3; ++i) {
      ProviderPatch p;
      p.name = p.slug = "p-" + std::to_string(i);
      p.type = "http-sdk";
      p.adapter_config_json = R"({"baseUrl":"http://127.0.0.1:9"})";
      p.credentials = CredentialFields{};
      p.credentials->emplace("api_key", SecretBytes("key-" + std::to_string(i)));
      ASSERT_TRUE(providers.Create(p, Caller{}).ok());
    }
    ASSERT_EQ(keys_->Rotate().value(), 2u);  // v1 stays active: the run to v3 retires two versions
    KeyRotationService::Options o;
    o.heartbeat_interval = std::chrono::hours(1);  // no ticker beat: only the fences renew the lease
    o.lock_takeover = std::chrono::seconds(10);
    o.retire_grace = std::chrono::milliseconds(20);  // the fake clock moves by it
    KeyRotationService rotation(o, std::move(Instance().rotations), *secrets_, audit_, clock_);
    auto other = Instance();
    bool taken = false;
    auto late = [&](uint32_t) {
      if (taken) return;
      taken = true;
      clock_.Advance(o.lock_takeover + std::chrono::seconds(1));  // the KMS answered this late
      // PostgreSQL judges the heartbeat's age on its own clock: stale there too.
      ASSERT_TRUE(Sql("UPDATE rotation_lock SET heartbeat_at = 0").ok());
      std::optional<RotationRun> r = rotation.Current();
      ASSERT_TRUE(r.has_value());
      RotationRun resumed = *r;
      resumed.id = "resumed-run";
      resumed.trigger = "resumed";
      auto begun = other.rotations->Begin(resumed, "lease-other", o.lock_takeover, "resumed as run resumed-run",
                                          {}, r->id);
      ASSERT_TRUE(begun.ok()) << begun.error().message;
      ASSERT_FALSE(begun->has_value()) << "the stale lease was not taken over";
    };
    (slow == Slow::kBeginRetire ? counting.after_begin_retire : counting.after_retire) = late;
    auto run = rotation.Run(false, "manual", Caller{}, nullptr);
    ASSERT_TRUE(taken);
    ASSERT_TRUE(run.ok()) << run.error().message;
    EXPECT_EQ(run->status, "failed");
    EXPECT_NE(run->error.find("lock lost"), std::string::npos) << run->error;
    if (slow == Slow::kBeginRetire) {
      EXPECT_EQ(counting.begun, (std::vector<uint32_t>{1}));  // v2 was not marked after the takeover
      EXPECT_EQ(keys_->CurrentState(2).value(), "active");
      EXPECT_TRUE(counting.retired.empty());
      EXPECT_TRUE(counting.retired_everywhere.empty());
    } else {
      EXPECT_EQ(counting.begun, (std::vector<uint32_t>{1, 2}));
      EXPECT_EQ(counting.retired_everywhere, (std::vector<uint32_t>{1}));  // v2 was not retired after it
      EXPECT_EQ(keys_->CurrentState(2).value(), "retiring");
    }
    EXPECT_EQ(SqlInt("SELECT COUNT(*) FROM rotation_lock WHERE run_id='resumed-run' AND owner='lease-other'")
                  .value_or(-1), 1);
    EXPECT_EQ(secrets_->VerifyAll()->failed, 0);
    secrets_.reset();  // before `counting`
  }
};

TEST_P(RetireFenceTest, NoVersionIsMarkedAfterAMarkThatRanIntoATakeover) { Check(Slow::kBeginRetire); }
TEST_P(RetireFenceTest, NoVersionIsRetiredAfterARetireThatRanIntoATakeover) { Check(Slow::kRetire); }

DYAD_INSTANTIATE_ON_REGISTRY_ENGINES(RotationTest);
DYAD_INSTANTIATE_ON_REGISTRY_ENGINES(SmallWearLimitTest);
DYAD_INSTANTIATE_ON_REGISTRY_ENGINES(RetireScopeTest);
DYAD_INSTANTIATE_ON_REGISTRY_ENGINES(RetireFenceTest);

}  // namespace
}  // namespace dyad
