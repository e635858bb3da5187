#include "registry/sqlite_rotation_repository.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "testing/fakes.h"

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

// Two pools on one file, one fake clock: two instances on one database.
class RotationRepoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_a_ = *SqliteDb::Open(dir_.File("r.db"));
    db_b_ = *SqliteDb::Open(dir_.File("r.db"));
    a_ = NewSqliteRotationRepository(db_a_, clock_);
    b_ = NewSqliteRotationRepository(db_b_, clock_);
  }
  testing::TempDir dir_;
  FakeClock clock_;
  std::shared_ptr<SqliteDb> db_a_, db_b_;
  std::unique_ptr<RotationRepository> a_, b_;
};

TEST_F(RotationRepoTest, LockIsTakenOverOnlyOnceItsHeartbeatIsStale) {
  auto first = a_->Begin(NewRun("run-1"), "owner-a", seconds(10), "superseded by run-1");
  ASSERT_TRUE(first.ok()) << first.error().message;
  EXPECT_FALSE(first->has_value());  // taken

  // Fresh: another instance gets the holder's run id and writes nothing.
  clock_.Advance(seconds(9));
  auto refused = b_->Begin(NewRun("run-2"), "owner-b", seconds(10), "superseded by run-2");
  ASSERT_TRUE(refused.ok());
  ASSERT_TRUE(refused->has_value());
  EXPECT_EQ(**refused, "run-1");
  EXPECT_EQ(a_->History(10)->size(), 1u);

  // A heartbeat keeps it: 9 s after the beat it is still held.
  EXPECT_TRUE(*a_->Heartbeat("run-1", "owner-a"));
  clock_.Advance(seconds(9));
  EXPECT_EQ(b_->Begin(NewRun("run-2"), "owner-b", seconds(10), "x")->value_or(""), "run-1");

  // Stale (10 s without a beat): taken over, and the run left "running" is
  // marked interrupted with the note.
  clock_.Advance(seconds(1));
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

TEST_F(RotationRepoTest, ProgressIsSavedAndResumable) {
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
  clock_.Advance(seconds(8));
  ASSERT_TRUE(a_->SaveProgress(run, "owner-a", false).ok());
  // Saving beats the heartbeat too: 8 s later another instance still waits.
  clock_.Advance(seconds(8));
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

TEST_F(RotationRepoTest, ConcurrentBeginsOnAFreeLockHaveOneWinner) {
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
TEST_F(RotationRepoTest, AResumeOfARunThatEndedMeanwhileBeginsNothing) {
  RotationRun run = NewRun("run-1");
  ASSERT_FALSE(a_->Begin(run, "owner-a", seconds(10), "x")->has_value());
  run.status = "completed";
  run.finished_at = "2026-01-01T00:05:00.000Z";
  ASSERT_TRUE(a_->SaveProgress(run, "owner-a", true).ok());
  ASSERT_TRUE(a_->Release("run-1", "owner-a").ok());
  auto resumed = b_->Begin(NewRun("run-2"), "owner-b", seconds(10), "x", std::nullopt, std::string("run-1"));
  ASSERT_FALSE(resumed.ok());
  EXPECT_EQ(resumed.code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(b_->History(10)->size(), 1u);
  EXPECT_EQ(b_->History(1)->front().status, "completed");
  // A run still 'running' whose owner is gone (its lock stale) is resumed.
  RotationRun left = NewRun("run-3");
  ASSERT_FALSE(a_->Begin(left, "owner-a", seconds(10), "x")->has_value());
  clock_.Advance(seconds(11));
  EXPECT_FALSE(b_->Begin(NewRun("run-4"), "owner-b", seconds(10), "x", std::nullopt, std::string("run-3"))
                   ->has_value());
}

TEST_F(RotationRepoTest, SuccessesAreSharedAndGuardABegin) {
  EXPECT_EQ(b_->Successes()->count, 0);
  EXPECT_EQ(b_->Successes()->last_finished_at, "");
  RotationRun run = NewRun("run-1");
  ASSERT_FALSE(a_->Begin(run, "owner-a", seconds(10), "x", /*if_successes=*/0)->has_value());
  run.status = "completed";
  run.finished_at = "2026-01-01T00:05:00.000Z";
  ASSERT_TRUE(a_->SaveProgress(run, "owner-a", true).ok());
  ASSERT_TRUE(a_->Release("run-1", "owner-a").ok());
  // The other instance sees it, and a begin conditional on the count it read before is refused, writing nothing.
  EXPECT_EQ(b_->Successes()->count, 1);
  EXPECT_EQ(b_->Successes()->last_finished_at, "2026-01-01T00:05:00.000Z");
  auto stale = b_->Begin(NewRun("run-2"), "owner-b", seconds(10), "x", /*if_successes=*/0);
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(b_->History(10)->size(), 1u);
  ASSERT_TRUE(b_->Begin(NewRun("run-2"), "owner-b", seconds(10), "x", /*if_successes=*/1).ok());
  EXPECT_EQ(b_->History(10)->size(), 2u);
  // A run that failed is no success.
  RotationRun failed = NewRun("run-2");
  failed.status = "failed";
  failed.finished_at = "2026-01-02T00:00:00.000Z";
  ASSERT_TRUE(b_->SaveProgress(failed, "owner-b", true).ok());
  EXPECT_EQ(a_->Successes()->count, 1);
  EXPECT_EQ(a_->Successes()->last_finished_at, "2026-01-01T00:05:00.000Z");
}

}  // namespace
}  // namespace dyad
