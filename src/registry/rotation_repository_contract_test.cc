// The RotationRepository contract, on every registry engine (SQLite always,
// PostgreSQL when DYAD_TEST_PG_URL is set: testing/registry_engines.h).
#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <thread>
#include <utility>

#include "testing/registry_engines.h"

namespace dyad {
namespace {

using std::chrono::seconds;

RotationRun NewRun(const std::string& id) {
  RotationRun r;
  r.id = id;
  r.trigger = "manual";
  r.status = "running";
  r.started_at = "2026-01-01T00:00:00.000Z";
  r.from_version = 1;
  return r;
}

// Begin's conditions, each set by name (aggregate initialisers that leave
// members out warn under -Wextra).
StartConditions IfSuccesses(int64_t n) {
  StartConditions c;
  c.if_successes = n;
  return c;
}
StartConditions IfNoneStartedIn(const std::string& from, const std::string& to, const std::string& failed_by = "") {
  StartConditions c;
  c.if_none_started_in = StartConditions::Window{.from = from, .to = to, .failed_by = failed_by};
  return c;
}

// Two pools on one database, one fake clock (the fixture's): two instances.
// SQLite's leases run on that clock; PostgreSQL's on the server's, so
// Elapse() there ages the lease row itself.
class RotationRepositoryContract : public testing::TwoInstanceContractTest {
 protected:
  bool OnPostgresql() const { return inst_a_.postgresql != nullptr; }
  // `d` passes for the lock: the fake clock moves, and on PostgreSQL the
  // heartbeat (server milliseconds) is moved back by as much.
  void Elapse(Clock::Duration d) {
    fake_clock_.Advance(d);
    if (!OnPostgresql()) return;
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
    ASSERT_TRUE(ExecSql(inst_a_, "UPDATE rotation_lock SET heartbeat_at = heartbeat_at - " + std::to_string(ms)).ok());
  }
  std::string StatusOf(RotationRepository* repo, const std::string& run_id) {
    auto history = repo->History(100);  // held: a range-for over *History() would outlive the Result
    if (!history.ok()) return "(error: " + history.error().message + ")";
    for (const auto& r : *history) {
      if (r.id == run_id) return r.status;
    }
    return "(none)";
  }

  // `run` begun on `repo` (subject to `start_if`) and ended as `status`, at its start.
  Status BeginAndEnd(RotationRepository* repo, RotationRun run, const std::string& status,
                     const StartConditions& start_if = {}) {
    DYAD_ASSIGN_OR_RETURN(std::optional<std::string> holder, repo->Begin(run, "owner", seconds(10), "x", start_if));
    if (holder) return MakeError(ErrorCode::kConflict, "held by " + *holder);
    run.status = status;
    run.finished_at = run.started_at;
    DYAD_RETURN_IF_ERROR(repo->SaveProgress(run, "owner", true));
    return repo->Release(run.id, "owner");
  }
  // A run A began and ended failed at `started_at`, having made key
  // version `to_version` (0: none, as a run whose KMS call failed leaves it).
  Status EndedFailed(const std::string& id, const std::string& trigger, const std::string& started_at,
                     uint32_t to_version) {
    RotationRun run = NewRun(id);
    run.trigger = trigger;
    run.started_at = started_at;
    run.to_version = to_version;
    return BeginAndEnd(a_, std::move(run), "failed");
  }
  // B begins `id` at `started_at` on the condition of the cron slot
  // 2026-03-09T02:30 (weekly), runs that failed before a key version
  // counting when they started after `failed_by`.
  Result<std::optional<std::string>> BeginInTheSlot(const std::string& id, const std::string& started_at,
                                                    const std::string& failed_by) {
    RotationRun run = NewRun(id);
    run.trigger = kScheduledTrigger;
    run.started_at = started_at;
    return b_->Begin(run, "owner-b", seconds(10), "x",
                     IfNoneStartedIn("2026-03-09T02:30:00.000Z", "2026-03-16T02:30:00.000Z", failed_by));
  }

