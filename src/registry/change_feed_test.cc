// The change feed on both engines: two feeds on one database stand for two
// instances (SQLite: two SqliteDb on one file; PostgreSQL: two pools on one
// database of DYAD_TEST_PG_URL's server). CheckNow() is the listener's step
// on the test's thread; the listener thread itself is waited for on a
// condition (never a sleep that assumes how long delivery takes).
#include "registry/change_feed.h"

#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <set>
#include <thread>

#include "core/mutex.h"
#include "metrics/metrics.h"
#include "registry/change_log_feed.h"
#include "registry/pg_db.h"
#include "registry/sqlite_db.h"
#include "testing/fakes.h"
#include "testing/pg_test_database.h"

namespace dyad {
namespace {

using namespace std::chrono_literals;
using Kind = Change::Kind;

// What a subscriber was given, and a wait for a condition on it.
class Received {
 public:
  ChangeFeed::Callback Callback() {
    return [this](const Change& c) {
      MutexLock lock(&mu_);
      changes_.push_back(c);
      cv_.SignalAll();
    };
  }
  std::vector<Change> Take() {
    MutexLock lock(&mu_);
    return std::exchange(changes_, {});
  }
  // Real time, generous: a bound on a hang, not an assertion on speed.
  bool WaitUntil(const std::function<bool(const std::vector<Change>&)>& done,
                 std::chrono::milliseconds timeout = 20s) {
    MutexLock lock(&mu_);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done(changes_)) {
      const auto left = deadline - std::chrono::steady_clock::now();
      if (left <= 0s) return false;
      cv_.WaitFor(&mu_, left);
    }
    return true;
  }

 private:
  Mutex mu_;
  CondVar cv_;
  std::vector<Change> changes_ DYAD_GUARDED_BY(mu_);
};

bool Has(const std::vector<Change>& v, Kind kind, const std::string& subject = "") {
  for (const auto& c : v) {
    if (c.kind == kind && c.subject == subject) return true;
  }
  return false;
}

// One database and a way to make feeds ("instances") on it.
class Engine {
 public:
  virtual ~Engine() = default;
  virtual Result<std::unique_ptr<ChangeFeed>> NewFeed(const Clock& clock, ChangeFeedOptions options = {}) = 0;
  virtual Status Exec(const std::string& sql) = 0;
};

class SqliteEngine final : public Engine {
 public:
  Result<std::unique_ptr<ChangeFeed>> NewFeed(const Clock& clock, ChangeFeedOptions options) override {
    DYAD_ASSIGN_OR_RETURN(auto db, SqliteDb::Open(dir_.File("registry.db")));  // a process of its own
    dbs_.push_back(db);
    return NewSqliteChangeFeed(db, clock, options);
  }
  Status Exec(const std::string& sql) override {
    DYAD_ASSIGN_OR_RETURN(auto db, SqliteDb::Open(dir_.File("registry.db")));
    return db->Transaction([&](SqliteConnection& c) { return c.Exec(sql); });
  }

 private:
  testing::TempDir dir_;
  std::vector<std::shared_ptr<SqliteDb>> dbs_;
};

class PgEngine final : public Engine {
 public:
  Result<std::unique_ptr<ChangeFeed>> NewFeed(const Clock& clock, ChangeFeedOptions options) override {
    DYAD_RETURN_IF_ERROR(database_.status());
    DYAD_ASSIGN_OR_RETURN(auto db, database_.Open());
    return NewPgChangeFeed(db, clock, options);
  }
  Status Exec(const std::string& sql) override {
    DYAD_RETURN_IF_ERROR(database_.status());
    DYAD_ASSIGN_OR_RETURN(auto db, database_.Open());
    auto r = db->With<bool>([&](PgConnection& c) -> Result<bool> {
      DYAD_RETURN_IF_ERROR(c.Exec(sql));
      return true;
    });
    return r.ok() ? OkStatus() : Status(r.error());
  }
  const std::string& name() const { return database_.name(); }

