// RotationScheduler: starts scheduled key rotations.
//
// Two timings (RotationTiming): a cron schedule (KEY_ROTATION_SCHEDULE, UTC),
// or — when none is given — an interval since the last successful rotation
// (KEY_ROTATION_INTERVAL_HOURS). The interval counts from the latest run
// completed by any process on the registry database (manual, scheduled or
// key wear), or, before the first one, from when a scheduler first ran on
// the database (a stored setting): a restart never resets it, and a
// rotation missed while the service was down is due at the first tick after
// start. Two instances on one database start it once: the start is
// conditional on the count of completed runs it read (RotationRepository).
// A due interval whose run fails is tried again an hour later at the
// earliest (or after the interval, when shorter).
//
// Whether it is enabled is stored in the registry's settings
// (SettingsRepository) by the toggle endpoint, so the choice survives
// restarts; KEY_ROTATION_ENABLED gives the value until the first toggle.
// A run already in progress makes a scheduled start a no-op. A cron slot is
// used once a fresh run started for it (or rotation is disabled, or a run of
// any process on the database started in the slot's window — at or after its
// time, before the first slot after the tick's time: a run stamped in the
// future by a clock ahead uses no later slot — resumes
// aside: instances sharing a database run a slot once — the start is
// conditional on it, RotationRepository::Begin). A run that failed before
// making a key version (the KMS down) does not use its slot: the slot is
// retried once min(1 h, the period to the slot after it) has passed since
// that run started — counted from the shared history, so N instances retry
// once, not N times (the start condition admits one), and by a scheduler
// started since (it reads the outcome of the last slot before its start);
// a run that made a version and then failed has rotated the key and uses
// its slot, and so, for now, does a run that died before making one and
// whose resume failed (left 'interrupted', its resume 'failed': linking the
// two is not done). A slot whose tick only
// resumed a run left running, or met a run in progress, or whose start was
// refused (no thread, the database down) is tried again at the next tick.
// Independently
// of the schedule and the toggle, a rotation starts when the primary key
// version nears `max_encryptions` (key wear: at 15/16 of it), so random
// 96-bit nonces stay inside the NIST SP 800-38D bound. Each tick also
// resumes a run whose process is gone, once its lock can be taken over; a
// tick whose resume fails starts nothing else.
// Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <optional>
#include <thread>

#include "core/cron.h"
#include "core/mutex.h"
#include "core/thread.h"
#include "registry/settings_repository.h"
#include "service/key_rotation_service.h"

namespace dyad {

struct RotationTiming {
  std::optional<CronSchedule> cron;  // set: follow it; the interval is unused
  std::chrono::hours interval{168};
};

class RotationScheduler {
 public:
  using WallTime = std::chrono::system_clock::time_point;

  RotationScheduler(KeyRotationService& rotation, KeyManager& keys, std::shared_ptr<SettingsRepository> settings,
                    RotationTiming timing, bool enabled_by_env, uint64_t max_encryptions, const Clock& clock);
  ~RotationScheduler();

  // Starts the ticks' thread, once, at start-up: kUnavailable when the
  // system refuses it (a start-up error, never an exception).
  Status StartThread();
  Result<bool> Enabled();
  Status SetEnabled(bool enabled);
  // When the toggle stored in the registry disagrees with KEY_ROTATION_ENABLED,
  // a warning naming both; nullopt when they agree or nothing is stored.
  std::optional<std::string> ToggleOverride();
  // The next scheduled start (interval: the last success plus the interval,
  // which may lie in the past: then the next tick starts it).
  std::optional<WallTime> NextRun() DYAD_LOCKS_EXCLUDED(mu_);
  // "0 3 * * 0" (cron), or "every 720h since the last successful rotation".
  std::string Describe() const;
  const RotationTiming& timing() const { return timing_; }
  // Starts a rotation if the schedule is due at `now` or the key is worn,
  // or resumes a run left running; returns the id of the run it began.
  std::optional<std::string> Tick(WallTime now) DYAD_LOCKS_EXCLUDED(mu_);
  // Whether the primary version's encryptions (every process's) reached
  // 15/16 of the limit; not when the rotation that made it wore it alone
  // (more secrets than the limit allows: logged).
  bool KeyWorn();