  void SetUp() override {
    TwoInstanceContractTest::SetUp();
    a_ = inst_a_.rotations.get();
    b_ = inst_b_.rotations.get();
  }
  RotationRepository* a_ = nullptr;
  RotationRepository* b_ = nullptr;
};

TEST_P(RotationRepositoryContract, LockIsTakenOverOnlyOnceItsHeartbeatIsStale) {
  auto first = a_->Begin(NewRun("run-1"), "owner-a", seconds(10), "superseded by run-1");
  ASSERT_TRUE(first.ok()) << first.error().message;
  EXPECT_FALSE(first->has_value());  // taken

  // Fresh: another instance gets the holder's run id and writes nothing.
  Elapse(seconds(9));
  auto refused = b_->Begin(NewRun("run-2"), "owner-b", seconds(10), "superseded by run-2");
  ASSERT_TRUE(refused.ok());
  ASSERT_TRUE(refused->has_value());
  EXPECT_EQ(**refused, "run-1");
  EXPECT_EQ(a_->History(10)->size(), 1u);

  // A heartbeat keeps it: 9 s after the beat it is still held.
  EXPECT_TRUE(*a_->Heartbeat("run-1", "owner-a"));
  Elapse(seconds(9));
  EXPECT_EQ(b_->Begin(NewRun("run-2"), "owner-b", seconds(10), "x")->value_or(""), "run-1");

  // Stale (10 s without a beat): taken over, and the run left "running" is
  // marked interrupted with the note.
  Elapse(seconds(1));
  RotationRun second = NewRun("run-2");
  second.started_at = "2026-01-01T00:00:19.000Z";
  auto taken = b_->Begin(second, "owner-b", seconds(10), "superseded by run run-2");
  ASSERT_TRUE(taken.ok());
  EXPECT_FALSE(taken->has_value());
  auto history = *a_->History(10);
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[0].id, "run-2");  // newest first
  EXPECT_EQ(history[0].status, "running");
  EXPECT_EQ(history[1].status, "interrupted");
  EXPECT_EQ(history[1].finished_at, second.started_at);
  EXPECT_EQ(history[1].error, "superseded by run run-2");

  // The old owner has lost it: its beat says so, and its release and
  // progress leave the new owner's lock alone.
  EXPECT_FALSE(*a_->Heartbeat("run-1", "owner-a"));
  ASSERT_TRUE(a_->Release("run-1", "owner-a").ok());
  EXPECT_EQ(a_->Begin(NewRun("run-3"), "owner-a", seconds(10), "x")->value_or(""), "run-2");
  // The same run id under another owner does not hold it either.
  EXPECT_FALSE(*a_->Heartbeat("run-2", "owner-a"));