 private:
  testing::PgTestDatabase database_;
};

class ChangeFeedTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "postgresql") {
      DYAD_SKIP_WITHOUT_TEST_PG();
      engine_ = std::make_unique<PgEngine>();
    } else {
      engine_ = std::make_unique<SqliteEngine>();
    }
  }
  std::unique_ptr<ChangeFeed> Feed(ChangeFeedOptions options = {}) {
    auto feed = engine_->NewFeed(clock_, options);
    EXPECT_TRUE(feed.ok()) << feed.error().message;
    return feed.ok() ? std::move(feed).value() : nullptr;
  }

  FakeClock clock_;
  std::unique_ptr<Engine> engine_;
};

TEST_P(ChangeFeedTest, AChangeReachesTheOtherInstanceAndNotItsPublisher) {
  auto a = Feed(), b = Feed();
  ASSERT_TRUE(a && b);
  Received at_a, at_b;
  a->Subscribe(at_a.Callback());
  b->Subscribe(at_b.Callback());
  ASSERT_TRUE(a->Publish({Kind::kCredentials, "prov-1"}).ok());
  ASSERT_TRUE(a->Publish({Kind::kDeleted, "prov-2"}).ok());
  ASSERT_TRUE(a->Publish({Kind::kKeyEpoch, "key-1"}).ok());
  ASSERT_TRUE(a->Publish({Kind::kEverything, "ignored"}).ok());
  ASSERT_TRUE(b->CheckNow().ok());
  ASSERT_TRUE(a->CheckNow().ok());
  auto got = at_b.Take();
  ASSERT_EQ(got.size(), 4u);
  EXPECT_TRUE(got[0].kind == Kind::kCredentials && got[0].subject == "prov-1");
  EXPECT_TRUE(got[1].kind == Kind::kDeleted && got[1].subject == "prov-2");
  EXPECT_TRUE(got[2].kind == Kind::kKeyEpoch && got[2].subject == "key-1");
  EXPECT_TRUE(got[3].kind == Kind::kEverything && got[3].subject.empty());
  EXPECT_TRUE(at_a.Take().empty());  // its own: the writer acted on them already
  // Read once: a second check delivers nothing again.
  ASSERT_TRUE(b->CheckNow().ok());
  EXPECT_TRUE(at_b.Take().empty());
  // And B's own publish reaches A.
  ASSERT_TRUE(b->Publish({Kind::kCredentials, "prov-3"}).ok());
  ASSERT_TRUE(a->CheckNow().ok());
  EXPECT_TRUE(Has(at_a.Take(), Kind::kCredentials, "prov-3"));
}

TEST_P(ChangeFeedTest, AFeedStartsAfterTheNewestRow) {
  auto a = Feed();
  ASSERT_TRUE(a);
  ASSERT_TRUE(a->Publish({Kind::kCredentials, "before"}).ok());
  auto b = Feed();  // an instance started now has nothing cached to drop
  Received at_b;
  b->Subscribe(at_b.Callback());
  ASSERT_TRUE(b->CheckNow().ok());
  EXPECT_TRUE(at_b.Take().empty());
  ASSERT_TRUE(a->Publish({Kind::kCredentials, "after"}).ok());
  ASSERT_TRUE(b->CheckNow().ok());
  auto got = at_b.Take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].subject, "after");
}

TEST_P(ChangeFeedTest, AKindThisBuildDoesNotKnowIsEverything) {
  auto b = Feed();
  Received at_b;
  b->Subscribe(at_b.Callback());
  ASSERT_TRUE(engine_->Exec("INSERT INTO registry_changes(kind, subject, at_ms) VALUES('from-a-newer-build', "
                            "'x''; DROP TABLE providers; --', 1)").ok());
  ASSERT_TRUE(engine_->Exec("INSERT INTO registry_changes(kind, subject, at_ms) VALUES('CREDENTIALS', 'p', 1)").ok());
  ASSERT_TRUE(b->CheckNow().ok());
  auto got = at_b.Take();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].kind, Kind::kEverything);
  EXPECT_TRUE(got[0].subject.empty());
  EXPECT_EQ(got[1].kind, Kind::kEverything);  // kinds are spelled exactly
}

