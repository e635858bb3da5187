// Gate: a test's hold on an operation that runs on another thread. The
// operation calls Pass(): it counts as arrived, then waits while the gate is
// closed. The test waits until the operations it expects have arrived
// (WaitArrived: an event, never a sleep), does what must happen while they
// are held, and Open()s the gate; Close() holds later arrivals again.
// Thread-safe. WaitArrived gives up after a minute (a test that would
// otherwise hang fails instead) and says so by returning false.
#pragma once

#include <chrono>

#include "core/mutex.h"

namespace dyad::testing {

class Gate {
 public:
  explicit Gate(bool open = false) : open_(open) {}
  Gate(const Gate&) = delete;
  Gate& operator=(const Gate&) = delete;

  // The held operation's side.
  void Pass() DYAD_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    ++arrived_;
    cv_.SignalAll();
    while (!open_) cv_.Wait(&mu_);
  }

  // The test's side.
  void Open() DYAD_LOCKS_EXCLUDED(mu_) { Set(true); }
  void Close() DYAD_LOCKS_EXCLUDED(mu_) { Set(false); }
  // How many Pass() calls have arrived (held or let through).
  int arrived() DYAD_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    return arrived_;
  }
  // Waits until `n` Pass() calls have arrived; false if they had not within a minute.
  [[nodiscard]] bool WaitArrived(int n = 1) DYAD_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(1);
    while (arrived_ < n) {
      const auto left = deadline - std::chrono::steady_clock::now();
      if (left <= left.zero() || !cv_.WaitFor(&mu_, left)) return arrived_ >= n;
    }
    return true;
  }

 private:
  void Set(bool open) DYAD_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    open_ = open;
    cv_.SignalAll();
  }

  Mutex mu_;
  CondVar cv_;  // an arrival, or the gate opened
  int arrived_ DYAD_GUARDED_BY(mu_) = 0;
  bool open_ DYAD_GUARDED_BY(mu_);
};

}  // namespace dyad::testing
