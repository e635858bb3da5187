#include "service/rotation_scheduler.h"

#include <spdlog/spdlog.h>

namespace dyad {

namespace {
constexpr char kEnabledKey[] = "key_rotation.enabled";
}

RotationScheduler::RotationScheduler(KeyRotationService& rotation, KeyManager& keys,
                                     std::shared_ptr<SettingsRepository> settings, CronSchedule schedule,
                                     bool enabled_by_env, uint64_t max_encryptions, const Clock& clock)
    : rotation_(rotation), keys_(keys), settings_(std::move(settings)), schedule_(std::move(schedule)),
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
  auto value = settings_->Get(kEnabledKey);
  if (!value.ok()) return value.error();
  return value->has_value() ? value->value() == "true" : enabled_by_env_;
}

Status RotationScheduler::SetEnabled(bool enabled) {
  return settings_->Put(kEnabledKey, enabled ? "true" : "false");
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