TEST_P(ChangeFeedTest, RowsPrunedBeforeTheyWereReadAreEverything) {
  auto a = Feed();
  ASSERT_TRUE(a->Publish({Kind::kCredentials, "seen"}).ok());
  auto b = Feed();
  Received at_b;
  b->Subscribe(at_b.Callback());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(a->Publish({Kind::kCredentials, "p" + std::to_string(i)}).ok());
  clock_.Advance(2h);  // older than `keep` (1 h): the next publish prunes them
  ASSERT_TRUE(a->Publish({Kind::kCredentials, "last"}).ok());
  ASSERT_TRUE(b->CheckNow().ok());
  auto got = at_b.Take();
  ASSERT_EQ(got.size(), 1u);  // one, not p0…p2 nor "last" alone
  EXPECT_EQ(got[0].kind, Kind::kEverything);
  // The newest row stays (ids keep growing); B continues after it.
  ASSERT_TRUE(a->Publish({Kind::kDeleted, "next"}).ok());
  ASSERT_TRUE(b->CheckNow().ok());
  got = at_b.Take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].kind == Kind::kDeleted && got[0].subject == "next");
}

// Issue 14 review: publishers' clocks differ, so a row timed by a slow
// clock sits between fresher ones. Pruning it alone would leave a hole no
// bound shows (the oldest row still below it): a prune takes every id up to
// the newest old row, and the reader finds the gap.
TEST_P(ChangeFeedTest, ARowPrunedBetweenTwoKeptOnesIsEverything) {
  FakeClock slow;  // two hours behind clock_
  clock_.Advance(2h);
  auto a = Feed(), b = Feed();
  ASSERT_TRUE(a && b);
  auto c = engine_->NewFeed(slow, {});
  ASSERT_TRUE(c.ok()) << c.error().message;
  Received at_b;
  b->Subscribe(at_b.Callback());
  ASSERT_TRUE(a->Publish({Kind::kCredentials, "fresh-1"}).ok());
  ASSERT_TRUE((*c)->Publish({Kind::kCredentials, "timed-slow"}).ok());
  auto d = Feed();  // its first publish prunes: "timed-slow" is older than `keep` on its clock
  ASSERT_TRUE(d);
  ASSERT_TRUE(d->Publish({Kind::kCredentials, "fresh-2"}).ok());
  ASSERT_TRUE(b->CheckNow().ok());
  auto got = at_b.Take();
  ASSERT_EQ(got.size(), 1u) << "not fresh-1 and fresh-2 without timed-slow";
  EXPECT_EQ(got[0].kind, Kind::kEverything);
}

// An id that was drawn but never used (a PostgreSQL sequence skips on a
// rolled-back insert; here the sequence is moved by hand on either engine)
// is no gap: the change after it arrives as itself, not as kEverything.
TEST_P(ChangeFeedTest, AnIdNeverUsedIsNoGap) {
  auto a = Feed(), b = Feed();
  ASSERT_TRUE(a && b);
  Received at_b;
  b->Subscribe(at_b.Callback());
  ASSERT_TRUE(a->Publish({Kind::kCredentials, "one"}).ok());
  ASSERT_TRUE(b->CheckNow().ok());
  ASSERT_TRUE(Has(at_b.Take(), Kind::kCredentials, "one"));
  ASSERT_TRUE(engine_->Exec(GetParam() == "postgresql"
                                ? "SELECT nextval('registry_changes_id_seq')"
                                : "UPDATE sqlite_sequence SET seq = seq + 1 WHERE name = 'registry_changes'")
                  .ok());
  ASSERT_TRUE(a->Publish({Kind::kCredentials, "two"}).ok());
  ASSERT_TRUE(b->CheckNow().ok());
  auto got = at_b.Take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].kind == Kind::kCredentials && got[0].subject == "two");
}