  // Released by its owner: free at once.
  ASSERT_TRUE(b_->Release("run-2", "owner-b").ok());
  EXPECT_FALSE(a_->Begin(NewRun("run-3"), "owner-a", seconds(10), "x")->has_value());
}

TEST_P(RotationRepositoryContract, ProgressIsSavedAndResumable) {
  RotationRun run = NewRun("run-1");
  run.force = true;
  ASSERT_FALSE(a_->Begin(run, "owner-a", seconds(10), "x")->has_value());
  EXPECT_EQ(a_->LatestRunning()->value().id, "run-1");

  run.to_version = 2;
  run.total = 1000;
  run.done = 500;
  run.reencrypted = 498;
  run.skipped = 1;
  run.failed = 1;
  run.cursor = "dyad-gateway/providers/p-499";
  run.duration_ms = 1234;
  Elapse(seconds(8));
  ASSERT_TRUE(a_->SaveProgress(run, "owner-a", false).ok());
  // Saving beats the heartbeat too: 8 s later another instance still waits.
  Elapse(seconds(8));
  EXPECT_EQ(b_->Begin(NewRun("run-2"), "owner-b", seconds(10), "x")->value_or(""), "run-1");

  // What a resuming instance reads back.
  auto left = b_->LatestRunning();
  ASSERT_TRUE(left.ok());
  ASSERT_TRUE(left->has_value());
  const RotationRun& r = **left;
  EXPECT_EQ(r.trigger, "manual");
  EXPECT_TRUE(r.force);
  EXPECT_EQ(r.from_version, 1u);
  EXPECT_EQ(r.to_version, 2u);
  EXPECT_EQ(r.total, 1000);
  EXPECT_EQ(r.done, 500);
  EXPECT_EQ(r.reencrypted, 498);
  EXPECT_EQ(r.skipped, 1);
  EXPECT_EQ(r.failed, 1);
  EXPECT_EQ(r.cursor, "dyad-gateway/providers/p-499");
  EXPECT_EQ(r.duration_ms, 1234);
  EXPECT_EQ(r.finished_at, "");  // not final

  run.status = "completed";
  run.finished_at = "2026-01-01T00:01:00.000Z";
  ASSERT_TRUE(a_->SaveProgress(run, "owner-a", true).ok());
  EXPECT_FALSE(b_->LatestRunning()->has_value());
  EXPECT_EQ(b_->History(1)->front().finished_at, run.finished_at);
  EXPECT_EQ(b_->History(1)->front().status, "completed");
}

TEST_P(RotationRepositoryContract, ConcurrentBeginsOnAFreeLockHaveOneWinner) {
  for (int round = 0; round < 10; ++round) {
    std::atomic<int> ready{0};
    Result<std::optional<std::string>> got[2] = {std::optional<std::string>(), std::optional<std::string>()};
    auto start = [&](int i) {
      ready.fetch_add(1);
      while (ready.load() < 2) std::this_thread::yield();
      const std::string id = "run-" + std::to_string(round) + (i ? "b" : "a");
      got[i] = (i ? b_ : a_)->Begin(NewRun(id), i ? "owner-b" : "owner-a", seconds(10), "x");
    };
    std::thread t0(start, 0), t1(start, 1);
    t0.join();
    t1.join();
    ASSERT_TRUE(got[0].ok() && got[1].ok());
    ASSERT_NE(got[0]->has_value(), got[1]->has_value()) << "exactly one takes the lock, round " << round;
    const int winner = got[0]->has_value() ? 1 : 0;
    const std::string winner_id = "run-" + std::to_string(round) + (winner ? "b" : "a");
    EXPECT_EQ(got[1 - winner]->value(), winner_id);  // the loser is told who holds it
    EXPECT_EQ(a_->History(1)->front().id, winner_id);  // the loser recorded nothing
    ASSERT_TRUE((winner ? b_ : a_)->Release(winner_id, winner ? "owner-b" : "owner-a").ok());
  }
}

// A resume read a run as 'running'; its owner finished it and let the lock
// go before the resume's begin: the resume starts nothing (a second rotation).
TEST_P(RotationRepositoryContract, AResumeOfARunThatEndedMeanwhileBeginsNothing) {
  RotationRun run = NewRun("run-1");
  ASSERT_FALSE(a_->Begin(run, "owner-a", seconds(10), "x")->has_value());
  run.status = "completed";
  run.finished_at = "2026-01-01T00:05:00.000Z";
  ASSERT_TRUE(a_->SaveProgress(run, "owner-a", true).ok());
  ASSERT_TRUE(a_->Release("run-1", "owner-a").ok());
  auto resumed = b_->Begin(NewRun("run-2"), "owner-b", seconds(10), "x", {}, std::string("run-1"));
  ASSERT_FALSE(resumed.ok());
  EXPECT_EQ(resumed.code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(b_->History(10)->size(), 1u);
  EXPECT_EQ(b_->History(1)->front().status, "completed");
  // A run still 'running' whose owner is gone (its lock stale) is resumed.
  RotationRun left = NewRun("run-3");
  ASSERT_FALSE(a_->Begin(left, "owner-a", seconds(10), "x")->has_value());
  Elapse(seconds(11));
  EXPECT_FALSE(b_->Begin(NewRun("run-4"), "owner-b", seconds(10), "x", {}, std::string("run-3"))
                   ->has_value());
}

// A fresh run (`if_running` empty) never supersedes a run left 'running':
// it writes nothing and names that run, whether its lock was released (a
// paused resume) or is stale (its process gone); once none is left, it begins.
TEST_P(RotationRepositoryContract, AFreshBeginNamesARunLeftRunningAndWritesNothing) {
  const std::string fresh;  // if_running: a fresh run
  ASSERT_FALSE(a_->Begin(NewRun("run-1"), "owner-a", seconds(10), "x")->has_value());
  EXPECT_EQ(b_->Begin(NewRun("run-2"), "owner-b", seconds(10), "x", {}, fresh)->value_or(""), "run-1");
  Elapse(seconds(11));  // stale
  EXPECT_EQ(b_->Begin(NewRun("run-2"), "owner-b", seconds(10), "x", {}, fresh)->value_or(""), "run-1");
  EXPECT_EQ(StatusOf(b_, "run-1"), "running");
  EXPECT_EQ(StatusOf(b_, "run-2"), "(none)");
  EXPECT_TRUE(*a_->Heartbeat("run-1", "owner-a"));  // the stale lock is left as it was
  ASSERT_TRUE(a_->Release("run-1", "owner-a").ok());  // paused: released, still 'running'
  EXPECT_EQ(b_->Begin(NewRun("run-2"), "owner-b", seconds(10), "x", {}, fresh)->value_or(""), "run-1");
  EXPECT_EQ(StatusOf(b_, "run-2"), "(none)");
  // Resumed and completed: nothing is left, and a fresh run begins.
  RotationRun resumed = NewRun("run-3");
  ASSERT_FALSE(b_->Begin(resumed, "owner-b", seconds(10), "resumed", {}, std::string("run-1"))->has_value());
  resumed.status = "completed";
  ASSERT_TRUE(b_->SaveProgress(resumed, "owner-b", true).ok());
  ASSERT_TRUE(b_->Release("run-3", "owner-b").ok());
  EXPECT_FALSE(a_->Begin(NewRun("run-4"), "owner-a", seconds(10), "x", {}, fresh)->has_value());
  EXPECT_EQ(StatusOf(a_, "run-4"), "running");
}

TEST_P(RotationRepositoryContract, SuccessesAreSharedAndGuardABegin) {
  EXPECT_EQ(b_->Successes()->count, 0);
  EXPECT_EQ(b_->Successes()->last_finished_at, "");
  RotationRun run = NewRun("run-1");
  ASSERT_FALSE(a_->Begin(run, "owner-a", seconds(10), "x", IfSuccesses(0))->has_value());
  run.status = "completed";
  run.finished_at = "2026-01-01T00:05:00.000Z";
  ASSERT_TRUE(a_->SaveProgress(run, "owner-a", true).ok());
  ASSERT_TRUE(a_->Release("run-1", "owner-a").ok());
  // The other instance sees it, and a begin conditional on the count it read before is refused, writing nothing.
  EXPECT_EQ(b_->Successes()->count, 1);
  EXPECT_EQ(b_->Successes()->last_finished_at, "2026-01-01T00:05:00.000Z");
  auto stale = b_->Begin(NewRun("run-2"), "owner-b", seconds(10), "x", IfSuccesses(0));
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(b_->History(10)->size(), 1u);
  ASSERT_TRUE(b_->Begin(NewRun("run-2"), "owner-b", seconds(10), "x", IfSuccesses(1)).ok());
  EXPECT_EQ(b_->History(10)->size(), 2u);
  // A run that failed is no success.
  RotationRun failed = NewRun("run-2");
  failed.status = "failed";
  failed.finished_at = "2026-01-02T00:00:00.000Z";
  ASSERT_TRUE(b_->SaveProgress(failed, "owner-b", true).ok());
  EXPECT_EQ(a_->Successes()->count, 1);
  EXPECT_EQ(a_->Successes()->last_finished_at, "2026-01-01T00:05:00.000Z");
}

// Review (key-rotation follow-ups, 1): a scheduler read the history, saw the
// cron slot free, and began a run; meanwhile another instance had begun (and
// finished) the slot's run. The slot's time is now a condition of Begin,
// checked in its transaction: a run started at or after it (resumes aside)
// refuses the begin, which writes nothing.
TEST_P(RotationRepositoryContract, ACronSlotsRunGuardsABegin) {
  const std::string slot = "2026-03-09T02:30:00.000Z", next_slot = "2026-03-16T02:30:00.000Z";
  const StartConditions slots_window = IfNoneStartedIn(slot, next_slot);
  const StartConditions next_slots_window = IfNoneStartedIn(next_slot, "2026-03-23T02:30:00.000Z");
  auto run_at = [](const std::string& id, const std::string& started_at) {
    RotationRun r = NewRun(id);
    r.started_at = started_at;
    return r;
  };
  auto complete = [](RotationRepository* repo, RotationRun run, const std::string& owner) {
    run.status = "completed";
    run.finished_at = run.started_at;
    ASSERT_TRUE(repo->SaveProgress(run, owner, true).ok());
    ASSERT_TRUE(repo->Release(run.id, owner).ok());
  };
  // A run started before the slot leaves it free.
  ASSERT_FALSE(a_->Begin(run_at("run-0", "2026-03-09T02:29:59.999Z"), "owner-a", seconds(10), "x")->has_value());
  complete(a_, run_at("run-0", "2026-03-09T02:29:59.999Z"), "owner-a");
  const RotationRun slots_run = run_at("run-1", "2026-03-09T02:30:00.000Z");
  ASSERT_FALSE(a_->Begin(slots_run, "owner-a", seconds(10), "x", slots_window)->has_value());
  complete(a_, slots_run, "owner-a");
  // B read the history before A's run began: its begin for the same slot is refused.
  auto late = b_->Begin(run_at("run-2", "2026-03-09T02:30:30.000Z"), "owner-b", seconds(10), "x",
                        slots_window);
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(late.error().message.find("run-1"), std::string::npos) << late.error().message;
  EXPECT_EQ(b_->History(10)->size(), 2u);
  EXPECT_EQ(StatusOf(b_, "run-2"), "(none)");
  // The next slot: a resume that began after it, of a run begun before it, leaves it free.
  ASSERT_FALSE(a_->Begin(run_at("run-3", "2026-03-16T02:00:00.000Z"), "owner-a", seconds(10), "x")->has_value());
  ASSERT_TRUE(a_->Release("run-3", "owner-a").ok());  // left 'running'
  RotationRun resume = run_at("run-4", "2026-03-16T02:31:00.000Z");
  resume.trigger = kResumedTrigger;
  ASSERT_FALSE(b_->Begin(resume, "owner-b", seconds(10), "resumed as run run-4", {}, std::string("run-3"))
                   ->has_value());
  complete(b_, resume, "owner-b");
  auto fresh = a_->Begin(run_at("run-5", "2026-03-16T02:32:00.000Z"), "owner-a", seconds(10), "x",
                         next_slots_window);
  ASSERT_TRUE(fresh.ok()) << fresh.error().message;
  EXPECT_FALSE(fresh->has_value());
  EXPECT_EQ(StatusOf(a_, "run-5"), "running");
}

// LockHolder judges the lock as Begin does, from either instance: held while
// its heartbeat is fresh, then stale; free once released.
TEST_P(RotationRepositoryContract, LockHolderNamesAFreshHolderOnly) {
  EXPECT_EQ(*b_->LockHolder(seconds(10)), std::nullopt);
  ASSERT_FALSE(a_->Begin(NewRun("run-1"), "owner-a", seconds(10), "x")->has_value());
  EXPECT_EQ(*b_->LockHolder(seconds(10)), "run-1");
  Elapse(seconds(11));
  EXPECT_EQ(*b_->LockHolder(seconds(10)), std::nullopt);
  ASSERT_TRUE(*a_->Heartbeat("run-1", "owner-a"));
  EXPECT_EQ(*b_->LockHolder(seconds(10)), "run-1");
  ASSERT_TRUE(a_->Release("run-1", "owner-a").ok());
  EXPECT_EQ(*b_->LockHolder(seconds(10)), std::nullopt);
}

// Review (rotation should-fix, 1): a run stamped in the future (an instance
// whose clock was days ahead) guarded every slot until its date. It now
// guards only the slot whose window holds its start.
TEST_P(RotationRepositoryContract, ARunStartedAfterASlotsWindowLeavesTheSlotFree) {
  auto begin_and_complete = [&](RotationRepository* repo, const std::string& id, const std::string& started_at,
                                const StartConditions& start_if) {
    RotationRun run = NewRun(id);
    run.started_at = started_at;
    return BeginAndEnd(repo, std::move(run), "completed", start_if);
  };
  auto window = [](const std::string& from, const std::string& to) {
    return IfNoneStartedIn(from, to);
  };
  ASSERT_TRUE(begin_and_complete(a_, "run-ahead", "2026-04-20T05:00:00.000Z", {}).ok());
  Status fresh = begin_and_complete(b_, "run-1", "2026-03-09T02:30:10.000Z",
                                    window("2026-03-09T02:30:00.000Z", "2026-03-16T02:30:00.000Z"));
  EXPECT_TRUE(fresh.ok()) << fresh.error().message;
  // The window's end is excluded: a run started at the next slot is that slot's.
  Status at_end = begin_and_complete(b_, "run-2", "2026-03-16T02:30:10.000Z",
                                     window("2026-04-13T02:30:00.000Z", "2026-04-20T05:00:00.000Z"));
  EXPECT_TRUE(at_end.ok()) << at_end.error().message;
  // The slot whose window holds it is used.
  Status used = begin_and_complete(b_, "run-3", "2026-04-20T02:30:10.000Z",
                                   window("2026-04-20T02:30:00.000Z", "2026-04-27T02:30:00.000Z"));
  ASSERT_FALSE(used.ok());
  EXPECT_EQ(used.code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(used.error().message.find("run-ahead"), std::string::npos) << used.error().message;
  EXPECT_EQ(StatusOf(a_, "run-3"), "(none)");
}

// Instance A dies mid-run (no more beats); B finds the run still 'running'
// with its cursor, waits out the lease, takes it over and resumes from that
// cursor; A, if it comes back, has lost the lock and cannot beat B's.
TEST_P(RotationRepositoryContract, AStaleLeaseIsTakenOverAndTheRunResumesFromItsCursor) {
  RotationRun run = NewRun("run-1");
  ASSERT_FALSE(a_->Begin(run, "owner-a", seconds(10), "x")->has_value());
  run.to_version = 2;
  run.total = 10000;
  run.done = 2500;
  run.cursor = "dyad-gateway/providers/p-2499";
  ASSERT_TRUE(a_->SaveProgress(run, "owner-a", false).ok());
  // A is killed here. Before the timeout B is refused.
  Elapse(seconds(9));
  auto left = b_->LatestRunning();
  ASSERT_TRUE(left.ok() && left->has_value());
  EXPECT_EQ((*left)->cursor, run.cursor);
  EXPECT_EQ(b_->Begin(NewRun("run-2"), "owner-b", seconds(10), "x", {}, std::string("run-1"))->value_or(""),
            "run-1");
  Elapse(seconds(1));
  RotationRun resumed = NewRun("run-2");
  resumed.trigger = "resumed";
  resumed.to_version = (*left)->to_version;
  resumed.cursor = (*left)->cursor;
  resumed.started_at = "2026-01-01T00:00:10.000Z";
  auto taken = b_->Begin(resumed, "owner-b", seconds(10), "resumed as run run-2", {}, std::string("run-1"));
  ASSERT_TRUE(taken.ok()) << taken.error().message;
  EXPECT_FALSE(taken->has_value());
  auto history = *a_->History(10);
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[0].id, "run-2");
  EXPECT_EQ(history[0].trigger, "resumed");
  EXPECT_EQ(history[0].cursor, "dyad-gateway/providers/p-2499");  // where the dead run stopped
  EXPECT_EQ(history[0].to_version, 2u);
  EXPECT_EQ(history[1].id, "run-1");
  EXPECT_EQ(history[1].status, "interrupted");
  EXPECT_EQ(history[1].error, "resumed as run run-2");
  EXPECT_EQ(history[1].done, 2500);
  // A comes back: its beat says it lost the lock, and its save is refused,
  // writing nothing: neither B's heartbeat (10 s on, B's lock is stale:
  // another takes it over) nor the run B marked interrupted.
  EXPECT_FALSE(*a_->Heartbeat("run-1", "owner-a"));
  Elapse(seconds(10));
  run.done = 3000;
  Status lost = a_->SaveProgress(run, "owner-a", false);
  ASSERT_FALSE(lost.ok());
  EXPECT_EQ(lost.code(), ErrorCode::kConflict);
  EXPECT_EQ(StatusOf(b_, "run-1"), "interrupted");
  EXPECT_EQ(b_->History(10)->back().done, 2500);
  ASSERT_TRUE(a_->Release("run-1", "owner-a").ok());
  EXPECT_FALSE(*b_->Heartbeat("run-1", "owner-b"));  // the run id alone holds nothing
  EXPECT_FALSE(a_->Begin(NewRun("run-3"), "owner-a", seconds(10), "x")->has_value());
  EXPECT_FALSE(*b_->Heartbeat("run-2", "owner-b"));
}

// Three instances find one stale lock at once: one takes it over, the
// others are told its run id; the dead run is marked interrupted once.
TEST_P(RotationRepositoryContract, ConcurrentTakeoversOfAStaleLockHaveOneWinner) {
  auto c_inst = NewInstance();
  ASSERT_TRUE(c_inst.ok()) << c_inst.error().message;
  RotationRepository* repos[3] = {a_, b_, c_inst->rotations.get()};
  for (int round = 0; round < 10; ++round) {
    const std::string dead = "dead-" + std::to_string(round);
    ASSERT_FALSE(a_->Begin(NewRun(dead), "owner-dead", seconds(10), "x")->has_value()) << round;
    Elapse(seconds(11));
    std::latch start(3);
    Result<std::optional<std::string>> got[3] = {std::optional<std::string>(), std::optional<std::string>(),
                                                 std::optional<std::string>()};
    std::vector<std::thread> threads;
    for (int i = 0; i < 3; ++i) {
      threads.emplace_back([&, i] {
        start.arrive_and_wait();
        got[i] = repos[i]->Begin(NewRun("run-" + std::to_string(round) + "-" + std::to_string(i)),
                                 "owner-" + std::to_string(i), seconds(10), "taken over");
      });
    }
    for (auto& t : threads) t.join();
    int winners = 0, winner = -1;
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(got[i].ok()) << got[i].error().message;
      if (!got[i]->has_value()) {
        ++winners;
        winner = i;
      }
    }
    ASSERT_EQ(winners, 1) << "round " << round;
    const std::string winner_run = "run-" + std::to_string(round) + "-" + std::to_string(winner);
    for (int i = 0; i < 3; ++i) {
      if (i != winner) EXPECT_EQ(got[i]->value(), winner_run) << round;
    }
    auto history = *b_->History(2);
    ASSERT_EQ(history.size(), 2u);
    EXPECT_EQ(history[0].id, winner_run);
    EXPECT_EQ(history[1].id, dead);
    EXPECT_EQ(history[1].status, "interrupted");
    // The winner completes and lets go: the next round's dead run begins on a free lock.
    ASSERT_TRUE(a_->SaveProgress([&] {
                      RotationRun r = NewRun(winner_run);
                      r.status = "completed";
                      r.finished_at = "2026-01-01T00:01:00.000Z";
                      return r;
                    }(), "owner-" + std::to_string(winner), true).ok());
    ASSERT_TRUE(repos[winner]->Release(winner_run, "owner-" + std::to_string(winner)).ok());
  }
  EXPECT_EQ(a_->History(100)->size(), 20u);
  EXPECT_EQ(a_->Successes()->count, 10);
}

// Issue 14 review: an instance whose lease was taken over (its heartbeat
// went stale during a database outage) comes back and saves: refused with
// kConflict, and nothing it sends lands — not on its old run (now
// 'interrupted'), not on the run the new owner resumed, not on the lease.
TEST_P(RotationRepositoryContract, ASaveByAnOwnerThatLostTheLockWritesNothing) {
  RotationRun run = NewRun("run-1");
  ASSERT_FALSE(a_->Begin(run, "owner-a", seconds(10), "x")->has_value());
  run.to_version = 2;
  run.done = 100;
  run.cursor = "p-099";
  ASSERT_TRUE(a_->SaveProgress(run, "owner-a", false).ok());
  Elapse(seconds(30));  // the outage
  RotationRun resumed = NewRun("run-2");
  resumed.trigger = "resumed";
  resumed.cursor = "p-099";
  ASSERT_FALSE(b_->Begin(resumed, "owner-b", seconds(10), "resumed as run run-2", {}, std::string("run-1"))
                   ->has_value());
  for (bool final : {false, true}) {
    RotationRun late = run;
    late.done = 500;
    late.cursor = "p-499";
    late.status = final ? "completed" : "running";
    late.finished_at = final ? "2026-01-01T01:00:00.000Z" : "";
    Status s = a_->SaveProgress(late, "owner-a", final);
    ASSERT_FALSE(s.ok()) << "final=" << final;
    EXPECT_EQ(s.code(), ErrorCode::kConflict);
    EXPECT_NE(s.error().message.find("lock lost"), std::string::npos) << s.error().message;
  }
  // The same run id under another owner, and another run under the right owner, hold nothing either.
  EXPECT_EQ(b_->SaveProgress(run, "owner-b", false).code(), ErrorCode::kConflict);
  EXPECT_EQ(a_->SaveProgress(NewRun("run-2"), "owner-a", false).code(), ErrorCode::kConflict);
  auto history = *b_->History(10);
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[0].id, "run-2");
  EXPECT_EQ(history[0].status, "running");
  EXPECT_EQ(history[0].cursor, "p-099");
  EXPECT_EQ(history[1].id, "run-1");
  EXPECT_EQ(history[1].status, "interrupted");
  EXPECT_EQ(history[1].done, 100);
  EXPECT_EQ(history[1].cursor, "p-099");
  EXPECT_EQ(history[1].error, "resumed as run run-2");
  EXPECT_EQ(b_->LatestRunning()->value().id, "run-2");
  EXPECT_EQ(b_->Successes()->count, 0);
  // The new owner's lease is untouched: 9 s after its begin it is still held.
  Elapse(seconds(9));
  EXPECT_EQ(a_->Begin(NewRun("run-3"), "owner-a", seconds(10), "x")->value_or(""), "run-2");
  EXPECT_TRUE(b_->SaveProgress(resumed, "owner-b", false).ok());
}

