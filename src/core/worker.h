// Worker: a thread of its own that runs one job at a time, for overlapping
// one step of a loop with the next (a key rotation reads batch k+1 while it
// writes batch k) without a thread per step. Post() hands a job over (after
// waiting for the one before it, if it is still running); Wait() returns once
// the job posted last has returned, and what it wrote is then visible to the
// caller. The destructor waits for the job in flight, then ends the thread.
//
// Thread-safety: Post and Wait may be called from any thread; one owner
// posting and waiting is the intended use. Errors: Start() returns
// kUnavailable when no thread can be created (the system's limit, or
// `starter` refusing: core/thread.h), so the caller can do the work itself
// or fail its one operation instead of std::thread's throw ending the
// process. A job must not throw.
#pragma once

#include <functional>
#include <memory>
#include <thread>

#include "core/mutex.h"
#include "core/result.h"
#include "core/thread.h"

namespace dyad {

class Worker {
 public:
  static Result<std::unique_ptr<Worker>> Start(const ThreadStarter& starter = nullptr);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  void Post(std::function<void()> job) DYAD_LOCKS_EXCLUDED(mu_);
  void Wait() DYAD_LOCKS_EXCLUDED(mu_);

 private:
  Worker() = default;
  void Loop() DYAD_LOCKS_EXCLUDED(mu_);
  void WaitLocked() DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Mutex mu_;
  CondVar cv_;
  std::function<void()> job_ DYAD_GUARDED_BY(mu_);
  bool busy_ DYAD_GUARDED_BY(mu_) = false;  // a job posted that has not returned yet
  bool stop_ DYAD_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace dyad
