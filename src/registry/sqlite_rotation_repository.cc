#include "registry/sqlite_rotation_repository.h"

namespace dyad {
namespace {

constexpr char kRunColumns[] =
    "id, trigger, status, force, started_at, COALESCE(finished_at,''), from_version, to_version, total, done, "
    "reencrypted, skipped, failed, cursor, error, duration_ms";

RotationRun ReadRun(const Statement& st) {
  RotationRun r;
  r.id = st.Text(0);
  r.trigger = st.Text(1);
  r.status = st.Text(2);
  r.force = st.Int(3) != 0;
  r.started_at = st.Text(4);
  r.finished_at = st.Text(5);
  r.from_version = static_cast<uint32_t>(st.Int(6));
  r.to_version = static_cast<uint32_t>(st.Int(7));
  r.total = st.Int(8);
  r.done = st.Int(9);
  r.reencrypted = st.Int(10);
  r.skipped = st.Int(11);
  r.failed = st.Int(12);
  r.cursor = st.Text(13);
  r.error = st.Text(14);
  r.duration_ms = st.Int(15);
  return r;
}

Result<RotationSuccesses> CountSuccesses(SqliteConnection& c) {
  DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
      "SELECT COUNT(*), COALESCE(MAX(finished_at), '') FROM rotation_runs WHERE status='completed'"));
  DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
  RotationSuccesses out;
  if (row) {
    out.count = st.Int(0);
    out.last_finished_at = st.Text(1);
  }
  return out;
}

// kFailedPrecondition when one of `start_if` does not hold (rotation_repository.h).
Status CheckStartConditions(SqliteConnection& c, const StartConditions& start_if) {
  if (start_if.if_successes) {
    DYAD_ASSIGN_OR_RETURN(RotationSuccesses done, CountSuccesses(c));
    if (done.count != *start_if.if_successes) {
      return MakeError(ErrorCode::kFailedPrecondition, "a key rotation completed meanwhile (at " +
                                                           done.last_finished_at + ")");
    }
  }
  if (const auto& window = start_if.if_none_started_in) {  // one fixed-width format: text order is time order
    // Every run counts but a scheduled one that failed before making a key
    // version, its back-off over, and alone in the window (rotation_repository.h).
    DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
        "SELECT id, started_at FROM rotation_runs WHERE trigger<>?1 AND started_at>=?2 AND started_at<?3 "
        "AND NOT (trigger=?5 AND status='failed' AND to_version=0 AND started_at<=?4 AND (SELECT COUNT(*) "
        "FROM rotation_runs WHERE trigger<>?1 AND started_at>=?2 AND started_at<?3)=1) "
        "ORDER BY rowid DESC LIMIT 1"));
    DYAD_ASSIGN_OR_RETURN(bool found, st.Bind(1, kResumedTrigger).Bind(2, window->from).Bind(3, window->to)
                                          .Bind(4, window->failed_by).Bind(5, kScheduledTrigger).Step());
    if (found) return StartedInWindow(st.Text(0), st.Text(1), *window);
  }
  return OkStatus();
}

class SqliteRotationRepository final : public RotationRepository {
 public:
  SqliteRotationRepository(std::shared_ptr<SqliteDb> db, const Clock& clock) : db_(std::move(db)), clock_(clock) {}

