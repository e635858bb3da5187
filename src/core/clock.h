// Clock: the time source, injected so tests can move time by hand.
//
// Now() is monotonic (for TTLs and durations); WallNow() is UTC wall time
// (for timestamps shown to people and for schedules). Implementations are
// thread-safe.
#pragma once

#include <atomic>
#include <time.h>

#include <chrono>
#include <thread>

namespace dyad {

class Clock {
 public:
  using Duration = std::chrono::nanoseconds;
  using Instant = std::chrono::steady_clock::time_point;
  using WallTime = std::chrono::system_clock::time_point;

  virtual ~Clock() = default;
  virtual Instant Now() const = 0;
  // Monotonic with a few milliseconds' resolution, for hot-path TTL checks.
  virtual Instant CoarseNow() const { return Now(); }
  virtual WallTime WallNow() const = 0;
  // Waits (retry backoff); a fake clock moves instead.
  virtual void SleepFor(Duration d) const { std::this_thread::sleep_for(d); }
};

class SystemClock final : public Clock {
 public:
  Instant Now() const override { return std::chrono::steady_clock::now(); }
  // CLOCK_MONOTONIC_COARSE: the same clock as steady_clock (CLOCK_MONOTONIC)
  // at tick resolution, read without a timer access.
  Instant CoarseNow() const override {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return Instant(std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec));
  }
  WallTime WallNow() const override { return std::chrono::system_clock::now(); }
};

// A clock that moves only when told to. Thread-safe.
class FakeClock final : public Clock {
 public:
  FakeClock() : mono_(0), wall_(1767225600LL * 1000000000LL) {}  // 2026-01-01T00:00:00Z
  Instant Now() const override { return Instant(Duration(mono_.load())); }
  WallTime WallNow() const override {
    return WallTime(std::chrono::duration_cast<WallTime::duration>(Duration(wall_.load())));
  }
  void Advance(Duration d) {
    mono_ += d.count();
    wall_ += d.count();
  }
  // Sleeping moves the fake clock, so code that backs off needs no real wait.
  void SleepFor(Duration d) const override {
    slept_ += d.count();
    mono_ += d.count();
    wall_ += d.count();
  }
  Duration Slept() const { return Duration(slept_.load()); }
  void SetWall(WallTime t) {
    wall_ = std::chrono::duration_cast<Duration>(t.time_since_epoch()).count();
  }

 private:
  mutable std::atomic<long long> mono_;
  mutable std::atomic<long long> wall_;
  mutable std::atomic<long long> slept_{0};
};

}  // namespace dyad