TEST_P(ChangeFeedTest, MoreRowsThanABatchAreOneEverything) {
  auto b = Feed();
  Received at_b;
  b->Subscribe(at_b.Callback());
  std::string sql = "INSERT INTO registry_changes(kind, subject, at_ms) VALUES";
  for (int i = 0; i < 1200; ++i) sql += std::string(i ? "," : "") + "('credentials', 'p" + std::to_string(i) + "', 1)";
  ASSERT_TRUE(engine_->Exec(sql).ok());
  ASSERT_TRUE(b->CheckNow().ok());
  auto got = at_b.Take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].kind, Kind::kEverything);
  ASSERT_TRUE(b->CheckNow().ok());
  EXPECT_TRUE(at_b.Take().empty());
}

TEST_P(ChangeFeedTest, ARegistryReplacedUnderTheFeedIsEverything) {
  auto a = Feed(), b = Feed();
  Received at_b;
  b->Subscribe(at_b.Callback());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(a->Publish({Kind::kCredentials, "p"}).ok());
  ASSERT_TRUE(b->CheckNow().ok());
  ASSERT_EQ(at_b.Take().size(), 3u);
  ASSERT_TRUE(engine_->Exec("DELETE FROM registry_changes").ok());  // a restore from an older backup, say
  ASSERT_TRUE(b->CheckNow().ok());
  auto got = at_b.Take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].kind, Kind::kEverything);
}

