#include "service/rotation_scheduler.h"

#include <spdlog/spdlog.h>

namespace dyad {

namespace {
constexpr char kEnabledKey[] = "key_rotation.enabled";
}

RotationScheduler::RotationScheduler(KeyRotationService& rotation, KeyManager& keys, std::shared_ptr<SqliteDb> db,
                                     CronSchedule schedule, bool enabled_by_env, uint64_t max_encryptions,
                                     const Clock& clock)
    : rotation_(rotation), keys_(keys), db_(std::move(db)), schedule_(std::move(schedule)),
      enabled_by_env_(enabled_by_env), max_encryptions_(max_encryptions), clock_(clock),
      next_(schedule_.Next(clock.WallNow())) {}

RotationScheduler::~RotationScheduler() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  cv_.SignalAll();
  if (thread_.joinable()) thread_.join();
}

void RotationScheduler::StartThread() {
  resume_waiting_ = true;  // until the first tick looks
  thread_ = std::thread([this] {
    while (WaitForNextCheck()) Tick(clock_.WallNow());
  });
}

bool RotationScheduler::WaitForNextCheck() {
  MutexLock lock(&mu_);
  // Wall-clock schedule: re-check often; every second while a run left by a
  // process that is gone waits for its lock to go stale.
  if (!stopping_) cv_.WaitFor(&mu_, resume_waiting_ ? std::chrono::seconds(1) : std::chrono::seconds(30));
  return !stopping_;
}

Result<bool> RotationScheduler::Enabled() {
  return db_->With<bool>([&](SqliteConnection& c) -> Result<bool> {
    DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare("SELECT value FROM settings WHERE key=?"));
    st.Bind(1, kEnabledKey);
    DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
    return row ? st.Text(0) == "true" : enabled_by_env_;
  });
}

Status RotationScheduler::SetEnabled(bool enabled) {
  auto r = db_->With<bool>([&](SqliteConnection& c) -> Result<bool> {
    DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
        "INSERT INTO settings(key, value) VALUES(?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value"));
    DYAD_RETURN_IF_ERROR(st.Bind(1, kEnabledKey).Bind(2, enabled ? "true" : "false").Run());
    return true;
  });
  if (!r.ok()) return r.error();
  return OkStatus();
}

std::optional<std::chrono::system_clock::time_point> RotationScheduler::NextRun() const {
  MutexLock lock(&mu_);
  return next_;
}

bool RotationScheduler::KeyWorn() {
  auto state = keys_.Describe();
  if (!state.ok()) return false;
  for (const auto& v : state->versions) {
    if (v.version == state->primary_version) return v.encryptions >= max_encryptions_ - max_encryptions_ / 16;
  }
  return false;
}

std::optional<std::string> RotationScheduler::Tick(std::chrono::system_clock::time_point now) {
  // A run left by a process that is gone resumes once its lock's heartbeat
  // is stale enough to take over (no pid is trusted to say it is gone).
  bool waiting = false;
  auto resumed = rotation_.ResumeInterrupted(Caller{"scheduler", ""}, &waiting);
  resume_waiting_ = waiting;
  if (resumed.ok() && *resumed) {
    spdlog::warn("resuming an interrupted key rotation as run {}", **resumed);
    return **resumed;
  }
  bool due = false;
  {
    MutexLock lock(&mu_);
    if (next_ && now >= *next_) {
      due = true;
      next_ = schedule_.Next(now);
    }
  }
  const char* why = nullptr;
  if (KeyWorn()) {
    why = "key wear";
  } else if (due) {
    auto enabled = Enabled();
    if (enabled.ok() && *enabled) why = "schedule";
  }
  if (!why) return std::nullopt;
  auto id = rotation_.Start(false, "scheduled", Caller{"scheduler", ""});
  if (!id.ok()) {
    if (id.code() != ErrorCode::kConflict) spdlog::warn("scheduled key rotation not started: {}", id.error().message);
    return std::nullopt;
  }
  spdlog::warn("key rotation {} started ({})", *id, why);
  return *id;
}

}  // namespace dyad
