#include "registry/pg_rotation_repository.h"

namespace dyad {
namespace {

constexpr char kRunColumns[] =
    "id, trigger, status, force, started_at, COALESCE(finished_at,''), from_version, to_version, total, done, "
    "reencrypted, skipped, failed, cursor, error, duration_ms";

RotationRun ReadRun(const PgRows& rows, int i) {
  RotationRun r;
  r.id = rows.Text(i, 0);
  r.trigger = rows.Text(i, 1);
  r.status = rows.Text(i, 2);
  r.force = rows.Bool(i, 3);
  r.started_at = rows.Text(i, 4);
  r.finished_at = rows.Text(i, 5);
  r.from_version = static_cast<uint32_t>(rows.Int(i, 6));
  r.to_version = static_cast<uint32_t>(rows.Int(i, 7));
  r.total = rows.Int(i, 8);
  r.done = rows.Int(i, 9);
  r.reencrypted = rows.Int(i, 10);
  r.skipped = rows.Int(i, 11);
  r.failed = rows.Int(i, 12);
  r.cursor = rows.Text(i, 13);
  r.error = rows.Text(i, 14);
  r.duration_ms = rows.Int(i, 15);
  return r;
}

Result<RotationSuccesses> CountSuccesses(PgConnection& c) {
  DYAD_ASSIGN_OR_RETURN(PgRows rows, c.Query(
      "SELECT COUNT(*), COALESCE(MAX(finished_at), '') FROM rotation_runs WHERE status='completed'"));
  RotationSuccesses out;
  if (rows.size() > 0) {
    out.count = rows.Int(0, 0);
    out.last_finished_at = rows.Text(0, 1);
  }
  return out;
}

// kFailedPrecondition when one of `start_if` does not hold (rotation_repository.h).
Status CheckStartConditions(PgConnection& c, const StartConditions& start_if) {
  if (start_if.if_successes) {
    DYAD_ASSIGN_OR_RETURN(RotationSuccesses done, CountSuccesses(c));
    if (done.count != *start_if.if_successes) {
      return MakeError(ErrorCode::kFailedPrecondition, "a key rotation completed meanwhile (at " +
                                                           done.last_finished_at + ")");
    }
  }
  if (const auto& window = start_if.if_none_started_in) {
    // One fixed-width format: byte order (COLLATE "C", whatever the
    // database's locale) is time order. Every run counts but a scheduled one
    // that failed before making a key version, its back-off over, and alone
    // in the window (rotation_repository.h).
    DYAD_ASSIGN_OR_RETURN(PgRows rows, c.Query(
        "SELECT id, started_at FROM rotation_runs WHERE trigger<>$1 AND started_at COLLATE \"C\" >= $2 "
        "AND started_at COLLATE \"C\" < $3 "
        "AND NOT (trigger=$5 AND status='failed' AND to_version=0 AND started_at COLLATE \"C\" <= $4 "
        "AND (SELECT COUNT(*) FROM rotation_runs WHERE trigger<>$1 AND started_at COLLATE \"C\" >= $2 "
        "AND started_at COLLATE \"C\" < $3)=1) ORDER BY seq DESC LIMIT 1",
        {std::string(kResumedTrigger), window->from, window->to, window->failed_by, std::string(kScheduledTrigger)}));
    if (rows.size() > 0) return StartedInWindow(rows.Text(0, 0), rows.Text(0, 1), *window);
  }
  return OkStatus();
}

// The database server's clock in milliseconds: every instance writes and
// judges heartbeats on it, so clock skew between hosts moves no lease.
// clock_timestamp(), not now(): a statement that waited for a lock reads
// the time it runs at, not its transaction's start.
#define DYAD_PG_NOW_MS "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT"

Status StatusOf(const Result<bool>& r) { return r.ok() ? OkStatus() : Status(r.error()); }

class PgRotationRepository final : public RotationRepository {
 public:
  explicit PgRotationRepository(std::shared_ptr<PgDb> db) : db_(std::move(db)) {}