TEST_P(ChangeFeedTest, AnUnsubscribedCallbackIsNotCalledAndMetricsCount) {
  Metrics metrics;
  ChangeFeedOptions o;
  o.metrics = &metrics;
  auto a = Feed(), b = Feed(o);
  Received kept, dropped;
  b->Subscribe(kept.Callback());
  const uint64_t id = b->Subscribe(dropped.Callback());
  b->Unsubscribe(id);
  b->Unsubscribe(id + 100);  // unknown: nothing
  ASSERT_TRUE(a->Publish({Kind::kCredentials, "p"}).ok());
  ASSERT_TRUE(a->Publish({Kind::kKeyEpoch, "k"}).ok());
  ASSERT_TRUE(b->CheckNow().ok());
  EXPECT_EQ(kept.Take().size(), 2u);
  EXPECT_TRUE(dropped.Take().empty());
  const std::string text = metrics.Render();
  EXPECT_NE(text.find("dyad_registry_changes_applied_total{kind=\"credentials\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("dyad_registry_changes_applied_total{kind=\"key_epoch\"} 1"), std::string::npos);
  EXPECT_NE(text.find("dyad_registry_changes_applied_total{kind=\"everything\"} 0"), std::string::npos);
}

// The listener thread (SQLite: its poll; PostgreSQL: LISTEN/NOTIFY).
TEST_P(ChangeFeedTest, TheListenerDeliversWithoutBeingAsked) {
  ChangeFeedOptions o;
  o.poll = 20ms;
  auto a = Feed(), b = Feed(o);
  Received at_b;
  b->Subscribe(at_b.Callback());
  ASSERT_TRUE(b->Start().ok());
  ASSERT_TRUE(b->Start().ok());  // idempotent
  ASSERT_TRUE(a->Publish({Kind::kCredentials, "p1"}).ok());
  EXPECT_TRUE(at_b.WaitUntil([](const auto& v) { return Has(v, Kind::kCredentials, "p1"); }));
  b->Stop();
  b->Stop();
  ASSERT_TRUE(b->Start().ok());  // again after a stop
  ASSERT_TRUE(a->Publish({Kind::kDeleted, "p2"}).ok());
  EXPECT_TRUE(at_b.WaitUntil([](const auto& v) { return Has(v, Kind::kDeleted, "p2"); }));
}

// Publishers racing on two instances: the listener sees every row once, in
// the order the ids were drawn (PostgreSQL: ids drawn under the advisory
// lock, so none commits behind one already read).
TEST_P(ChangeFeedTest, ConcurrentPublishersLoseNothing) {
  auto a = Feed(), c = Feed(), b = Feed();
  Received at_b;
  b->Subscribe(at_b.Callback());
  ASSERT_TRUE(b->Start().ok());
  constexpr int kEach = 100;
  std::atomic<int> failed{0};
  auto publish = [&](ChangeFeed& feed, const std::string& prefix) {
    for (int i = 0; i < kEach; ++i) {
      if (!feed.Publish({Kind::kCredentials, prefix + std::to_string(i)}).ok()) ++failed;
      if (i % 10 == 0) (void)b->CheckNow();  // reads racing the writers, beside the listener's
    }
  };
  std::thread t1([&] { publish(*a, "a"); }), t2([&] { publish(*c, "c"); });
  t1.join();
  t2.join();
  ASSERT_EQ(failed.load(), 0);
  ASSERT_TRUE(b->CheckNow().ok());
  ASSERT_TRUE(at_b.WaitUntil([](const auto& v) { return v.size() >= 2 * kEach; }));
  std::set<std::string> subjects;
  const auto got = at_b.Take();
  EXPECT_EQ(got.size(), 2u * kEach);  // each once
  for (const auto& ch : got) {
    EXPECT_EQ(ch.kind, Kind::kCredentials);
    subjects.insert(ch.subject);
  }
  EXPECT_EQ(subjects.size(), 2u * kEach);
}

// What no real engine lets a test time: a prune landing between the feed's
// read of the table's bounds and its read of the rows after the last
// applied, and an append that fails. An engine of our own (ChangeLogFeed's
// statements on a map, with the engines' prune rule: a prefix of the ids)
// runs a hook right after Bounds() and fails appends while told to.
// Single-threaded: only CheckNow() on the test's thread.
class RacedLog final : public ChangeLogFeed {
 public:
  explicit RacedLog(const Clock& clock) : ChangeLogFeed(clock, ChangeFeedOptions{}) {}
  ~RacedLog() override { StopListener(); }
  using ChangeLogFeed::Init;
  Status Everything() { return ApplyEverything(); }
  void StopNow() { StopListener(); }

  void Add(const std::string& subject, std::string kind = "credentials") { rows_[next_++] = {std::move(kind), subject}; }
  // The rows as "kind subject", by id.
  std::vector<std::string> Rows() const {
    std::vector<std::string> out;
    for (const auto& [id, row] : rows_) out.push_back(row.first + " " + row.second);
    return out;
  }
  void SkipId() { ++next_; }
  // What a prune does: every id up to `id`, never the newest.
  void PruneThrough(int64_t id) {
    while (rows_.size() > 1 && rows_.begin()->first <= id) rows_.erase(rows_.begin());
  }
  std::function<void()> after_bounds;  // run once, right after the next Bounds()
  std::optional<Error> append_fails;  // while set, Append() fails with it

 protected:
  Result<int64_t> Append(std::string_view kind, const std::string& subject, int64_t) override {
    if (append_fails) return *append_fails;
    Add(subject, std::string(kind));
    return next_ - 1;
  }
  Status Prune(int64_t) override { return OkStatus(); }
  Result<Span> Bounds() override {
    Span span = rows_.empty() ? Span{} : Span{rows_.begin()->first, rows_.rbegin()->first};
    if (auto hook = std::exchange(after_bounds, nullptr)) hook();
    return span;
  }
  Result<std::vector<Row>> After(int64_t after, int limit) override {
    std::vector<Row> out;
    for (auto it = rows_.upper_bound(after); it != rows_.end() && static_cast<int>(out.size()) < limit; ++it) {
      out.push_back(Row{it->first, it->second.first, it->second.second});
    }
    return out;
  }
  void Listen() override {
    while (Wait(std::chrono::hours(1))) {
    }
  }

 private:
  std::map<int64_t, std::pair<std::string, std::string>> rows_;  // id -> kind, subject
  int64_t next_ = 1;
};

TEST(ChangeLogFeedTest, APruneBetweenTheBoundsAndTheRowsIsEverything) {
  FakeClock clock;
  RacedLog log(clock);
  log.Add("seen");
  ASSERT_TRUE(log.Init().ok());  // after row 1
  Received got;
  log.Subscribe(got.Callback());
  for (const char* p : {"p2", "p3", "p4"}) log.Add(p);
  log.after_bounds = [&] { log.PruneThrough(3); };  // bounds say 1..4; rows 2 and 3 go before they are read
  ASSERT_TRUE(log.CheckNow().ok());
  auto changes = got.Take();
  ASSERT_EQ(changes.size(), 1u) << "not p4 alone";
  EXPECT_EQ(changes[0].kind, Kind::kEverything);
  // It continues after the newest row.
  log.Add("p5");
  ASSERT_TRUE(log.CheckNow().ok());
  changes = got.Take();
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_TRUE(changes[0].kind == Kind::kCredentials && changes[0].subject == "p5");
}

TEST(ChangeLogFeedTest, AnIdNeverUsedAfterAPruneBelowItIsNoGap) {
  FakeClock clock;
  RacedLog log(clock);
  log.Add("r1");
  log.Add("r2");
  ASSERT_TRUE(log.Init().ok());  // after row 2
  Received got;
  log.Subscribe(got.Callback());
  log.SkipId();  // id 3 never used
  log.Add("r4");
  log.after_bounds = [&] { log.PruneThrough(1); };  // a prune, but of rows already applied
  ASSERT_TRUE(log.CheckNow().ok());
  auto changes = got.Take();
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_TRUE(changes[0].kind == Kind::kCredentials && changes[0].subject == "r4");
}

// A change whose row could not be appended (kUnavailable) is not dropped:
// the listener's next step appends it once the database answers. The
// publisher does not deliver it to itself; a refusal of another kind is not
// kept (it would be refused again at every step).
TEST(ChangeLogFeedTest, AChangeThatCouldNotBeAppendedIsAppendedOnceTheDatabaseAnswers) {
  FakeClock clock;
  RacedLog log(clock);
  ASSERT_TRUE(log.Init().ok());
  Received got;
  log.Subscribe(got.Callback());
  log.append_fails = MakeError(ErrorCode::kUnavailable, "the registry is restarting");
  EXPECT_EQ(log.Publish({Kind::kCredentials, "p1"}).code(), ErrorCode::kUnavailable);
  EXPECT_EQ(log.Publish({Kind::kDeleted, "p2"}).code(), ErrorCode::kUnavailable);
  EXPECT_EQ(log.Publish({Kind::kDeleted, "p2"}).code(), ErrorCode::kUnavailable);  // kept once
  ASSERT_TRUE(log.CheckNow().ok()) << "the table reads; only the appends fail";
  EXPECT_TRUE(log.Rows().empty());
  log.append_fails.reset();
  ASSERT_TRUE(log.Publish({Kind::kKeyEpoch, "k"}).ok());  // its own only: the backlog is the listener's
  EXPECT_EQ(log.Rows(), std::vector<std::string>{"key_epoch k"});
  ASSERT_TRUE(log.CheckNow().ok());
  EXPECT_EQ(log.Rows(), (std::vector<std::string>{"key_epoch k", "credentials p1", "deleted p2"}));
  EXPECT_TRUE(got.Take().empty()) << "its own changes";
  ASSERT_TRUE(log.CheckNow().ok());
  EXPECT_EQ(log.Rows().size(), 3u) << "appended once";

  log.append_fails = MakeError(ErrorCode::kInternal, "read-only transaction");
  EXPECT_EQ(log.Publish({Kind::kCredentials, "p3"}).code(), ErrorCode::kInternal);
  log.append_fails.reset();
  ASSERT_TRUE(log.CheckNow().ok());
  EXPECT_EQ(log.Rows().size(), 3u) << "not kept";
}

// A RacedLog after Init() whose appends fail with kUnavailable (the
// database down): what the cases of kept changes start from.
struct DownLog {
  DownLog() {
    EXPECT_TRUE(log.Init().ok());
    log.append_fails = MakeError(ErrorCode::kUnavailable, "down");
  }
  FakeClock clock;
  RacedLog log{clock};
};

TEST(ChangeLogFeedTest, MoreKeptChangesThanABatchAreOneEverything) {
  DownLog down;
  RacedLog& log = down.log;
  for (int i = 0; i <= ChangeLogFeed::kMaxBatch; ++i) {
    EXPECT_FALSE(log.Publish({Kind::kCredentials, "p" + std::to_string(i)}).ok());
  }
  EXPECT_FALSE(log.Publish({Kind::kCredentials, "after"}).ok());  // within the everything
  log.append_fails.reset();
  ASSERT_TRUE(log.CheckNow().ok());
  EXPECT_EQ(log.Rows(), std::vector<std::string>{"everything "});
}

// The reconnect's step (ApplyEverything) appends what is kept too.
TEST(ChangeLogFeedTest, TheReconnectAppendsWhatIsKept) {
  DownLog down;
  RacedLog& log = down.log;
  EXPECT_FALSE(log.Publish({Kind::kCredentials, "p1"}).ok());
  log.append_fails.reset();
  ASSERT_TRUE(log.Everything().ok());
  EXPECT_EQ(log.Rows(), std::vector<std::string>{"credentials p1"});
}

// A feed that stops (the process ends) appends what it still keeps; a kept
// change refused for good on its retry is dropped, the others stay kept.
TEST(ChangeLogFeedTest, StoppingAppendsWhatIsKeptAndAChangeRefusedForGoodIsDropped) {
  DownLog down;
  RacedLog& log = down.log;
  EXPECT_FALSE(log.Publish({Kind::kCredentials, "p1"}).ok());
  EXPECT_FALSE(log.Publish({Kind::kCredentials, "p2"}).ok());
  log.append_fails = MakeError(ErrorCode::kInternal, "read-only transaction");
  ASSERT_TRUE(log.CheckNow().ok());  // p1 refused for good: dropped; p2 not tried
  log.append_fails.reset();
  log.StopNow();
  EXPECT_EQ(log.Rows(), std::vector<std::string>{"credentials p2"});
}

INSTANTIATE_TEST_SUITE_P(Engines, ChangeFeedTest, ::testing::Values("sqlite", "postgresql"),
                         [](const auto& info) { return info.param; });

// PostgreSQL only: what LISTEN/NOTIFY adds.
class PgChangeFeedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::PgTestDatabase::ServerUrl()) GTEST_SKIP() << "DYAD_TEST_PG_URL is unset";
    engine_ = std::make_unique<PgEngine>();
  }
  // Ends every change-feed listener connection on this test's database.
  Result<int> TerminateListeners() {
    DYAD_ASSIGN_OR_RETURN(auto db, PgDb::Open(*testing::PgTestDatabase::ServerUrl(), [] {
      PgDb::Options o;
      o.migrate = false;
      o.max_connections = 1;
      return o;
    }()));
    return db->With<int>([&](PgConnection& c) -> Result<int> {
      DYAD_ASSIGN_OR_RETURN(PgRows rows, c.Query("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                                 "WHERE datname = $1 AND application_name = 'dyad-gateway change feed'",
                                                 {engine_->name()}));
      return static_cast<int>(rows.Int(0, 0));
    });
  }
  Result<int> Listeners() {
    DYAD_ASSIGN_OR_RETURN(auto db, PgDb::Open(*testing::PgTestDatabase::ServerUrl(), [] {
      PgDb::Options o;
      o.migrate = false;
      o.max_connections = 1;
      return o;
    }()));
    return db->With<int>([&](PgConnection& c) -> Result<int> {
      DYAD_ASSIGN_OR_RETURN(PgRows rows, c.Query("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND "
                                                 "application_name = 'dyad-gateway change feed'",
                                                 {engine_->name()}));
      return static_cast<int>(rows.Int(0, 0));
    });
  }

  FakeClock clock_;
  std::unique_ptr<PgEngine> engine_;
};