// Issue 14 review: on PostgreSQL the lease is judged on the server's clock,
// so instances whose clocks are an hour apart neither take over a live lease
// nor keep a dead one. (SQLite: one host, one clock; nothing to test.)
TEST_P(RotationRepositoryContract, ClockSkewBetweenInstancesMovesNoLeaseOnPostgresql) {
  if (!OnPostgresql()) GTEST_SKIP() << "SQLite: instances share one host's clock";
  FakeClock behind, ahead;  // B's clock two hours ahead of A's
  ahead.Advance(std::chrono::hours(2));
  auto slow = NewInstance(behind);
  auto fast = NewInstance(ahead);
  ASSERT_TRUE(slow.ok() && fast.ok());
  RotationRepository* a = slow->rotations.get();
  RotationRepository* b = fast->rotations.get();
  ASSERT_FALSE(a->Begin(NewRun("run-1"), "owner-a", seconds(10), "x")->has_value());
  EXPECT_EQ(b->Begin(NewRun("run-2"), "owner-b", seconds(10), "x")->value_or(""), "run-1");
  ASSERT_TRUE(*a->Heartbeat("run-1", "owner-a"));
  EXPECT_EQ(b->Begin(NewRun("run-2"), "owner-b", seconds(10), "x")->value_or(""), "run-1");
  ASSERT_TRUE(a->SaveProgress(NewRun("run-1"), "owner-a", false).ok());
  EXPECT_EQ(b->Begin(NewRun("run-2"), "owner-b", seconds(10), "x")->value_or(""), "run-1");
  EXPECT_EQ(a_->History(10)->size(), 1u);
  // The other way round: the fast instance holds it, the slow one waits.
  ASSERT_TRUE(a->Release("run-1", "owner-a").ok());
  ASSERT_FALSE(b->Begin(NewRun("run-3"), "owner-b", seconds(10), "x")->has_value());
  EXPECT_EQ(a->Begin(NewRun("run-4"), "owner-a", seconds(10), "x")->value_or(""), "run-3");
  // A lease that really is stale on the server's clock is taken over,
  // whatever the instance's clock says.
  Elapse(seconds(10));
  EXPECT_FALSE(a->Begin(NewRun("run-4"), "owner-a", seconds(10), "x")->has_value());
}

