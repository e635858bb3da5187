// RefusingThreads: a ThreadStarter (core/thread.h) that refuses threads as
// the system does at its limit (RLIMIT_NPROC, pids.max) while refusing() is
// set, and starts real ones otherwise; counts what it was asked. For tests of
// what a component does when a thread it needs at run time cannot be made.
// Thread-safe; outlives the component it is given to.
#pragma once

#include <atomic>
#include <functional>
#include <thread>

#include "core/thread.h"

namespace dyad::testing {

class RefusingThreads {
 public:
  // `refuse_from`: the first call (1-based) refused; calls before it start threads.
  explicit RefusingThreads(int refuse_from = 1) : refuse_from_(refuse_from) {}

  ThreadStarter starter() {
    return [this](std::function<void()> body) -> Result<std::thread> {
      const int n = ++asked_;
      if (refusing_ && n >= refuse_from_) {
        return MakeError(ErrorCode::kUnavailable, "Resource temporarily unavailable");
      }
      return StartThread(std::move(body));
    };
  }
  void Allow() { refusing_ = false; }
  int asked() const { return asked_; }

 private:
  const int refuse_from_;
  std::atomic<bool> refusing_{true};
  std::atomic<int> asked_{0};
};

}  // namespace dyad::testing
