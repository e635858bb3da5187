#include "service/rotation_scheduler.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "core/time_format.h"

namespace dyad {

namespace {
constexpr char kEnabledKey[] = "key_rotation.enabled";
// Interval mode, before any rotation completed: when a scheduler first ran.
constexpr char kIntervalSinceKey[] = "key_rotation.interval_since";

// A scheduled run that failed before making a key version rotated nothing
// (the KMS down at the slot's minute): alone in its slot's window, it does
// not use the slot once its back-off is over. One that made a version has
// rotated the key, failed or not: its resume and re-encryption path finish
// the rest. A manual run uses the slot whatever its outcome, as any run did
// before slots were retried: a slot missed while down stays missed.
bool ScheduledAndFailedBeforeAKeyVersion(const RotationRun& run) {
  return run.trigger == kScheduledTrigger && run.status == "failed" && run.to_version == 0;
}
}  // namespace

RotationScheduler::RotationScheduler(KeyRotationService& rotation, KeyManager& keys,
                                     std::shared_ptr<SettingsRepository> settings, RotationTiming timing,
                                     bool enabled_by_env, uint64_t max_encryptions, const Clock& clock)
    : rotation_(rotation), keys_(keys), settings_(std::move(settings)), timing_(std::move(timing)),
      enabled_by_env_(enabled_by_env), max_encryptions_(max_encryptions), clock_(clock),
      next_(timing_.cron ? timing_.cron->Next(clock.WallNow()) : std::nullopt) {
  if (timing_.cron) {
    std::optional<WallTime> last = timing_.cron->Prev(clock.WallNow());
    if (last) handed_ = HandedSlot{*last, std::nullopt};
  }
}

RotationScheduler::~RotationScheduler() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  cv_.SignalAll();
  if (thread_.joinable()) thread_.join();
}

Status RotationScheduler::StartThread() {
  resume_waiting_ = true;  // until the first tick looks
  auto started = dyad::StartThread([this] {
    while (WaitForNextCheck()) Tick(clock_.WallNow());
  });
  if (!started.ok()) {
    return MakeError(started.code(), "cannot start the key rotation scheduler's thread: " + started.error().message);
  }
  thread_ = std::move(started).value();
  return OkStatus();
}

bool RotationScheduler::WaitForNextCheck() {
  MutexLock lock(&mu_);
  // Wall-clock schedule: re-check often; every second while a run left by a
  // process that is gone waits for its lock to go stale.
  if (!stopping_) cv_.WaitFor(&mu_, resume_waiting_ ? std::chrono::seconds(1) : std::chrono::seconds(30));
  return !stopping_;
}

Result<bool> RotationScheduler::Enabled() {
  auto value = settings_->Get(kEnabledKey);
  if (!value.ok()) return value.error();
  return value->has_value() ? value->value() == "true" : enabled_by_env_;
}

Status RotationScheduler::SetEnabled(bool enabled) {
  return settings_->Put(kEnabledKey, enabled ? "true" : "false");
}

std::optional<std::string> RotationScheduler::ToggleOverride() {
  auto stored = settings_->Get(kEnabledKey);
  if (!stored.ok() || !stored->has_value() || (**stored == "true") == enabled_by_env_) return std::nullopt;
  return "scheduled key rotation is " + std::string(**stored == "true" ? "enabled" : "disabled") +
         " by the toggle stored in the registry (key_rotation.enabled=" + **stored +
         ", set by POST /admin/secrets/key-rotation/toggle), which overrides KEY_ROTATION_ENABLED=" +
         (enabled_by_env_ ? "true" : "false");
}

std::string RotationScheduler::Describe() const {
  if (timing_.cron) return timing_.cron->expression();
  return "every " + std::to_string(timing_.interval.count()) + "h since the last successful rotation";
}

Result<RotationScheduler::IntervalBase> RotationScheduler::ReadIntervalBase(std::optional<WallTime> store) {
  IntervalBase base;
  DYAD_ASSIGN_OR_RETURN(RotationSuccesses done, rotation_.Successes());
  base.successes = done.count;
  if (done.count > 0) {
    base.since = ParseIso8601(done.last_finished_at);
    if (!base.since) return MakeError(ErrorCode::kDataLoss, "rotation_runs.finished_at: '" + done.last_finished_at +
                                                                "' is not an ISO 8601 time");
    return base;
  }
  std::optional<std::string> since;
  if (store) {
    DYAD_ASSIGN_OR_RETURN(since, settings_->PutIfAbsent(kIntervalSinceKey, FormatIso8601(*store)));
  } else {
    DYAD_ASSIGN_OR_RETURN(since, settings_->Get(kIntervalSinceKey));
  }
  if (since) base.since = ParseIso8601(*since);
  return base;
}

