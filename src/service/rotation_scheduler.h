// RotationScheduler: starts scheduled key rotations.
//
// Follows KEY_ROTATION_SCHEDULE (or the schedule generated from
// KEY_ROTATION_INTERVAL_HOURS) in UTC. Whether it is enabled is stored in
// the registry's settings (SettingsRepository) by the toggle endpoint, so the
// choice survives restarts; KEY_ROTATION_ENABLED gives the value until the
// first toggle.
// A run already in progress makes a scheduled start a no-op. Independently
// of the schedule and the toggle, a rotation starts when the primary key
// version nears `max_encryptions` (key wear: at 15/16 of it), so random
// 96-bit nonces stay inside the NIST SP 800-38D bound. Each tick also
// resumes a run whose process is gone, once its lock can be taken over.
// Thread-safe.
#pragma once

#include <atomic>
#include <optional>
#include <thread>

#include "core/cron.h"
#include "core/mutex.h"
#include "registry/settings_repository.h"
#include "service/key_rotation_service.h"

namespace dyad {

class RotationScheduler {
 public:
  RotationScheduler(KeyRotationService& rotation, KeyManager& keys, std::shared_ptr<SettingsRepository> settings,
                    CronSchedule schedule, bool enabled_by_env, uint64_t max_encryptions, const Clock& clock);
  ~RotationScheduler();

  void StartThread();
  Result<bool> Enabled();
  Status SetEnabled(bool enabled);
  std::optional<std::chrono::system_clock::time_point> NextRun() const DYAD_LOCKS_EXCLUDED(mu_);
  const CronSchedule& schedule() const { return schedule_; }
  // Starts a rotation if the schedule is due at `now` or the key is worn;
  // returns its id.
  std::optional<std::string> Tick(std::chrono::system_clock::time_point now) DYAD_LOCKS_EXCLUDED(mu_);
  bool KeyWorn();

 private:
  KeyRotationService& rotation_;
  KeyManager& keys_;
  std::shared_ptr<SettingsRepository> settings_;
  const CronSchedule schedule_;
  const bool enabled_by_env_;
  const uint64_t max_encryptions_;
  const Clock& clock_;
  // Waits up to 30 s (1 s while an interrupted run waits to resume), or until the destructor says stop; false when stopping.
  bool WaitForNextCheck() DYAD_LOCKS_EXCLUDED(mu_);

  mutable Mutex mu_;
  CondVar cv_;
  std::optional<std::chrono::system_clock::time_point> next_ DYAD_GUARDED_BY(mu_);
  bool stopping_ DYAD_GUARDED_BY(mu_) = false;
  std::atomic<bool> resume_waiting_{false};
  std::thread thread_;
};

}  // namespace dyad