  Result<std::optional<std::string>> Begin(const RotationRun& run, const std::string& owner, Clock::Duration takeover,
                                           const std::string& interrupted_note, const StartConditions& start_if,
                                           const std::optional<std::string>& if_running) override {
    const int64_t takeover_ms = std::chrono::duration_cast<std::chrono::milliseconds>(takeover).count();
    std::optional<std::string> holder;
    Status s = db_->Transaction([&](PgConnection& c) -> Status {
      // One Begin at a time: two on a free lock would both find no row (READ
      // COMMITTED reads no uncommitted insert), and the loser must be told
      // the winner's run id, not fail on the primary key.
      DYAD_RETURN_IF_ERROR(c.Query("SELECT pg_advisory_xact_lock(hashtext('dyad.rotation_lock'), 0)"));
      // The heartbeat's age on the server's clock (after FOR UPDATE has
      // waited out any save or beat in flight).
      DYAD_ASSIGN_OR_RETURN(PgRows lock, c.Query("SELECT run_id, " DYAD_PG_NOW_MS
                                                 " - heartbeat_at FROM rotation_lock WHERE id=1 FOR UPDATE"));
      if (lock.size() > 0) {
        // Held while its heartbeat is fresh, whoever the owner is: its own
        // thread beats it, so only an instance that is gone lets it go stale.
        if (lock.Int(0, 1) < takeover_ms) {
          holder = lock.Text(0, 0);
          return OkStatus();  // nothing written
        }
      }
      if (if_running && if_running->empty()) {  // a fresh run: see rotation_repository.h
        DYAD_ASSIGN_OR_RETURN(PgRows left, c.Query(
            "SELECT id FROM rotation_runs WHERE status='running' ORDER BY seq DESC LIMIT 1"));
        if (left.size() > 0) {
          holder = left.Text(0, 0);
          return OkStatus();  // nothing written: the caller resumes it
        }
      }
      if (lock.size() > 0) DYAD_RETURN_IF_ERROR(c.Query("DELETE FROM rotation_lock WHERE id=1"));
      if (if_running && !if_running->empty()) {
        DYAD_ASSIGN_OR_RETURN(PgRows st, c.Query("SELECT status FROM rotation_runs WHERE id=$1", {*if_running}));
        if (st.size() == 0 || st.Text(0, 0) != "running") {
          return MakeError(ErrorCode::kFailedPrecondition, "run " + *if_running + " is no longer running");
        }
      }
      DYAD_RETURN_IF_ERROR(CheckStartConditions(c, start_if));
      // Any run its owner left "running" is over: say so in its history entry.
      DYAD_RETURN_IF_ERROR(c.Query(
          "UPDATE rotation_runs SET status='interrupted', finished_at=$1, error=$2 WHERE status='running'",
          {run.started_at, interrupted_note}));
      DYAD_RETURN_IF_ERROR(c.Query(
          "INSERT INTO rotation_lock(id, run_id, owner, heartbeat_at) VALUES(1,$1,$2," DYAD_PG_NOW_MS ")",
          {run.id, owner}));
      DYAD_RETURN_IF_ERROR(c.Query(
          "INSERT INTO rotation_runs(id, trigger, status, force, started_at, from_version, to_version, cursor) "
          "VALUES($1,$2,$3,$4,$5,$6,$7,$8)",
          {run.id, run.trigger, run.status, run.force, run.started_at, static_cast<int64_t>(run.from_version),
           static_cast<int64_t>(run.to_version), run.cursor}));
      return OkStatus();
    });
    if (!s.ok()) return s.error();
    return holder;
  }