  Result<std::optional<std::string>> Begin(const RotationRun& run, const std::string& owner, Clock::Duration takeover,
                                           const std::string& interrupted_note, const StartConditions& start_if,
                                           const std::optional<std::string>& if_running) override {
    const int64_t now = WallSeconds();
    const int64_t takeover_s = std::chrono::duration_cast<std::chrono::seconds>(takeover).count();
    std::optional<std::string> holder;
    Status s = db_->Transaction([&](SqliteConnection& c) -> Status {
      DYAD_ASSIGN_OR_RETURN(Statement q, c.Prepare("SELECT run_id, heartbeat_at FROM rotation_lock WHERE id=1"));
      DYAD_ASSIGN_OR_RETURN(bool held, q.Step());
      if (held) {
        // Held while its heartbeat is fresh, whoever the owner is: its own
        // thread beats it, so only a process that is gone lets it go stale.
        if (now - q.Int(1) < takeover_s) {
          holder = q.Text(0);
          return OkStatus();  // nothing written
        }
      }
      if (if_running && if_running->empty()) {  // a fresh run: see rotation_repository.h
        DYAD_ASSIGN_OR_RETURN(Statement left, c.Prepare(
            "SELECT id FROM rotation_runs WHERE status='running' ORDER BY rowid DESC LIMIT 1"));
        DYAD_ASSIGN_OR_RETURN(bool found, left.Step());
        if (found) {
          holder = left.Text(0);
          return OkStatus();  // nothing written: the caller resumes it
        }
      }
      if (held) DYAD_RETURN_IF_ERROR(c.Exec("DELETE FROM rotation_lock WHERE id=1"));
      if (if_running && !if_running->empty()) {
        DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare("SELECT status FROM rotation_runs WHERE id=?"));
        DYAD_ASSIGN_OR_RETURN(bool found, st.Bind(1, *if_running).Step());
        if (!found || st.Text(0) != "running") {
          return MakeError(ErrorCode::kFailedPrecondition, "run " + *if_running + " is no longer running");
        }
      }
      DYAD_RETURN_IF_ERROR(CheckStartConditions(c, start_if));
      // Any run its owner left "running" is over: say so in its history entry.
      DYAD_ASSIGN_OR_RETURN(Statement mark, c.Prepare(
          "UPDATE rotation_runs SET status='interrupted', finished_at=?, error=? WHERE status='running'"));
      DYAD_RETURN_IF_ERROR(mark.Bind(1, run.started_at).Bind(2, interrupted_note).Run());
      DYAD_ASSIGN_OR_RETURN(Statement ins, c.Prepare(
          "INSERT INTO rotation_lock(id, run_id, owner, heartbeat_at) VALUES(1,?,?,?)"));
      DYAD_RETURN_IF_ERROR(ins.Bind(1, run.id).Bind(2, owner).Bind(3, now).Run());
      DYAD_ASSIGN_OR_RETURN(Statement row, c.Prepare(
          "INSERT INTO rotation_runs(id, trigger, status, force, started_at, from_version, to_version, cursor) "
          "VALUES(?,?,?,?,?,?,?,?)"));
      return row.Bind(1, run.id).Bind(2, run.trigger).Bind(3, run.status).Bind(4, static_cast<int64_t>(run.force))
          .Bind(5, run.started_at).Bind(6, static_cast<int64_t>(run.from_version))
          .Bind(7, static_cast<int64_t>(run.to_version)).Bind(8, run.cursor).Run();
    });
    if (!s.ok()) return s.error();
    return holder;
  }

  // The lock row first: a save by an owner that lost the lock writes nothing.
  Status SaveProgress(const RotationRun& run, const std::string& owner, bool final) override {
    const int64_t now = WallSeconds();
    return db_->Transaction([&](SqliteConnection& c) -> Status {
      DYAD_ASSIGN_OR_RETURN(Statement hb, c.Prepare(
          "UPDATE rotation_lock SET heartbeat_at=? WHERE run_id=? AND owner=?"));
      DYAD_RETURN_IF_ERROR(hb.Bind(1, now).Bind(2, run.id).Bind(3, owner).Run());
      if (c.Changes() == 0) return RotationLockLost(run.id);
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
          "UPDATE rotation_runs SET status=?, finished_at=?, to_version=?, total=?, done=?, reencrypted=?, skipped=?, "
          "failed=?, cursor=?, error=?, duration_ms=? WHERE id=?"));
      st.Bind(1, run.status);
      if (final) st.Bind(2, run.finished_at);
      else st.BindNull(2);
      return st.Bind(3, static_cast<int64_t>(run.to_version)).Bind(4, run.total).Bind(5, run.done)
          .Bind(6, run.reencrypted).Bind(7, run.skipped).Bind(8, run.failed).Bind(9, run.cursor)
          .Bind(10, run.error).Bind(11, run.duration_ms).Bind(12, run.id).Run();
    });
  }

  Result<bool> Heartbeat(const std::string& run_id, const std::string& owner) override {
    return db_->With<bool>([&](SqliteConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
          "UPDATE rotation_lock SET heartbeat_at=? WHERE run_id=? AND owner=?"));
      DYAD_RETURN_IF_ERROR(st.Bind(1, WallSeconds()).Bind(2, run_id).Bind(3, owner).Run());
      return c.Changes() > 0;
    });
  }

  Status Release(const std::string& run_id, const std::string& owner) override {
    auto r = db_->With<bool>([&](SqliteConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare("DELETE FROM rotation_lock WHERE run_id=? AND owner=?"));
      DYAD_RETURN_IF_ERROR(st.Bind(1, run_id).Bind(2, owner).Run());
      return true;
    });
    if (!r.ok()) return r.error();
    return OkStatus();
  }

  Result<std::optional<std::string>> LockHolder(Clock::Duration takeover) override {
    const int64_t takeover_s = std::chrono::duration_cast<std::chrono::seconds>(takeover).count();
    return db_->With<std::optional<std::string>>([&](SqliteConnection& c) -> Result<std::optional<std::string>> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
          "SELECT run_id FROM rotation_lock WHERE id=1 AND ? - heartbeat_at < ?"));
      DYAD_ASSIGN_OR_RETURN(bool held, st.Bind(1, WallSeconds()).Bind(2, takeover_s).Step());
      if (!held) return std::optional<std::string>();
      return std::optional<std::string>(st.Text(0));
    });
  }

  Result<std::optional<RotationRun>> LatestRunning() override {
    return db_->With<std::optional<RotationRun>>([&](SqliteConnection& c) -> Result<std::optional<RotationRun>> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(std::string("SELECT ") + kRunColumns +
                                                     " FROM rotation_runs WHERE status='running' ORDER BY rowid DESC LIMIT 1"));
      DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) return std::optional<RotationRun>();
      return std::optional<RotationRun>(ReadRun(st));
    });
  }

  Result<RotationSuccesses> Successes() override {
    return db_->With<RotationSuccesses>([](SqliteConnection& c) { return CountSuccesses(c); });
  }

  Result<std::vector<RotationRun>> History(int limit) override {
    return db_->With<std::vector<RotationRun>>([&](SqliteConnection& c) -> Result<std::vector<RotationRun>> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(std::string("SELECT ") + kRunColumns +
                                                     " FROM rotation_runs ORDER BY rowid DESC LIMIT ?"));
      st.Bind(1, static_cast<int64_t>(limit));
      std::vector<RotationRun> runs;
      while (true) {
        DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
        if (!row) return runs;
        runs.push_back(ReadRun(st));
      }
    });
  }

 private:
  int64_t WallSeconds() const {
    return std::chrono::duration_cast<std::chrono::seconds>(clock_.WallNow().time_since_epoch()).count();
  }

  std::shared_ptr<SqliteDb> db_;
  const Clock& clock_;
};

}  // namespace

std::unique_ptr<RotationRepository> NewSqliteRotationRepository(std::shared_ptr<SqliteDb> db, const Clock& clock) {
  return std::make_unique<SqliteRotationRepository>(std::move(db), clock);
}

}  // namespace dyad