std::optional<RotationScheduler::WallTime> RotationScheduler::NextRun() {
  if (timing_.cron) {  // a slot waiting out a failed run's back-off: when it is retried
    MutexLock lock(&mu_);
    if (next_ && retry_after_) return std::max(*next_, *retry_after_);
    return next_;
  }
  auto base = ReadIntervalBase(std::nullopt);
  if (!base.ok()) return std::nullopt;
  WallTime next = (base->since ? *base->since : clock_.WallNow()) + timing_.interval;
  MutexLock lock(&mu_);
  if (retry_after_) next = std::max(next, *retry_after_);
  return next;
}

bool RotationScheduler::Due(WallTime now, StartConditions& start_if, std::string& retry_of) {
  if (timing_.cron) return SlotDue(now, start_if, retry_of);
  {
    MutexLock lock(&mu_);
    if (retry_after_ && now < *retry_after_) return false;
  }
  auto base = ReadIntervalBase(now);
  if (!base.ok()) {
    spdlog::warn("cannot read when the key was last rotated: {}", base.error().message);
    return false;
  }
  if (!base->since || now < *base->since + timing_.interval) return false;
  start_if.if_successes = base->successes;
  return true;
}

RotationScheduler::WallTime::duration RotationScheduler::SlotRetryBackoff(WallTime slot) const {
  std::optional<WallTime> next = timing_.cron->Next(slot);
  return next ? std::min<WallTime::duration>(std::chrono::hours(1), *next - slot) : std::chrono::hours(1);
}

// The runs of the shared history (resumes aside: a resume stands for an
// older run, whose own start counts) that started in a slot's window [from,
// to), judged as Begin judges them: a second run is the slot's retry (or
// another instance's run), and uses it whatever its outcome.
RotationScheduler::SlotRuns RotationScheduler::ReadSlotRuns(const std::vector<RotationRun>& runs, WallTime from,
                                                            WallTime to, WallTime::duration backoff) {
  SlotRuns out;
  const RotationRun* latest = nullptr;
  WallTime latest_started;
  for (const RotationRun& run : runs) {  // the latest begun first
    if (run.trigger == kResumedTrigger) continue;
    std::optional<WallTime> started = ParseIso8601(run.started_at);
    if (!started || *started < from || *started >= to) continue;
    if (latest) {  // a second run: the slot's retry, or another instance's run
      out.used_by = latest;
      return out;
    }
    latest = &run;
    latest_started = *started;
  }
  if (!latest) return out;
  if (ScheduledAndFailedBeforeAKeyVersion(*latest)) {
    out.retry_at = latest_started + backoff;
    out.failed = latest;
  } else if (latest->trigger == kScheduledTrigger && latest->status == "running") {
    out.running_since = latest_started;  // its outcome says whether it uses the slot
  } else {
    out.used_by = latest;
  }
  return out;
}

