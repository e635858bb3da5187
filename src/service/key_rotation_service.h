// KeyRotationService: rotates the KMS key and re-encrypts every stored
// credential onto the new version (DESIGN.md §7).
//
// One rotation at a time: in process, and across processes through the
// rotation lock (RotationRepository), owned by a random lease id and kept by
// a heartbeat beaten from a thread of its own (a lock whose heartbeat is older than
// `lock_takeover` is taken over). A run whose lock was taken over — a beat
// or a save finds it gone (RotationLockLost) — stops as "lock lost" and
// writes nothing more: no progress, no release, no retirement (each
// retirement step first renews the lease, so it starts within
// `lock_takeover` of a beat that proved the lock still ours, and checks the
// lease again when it returns, so no step follows one that ran into a
// takeover); the new owner resumes it from its cursor.
// A run rotates the key, then
// visits every secret in name order in batches (one read and one
// conditional write per batch), writing each rewrapped blob only where the
// stored value is still the one rewrapped — writers hold the provider's
// write lock and seal under the new primary, so a credential updated
// meanwhile is never overwritten by an older value; each rewrapped blob must
// open before it replaces the old one; progress (counts and the last name visited) is saved after every
// batch, so a run cut short is resumed from there; when nothing failed, the
// older key versions are retired in two steps (RetireOlderVersions): no
// blob is ever left on a retired version, whatever another instance writes
// meanwhile. Readers never wait. Thread-safe.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/mutex.h"
#include "core/worker.h"
#include "registry/rotation_repository.h"
#include "service/secrets_service.h"

namespace dyad {

struct DryRunReport {
  uint32_t primary_version = 0;
  std::map<uint32_t, int64_t> secrets_per_version;
  int64_t unreadable = 0;
  int64_t would_reencrypt = 0;
};

using RotationProgress = std::function<void(const RotationRun&)>;

class KeyRotationService {
 public:
  struct Options {
    size_t batch_size = 500;
    // Secrets of a batch rewrapped at once: 1 for a local key manager, more
    // for a remote KMS whose round trips would otherwise add up.
    size_t parallelism = 1;
    // The lock's heartbeat period (real time, on a thread of its own), and
    // how old a heartbeat must be before another process takes the lock.
    Clock::Duration heartbeat_interval = std::chrono::seconds(1);
    Clock::Duration lock_takeover = std::chrono::seconds(10);
    // Between marking the older versions retiring and the recount that
    // retires them: longer than the 1 s in which every instance learns the
    // primary, so writers rarely have to seal twice.
    Clock::Duration retire_grace = std::chrono::seconds(2);
    // After a resume it paused (no heartbeat), this process resumes again
    // no sooner than this, doubled at each pause up to 1 h (zero: at once).
    Clock::Duration resume_backoff = std::chrono::minutes(1);
    // Optional: runs and their batches are counted here (dyad_key_rotation_*).
    Metrics* metrics = nullptr;
    // Starts the thread a run reads its next batch on (Worker::Start when
    // unset); a run whose worker does not start reads each batch in its turn.
    std::function<Result<std::unique_ptr<Worker>>()> start_worker = nullptr;
    // Starts the thread background runs (Start, ResumeInterrupted) run on,
    // and each run's heartbeat (StartThread when unset; core/thread.h).
    ThreadStarter start_thread = nullptr;
  };

  // `runs` keeps the lock and the history; give it the same clock.
  KeyRotationService(Options options, std::shared_ptr<RotationRepository> runs, SecretsService& secrets,
                     AuditSink& audit, const Clock& clock);
  // Stops a background run after its current batch: its progress is saved
  // and the lock released, and the next start resumes it.
  ~KeyRotationService();
  // Asks a background run to stop after its current batch, as the
  // destructor does (which then waits for it).
  void RequestStop() { stopping_ = true; }

  // Starts a run on a background thread and returns it as it began (its
  // id, trigger and force); kConflict names the running run. A run left
  // "running" (its process gone, or paused: below) is resumed instead of a
  // fresh one (BeginOrResume): the answer is then the resume (trigger
  // kResumedTrigger, that run's `force`), not the run asked for — a caller
  // that wants a fresh rotation asks again once the resume is over.
  // `start_if` (a scheduler's: StartConditions) is checked when the lock is
  // taken, in any process (else kFailedPrecondition); a resume is not
  // subject to it. kUnavailable when that thread
  // cannot be started (the system's limit): it is started before the lock
  // is taken, so nothing is claimed or written and the next call tries
  // again. A run (here or in Run) whose heartbeat cannot be started does
  // not go on without it: before it rotates anything it ends as failed
  // ("cannot start a thread for the rotation lock's heartbeat: …") and
  // releases the lock. A resumed run (ResumeInterrupted) instead releases the
  // lock and stays "running" with that error, for the next attempt to resume
  // at its cursor (a failed one would be lost, and the next run rotate again).
  Result<RotationRun> Start(bool force, const std::string& trigger, const Caller& caller,
                            const StartConditions& start_if = {});
  // Runs to the end on this thread (the CLI); a run left "running" is
  // resumed instead, as by Start (the answer's trigger is then "resumed").
  Result<RotationRun> Run(bool force, const std::string& trigger, const Caller& caller,
                          const RotationProgress& progress = nullptr);
  // Resumes, in the background, a run left "running" by a process that is
  // gone; returns its new id, or nullopt when there is none (kUnavailable
  // as Start's, with the run left as it was; also while this process backs
  // off after a resume it paused (Options::resume_backoff), until a
  // heartbeat starts — so a lasting refusal of threads adds a history row
  // and an audit event per back-off, not per scheduler tick — but only when
  // the run's lock is free or stale: a held one, whoever is at the run, is
  // waited for whether or not this process backs off). `waiting` (if
  // given) says whether a run is left whose lock is still held: it can be
  // taken over once its heartbeat is `lock_takeover` old.
  Result<std::optional<std::string>> ResumeInterrupted(const Caller& caller, bool* waiting = nullptr);
  // Whether this process backs off its resumes (see ResumeInterrupted): a
  // caller that waits for a held run then starts nothing either, since a
  // start resumes the run should its lock go stale meanwhile.
  bool BackingOffResumes() DYAD_LOCKS_EXCLUDED(mu_);
  void WaitIdle();

