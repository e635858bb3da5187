// RotationScheduler in interval mode (KEY_ROTATION_INTERVAL_HOURS): an interval
// since the last successful rotation, on a fake clock (no sleeping); and what
// a tick does when a start or a resume fails. The cron mode's schedule and
// key wear are tested in key_rotation_service_test.cc.
#include "service/rotation_scheduler.h"

#include <gtest/gtest.h>

#include <atomic>
#include <ctime>
#include <functional>
#include <utility>

#include "core/time_format.h"
#include "testing/fakes.h"
#include "testing/gate.h"
#include "testing/log_capture.h"
#include "testing/refusing_threads.h"
#include "testing/rotation_fixture.h"

namespace dyad {
namespace {

using std::chrono::hours;
using WallTime = std::chrono::system_clock::time_point;

WallTime At(const char* iso_minute) {  // "2026-03-05T10:00"
  std::tm tm{};
  strptime(iso_minute, "%Y-%m-%dT%H:%M", &tm);
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

// A RotationRepository in front of another, to stage what another instance
// (or time) does between two steps of a tick: `after_begin` and
// `after_history` run once, after the first Begin or History call; with
// `hold_first_save`, the first SaveProgress waits at `save_gate`.
class StagedRotations final : public testing::ForwardingRotations {
 public:
  using ForwardingRotations::ForwardingRotations;
  Result<std::optional<std::string>> Begin(const RotationRun& run, const std::string& owner, Clock::Duration takeover,
                                           const std::string& note, const StartConditions& start_if,
                                           const std::optional<std::string>& if_running) override {
    ++begins;
    auto begun = inner_->Begin(run, owner, takeover, note, start_if, if_running);
    if (auto hook = std::exchange(after_begin, nullptr)) hook();
    return begun;
  }
  Result<std::vector<RotationRun>> History(int limit) override {
    auto runs = inner_->History(limit);
    if (auto hook = std::exchange(after_history, nullptr)) hook();
    return runs;
  }
  Status SaveProgress(const RotationRun& run, const std::string& owner, bool final) override {
    if (hold_first_save.exchange(false)) save_gate.Pass();
    return inner_->SaveProgress(run, owner, final);
  }
  std::function<void()> after_begin, after_history;  // the ticking thread's
  std::atomic<bool> hold_first_save{false};
  testing::Gate save_gate;
  std::atomic<int> begins{0};  // Begin calls: each a write transaction
};

// The fixture's KMS, unreachable for a key rotation while `down`: Rotate() fails.
class SwitchableKms final : public testing::ForwardingKeys {
 public:
  using ForwardingKeys::ForwardingKeys;
  Result<uint32_t> Rotate() override {
    if (down) return MakeError(ErrorCode::kUnavailable, "kms unavailable");
    return inner_.Rotate();
  }
  std::atomic<bool> down{false};
};

class IntervalTest : public testing::RotationFixture<FakeClock> {
 protected:
  void SetUp() override {
    clock_.SetWall(At("2026-03-05T10:00"));
    RotationFixture::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    rotation_ = NewRotation();
  }
  // A rotation service on its own pool (or on `runs`): another instance's;
  // on `secrets` (by default the fixture's).
  std::unique_ptr<KeyRotationService> NewRotation(std::shared_ptr<RotationRepository> runs = nullptr,
                                                  ThreadStarter start_thread = nullptr,
                                                  SecretsService* secrets = nullptr) {
    KeyRotationService::Options o;
    o.retire_grace = std::chrono::milliseconds(20);  // the fake clock moves by it
    o.start_thread = std::move(start_thread);
    if (!runs) runs = std::move(Instance().rotations);
    return std::make_unique<KeyRotationService>(o, std::move(runs), secrets ? *secrets : *secrets_, audit_, clock_);
  }
  // A scheduler on the cron schedule "30 2 * * MON" (from 2026-03-05: the
  // slots 2026-03-09T02:30, 2026-03-16T02:30, ...).
  std::unique_ptr<RotationScheduler> NewCronScheduler(KeyRotationService& rotation) {
    return std::make_unique<RotationScheduler>(rotation, *keys_, std::move(Instance().settings),
                                               RotationTiming{*CronSchedule::Parse("30 2 * * MON")}, true, 1000000,
                                               clock_);
  }
  // An instance whose repository is staged (StagedRotations), with a cron
  // scheduler (NewCronScheduler); the tests set the stage before ticking.
  // Its rotations reach the KMS through `kms` (up until a test takes it down).
  struct StagedInstance {
    std::shared_ptr<StagedRotations> runs;
    std::unique_ptr<SwitchableKms> kms;
    std::unique_ptr<SecretsService> secrets;
    std::unique_ptr<KeyRotationService> rotation;
    std::unique_ptr<RotationScheduler> scheduler;
  };
  StagedInstance NewStagedCronInstance() {
    StagedInstance i;
    i.runs = std::make_shared<StagedRotations>(std::move(Instance().rotations));
    i.kms = std::make_unique<SwitchableKms>(*keys_);
    i.secrets = SecretsService::Create(SecretsOptions{}, *store_, *i.kms, *repo_, audit_, metrics_, clock_,
                                       DefaultRandom(), EnvMap{}).value();
    i.rotation = NewRotation(i.runs, nullptr, i.secrets.get());
    i.scheduler = NewCronScheduler(*i.rotation);
    return i;
  }
  // A run left 'running' (nothing rotated yet) by a process that is gone,
  // its lock's heartbeat at `heartbeat_at` (0: stale on either engine).
  void LeaveADeadRun(int64_t heartbeat_at = 0) {
    ASSERT_TRUE(Sql("INSERT INTO rotation_runs(id, trigger, status, force, started_at, from_version, to_version, "
                    "done, cursor) VALUES('dead-run','manual','running',FALSE,'2026-01-01T00:00:00.000Z',1,0,0,'')")
                    .ok());
    ASSERT_TRUE(Sql("INSERT INTO rotation_lock(id, run_id, owner, heartbeat_at) VALUES(1,'dead-run','gone:1:x', " +
                    std::to_string(heartbeat_at) + ")").ok());
  }
  // X backs off its resumes: its resume of the run left pauses, its
  // heartbeat's thread refused (`threads_x`: RefusingThreads(2)).
  std::unique_ptr<KeyRotationService> NewBackingOffRotation(testing::RefusingThreads& threads_x,
                                                            std::shared_ptr<RotationRepository> runs = nullptr) {
    auto x = NewRotation(std::move(runs), threads_x.starter());
    auto paused = x->ResumeInterrupted(Caller{});
    EXPECT_TRUE(paused.ok() && paused->has_value()) << "X's resume did not pause";
    x->WaitIdle();
    return x;
  }
  // Y resumes the run left; the resume holds the lock, beating it, at its
  // first save until `runs->save_gate` opens (`held`: it got there).
  struct HeldResume {
    std::shared_ptr<StagedRotations> runs;
    std::unique_ptr<KeyRotationService> rotation;
    std::string id;
    bool held = false;
  };
  HeldResume HoldAResume() {
    HeldResume y;
    y.runs = std::make_shared<StagedRotations>(std::move(Instance().rotations));
    y.runs->hold_first_save = true;
    y.rotation = NewRotation(y.runs);
    auto resumed = y.rotation->ResumeInterrupted(Caller{});
    if (!resumed.ok() || !resumed->has_value()) return y;
    y.id = **resumed;
    y.held = y.runs->save_gate.WaitArrived();
    return y;
  }
  // A scheduler as a (re)started service makes it: a new object on the same database.
  std::unique_ptr<RotationScheduler> NewScheduler(KeyRotationService& rotation, int interval_hours = 720,
                                                  bool enabled_by_env = true) {
    return std::make_unique<RotationScheduler>(rotation, *keys_, std::move(Instance().settings),
                                               RotationTiming{std::nullopt, hours(interval_hours)}, enabled_by_env,
                                               1000000, clock_);
  }
  // Moves the clock to `t` and ticks there; waits for a run it started.
  std::optional<std::string> TickAt(RotationScheduler& s, WallTime t) {
    clock_.SetWall(t);
    auto id = s.Tick(t);
    rotation_->WaitIdle();
    return id;
  }
  // A run of another instance (its scheduler's, or `trigger`) that ended failed at `started_at`,
  // having made key version `to_version` (0: none, as a run whose KMS call failed leaves it).
  void LeaveAFailedRun(const std::string& id, const std::string& started_at, int to_version,
                       const std::string& trigger = kScheduledTrigger) {
    ASSERT_TRUE(Sql("INSERT INTO rotation_runs(id, trigger, status, force, started_at, finished_at, from_version, "
                    "to_version, done, cursor, error) VALUES('" + id + "','" + trigger + "','failed',FALSE,'" +
                    started_at +
                    "','" + started_at + "',1," + std::to_string(to_version) + ",0,'','kms unavailable')").ok());
  }
  // Ticks `i` at `at` (a cron slot, or its retry) with its KMS down: the
  // run it starts fails before making a key version. Returns its id.
  std::string RunASlotThatFailsBeforeAKeyVersion(StagedInstance& i, WallTime at) {
    i.kms->down = true;
    clock_.SetWall(at);
    auto run = i.scheduler->Tick(at);
    i.rotation->WaitIdle();
    i.kms->down = false;
    EXPECT_TRUE(run.has_value());
    if (!run) return "";
    const RotationRun last = rotation_->History(1)->front();
    EXPECT_EQ(last.id, *run);
    EXPECT_EQ(last.status, "failed");
    EXPECT_EQ(last.to_version, 0u);
    return *run;
  }
  WallTime LastSuccess() { return *ParseIso8601(rotation_->Successes()->last_finished_at); }
  uint32_t Primary() { return keys_->Describe()->primary_version; }

  std::unique_ptr<KeyRotationService> rotation_;
};

TEST_P(IntervalTest, RotatesTheIntervalAfterTheLastSuccessAndNotOnThe31st) {
  ASSERT_TRUE(rotation_->Start(false, "manual", Caller{}).ok());  // 2026-03-05T10:00: the last success
  rotation_->WaitIdle();
  ASSERT_EQ(Primary(), 2u);
  const WallTime last = LastSuccess();
  auto scheduler = NewScheduler(*rotation_);
  EXPECT_EQ(scheduler->Describe(), "every 720h since the last successful rotation");
  EXPECT_EQ(*scheduler->NextRun(), last + hours(720));  // 2026-04-04T10:00
  // The old cron approximation of 720 h ("0 0 */30 * *") fired on the 31st.
  ASSERT_TRUE(CronSchedule::Parse("0 0 */30 * *")->Matches(At("2026-03-31T00:00")));
  EXPECT_FALSE(TickAt(*scheduler, At("2026-03-31T00:00")).has_value());
  EXPECT_FALSE(TickAt(*scheduler, At("2026-04-01T00:00")).has_value());
  EXPECT_FALSE(TickAt(*scheduler, last + hours(720) - std::chrono::seconds(1)).has_value());
  EXPECT_EQ(Primary(), 2u);
  auto id = TickAt(*scheduler, last + hours(720));
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(rotation_->History(1)->front().trigger, "scheduled");
  EXPECT_EQ(rotation_->History(1)->front().status, "completed");
  EXPECT_EQ(Primary(), 3u);
  // The interval now counts from that run.
  EXPECT_EQ(*scheduler->NextRun(), LastSuccess() + hours(720));
  EXPECT_FALSE(TickAt(*scheduler, last + hours(721)).has_value());
  EXPECT_FALSE(TickAt(*scheduler, last + hours(1439)).has_value());
  EXPECT_TRUE(TickAt(*scheduler, LastSuccess() + hours(720)).has_value());
  EXPECT_EQ(Primary(), 4u);
}

TEST_P(IntervalTest, AScheduleMissedWhileDownRunsAtTheFirstTick) {
  ASSERT_TRUE(rotation_->Start(false, "manual", Caller{}).ok());
  rotation_->WaitIdle();
  const WallTime last = LastSuccess();
  // The service was down from day 2 to day 40: a new process starts then.
  clock_.SetWall(last + hours(24 * 40));
  auto restarted = NewScheduler(*rotation_);
  EXPECT_LT(*restarted->NextRun(), clock_.WallNow());  // overdue
  ASSERT_TRUE(TickAt(*restarted, last + hours(24 * 40)).has_value());
  EXPECT_EQ(Primary(), 3u);
}

TEST_P(IntervalTest, ARestartDoesNotResetTheInterval) {
  // No rotation ever: the interval counts from the first start on the database.
  const WallTime first = clock_.WallNow();
  auto scheduler = NewScheduler(*rotation_, 168);
  EXPECT_FALSE(TickAt(*scheduler, first).has_value());
  scheduler.reset();
  // Restarted six days later: still due at the end of the first week.
  clock_.SetWall(first + hours(144));
  auto restarted = NewScheduler(*rotation_, 168);
  EXPECT_EQ(*restarted->NextRun(), first + hours(168));
  EXPECT_FALSE(TickAt(*restarted, first + hours(167)).has_value());
  ASSERT_TRUE(TickAt(*restarted, first + hours(168)).has_value());
  EXPECT_EQ(Primary(), 2u);
  // And after a success, a restart counts from that success.
  const WallTime last = LastSuccess();
  restarted.reset();
  clock_.SetWall(last + hours(100));
  auto again = NewScheduler(*rotation_, 168);
  EXPECT_EQ(*again->NextRun(), last + hours(168));
  EXPECT_FALSE(TickAt(*again, last + hours(100)).has_value());
  EXPECT_TRUE(TickAt(*again, last + hours(168)).has_value());
}

TEST_P(IntervalTest, AnyNAtLeastOneHour) {
  const WallTime first = clock_.WallNow();
  auto scheduler = NewScheduler(*rotation_, 1);
  EXPECT_FALSE(TickAt(*scheduler, first).has_value());  // the first tick on the database starts the interval
  EXPECT_FALSE(TickAt(*scheduler, first + std::chrono::minutes(59)).has_value());
  ASSERT_TRUE(TickAt(*scheduler, first + hours(1)).has_value());
  EXPECT_TRUE(TickAt(*scheduler, LastSuccess() + hours(1)).has_value());
  EXPECT_EQ(Primary(), 3u);
}

TEST_P(IntervalTest, DisabledDoesNotRotate) {
  const WallTime first = clock_.WallNow();
  auto scheduler = NewScheduler(*rotation_, 24, /*enabled_by_env=*/false);
  EXPECT_FALSE(TickAt(*scheduler, first).has_value());
  EXPECT_FALSE(TickAt(*scheduler, first + hours(24 * 10)).has_value());
  EXPECT_EQ(Primary(), 1u);
  ASSERT_TRUE(scheduler->SetEnabled(true).ok());  // the toggle: overdue, so at the next tick
  EXPECT_TRUE(TickAt(*scheduler, first + hours(24 * 10) + std::chrono::seconds(30)).has_value());
}

TEST_P(IntervalTest, TwoInstancesOnOneDatabaseRotateOnce) {
  // Instance B: its own connections to the same database, its own rotation service and scheduler.
  auto rotation_b = NewRotation();
  auto a = NewScheduler(*rotation_);
  auto b = NewScheduler(*rotation_b);
  const WallTime first = clock_.WallNow();
  EXPECT_FALSE(TickAt(*a, first).has_value());
  EXPECT_FALSE(TickAt(*b, first).has_value());
  const WallTime due = first + hours(720);
  ASSERT_TRUE(TickAt(*a, due).has_value());
  EXPECT_FALSE(TickAt(*b, due).has_value());  // reads A's success from the database
  EXPECT_FALSE(TickAt(*b, due + std::chrono::minutes(1)).has_value());
  EXPECT_EQ(rotation_->Successes()->count, 1);
  EXPECT_EQ(Primary(), 2u);
  // B read the count before A's run completed: its start is refused, nothing is recorded.
  auto late = rotation_b->Start(false, "scheduled", Caller{}, {.if_successes = 0});
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(rotation_b->History(10)->size(), 1u);
  EXPECT_TRUE(rotation_b->Start(false, "scheduled", Caller{}, {.if_successes = 1}).ok());
  rotation_b->WaitIdle();
  EXPECT_EQ(rotation_->Successes()->count, 2);
}

// Both instances start after the schedule was missed, and tick before
// either's run has ended: the running run's lock refuses the second start.
TEST_P(IntervalTest, TwoInstancesStartingTogetherAfterAMissedScheduleRotateOnce) {
  auto rotation_b = NewRotation();
  EXPECT_FALSE(TickAt(*NewScheduler(*rotation_), clock_.WallNow()).has_value());  // the interval begins
  const WallTime restart = clock_.WallNow() + hours(720 * 3);  // down for three intervals
  clock_.SetWall(restart);
  auto a = NewScheduler(*rotation_);
  auto b = NewScheduler(*rotation_b);
  auto started_a = a->Tick(restart);
  auto started_b = b->Tick(restart);
  rotation_->WaitIdle();
  rotation_b->WaitIdle();
  EXPECT_NE(started_a.has_value(), started_b.has_value());
  EXPECT_EQ(rotation_->Successes()->count, 1);
  EXPECT_EQ(rotation_b->History(10)->size(), 1u);
  EXPECT_FALSE(TickAt(*a, restart + std::chrono::minutes(1)).has_value());
  EXPECT_FALSE(TickAt(*b, restart + std::chrono::minutes(1)).has_value());
  EXPECT_EQ(Primary(), 2u);
}

TEST_P(IntervalTest, AStoredToggleThatOverridesTheEnvironmentIsNamed) {
  auto scheduler = NewScheduler(*rotation_, 168, /*enabled_by_env=*/false);
  EXPECT_FALSE(scheduler->ToggleOverride().has_value());  // nothing stored
  ASSERT_TRUE(scheduler->SetEnabled(false).ok());
  EXPECT_FALSE(scheduler->ToggleOverride().has_value());  // they agree
  ASSERT_TRUE(scheduler->SetEnabled(true).ok());
  auto why = scheduler->ToggleOverride();
  ASSERT_TRUE(why.has_value());
  EXPECT_NE(why->find("KEY_ROTATION_ENABLED=false"), std::string::npos) << *why;
  EXPECT_NE(why->find("key_rotation.enabled=true"), std::string::npos) << *why;
  EXPECT_NE(why->find("key-rotation/toggle"), std::string::npos) << *why;
  auto enabled_env = NewScheduler(*rotation_, 168, /*enabled_by_env=*/true);
  EXPECT_FALSE(enabled_env->ToggleOverride().has_value());
}

// A cron slot whose run cannot start (the system refuses its thread) is
// not used: the next tick starts it, and only once.
TEST_P(IntervalTest, ACronSlotWhoseRunCannotStartIsTriedAgainAtTheNextTick) {
  testing::RefusingThreads threads;
  KeyRotationService::Options o;
  o.retire_grace = std::chrono::milliseconds(20);
  o.start_thread = threads.starter();
  KeyRotationService rotation(o, std::move(Instance().rotations), *secrets_, audit_, clock_);
  RotationScheduler scheduler(rotation, *keys_, std::move(Instance().settings),
                              RotationTiming{*CronSchedule::Parse("30 2 * * MON")}, true, 1000000, clock_);
  const WallTime slot = At("2026-03-09T02:30");  // the Monday after 2026-03-05
  ASSERT_EQ(*scheduler.NextRun(), slot);
  {
    testing::LogCapture log;
    clock_.SetWall(slot);
    EXPECT_FALSE(scheduler.Tick(slot).has_value());
    EXPECT_EQ(log.Count("scheduled key rotation not started: cannot start a key rotation"), 1u) << log.Text();
  }
  EXPECT_EQ(*scheduler.NextRun(), slot);  // still due
  EXPECT_EQ(Primary(), 1u);
  EXPECT_TRUE(rotation.History(10)->empty());
  threads.Allow();
  const WallTime next_tick = slot + std::chrono::seconds(30);
  clock_.SetWall(next_tick);
  auto id = scheduler.Tick(next_tick);
  ASSERT_TRUE(id.has_value());
  rotation.WaitIdle();
  EXPECT_EQ(rotation.History(1)->front().status, "completed");
  EXPECT_EQ(Primary(), 2u);
  EXPECT_EQ(*scheduler.NextRun(), At("2026-03-16T02:30"));  // the slot is used
  EXPECT_FALSE(scheduler.Tick(next_tick + std::chrono::seconds(30)).has_value());
  EXPECT_EQ(Primary(), 2u);
}

// A resume that fails inside a tick is logged (and tried again at the next).
TEST_P(IntervalTest, AResumeThatFailsInATickIsLogged) {
  ASSERT_NO_FATAL_FAILURE(LeaveADeadRun());
  testing::RefusingThreads threads;
  KeyRotationService::Options o;
  o.retire_grace = std::chrono::milliseconds(20);
  o.start_thread = threads.starter();
  KeyRotationService rotation(o, std::move(Instance().rotations), *secrets_, audit_, clock_);
  auto scheduler = NewScheduler(rotation);
  {
    testing::LogCapture log;
    EXPECT_FALSE(scheduler->Tick(clock_.WallNow()).has_value());
    EXPECT_EQ(log.Count("cannot resume an interrupted key rotation: cannot start a key rotation: cannot start a thread: "
                        "Resource temporarily unavailable"), 1u) << log.Text();
  }
  EXPECT_EQ(rotation.History(1)->front().status, "running");  // left as it was
  threads.Allow();
  auto resumed = scheduler->Tick(clock_.WallNow());
  ASSERT_TRUE(resumed.has_value());
  rotation.WaitIdle();
  EXPECT_EQ(rotation.History(1)->front().status, "completed");
  EXPECT_EQ(Primary(), 2u);
}

// A RotationRepository whose LatestRunning fails (the database unreachable)
// `failures` times, then answers.
class FlakyRotations final : public testing::ForwardingRotations {
 public:
  using ForwardingRotations::ForwardingRotations;
  Result<std::optional<RotationRun>> LatestRunning() override {
    if (failures > 0) {
      --failures;
      return MakeError(ErrorCode::kUnavailable, "database is locked");
    }
    return inner_->LatestRunning();
  }
  std::atomic<int> failures{0};
};

// Review (key-rotation hardening, 2): a tick whose resume failed went on to
// a start in the same tick. It starts nothing else; the next tick resumes.
TEST_P(IntervalTest, ATickWhoseResumeFailsStartsNothingElse) {
  ASSERT_NO_FATAL_FAILURE(LeaveADeadRun());
  auto runs = std::make_shared<FlakyRotations>(std::move(Instance().rotations));
  runs->failures = 1;
  KeyRotationService::Options o;
  o.retire_grace = std::chrono::milliseconds(20);
  KeyRotationService rotation(o, runs, *secrets_, audit_, clock_);
  RotationScheduler scheduler(rotation, *keys_, std::move(Instance().settings),
                              RotationTiming{*CronSchedule::Parse("30 2 * * MON")}, true, 1000000, clock_);
  const WallTime slot = At("2026-03-09T02:30");
  clock_.SetWall(slot);
  {
    testing::LogCapture log;
    EXPECT_FALSE(scheduler.Tick(slot).has_value());  // due, but its resume failed
    EXPECT_EQ(log.Count("cannot resume an interrupted key rotation: database is locked"), 1u) << log.Text();
  }
  rotation.WaitIdle();
  auto history = *rotation.History(10);
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(history[0].status, "running");
  EXPECT_EQ(Primary(), 1u);
  auto resumed = scheduler.Tick(slot + std::chrono::seconds(30));
  ASSERT_TRUE(resumed.has_value());
  rotation.WaitIdle();
  EXPECT_EQ(rotation.History(1)->front().id, *resumed);
  EXPECT_EQ(rotation.History(1)->front().trigger, "resumed");
  EXPECT_EQ(rotation.History(1)->front().status, "completed");
  EXPECT_EQ(Primary(), 2u);
}

// Review (key-rotation hardening, 4): while threads are refused, each tick
// (30 s) resumed the paused run again, a history row and an audit event each
// time. This process now backs off: 1 min after the first pause, 2 after the
// second, …, until a heartbeat starts.
TEST_P(IntervalTest, AResumePausedByALastingRefusalOfThreadsBacksOff) {
  ASSERT_NO_FATAL_FAILURE(LeaveADeadRun());
  testing::RefusingThreads threads(2);  // the runs' thread starts; every heartbeat is refused
  KeyRotationService::Options o;
  o.retire_grace = std::chrono::milliseconds(20);
  o.start_thread = threads.starter();
  KeyRotationService rotation(o, std::move(Instance().rotations), *secrets_, audit_, clock_);
  auto scheduler = NewScheduler(rotation);
  auto tick_after = [&](std::chrono::seconds wait) {
    clock_.Advance(wait);
    auto id = scheduler->Tick(clock_.WallNow());
    rotation.WaitIdle();
    return id;
  };
  auto rows = [&] { return rotation.History(100)->size(); };
  ASSERT_TRUE(tick_after(std::chrono::seconds(0)).has_value());  // resumed, and paused
  EXPECT_EQ(rows(), 2u);
  EXPECT_FALSE(tick_after(std::chrono::seconds(30)).has_value());
  EXPECT_EQ(rows(), 2u);
  EXPECT_TRUE(tick_after(std::chrono::seconds(30)).has_value());  // a minute after: again, and paused
  EXPECT_EQ(rows(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(tick_after(std::chrono::seconds(30)).has_value());
  EXPECT_EQ(rows(), 3u);
  EXPECT_TRUE(tick_after(std::chrono::seconds(30)).has_value());  // two minutes after
  EXPECT_EQ(rows(), 4u);
  EXPECT_EQ(rotation.History(1)->front().status, "running");
  EXPECT_EQ(Primary(), 1u);
  threads.Allow();
  EXPECT_FALSE(tick_after(std::chrono::seconds(30)).has_value());  // still backing off
  ASSERT_TRUE(tick_after(std::chrono::minutes(4)).has_value());
  EXPECT_EQ(rotation.History(1)->front().status, "completed");
  EXPECT_EQ(rows(), 5u);
  EXPECT_EQ(Primary(), 2u);
  int failures = 0;
  for (const auto& e : audit_.events()) failures += e.action == "key.rotate" && e.outcome == "failure";
  EXPECT_EQ(failures, 3);
}

// Review (key-rotation follow-ups, 3): the back-off is this process's, but
// its refusal named the run left running, which another instance may have
// resumed (and paused) since: a run this process never paused.
TEST_P(IntervalTest, AResumeBackOffNamesNoRunThisProcessNeverPaused) {
  ASSERT_NO_FATAL_FAILURE(LeaveADeadRun());
  testing::RefusingThreads threads_x(2), threads_y(2);  // the runs' threads start; every heartbeat is refused
  KeyRotationService::Options o;
  o.retire_grace = std::chrono::milliseconds(20);
  o.start_thread = threads_x.starter();
  KeyRotationService x(o, std::move(Instance().rotations), *secrets_, audit_, clock_);
  o.start_thread = threads_y.starter();
  KeyRotationService y(o, std::move(Instance().rotations), *secrets_, audit_, clock_);
  auto paused_x = x.ResumeInterrupted(Caller{});  // X pauses: X backs off
  ASSERT_TRUE(paused_x.ok() && paused_x->has_value());
  x.WaitIdle();
  auto paused_y = y.ResumeInterrupted(Caller{});  // Y resumes X's resume, and pauses it too
  ASSERT_TRUE(paused_y.ok() && paused_y->has_value());
  y.WaitIdle();
  ASSERT_EQ(x.History(1)->front().id, **paused_y);
  auto refused = x.ResumeInterrupted(Caller{});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.code(), ErrorCode::kUnavailable);
  EXPECT_EQ(refused.error().message.find(**paused_y), std::string::npos) << refused.error().message;
  EXPECT_NE(refused.error().message.find("backing off"), std::string::npos) << refused.error().message;
}

// Review (rotation should-fix, 2): X, backing off after a resume it paused,
// checked its back-off before the lock: while Y resumed the run well (its
// lock held and beating), X warned at every tick and returned early from it.
// A held lock is now waited for, back-off or not, with no warning.
TEST_P(IntervalTest, AResumeBackOffWaitsWithoutAWarningWhileAnotherInstanceHoldsTheRun) {
  ASSERT_NO_FATAL_FAILURE(LeaveADeadRun());
  testing::RefusingThreads threads_x(2);  // X's runs' threads start; every heartbeat is refused
  auto x_owned = NewBackingOffRotation(threads_x);
  KeyRotationService& x = *x_owned;
  HeldResume y_held = HoldAResume();
  auto& [runs_y, y, resumed_y, held] = y_held;
  auto scheduler_x = NewScheduler(x);
  std::optional<std::string> ticked;
  bool waiting = false;
  Result<std::optional<std::string>> resume_x = std::optional<std::string>();
  testing::LogCapture log;
  if (held) {
    ticked = scheduler_x->Tick(clock_.WallNow());
    resume_x = x.ResumeInterrupted(Caller{}, &waiting);
  }
  runs_y->save_gate.Open();
  y->WaitIdle();
  ASSERT_TRUE(held) << "Y's resume never saved its progress";
  EXPECT_FALSE(ticked.has_value());
  EXPECT_EQ(log.Count("backing off"), 0u) << log.Text();
  ASSERT_TRUE(resume_x.ok()) << resume_x.error().message;
  EXPECT_FALSE(resume_x->has_value());
  EXPECT_TRUE(waiting);
  EXPECT_EQ(x.History(1)->front().id, resumed_y);
  EXPECT_EQ(x.History(1)->front().status, "completed");
}

// Review (h-rot3, must-fix 2): X, backing off, found Y's resume holding
// the lock and went on to the tick's start, as when not backing off; Y's
// lock went stale meanwhile (Y gone), and the start resumed the run inside
// X's back-off, pausing again. A tick that waits for a held run while
// backing off now starts nothing.
TEST_P(IntervalTest, ATickBackingOffStartsNothingWhileAnotherInstanceHoldsTheRun) {
  const WallTime slot = At("2026-03-09T02:30");  // due at X's tick
  clock_.SetWall(slot - std::chrono::minutes(30));
  ASSERT_NO_FATAL_FAILURE(LeaveADeadRun());
  testing::RefusingThreads threads_x(2);  // X's runs' threads start; every heartbeat is refused
  auto runs_x = std::make_shared<StagedRotations>(std::move(Instance().rotations));
  auto x_owned = NewBackingOffRotation(threads_x, runs_x);
  KeyRotationService& x = *x_owned;
  auto scheduler_x = NewCronScheduler(x);
  clock_.SetWall(slot);
  HeldResume y_held = HoldAResume();
  auto& [runs_y, y, resumed_y, held] = y_held;
  std::optional<std::string> ticked;
  if (held) {
    // Y's lock goes stale (Y gone) after X's resume check, before its start.
    runs_x->after_history = [&] { (void)Sql("UPDATE rotation_lock SET heartbeat_at=0"); };
    ticked = scheduler_x->Tick(slot);
    runs_x->after_history = nullptr;
  }
  runs_y->save_gate.Open();
  y->WaitIdle();
  x.WaitIdle();
  ASSERT_TRUE(held) << "Y's resume never saved its progress";
  EXPECT_FALSE(ticked.has_value()) << "X resumed while backing off: run " << *ticked;
  EXPECT_EQ(x.History(10)->size(), 3u);  // the dead run, X's paused resume, Y's resume
  EXPECT_EQ(*scheduler_x->NextRun(), slot);  // still due
}

// Review (key-rotation hardening, 3): which cron slots were used was each
// instance's own memory, so B, ticking after A had run the slot (and
// finished), ran it again. B now finds A's run in the shared history.
TEST_P(IntervalTest, TwoInstancesRunACronSlotOnce) {
  auto rotation_b = NewRotation();
  const RotationTiming cron{*CronSchedule::Parse("30 2 * * MON")};
  RotationScheduler a(*rotation_, *keys_, std::move(Instance().settings), cron, true, 1000000, clock_);
  RotationScheduler b(*rotation_b, *keys_, std::move(Instance().settings), cron, true, 1000000, clock_);
  const WallTime slot = At("2026-03-09T02:30"), next_slot = At("2026-03-16T02:30");
  ASSERT_EQ(*b.NextRun(), slot);
  ASSERT_TRUE(TickAt(a, slot).has_value());
  ASSERT_EQ(rotation_->History(1)->front().status, "completed");
  EXPECT_FALSE(TickAt(b, slot + std::chrono::seconds(30)).has_value());
  rotation_b->WaitIdle();
  EXPECT_EQ(rotation_->History(10)->size(), 1u);
  EXPECT_EQ(Primary(), 2u);
  EXPECT_EQ(*b.NextRun(), next_slot);  // used
  // The next slot: run once, by whichever instance ticks first.
  ASSERT_TRUE(TickAt(b, next_slot).has_value());
  rotation_b->WaitIdle();
  EXPECT_FALSE(TickAt(a, next_slot + std::chrono::seconds(30)).has_value());
  EXPECT_EQ(rotation_->History(10)->size(), 2u);
  EXPECT_EQ(Primary(), 3u);
}

// Review (key-rotation follow-ups, 1): B read the history (the slot free),
// then A began and finished the slot's run, then B started another: two
// rotations for one slot. B's start is now conditional on the slot's time,
// checked where the lock is taken.
TEST_P(IntervalTest, ACronSlotRunByAnotherInstanceAfterTheReadIsNotRunAgain) {
  StagedInstance b = NewStagedCronInstance();
  auto a = NewCronScheduler(*rotation_);
  const WallTime slot = At("2026-03-09T02:30"), next_slot = At("2026-03-16T02:30");
  clock_.SetWall(slot);
  std::optional<std::string> run_a;
  b.runs->after_history = [&] {  // B has read the slot free
    run_a = a->Tick(slot);
    rotation_->WaitIdle();
  };
  EXPECT_FALSE(b.scheduler->Tick(slot).has_value());
  b.rotation->WaitIdle();
  ASSERT_TRUE(run_a.has_value());
  auto history = *rotation_->History(10);
  ASSERT_EQ(history.size(), 1u);
  EXPECT_EQ(history[0].id, *run_a);
  EXPECT_EQ(history[0].status, "completed");
  EXPECT_EQ(Primary(), 2u);
  EXPECT_EQ(*b.scheduler->NextRun(), next_slot);  // used: A ran it
}

// Review (key-rotation follow-ups, 2): a tick that only resumed a run left
// running (begun before the slot) used the slot, and no rotation happened
// for it; so did a tick that met the resume in progress (kConflict). The
// slot stays due until a fresh run starts for it, once the resume is over.
TEST_P(IntervalTest, ACronSlotWhoseTicksOnlyResumedOrMetTheResumeStartsAFreshRunAfterIt) {
  ASSERT_NO_FATAL_FAILURE(LeaveADeadRun());
  StagedInstance staged = NewStagedCronInstance();
  StagedRotations* runs = staged.runs.get();
  KeyRotationService& rotation = *staged.rotation;
  RotationScheduler& scheduler = *staged.scheduler;
  runs->hold_first_save = true;  // the resume, once it has rotated the key
  const WallTime slot = At("2026-03-09T02:30"), next_slot = At("2026-03-16T02:30");
  clock_.SetWall(slot);
  auto resumed = scheduler.Tick(slot);
  const bool held = runs->save_gate.WaitArrived();
  clock_.SetWall(slot + std::chrono::seconds(30));
  auto during = scheduler.Tick(slot + std::chrono::seconds(30));  // meets the resume: kConflict
  auto next_during = scheduler.NextRun();
  runs->save_gate.Open();
  ASSERT_TRUE(held) << "the resume never saved its progress";
  rotation.WaitIdle();
  ASSERT_TRUE(resumed.has_value());
  EXPECT_FALSE(during.has_value());
  EXPECT_EQ(next_during, slot);
  EXPECT_EQ(rotation.History(1)->front().trigger, kResumedTrigger);
  EXPECT_EQ(rotation.History(1)->front().status, "completed");
  EXPECT_EQ(Primary(), 2u);
  EXPECT_EQ(*scheduler.NextRun(), slot);  // still due
  const WallTime after = slot + std::chrono::minutes(1);
  auto fresh = TickAt(scheduler, after);
  rotation.WaitIdle();
  ASSERT_TRUE(fresh.has_value());
  EXPECT_EQ(rotation.History(1)->front().id, *fresh);
  EXPECT_EQ(rotation.History(1)->front().trigger, "scheduled");
  EXPECT_EQ(rotation.History(1)->front().status, "completed");
  EXPECT_EQ(Primary(), 3u);
  EXPECT_EQ(*scheduler.NextRun(), next_slot);
  EXPECT_FALSE(TickAt(scheduler, after + std::chrono::seconds(30)).has_value());
  EXPECT_EQ(Primary(), 3u);
}

// Review (rotation should-fix, 1): a run stamped in the future (an instance
// whose clock was days ahead, or a CLI run from a laptop with a wrong clock)
// used every cron slot until its date, silently. It now uses only the slot
// whose window holds its start, and the tick says so.
TEST_P(IntervalTest, ARunStampedInTheFutureUsesOnlyItsOwnCronSlot) {
  ASSERT_TRUE(Sql("INSERT INTO rotation_runs(id, trigger, status, force, started_at, finished_at, from_version, "
                  "to_version, done, cursor) VALUES('ahead','manual','completed',FALSE,'2026-04-20T05:00:00.000Z',"
                  "'2026-04-20T05:01:00.000Z',1,1,0,'')").ok());
  auto scheduler = NewCronScheduler(*rotation_);
  ASSERT_TRUE(TickAt(*scheduler, At("2026-03-09T02:30")).has_value());
  EXPECT_EQ(Primary(), 2u);
  // The 03-16 slot, missed: run; the next is 04-20's, the run ahead's.
  ASSERT_TRUE(TickAt(*scheduler, At("2026-04-20T02:29")).has_value());
  EXPECT_EQ(Primary(), 3u);
  ASSERT_EQ(*scheduler->NextRun(), At("2026-04-20T02:30"));
  testing::LogCapture log;
  EXPECT_FALSE(TickAt(*scheduler, At("2026-04-20T02:30")).has_value());
  EXPECT_EQ(Primary(), 3u);
  EXPECT_EQ(log.Count("cron slot 2026-04-20T02:30:00.000Z already run by key rotation ahead, started "
                      "2026-04-20T05:00:00.000Z"), 1u) << log.Text();
  EXPECT_EQ(*scheduler->NextRun(), At("2026-04-27T02:30"));
}

// Review (h-rot3, must-fix): the window ended at the slot's next slot, but
// a slot kept due past it (its ticks met a resume in progress: both
// instances keep it) is run late, and the catch-up uses every slot up to
// then. A ran it after the next slot; B, its window ending there, found no
// run in it and rotated again. The window now ends at the slot after the
// tick, as the catch-up's UseSlot does.
TEST_P(IntervalTest, ACronSlotKeptDuePastTheNextSlotIsRunOnceByTwoInstances) {
  auto rotation_b = NewRotation();
  auto a = NewCronScheduler(*rotation_);
  auto b = NewCronScheduler(*rotation_b);
  ASSERT_EQ(*b->NextRun(), At("2026-03-09T02:30"));
  ASSERT_TRUE(TickAt(*a, At("2026-03-16T03:00")).has_value());  // after the 03-16 slot
  EXPECT_EQ(Primary(), 2u);
  EXPECT_FALSE(TickAt(*b, At("2026-03-16T03:01")).has_value());
  rotation_b->WaitIdle();
  EXPECT_EQ(rotation_->History(10)->size(), 1u);
  EXPECT_EQ(Primary(), 2u);
  EXPECT_EQ(*b->NextRun(), At("2026-03-23T02:30"));  // used: A ran it
}

// Likewise when the tick's start is what resumes (the run's lock went stale
// between the tick's resume check and its start): the answer is a resume,
// and the slot stays due.
TEST_P(IntervalTest, ACronSlotWhoseStartOnlyResumedARunLeftRunningStaysDue) {
  // Held (a heartbeat far ahead, on either engine's clock) at the tick's resume check.
  ASSERT_NO_FATAL_FAILURE(LeaveADeadRun(9000000000000000));
  StagedInstance staged = NewStagedCronInstance();
  StagedRotations* runs = staged.runs.get();
  KeyRotationService& rotation = *staged.rotation;
  RotationScheduler& scheduler = *staged.scheduler;
  runs->after_begin = [&] { ASSERT_TRUE(Sql("UPDATE rotation_lock SET heartbeat_at=0").ok()); };  // now stale
  const WallTime slot = At("2026-03-09T02:30"), next_slot = At("2026-03-16T02:30");
  clock_.SetWall(slot);
  auto resumed = scheduler.Tick(slot);
  rotation.WaitIdle();
  ASSERT_TRUE(resumed.has_value());
  EXPECT_EQ(rotation.History(1)->front().id, *resumed);
  EXPECT_EQ(rotation.History(1)->front().trigger, kResumedTrigger);
  EXPECT_EQ(Primary(), 2u);
  EXPECT_EQ(*scheduler.NextRun(), slot);  // still due
  auto fresh = TickAt(scheduler, slot + std::chrono::seconds(30));
  rotation.WaitIdle();
  ASSERT_TRUE(fresh.has_value());
  EXPECT_EQ(rotation.History(1)->front().trigger, "scheduled");
  EXPECT_EQ(Primary(), 3u);
  EXPECT_EQ(*scheduler.NextRun(), next_slot);
}

// Review (h-rot4): a cron slot counted as used once a run started in its
// window, whatever its outcome: with a weekly schedule and the KMS down at
// the slot's minute, the run failed at once and the key went unrotated for
// seven days. A run that failed before making a key version now leaves the
// slot due again an hour after it started (on the shared history's clock):
// not before, and once.
TEST_P(IntervalTest, ACronSlotWhoseRunFailedBeforeAKeyVersionIsRetriedAfterAnHourOnce) {
  const WallTime slot = At("2026-03-09T02:30"), next_slot = At("2026-03-16T02:30");
  ASSERT_NO_FATAL_FAILURE(LeaveAFailedRun("kms-down", "2026-03-09T02:30:00.000Z", 0));
  auto scheduler = NewCronScheduler(*rotation_);
  EXPECT_FALSE(TickAt(*scheduler, slot + std::chrono::seconds(30)).has_value());
  EXPECT_EQ(*scheduler->NextRun(), slot + hours(1));  // the retry
  EXPECT_FALSE(TickAt(*scheduler, slot + std::chrono::minutes(59)).has_value());
  EXPECT_EQ(Primary(), 1u);
  auto retry = TickAt(*scheduler, slot + hours(1));
  ASSERT_TRUE(retry.has_value());
  EXPECT_EQ(rotation_->History(1)->front().status, "completed");
  EXPECT_EQ(Primary(), 2u);
  EXPECT_FALSE(TickAt(*scheduler, slot + hours(1) + std::chrono::seconds(30)).has_value());
  EXPECT_EQ(*scheduler->NextRun(), next_slot);
  EXPECT_EQ(rotation_->History(10)->size(), 2u);
  EXPECT_EQ(Primary(), 2u);
}

// The same scheduler's own run failing before a key version: the slot it
// handed to the run is due again after the back-off.
TEST_P(IntervalTest, ACronSlotWhoseOwnRunFailedBeforeAKeyVersionIsRetried) {
  const WallTime slot = At("2026-03-09T02:30"), next_slot = At("2026-03-16T02:30");
  StagedInstance i = NewStagedCronInstance();
  ASSERT_FALSE(RunASlotThatFailsBeforeAKeyVersion(i, slot).empty());
  clock_.SetWall(slot + std::chrono::seconds(30));
  EXPECT_FALSE(i.scheduler->Tick(slot + std::chrono::seconds(30)).has_value());
  EXPECT_EQ(*i.scheduler->NextRun(), slot + hours(1));
  clock_.SetWall(slot + hours(1));
  auto retry = i.scheduler->Tick(slot + hours(1));
  i.rotation->WaitIdle();
  ASSERT_TRUE(retry.has_value());
  EXPECT_EQ(*i.scheduler->NextRun(), next_slot);
}

// A run that made a key version and then failed (one secret) has rotated
// the key: its slot is used, and not run again.
TEST_P(IntervalTest, ACronSlotWhoseRunFailedAfterMakingAKeyVersionIsNotRunAgain) {
  const WallTime slot = At("2026-03-09T02:30"), next_slot = At("2026-03-16T02:30");
  ASSERT_NO_FATAL_FAILURE(LeaveAFailedRun("one-secret-failed", "2026-03-09T02:30:00.000Z", 2));
  auto scheduler = NewCronScheduler(*rotation_);
  EXPECT_FALSE(TickAt(*scheduler, slot + std::chrono::seconds(30)).has_value());
  EXPECT_EQ(*scheduler->NextRun(), next_slot);
  EXPECT_FALSE(TickAt(*scheduler, slot + hours(2)).has_value());
  EXPECT_EQ(rotation_->History(10)->size(), 1u);
  EXPECT_EQ(Primary(), 1u);
}

// Two instances retry the slot once in all, not once each: B read the
// history (the back-off over), then A retried, and A's retry failed at once
// too; B's start is refused (A's retry is a second run in the slot's
// window, checked where the lock is taken), and the slot is used: neither
// instance retries it again.
TEST_P(IntervalTest, TwoInstancesRetryACronSlotWhoseRunFailedBeforeAKeyVersionOnce) {
  const WallTime slot = At("2026-03-09T02:30"), next_slot = At("2026-03-16T02:30");
  ASSERT_NO_FATAL_FAILURE(LeaveAFailedRun("kms-down", "2026-03-09T02:30:00.000Z", 0));
  StagedInstance b = NewStagedCronInstance();
  auto a = NewCronScheduler(*rotation_);
  b.runs->after_history = [&] {  // A's retry, at the same time: the KMS still down
    LeaveAFailedRun("a-retry", "2026-03-09T03:30:00.000Z", 0);
  };
  clock_.SetWall(slot + hours(1));
  EXPECT_FALSE(b.scheduler->Tick(slot + hours(1)).has_value());
  b.rotation->WaitIdle();
  EXPECT_EQ(b.runs->begins, 1);  // refused
  for (WallTime t = slot + hours(1) + std::chrono::minutes(1); t < slot + hours(4); t += std::chrono::minutes(1)) {
    EXPECT_FALSE(TickAt(*a, t).has_value());
    EXPECT_FALSE(TickAt(*b.scheduler, t).has_value());
  }
  EXPECT_EQ(b.runs->begins, 1);
  EXPECT_EQ(rotation_->History(10)->size(), 2u);  // neither began a run
  EXPECT_EQ(Primary(), 1u);
  EXPECT_EQ(*a->NextRun(), next_slot);
  EXPECT_EQ(*b.scheduler->NextRun(), next_slot);
}

// Review (h-rot4, a): the slot handed to a run was process memory, and a
// scheduler built after the slot starts at the slot after it: a single
// instance restarted before the retry (to fix its KMS credentials) never
// retried a slot whose run failed before making a key version. The new
// scheduler reads the last slot's outcome from the shared history.
TEST_P(IntervalTest, ACronSlotWhoseRunFailedBeforeAKeyVersionIsRetriedAfterARestart) {
  const WallTime slot = At("2026-03-09T02:30"), next_slot = At("2026-03-16T02:30");
  std::string first;
  {
    StagedInstance before = NewStagedCronInstance();
    first = RunASlotThatFailsBeforeAKeyVersion(before, slot);
    ASSERT_FALSE(first.empty());
  }
  clock_.SetWall(slot + std::chrono::minutes(10));  // the restart
  auto after = NewCronScheduler(*rotation_);
  EXPECT_FALSE(TickAt(*after, slot + std::chrono::minutes(10)).has_value());
  EXPECT_EQ(*after->NextRun(), slot + hours(1));
  EXPECT_FALSE(TickAt(*after, slot + std::chrono::minutes(59)).has_value());
  const uint32_t primary = Primary();
  testing::LogCapture log;
  auto retry = TickAt(*after, slot + hours(1));
  ASSERT_TRUE(retry.has_value());
  EXPECT_EQ(log.Count("key rotation " + *retry + " started (retry of cron slot 2026-03-09T02:30:00.000Z after key "
                      "rotation " + first + " failed before making a key version)"), 1u) << log.Text();
  EXPECT_EQ(rotation_->History(1)->front().status, "completed");
  EXPECT_EQ(Primary(), primary + 1);
  EXPECT_FALSE(TickAt(*after, slot + hours(1) + std::chrono::seconds(30)).has_value());
  EXPECT_EQ(*after->NextRun(), next_slot);
  EXPECT_EQ(rotation_->History(10)->size(), 2u);
}

// Review (h-rot4, 1): a restarted scheduler read any run that failed
// before making a key version in the last slot's window as the slot's
// failed run, a manual one too: a slot missed while the instance was down
// (a manual rotation meanwhile failing at the KMS) ran after the restart.
// Only the schedule's own run lets its slot retry; a manual one uses it.
TEST_P(IntervalTest, ARestartedSchedulerDoesNotRunASlotMissedWhileDownAfterAManualRunFailed) {
  const WallTime slot = At("2026-03-09T02:30"), next_slot = At("2026-03-16T02:30");
  ASSERT_NO_FATAL_FAILURE(LeaveAFailedRun("manual-kms-down", "2026-03-09T02:40:00.000Z", 0, "manual"));
  clock_.SetWall(slot + std::chrono::minutes(50));  // the restart, the slot missed
  StagedInstance i = NewStagedCronInstance();
  for (WallTime t = slot + std::chrono::minutes(50); t < slot + hours(4); t += std::chrono::minutes(1)) {
    EXPECT_FALSE(TickAt(*i.scheduler, t).has_value());
  }
  EXPECT_EQ(i.runs->begins, 0);
  EXPECT_EQ(rotation_->History(10)->size(), 1u);
  EXPECT_EQ(*i.scheduler->NextRun(), next_slot);
}

// Review (h-rot4, 2): each retry that failed at the KMS re-armed the slot,
// so a KMS down for a day meant a start every hour. The slot is retried
// once: its retry, failed too, uses it.
TEST_P(IntervalTest, ACronSlotWhoseRetryFailedBeforeAKeyVersionIsNotRetriedAgain) {
  const WallTime slot = At("2026-03-09T02:30"), next_slot = At("2026-03-16T02:30");
  StagedInstance i = NewStagedCronInstance();
  ASSERT_FALSE(RunASlotThatFailsBeforeAKeyVersion(i, slot).empty());
  ASSERT_FALSE(RunASlotThatFailsBeforeAKeyVersion(i, slot + hours(1)).empty());  // the retry
  for (WallTime t = slot + hours(1) + std::chrono::minutes(1); t < slot + hours(6); t += std::chrono::minutes(1)) {
    clock_.SetWall(t);
    EXPECT_FALSE(i.scheduler->Tick(t).has_value());
  }
  EXPECT_EQ(i.runs->begins, 2);
  EXPECT_EQ(rotation_->History(10)->size(), 2u);
  EXPECT_EQ(*i.scheduler->NextRun(), next_slot);
}

// Review (h-rot4, b): the scheduler reads 20 runs of the history, Begin
// every run of the slot's window. With the run that used the slot older
// than those 20 and a scheduled run that failed (no key version, back-off
// over) the only one of the window among them, the slot looked due, Begin refused it, and the refusal handed it
// the slot again: a write transaction and a log line at every tick until
// the window ended. A slot Begin refused is due again only for a failed
// run Begin counted (its back-off not over): here, once refused, it is used.
TEST_P(IntervalTest, ACronSlotRefusedForARunBeyondTheHistoryReadIsNotTriedAtEveryTick) {
  const WallTime slot = At("2026-03-09T02:30"), next_slot = At("2026-03-16T02:30");
  // The slot's run made a key version (then failed on a secret): it used the slot.
  ASSERT_NO_FATAL_FAILURE(LeaveAFailedRun("used-the-slot", FormatIso8601(slot + std::chrono::minutes(1)), 2));
  for (int i = 0; i < 19; ++i) {  // 19 resumes since (of older runs), each failed at the KMS
    ASSERT_NO_FATAL_FAILURE(LeaveAFailedRun("resume-" + std::to_string(i),
                                            FormatIso8601(slot + hours(2) + std::chrono::minutes(i)), 0,
                                            kResumedTrigger));
  }
  // And a scheduled run in the slot's window that failed at the KMS: the
  // only one of the window the read shows.
  ASSERT_NO_FATAL_FAILURE(LeaveAFailedRun("kms-down", FormatIso8601(slot + hours(2) + std::chrono::minutes(20)), 0));
  StagedInstance i = NewStagedCronInstance();
  testing::LogCapture log;
  for (WallTime t = slot + hours(3); t < slot + hours(6); t += std::chrono::seconds(30)) {
    clock_.SetWall(t);
    EXPECT_FALSE(i.scheduler->Tick(t).has_value());
  }
  EXPECT_EQ(i.runs->begins, 1);  // the refusal; then the slot is used
  EXPECT_EQ(log.Count("cron slot already run: key rotation kms-down"), 1u) << log.Text();
  EXPECT_EQ(*i.scheduler->NextRun(), next_slot);
  EXPECT_EQ(rotation_->History(30)->size(), 21u);
}

// Review (h-rot4, slot lost): hourly, a run longer than the hour. A
// started F at the 11:00 slot; B, seeing F alone and running, kept 11:00
// due, so at 12:00 its window was [11:00, 13:00). A then died; B resumed F
// (now interrupted), found it in that window and used the 12:00 slot with
// it: 12:00 never ran, though F started before it. B now hands 11:00 to F
// as A did, and 12:00 gets its own run once the resume is over.
TEST_P(IntervalTest, ACronSlotAfterAnotherInstancesRunThatOutlastsThePeriodGetsItsOwnRun) {
  const WallTime slot = At("2026-03-05T11:00"), next_slot = At("2026-03-05T12:00");
  const RotationTiming hourly{*CronSchedule::Parse("0 * * * *")};
  RotationScheduler b(*rotation_, *keys_, std::move(Instance().settings), hourly, true, 1000000, clock_);
  // A's run F for the 11:00 slot, its lock beaten (a heartbeat far ahead, on either engine's clock).
  ASSERT_TRUE(Sql("INSERT INTO rotation_runs(id, trigger, status, force, started_at, from_version, to_version, "
                  "done, cursor) VALUES('a-run','scheduled','running',FALSE,'2026-03-05T11:00:00.000Z',1,0,0,'')")
                  .ok());
  ASSERT_TRUE(Sql("INSERT INTO rotation_lock(id, run_id, owner, heartbeat_at) VALUES(1,'a-run','a:1:x', "
                  "9000000000000000)").ok());
  EXPECT_FALSE(TickAt(b, slot + std::chrono::seconds(30)).has_value());
  EXPECT_EQ(*b.NextRun(), next_slot);  // 11:00 is F's
  EXPECT_FALSE(TickAt(b, next_slot + std::chrono::seconds(30)).has_value());  // F still running
  ASSERT_TRUE(Sql("UPDATE rotation_lock SET heartbeat_at=0").ok());  // A is gone
  auto resumed = TickAt(b, next_slot + std::chrono::minutes(1));
  ASSERT_TRUE(resumed.has_value());
  EXPECT_EQ(rotation_->History(1)->front().trigger, kResumedTrigger);
  EXPECT_EQ(rotation_->History(1)->front().status, "completed");
  EXPECT_EQ(Primary(), 2u);
  auto fresh = TickAt(b, next_slot + std::chrono::minutes(2));
  ASSERT_TRUE(fresh.has_value()) << "the 12:00 slot was used by the 11:00 slot's run";
  EXPECT_EQ(rotation_->History(1)->front().id, *fresh);
  EXPECT_EQ(rotation_->History(1)->front().trigger, "scheduled");
  EXPECT_EQ(rotation_->History(1)->front().status, "completed");
  EXPECT_EQ(Primary(), 3u);
  EXPECT_EQ(*b.NextRun(), At("2026-03-05T13:00"));
}

DYAD_INSTANTIATE_ON_REGISTRY_ENGINES(IntervalTest);

}  // namespace
}  // namespace dyad
