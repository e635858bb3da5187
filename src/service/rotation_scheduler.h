// RotationScheduler: starts scheduled key rotations.
//
// Follows KEY_ROTATION_SCHEDULE (or the schedule generated from
// KEY_ROTATION_INTERVAL_HOURS) in UTC. Whether it is enabled is stored in
// the registry's settings (the toggle endpoint), so the choice survives
// restarts; KEY_ROTATION_ENABLED gives the value until the first toggle.
// A run already in progress makes a scheduled start a no-op. Thread-safe.
#pragma once

#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "core/cron.h"
#include "service/key_rotation_service.h"

namespace dyad {

class RotationScheduler {
 public:
  RotationScheduler(KeyRotationService& rotation, std::shared_ptr<SqliteDb> db, CronSchedule schedule,
                    bool enabled_by_env, const Clock& clock);
  ~RotationScheduler();

  void StartThread();
  Result<bool> Enabled();
  Status SetEnabled(bool enabled);
  std::optional<std::chrono::system_clock::time_point> NextRun() const;
  const CronSchedule& schedule() const { return schedule_; }
  // Starts a scheduled rotation if one is due at `now`; returns its id.
  std::optional<std::string> Tick(std::chrono::system_clock::time_point now);

 private:
  KeyRotationService& rotation_;
  std::shared_ptr<SqliteDb> db_;
  const CronSchedule schedule_;
  const bool enabled_by_env_;
  const Clock& clock_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::optional<std::chrono::system_clock::time_point> next_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace dyad