  Result<std::vector<RotationRun>> History(int limit);
  // The completed runs of every process on the database.
  Result<RotationSuccesses> Successes();
  std::optional<RotationRun> Current();
  // Counts secrets per key version; writes nothing.
  Result<DryRunReport> DryRun();

 private:
  Result<RotationRun> Begin(bool force, const std::string& trigger, const RotationRun* resume_from,
                            const StartConditions& start_if = {}) DYAD_LOCKS_EXCLUDED(mu_);
  // Begins a fresh run, unless a run is left "running" (its process gone, or
  // paused): that one is resumed (trigger "resumed"), since a fresh run would
  // rotate the KMS key again and re-encrypt every credential a second time.
  Result<RotationRun> BeginOrResume(bool force, const std::string& trigger, const StartConditions& start_if)
      DYAD_LOCKS_EXCLUDED(mu_);
  Status Execute(RotationRun& run, const Caller& caller, const RotationProgress& progress);
  Status SaveProgress(const RotationRun& run, bool final);
  // Renews the lock's heartbeat; false when another process holds it now.
  bool Beat(const std::string& run_id);
  Status RetireOlderVersions(RotationRun& run, const std::function<Status()>& fence);
  void ReleaseLock(const std::string& run_id) DYAD_LOCKS_EXCLUDED(mu_);
  // After a pause (`paused`) the next resume waits longer; a run whose
  // heartbeat started ends the back-off.
  void BackOffResumes(bool paused) DYAD_LOCKS_EXCLUDED(mu_);
  // kUnavailable while backing off (per process: naming no run, since the
  // run left may be another instance's).
  Status ResumeAllowed() DYAD_LOCKS_EXCLUDED(mu_);
  // ResumeAllowed, but only when the lock is free or stale: while backing
  // off, a held lock sets `held` instead, with no error.
  Status ResumeAllowedUnlessHeld(bool& held) DYAD_LOCKS_EXCLUDED(mu_);
  // This process is no longer at the run (the lock is released, or lost).
  void ForgetRun() DYAD_LOCKS_EXCLUDED(mu_);
  // The thread background runs go on, started on first use (before Begin
  // claims anything) and kept: kUnavailable when it cannot be.
  Status StartRunThread() DYAD_LOCKS_EXCLUDED(worker_mu_);
  void Launch(RotationRun run, const Caller& caller) DYAD_LOCKS_EXCLUDED(worker_mu_);
  struct Reencrypted {
    int64_t reencrypted = 0, skipped = 0, failed = 0;
    std::string first_error;
  };
  // Moves `names` to `to_version` (only blobs on a version `wants`, if given):
  // Write(Read(…)). Read only reads and rewraps (it writes nothing, so the
  // next batch's can run while this one's Write does).
  struct ReadBatch {
    std::vector<std::string> names;
    bool conditional = false;  // the store writes conditionally: `swaps` are the batch's writes
    std::vector<SecretStore::Swap> swaps;
    Reencrypted counted;  // skipped and failed before any write
  };
  Reencrypted Reencrypt(const std::vector<std::string>& names, uint32_t to_version, bool force,
                        const std::function<bool(uint32_t)>& wants);
  ReadBatch Read(std::vector<std::string> names, uint32_t to_version, bool force,
                 const std::function<bool(uint32_t)>& wants);
  Reencrypted Write(ReadBatch batch, uint32_t to_version, bool force, const std::function<bool(uint32_t)>& wants);
  Result<bool> ReencryptHeld(const std::string& name, uint32_t to_version, bool force,
                             const std::function<bool(uint32_t)>& wants);

  Options options_;
  std::shared_ptr<RotationRepository> runs_;
  SecretsService& secrets_;
  AuditSink& audit_;
  const Clock& clock_;
  const std::string owner_;

  Mutex mu_;
  CondVar idle_cv_;
  std::optional<RotationRun> current_ DYAD_GUARDED_BY(mu_);  // the run in this process
  Clock::Duration resume_backoff_ DYAD_GUARDED_BY(mu_){0};     // zero: not backing off
  Clock::Instant resume_after_ DYAD_GUARDED_BY(mu_){};
  std::atomic<bool> stopping_{false};
  Mutex worker_mu_;  // StartRunThread, Launch and the destructor
  std::unique_ptr<Worker> worker_ DYAD_GUARDED_BY(worker_mu_);  // runs one background run at a time
};

}  // namespace dyad
