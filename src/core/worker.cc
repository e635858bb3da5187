#include "core/worker.h"

namespace dyad {

Result<std::unique_ptr<Worker>> Worker::Start(const ThreadStarter& starter) {
  std::unique_ptr<Worker> worker(new Worker());
  auto thread = StartThread(starter, [w = worker.get()] { w->Loop(); });
  if (!thread.ok()) return MakeError(thread.code(), "cannot start a thread: " + thread.error().message);
  worker->thread_ = std::move(thread).value();
  return worker;
}

Worker::~Worker() {
  {
    MutexLock lock(&mu_);
    WaitLocked();
    stop_ = true;
  }
  cv_.SignalAll();
  if (thread_.joinable()) thread_.join();  // not when Start() failed to create it
}

void Worker::Post(std::function<void()> job) {
  {
    MutexLock lock(&mu_);
    WaitLocked();
    job_ = std::move(job);
    busy_ = true;
  }
  cv_.SignalAll();
}

void Worker::Wait() {
  MutexLock lock(&mu_);
  WaitLocked();
}

void Worker::WaitLocked() {
  while (busy_) cv_.Wait(&mu_);
}

void Worker::Loop() {
  mu_.Lock();
  while (true) {
    while (!busy_ && !stop_) cv_.Wait(&mu_);
    if (!busy_) break;  // stopped, nothing posted
    std::function<void()> job = std::move(job_);
    job_ = nullptr;
    mu_.Unlock();
    job();
    job = nullptr;  // what the job captured is released before Wait returns
    mu_.Lock();
    busy_ = false;
    cv_.SignalAll();
  }
  mu_.Unlock();
}

}  // namespace dyad