bool RotationScheduler::SlotDue(WallTime now, StartConditions& start_if, std::string& retry_of) {
  std::optional<HandedSlot> handed;
  std::optional<WallTime> next;
  {
    MutexLock lock(&mu_);
    handed = handed_;
    next = next_;
  }
  if (!handed && (!next || now < *next)) return false;
  // Which slots were used is this process's memory only: another instance
  // may have run this one already. Its run is in the shared history. Every
  // run of the look-back is read, not only the latest: runs stamped by
  // skewed clocks are not in start order. This read only spares a start:
  // the condition is the guarantee, checked where the lock is taken, for a
  // run begun after this read.
  constexpr int kLookBack = 20;
  auto runs = rotation_.History(kLookBack);
  if (!runs.ok()) {  // not known: tried again at the next tick
    spdlog::warn("cannot read the key rotation history: {}", runs.error().message);
    return false;
  }
  const WallTime kHorizon = now + std::chrono::hours(24 * 366 * 8);  // no slot within cron's eight years
  if (handed) {
    // The outcome of the run the slot was handed to, in the window UseSlot
    // gave it (up to the `next_` it set): a run still running keeps it; a
    // lone scheduled one that failed before making a key version makes it
    // due again, for its one retry.
    SlotRuns of_handed = ReadSlotRuns(*runs, handed->slot, next.value_or(kHorizon), SlotRetryBackoff(handed->slot));
    if (of_handed.running_since && !of_handed.used_by) return false;
    MutexLock lock(&mu_);
    handed_.reset();
    if (DueAgain(of_handed, *handed)) next_ = next = handed->slot;
  }
  if (!next || now < *next) return false;
  const WallTime slot = *next;
  // A run counts for the slot only if it started before the slot after
  // `now`: a run stamped in the future (a clock days ahead) would otherwise
  // use every slot until that date. Not the slot after `slot`: a slot kept
  // due past it (its ticks met a resume in progress) is run late, and that
  // run, like UseSlot(now), stands for every slot up to `now` — on every
  // instance that kept it due. No next slot within cron's eight-year
  // horizon: the horizon ends the window.
  const WallTime slot_end = timing_.cron->Next(now).value_or(kHorizon);
  // A lone scheduled run that failed before making a key version waits out
  // its back-off, counted from its start in the shared history, so that
  // every instance retries at the same time and the start condition lets
  // only one through: that retry, failed too, uses the slot.
  const WallTime::duration backoff = SlotRetryBackoff(slot);
  SlotRuns in_window = ReadSlotRuns(*runs, slot, slot_end, backoff);
  if (in_window.used_by) {
    spdlog::info("cron slot {} already run by key rotation {}, started {}", FormatIso8601(slot), in_window.used_by->id,
                 in_window.used_by->started_at);
    UseSlot(now);
    return false;
  }
  if (in_window.running_since) {
    // Another instance's run (this process's own was handed the slot when
    // it started): handed the slot as of its start, as its own instance
    // did, and its outcome read as a handed run's (DueAgain). Left due
    // instead, the slot's window would grow past the next slot while the
    // run outlasts the period, and the run, once resumed (its owner gone),
    // would use that next slot too, though it started before it.
    UseSlot(*in_window.running_since, HandedSlot{slot, std::nullopt});
    return false;
  }
  {
    MutexLock lock(&mu_);
    retry_after_ = in_window.retry_at;
  }
  if (in_window.retry_at && now < *in_window.retry_at) return false;
  start_if.if_none_started_in =
      StartConditions::Window{FormatIso8601(slot), FormatIso8601(slot_end), FormatIso8601(now - backoff)};
  if (in_window.failed) {
    retry_of = "retry of cron slot " + FormatIso8601(slot) + " after key rotation " + in_window.failed->id +
               " failed before making a key version";
  }
  return true;  // used by Tick (UseSlot), once a fresh run started for it
}

bool RotationScheduler::DueAgain(const SlotRuns& runs, const HandedSlot& handed) {
  if (runs.used_by || !runs.retry_at) return false;
  // Begin counted a failed run while it started after `now - backoff`,
  // i.e. while retry_at (its start + backoff) was after `now`.
  return !handed.refused_at || *runs.retry_at > *handed.refused_at;
}

std::optional<RotationScheduler::HandedSlot> RotationScheduler::SlotOf(const StartConditions& start_if,
                                                                      std::optional<WallTime> refused_at) {
  if (!start_if.if_none_started_in) return std::nullopt;
  std::optional<WallTime> slot = ParseIso8601(start_if.if_none_started_in->from);
  if (!slot) return std::nullopt;
  return HandedSlot{*slot, refused_at};
}

void RotationScheduler::UseSlot(WallTime now, std::optional<HandedSlot> handed) {
  if (!timing_.cron) return;
  MutexLock lock(&mu_);
  next_ = timing_.cron->Next(now);
  handed_ = handed;
  retry_after_.reset();
}