 private:
  // Interval mode: when the interval began (the last success, else the
  // stored first start: stored at `now` when `store` and absent), and the
  // count of completed runs read with it.
  struct IntervalBase {
    std::optional<WallTime> since;
    int64_t successes = 0;
  };
  Result<IntervalBase> ReadIntervalBase(std::optional<WallTime> store);
  // Due now: the cron slot passed, or the interval ran out (and no failed
  // attempt waits for its retry), with the condition its start is
  // subject to (`start_if`: the count of successes, or the slot's time).
  // Uses no cron slot (but one another process ran: SlotDue): Tick does
  // (UseSlot), once a fresh run started for it.
  // `retry_of`: set when the start is a slot's retry (SlotDue).
  bool Due(WallTime now, StartConditions& start_if, std::string& retry_of) DYAD_LOCKS_EXCLUDED(mu_);
  // Cron mode: the slot passed, and no run (of any process: the rotation
  // history; resumes aside) started in its window (at or after it, before
  // the first slot after `now`), but a lone scheduled run that failed
  // before making a key version, whose back-off (SlotRetryBackoff, from its
  // start) is over: the slot's one retry (StartConditions::Window). A slot
  // so run is used here (logged at info); one whose lone scheduled run is
  // still running is handed to it (UseSlot as of its start). Reads the
  // outcome of the slot handed to a run (UseSlot) first. Sets
  // `start_if.if_none_started_in` to that window, and `retry_of` (for the
  // log) when the start is the slot's retry.
  bool SlotDue(WallTime now, StartConditions& start_if, std::string& retry_of) DYAD_LOCKS_EXCLUDED(mu_);
  // What the runs started in a slot's window say, as Begin judges them
  // (StartConditions::Window): a run that uses it (the latest begun: any
  // run once there are two, a lone one unless it is the schedule's and
  // failed before making a key version, or is still running), the lone
  // scheduled run still running, or when the slot's one retry is due.
  struct SlotRuns {
    const RotationRun* used_by = nullptr;
    std::optional<WallTime> running_since;  // the lone scheduled run still running: its start
    std::optional<WallTime> retry_at;
    const RotationRun* failed = nullptr;  // the lone run retry_at counts from
  };
  static SlotRuns ReadSlotRuns(const std::vector<RotationRun>& runs, WallTime from, WallTime to,
                               WallTime::duration backoff);
  // The slot a run was handed (UseSlot), whose outcome the next SlotDue reads.
  struct HandedSlot {
    WallTime slot;
    // When Begin refused the start because a run counted for the slot
    // (another instance's): unset when this process's run started.
    std::optional<WallTime> refused_at;
  };
  // min(1 h, the period from `slot` to the slot after it): a schedule more
  // frequent than hourly retries no later than it would have run anyway.
  WallTime::duration SlotRetryBackoff(WallTime slot) const;
  // The slot a cron start was conditional on (its window's start), handed
  // to the run that started, or to the one that made Begin refuse at `refused_at`.
  static std::optional<HandedSlot> SlotOf(const StartConditions& start_if,
                                          std::optional<WallTime> refused_at = std::nullopt);
  // Whether the slot handed to a run is due again, from the runs of its
  // window: its run failed before making a key version. After a refusal,
  // only when the runs read show one Begin counted then (a failed run whose
  // back-off was not over): otherwise the run Begin counted is one the
  // history read (20 rows) does not show, and it used the slot — re-armed,
  // the slot would be refused again at every tick.
  static bool DueAgain(const SlotRuns& runs, const HandedSlot& handed);
  // Cron mode: the slot due at `now` is used; the next one is after `now`.
  // `handed`: the slot a run started for (this process's or, when the start
  // condition refused, another's); the next SlotDue reads that run's
  // outcome (DueAgain).
  void UseSlot(WallTime now, std::optional<HandedSlot> handed = std::nullopt) DYAD_LOCKS_EXCLUDED(mu_);

  KeyRotationService& rotation_;
  KeyManager& keys_;
  std::shared_ptr<SettingsRepository> settings_;
  const RotationTiming timing_;
  const bool enabled_by_env_;
  const uint64_t max_encryptions_;
  const Clock& clock_;
  // The last version KeyWorn found worn by its own rotation (said once).
  std::atomic<uint32_t> futile_wear_warned_{0};
  // Waits up to 30 s (1 s while an interrupted run waits to resume), or until the destructor says stop; false when stopping.
  bool WaitForNextCheck() DYAD_LOCKS_EXCLUDED(mu_);

  mutable Mutex mu_;
  CondVar cv_;
  std::optional<WallTime> next_ DYAD_GUARDED_BY(mu_);           // cron mode
  // Interval mode: after a started run. Cron mode: when the slot is retried after a run that failed before
  // making a key version.
  std::optional<WallTime> retry_after_ DYAD_GUARDED_BY(mu_);
  // Cron mode: UseSlot's `handed`. At construction, the last slot at or
  // before then: a restart (before the retry of a slot whose run failed
  // before making a key version) reads that slot's outcome again.
  std::optional<HandedSlot> handed_ DYAD_GUARDED_BY(mu_);
  bool stopping_ DYAD_GUARDED_BY(mu_) = false;
  std::atomic<bool> resume_waiting_{false};
  std::thread thread_;
};

}  // namespace dyad
