// RotationRepository: the state of key rotations kept in the registry
// database — the deployment-wide rotation lock, and the history of runs with
// each run's progress (counts and the resumable cursor).
//
// The lock is a lease: one row naming the run holding it, its owner (a
// random lease id per process) and a heartbeat. It is held while its
// heartbeat is younger than the takeover age the caller passes; an older one
// is taken over, whoever holds it. Heartbeats are written and judged on one
// clock: SQLite (processes on one host) uses the repository's injected
// clock; PostgreSQL uses the database server's clock (clock_timestamp()),
// never an instance's, so skew between hosts cannot make a live lease look
// stale. Atomic, also against other instances on the same database: Begin
// (the lock check, the takeover, marking runs left 'running' as interrupted,
// taking the lock and recording the new run: all or nothing), SaveProgress,
// Heartbeat and Release (each changes anything only while (run id, owner)
// still holds the lock: an owner whose lease was taken over cannot touch the
// run history or the new owner's lease). Two instances may see a run as
// 'running' in History while its owner is gone: only the lock says whether
// anyone is at it.
//
// What this guarantees an owner: after a Heartbeat that returned true (or a
// SaveProgress that succeeded), no other instance takes the lock over until
// `takeover` has passed on the lock's clock. A write outside this repository
// that must not happen after a takeover (retiring key versions) is safe when
// it follows a successful Heartbeat by less than `takeover`.
//
// Thread-safe. Errors: kUnavailable when the database cannot be reached or
// stays busy, with the database's message; kConflict (RotationLockLost) from
// SaveProgress when (run id, owner) no longer holds the lock.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/result.h"

namespace dyad {

// The trigger of a run that resumes one left 'running'.
inline constexpr char kResumedTrigger[] = "resumed";
// The trigger of a run the scheduler starts (its schedule or key wear).
inline constexpr char kScheduledTrigger[] = "scheduled";

struct RotationRun {
  std::string id;
  std::string trigger;  // manual | scheduled | resumed
  std::string status;   // running | completed | failed | interrupted
  bool force = false;
  std::string started_at, finished_at;
  uint32_t from_version = 0, to_version = 0;
  int64_t total = 0, done = 0, reencrypted = 0, skipped = 0, failed = 0;
  std::string cursor;  // last secret name visited
  std::string error;
  int64_t duration_ms = 0;
};

// The completed runs: how many there are, and when the latest finished.
struct RotationSuccesses {
  int64_t count = 0;
  std::string last_finished_at;  // ISO 8601; empty when count is 0
};

// What a scheduler checked before it asked for a run, checked again by
// Begin in the transaction that takes the lock (a read before it could be
// stale by then: another instance may have begun, and even finished, a run
// in between). Empty: no condition.
struct StartConditions {
  // Exactly that many runs have completed (interval mode): none completed
  // since the scheduler read the count.
  std::optional<int64_t> if_successes;
  // No run started in [from, to) (cron mode: from the slot's time to the
  // next slot's, ISO 8601 times as FormatIso8601 writes them), resumes
  // aside: a resume stands for the run it resumes, whose own started_at
  // counts. Bounded above: a run stamped in the future (a clock days ahead)
  // uses no slot but its own, not every slot until that date. One run
  // alone uses no slot: the schedule's (trigger 'scheduled'), failed before
  // making a key version (status 'failed', to_version 0: nothing rotated,
  // e.g. the KMS down at the slot's minute), its back-off over (it started
  // at or before `failed_by`; empty: every run counts). So a slot is
  // retried once, by one instance: the retry is a second run in the
  // window, which uses the slot whatever its outcome. Any other run (a
  // manual one, one that made a key version) uses it, as it always did.
  struct Window {
    std::string from, to;
    std::string failed_by;
  };
  std::optional<Window> if_none_started_in;
};

// What Begin returns when a run (`run_id`, started at `started_at`) started
// in StartConditions::if_none_started_in's window.
inline Error StartedInWindow(const std::string& run_id, const std::string& started_at,
                             const StartConditions::Window& window) {
  return MakeError(ErrorCode::kFailedPrecondition, "key rotation " + run_id + " started at " + started_at +
                                                       ", in [" + window.from + ", " + window.to + ")");
}

// What SaveProgress returns when the lock has gone to another owner.
inline Error RotationLockLost(const std::string& run_id) {
  return MakeError(ErrorCode::kConflict,
                   "rotation lock lost: run " + run_id + " no longer holds it (another instance took the lease over)");
}

class RotationRepository {
 public:
  virtual ~RotationRepository() = default;

  // Takes the lock for `run` under `owner` and records `run` (its id,
  // trigger, status, force, started_at, versions and cursor). When another
  // holder's heartbeat is younger than `takeover`, writes nothing and
  // returns that holder's run id; otherwise (free, or taken over) every run
  // still 'running' is first marked 'interrupted' with finished_at =
  // run.started_at and error = `interrupted_note`, and nullopt is returned.
  // With `start_if` (StartConditions), also writes nothing, and returns
  // kFailedPrecondition, when a condition does not hold. With
  // `if_running`, writes nothing unless that run is still 'running'
  // (kFailedPrecondition): a resume of a run whose owner finished it, and
  // let its lock go, since it was read resumes nothing. With `if_running`
  // empty (a fresh run), writes nothing while a run is left 'running' (its
  // lock free or stale) and returns that run's id as it returns a holder's:
  // superseding it would rotate the key again and re-encrypt every secret a
  // second time, so the caller resumes it instead.
  virtual Result<std::optional<std::string>> Begin(const RotationRun& run, const std::string& owner,
                                                   Clock::Duration takeover, const std::string& interrupted_note,
                                                   const StartConditions& start_if = {},
                                                   const std::optional<std::string>& if_running = std::nullopt) = 0;

  // Saves the run's status, versions, counts, cursor, error and duration
  // (finished_at only when `final`, else cleared) and beats the heartbeat,
  // together, only while (run.id, owner) holds the lock; otherwise writes
  // nothing and returns RotationLockLost (kConflict): another instance took
  // the lease over and may have resumed the run under a new id.
  virtual Status SaveProgress(const RotationRun& run, const std::string& owner, bool final) = 0;

  // Beats the heartbeat; false when (run_id, owner) no longer holds the lock.
  virtual Result<bool> Heartbeat(const std::string& run_id, const std::string& owner) = 0;

  // Frees the lock if (run_id, owner) still holds it.
  virtual Status Release(const std::string& run_id, const std::string& owner) = 0;

  // The run holding the lock, if its heartbeat is younger than `takeover`
  // (judged as Begin judges it); nullopt when the lock is free or stale.
  // A read only: by the time it returns the answer may have changed.
  virtual Result<std::optional<std::string>> LockHolder(Clock::Duration takeover) = 0;

  // The most recently started run still 'running', if any.
  virtual Result<std::optional<RotationRun>> LatestRunning() = 0;

  // The completed runs (what an interval counts from).
  virtual Result<RotationSuccesses> Successes() = 0;

  // Up to `limit` runs, the most recently started first.
  virtual Result<std::vector<RotationRun>> History(int limit) = 0;
};

}  // namespace dyad