bool RotationScheduler::KeyWorn() {
  auto state = keys_.Describe();
  if (!state.ok()) return false;
  const uint64_t threshold = max_encryptions_ - max_encryptions_ / 16;
  for (const auto& v : state->versions) {
    if (v.version != state->primary_version) continue;
    if (v.encryptions < threshold) return false;
    // Worn by the re-encryptions of the rotation that made it: the next
    // one's would wear the version after it the same way (a rotation at
    // every tick). Not rotated for wear until the encryptions made since
    // reach the threshold too. Said once per version; the schedule still
    // rotates.
    auto last = rotation_.History(1);
    const uint64_t reencrypted =
        last.ok() && !last->empty() && last->front().to_version == v.version
            ? static_cast<uint64_t>(std::max<int64_t>(last->front().reencrypted, 0))
            : 0;
    if (reencrypted >= threshold && v.encryptions - std::min(v.encryptions, reencrypted) < threshold) {
      if (futile_wear_warned_.exchange(v.version) != v.version) {
        spdlog::error("key version {} is worn by its own rotation's {} re-encryptions (rotation starts at {} of "
                      "KEY_ROTATION_MAX_ENCRYPTIONS {}): another rotation would wear the next version alike, so "
                      "none starts for key wear; raise KEY_ROTATION_MAX_ENCRYPTIONS above the number of stored "
                      "secrets",
                      v.version, last->front().reencrypted, threshold, max_encryptions_);
      }
      return false;
    }
    return true;
  }
  return false;
}

std::optional<std::string> RotationScheduler::Tick(std::chrono::system_clock::time_point now) {
  // A run left by a process that is gone resumes once its lock's heartbeat
  // is stale enough to take over (no pid is trusted to say it is gone).
  bool waiting = false;
  auto resumed = rotation_.ResumeInterrupted(Caller{"scheduler", ""}, &waiting);
  resume_waiting_ = waiting;
  if (!resumed.ok()) {  // tried again at the next tick; the message names no secret
    spdlog::warn("cannot resume an interrupted key rotation: {}", resumed.error().message);
    return std::nullopt;  // nothing else this tick: a start would meet the same failure, or that run
  }
  if (*resumed) {
    spdlog::warn("resuming an interrupted key rotation as run {}", **resumed);
    return **resumed;
  }
  // Backing off, with the run's lock held: nothing else this tick either
  // (as when the back-off refuses the resume). A start would meet the held
  // lock, or, should it go stale meanwhile, resume the run: a resume the
  // back-off spaces, taken early.
  if (waiting && rotation_.BackingOffResumes()) return std::nullopt;
  std::string why;
  bool slot = false;  // the run is the schedule's: it uses the slot (cron mode)
  StartConditions start_if;
  if (KeyWorn()) {
    why = "key wear";
  } else {
    // The interval's start is recorded whether or not rotation is enabled,
    // and a cron slot passes unused while it is disabled.
    std::string retry_of;
    bool due = Due(now, start_if, retry_of);
    auto enabled = Enabled();
    if (due && enabled.ok() && *enabled) {
      why = retry_of.empty() ? "schedule" : retry_of;
      slot = true;
    } else if (due && enabled.ok()) {
      UseSlot(now);
    }
  }
  if (why.empty()) return std::nullopt;
  auto run = rotation_.Start(false, kScheduledTrigger, Caller{"scheduler", ""}, start_if);
  if (!run.ok()) {
    // kFailedPrecondition: another instance started a run for the slot, or
    // completed one since the interval was read (start_if): the slot is
    // used, not run twice. kConflict: one is running; the slot is kept, as
    // for anything else (no thread, the database down): the next tick
    // finds the slot's run in the history (SlotDue), or, once an older run
    // or a resume is over, starts the slot's.
    if (run.code() == ErrorCode::kFailedPrecondition && slot) {
      spdlog::info("cron slot already run: {}", run.error().message);  // names the run and its start
      UseSlot(now, SlotOf(start_if, now));  // that run may yet fail before making a key version
    }
    if (run.code() != ErrorCode::kConflict && run.code() != ErrorCode::kFailedPrecondition) {
      spdlog::warn("scheduled key rotation not started: {}", run.error().message);
    }
    return std::nullopt;
  }
  if (run->trigger == kResumedTrigger) {  // a run left running, not this schedule's: its slot stays due
    spdlog::warn("resuming an interrupted key rotation as run {}", run->id);
    return run->id;
  }
  if (slot) UseSlot(now, SlotOf(start_if));  // until its run's outcome is read (SlotDue)
  if (start_if.if_successes) {  // should this run fail, the interval is due again: not before an hour
    MutexLock lock(&mu_);
    retry_after_ = now + std::min<std::chrono::hours>(std::chrono::hours(1), timing_.interval);
  }
  spdlog::warn("key rotation {} started ({})", run->id, why);
  return run->id;
}

}  // namespace dyad