// A lease shorter than a second (PostgreSQL keeps milliseconds): held
// within it, taken over after it, with no sleeping past a few hundred ms.
TEST_P(RotationRepositoryContract, ASubSecondTakeoverIsHonouredOnPostgresql) {
  if (!OnPostgresql()) GTEST_SKIP() << "SQLite: heartbeats in the injected clock's seconds";
  using std::chrono::milliseconds;
  ASSERT_FALSE(a_->Begin(NewRun("run-1"), "owner-a", milliseconds(60000), "x")->has_value());
  EXPECT_EQ(b_->Begin(NewRun("run-2"), "owner-b", milliseconds(60000), "x")->value_or(""), "run-1");
  std::this_thread::sleep_for(milliseconds(150));
  EXPECT_FALSE(b_->Begin(NewRun("run-2"), "owner-b", milliseconds(100), "x")->has_value());
  EXPECT_EQ(StatusOf(a_, "run-1"), "interrupted");
}

// Review (h-rot4): a run that failed at once (the KMS down at the slot's
// minute) used its cron slot, and the key went unrotated until the next
// one. Such a run (the schedule's, failed, no key version) no longer guards
// the slot once it started at or before the window's `failed_by` (its
// back-off over); one that made a key version before it failed still does.
TEST_P(RotationRepositoryContract, ARunThatFailedBeforeAKeyVersionGuardsItsSlotOnlyDuringItsBackOff) {
  ASSERT_TRUE(EndedFailed("kms-down", kScheduledTrigger, "2026-03-09T02:30:00.000Z", 0).ok());
  // Within its back-off (started after `failed_by`): the slot is guarded.
  auto early = BeginInTheSlot("run-early", "2026-03-09T03:29:59.999Z", "2026-03-09T02:29:59.999Z");
  ASSERT_FALSE(early.ok());
  EXPECT_EQ(early.code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(early.error().message.find("kms-down"), std::string::npos) << early.error().message;
  // An instance whose window has no back-off (empty `failed_by`) counts every run.
  EXPECT_EQ(BeginInTheSlot("run-plain", "2026-03-09T03:30:00.000Z", "").code(), ErrorCode::kFailedPrecondition);
  // Its back-off over: the retry begins.
  auto retry = BeginInTheSlot("run-retry", "2026-03-09T03:30:00.000Z", "2026-03-09T02:30:00.000Z");
  ASSERT_TRUE(retry.ok()) << retry.error().message;
  EXPECT_FALSE(retry->has_value());
  EXPECT_EQ(StatusOf(b_, "run-retry"), "running");
  ASSERT_TRUE(b_->Release("run-retry", "owner-b").ok());
  ASSERT_TRUE(ExecSql(inst_a_, "DELETE FROM rotation_runs WHERE id='run-retry'").ok());
  // A run that made a key version and then failed guards its slot, back-off or not.
  ASSERT_TRUE(ExecSql(inst_a_, "DELETE FROM rotation_runs WHERE id='kms-down'").ok());
  ASSERT_TRUE(EndedFailed("one-secret-failed", kScheduledTrigger, "2026-03-09T02:30:00.000Z", 2).ok());
  auto after_version = BeginInTheSlot("run-2", "2026-03-09T03:30:00.000Z", "2026-03-09T02:30:00.000Z");
  ASSERT_FALSE(after_version.ok());
  EXPECT_EQ(after_version.code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(after_version.error().message.find("one-secret-failed"), std::string::npos);
}

// Review (h-rot4, 1): any run that failed before making a key version let
// the slot be retried, a manual one too: an instance restarted after
// missing a slot while down ran it, for a manual run that had failed at the
// KMS in the meantime. Only the schedule's own failed run lets it retry.
TEST_P(RotationRepositoryContract, AManualRunThatFailedBeforeAKeyVersionGuardsItsSlot) {
  ASSERT_TRUE(EndedFailed("manual-kms-down", "manual", "2026-03-09T02:40:00.000Z", 0).ok());
  auto refused = BeginInTheSlot("run-1", "2026-03-09T04:00:00.000Z", "2026-03-09T03:00:00.000Z");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(refused.error().message.find("manual-kms-down"), std::string::npos) << refused.error().message;
}

// Review (h-rot4, 2): each retry that failed at the KMS let the slot be
// retried again an hour later, for as long as the KMS was down. The slot
// is retried once: its retry, failed too, uses it (the latest run named).
TEST_P(RotationRepositoryContract, ASlotWhoseRetryFailedBeforeAKeyVersionIsNotRetriedAgain) {
  ASSERT_TRUE(EndedFailed("kms-down", kScheduledTrigger, "2026-03-09T02:30:00.000Z", 0).ok());
  ASSERT_TRUE(EndedFailed("retry-kms-down", kScheduledTrigger, "2026-03-09T03:30:00.000Z", 0).ok());
  auto refused = BeginInTheSlot("run-3", "2026-03-09T05:00:00.000Z", "2026-03-09T04:00:00.000Z");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(refused.error().message.find("retry-kms-down"), std::string::npos) << refused.error().message;
}

DYAD_INSTANTIATE_ON_REGISTRY_ENGINES(RotationRepositoryContract);

}  // namespace
}  // namespace dyad