// A row whose NOTIFY never came (here: inserted without one) is read by the
// periodic re-check.
TEST_F(PgChangeFeedTest, ALostNotificationIsRecoveredByTheRecheck) {
  ChangeFeedOptions o;
  o.recheck = 50ms;
  auto b = engine_->NewFeed(clock_, o);
  ASSERT_TRUE(b.ok()) << b.error().message;
  Received at_b;
  (*b)->Subscribe(at_b.Callback());
  ASSERT_TRUE((*b)->Start().ok());
  ASSERT_TRUE(engine_->Exec("INSERT INTO registry_changes(kind, subject, at_ms) VALUES('credentials', 'quiet', 1)").ok());
  EXPECT_TRUE(at_b.WaitUntil([](const auto& v) { return Has(v, Kind::kCredentials, "quiet"); }));
}

// The listener's connection is ended by the server: it connects again,
// applies "everything" (what it missed meanwhile is unknown), counts the
// reconnect, and listens again.
TEST_F(PgChangeFeedTest, AKilledListenerReconnectsAndAppliesEverything) {
  Metrics metrics;
  ChangeFeedOptions o;
  o.recheck = 60s;  // only NOTIFY or the reconnect can deliver here
  o.metrics = &metrics;
  auto a = engine_->NewFeed(clock_, {}), b = engine_->NewFeed(clock_, o);
  ASSERT_TRUE(a.ok() && b.ok());
  Received at_b;
  (*b)->Subscribe(at_b.Callback());
  ASSERT_TRUE((*b)->Start().ok());
  // Listening once a NOTIFY comes through.
  ASSERT_TRUE((*a)->Publish({Kind::kCredentials, "first"}).ok());
  ASSERT_TRUE(at_b.WaitUntil([](const auto& v) { return Has(v, Kind::kCredentials, "first"); }));
  auto killed = TerminateListeners();
  ASSERT_TRUE(killed.ok()) << killed.error().message;
  ASSERT_EQ(*killed, 1);
  // Published while B may be reconnecting: covered by "everything" or read after it.
  ASSERT_TRUE((*a)->Publish({Kind::kDeleted, "meanwhile"}).ok());
  ASSERT_TRUE(at_b.WaitUntil([](const auto& v) { return Has(v, Kind::kEverything); }));
  EXPECT_NE(metrics.Render().find("dyad_registry_change_feed_reconnects_total 1"), std::string::npos)
      << metrics.Render();
  // Listening again: a new NOTIFY is delivered.
  ASSERT_TRUE((*a)->Publish({Kind::kKeyEpoch, "after"}).ok());
  EXPECT_TRUE(at_b.WaitUntil([](const auto& v) { return Has(v, Kind::kKeyEpoch, "after"); }));
  auto listeners = Listeners();
  ASSERT_TRUE(listeners.ok());
  EXPECT_GE(*listeners, 1);  // listening again (the ended one may not have left the server's list yet)
}

}  // namespace
}  // namespace dyad