  // The lock row first, then the run's, as Begin takes them: a takeover and
  // a save meeting never wait for each other in opposite orders. A save by
  // an owner that lost the lock writes nothing. One statement (one round
  // trip per batch of a rotation): the run's UPDATE tests the lock's, so the
  // lock row is written (and locked) before the run's row.
  Status SaveProgress(const RotationRun& run, const std::string& owner, bool final) override {
    DYAD_ASSIGN_OR_RETURN(PgRows rows, db_->With<PgRows>([&](PgConnection& c) -> Result<PgRows> {
      return c.Query(
          "WITH held AS (UPDATE rotation_lock SET heartbeat_at=" DYAD_PG_NOW_MS
          " WHERE run_id=$1 AND owner=$2 RETURNING 1), "
          "saved AS (UPDATE rotation_runs SET status=$3, finished_at=$4, to_version=$5, total=$6, done=$7, "
          "reencrypted=$8, skipped=$9, failed=$10, cursor=$11, error=$12, duration_ms=$13 "
          "WHERE id=$1 AND EXISTS (SELECT 1 FROM held) RETURNING 1) "
          "SELECT (SELECT COUNT(*) FROM held), (SELECT COUNT(*) FROM saved)",
          {run.id, owner, run.status, final ? PgParam(run.finished_at) : PgParam::Null(),
           static_cast<int64_t>(run.to_version), run.total, run.done, run.reencrypted, run.skipped, run.failed,
           run.cursor, run.error, run.duration_ms});
    }));
    if (rows.size() == 0 || rows.Int(0, 0) == 0) return RotationLockLost(run.id);
    return OkStatus();
  }

  Result<bool> Heartbeat(const std::string& run_id, const std::string& owner) override {
    return db_->With<bool>([&](PgConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(PgRows rows, c.Query(
          "UPDATE rotation_lock SET heartbeat_at=" DYAD_PG_NOW_MS " WHERE run_id=$1 AND owner=$2", {run_id, owner}));
      return rows.Affected() > 0;
    });
  }

  Status Release(const std::string& run_id, const std::string& owner) override {
    return StatusOf(db_->With<bool>([&](PgConnection& c) -> Result<bool> {
      DYAD_RETURN_IF_ERROR(c.Query("DELETE FROM rotation_lock WHERE run_id=$1 AND owner=$2", {run_id, owner}));
      return true;
    }));
  }

  Result<std::optional<std::string>> LockHolder(Clock::Duration takeover) override {
    const int64_t takeover_ms = std::chrono::duration_cast<std::chrono::milliseconds>(takeover).count();
    return db_->With<std::optional<std::string>>([&](PgConnection& c) -> Result<std::optional<std::string>> {
      DYAD_ASSIGN_OR_RETURN(PgRows rows, c.Query(
          "SELECT run_id FROM rotation_lock WHERE id=1 AND " DYAD_PG_NOW_MS " - heartbeat_at < $1", {takeover_ms}));
      if (rows.size() == 0) return std::optional<std::string>();
      return std::optional<std::string>(rows.Text(0, 0));
    });
  }

  Result<std::optional<RotationRun>> LatestRunning() override {
    return db_->With<std::optional<RotationRun>>([&](PgConnection& c) -> Result<std::optional<RotationRun>> {
      DYAD_ASSIGN_OR_RETURN(PgRows rows, c.Query(std::string("SELECT ") + kRunColumns +
                                                     " FROM rotation_runs WHERE status='running' ORDER BY seq DESC "
                                                     "LIMIT 1"));
      if (rows.size() == 0) return std::optional<RotationRun>();
      return std::optional<RotationRun>(ReadRun(rows, 0));
    });
  }

  Result<RotationSuccesses> Successes() override {
    return db_->With<RotationSuccesses>([](PgConnection& c) { return CountSuccesses(c); });
  }

  Result<std::vector<RotationRun>> History(int limit) override {
    return db_->With<std::vector<RotationRun>>([&](PgConnection& c) -> Result<std::vector<RotationRun>> {
      DYAD_ASSIGN_OR_RETURN(PgRows rows, c.Query(std::string("SELECT ") + kRunColumns +
                                                     " FROM rotation_runs ORDER BY seq DESC LIMIT $1",
                                                 {static_cast<int64_t>(limit)}));
      std::vector<RotationRun> runs;
      for (int i = 0; i < rows.size(); ++i) runs.push_back(ReadRun(rows, i));
      return runs;
    });
  }

 private:
  std::shared_ptr<PgDb> db_;
};

}  // namespace

std::unique_ptr<RotationRepository> NewPgRotationRepository(std::shared_ptr<PgDb> db, const Clock& /*clock*/) {
  return std::make_unique<PgRotationRepository>(std::move(db));
}

}  // namespace dyad

#undef DYAD_PG_NOW_MS
