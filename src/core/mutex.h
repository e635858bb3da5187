// Mutex, MutexLock and CondVar: std::mutex and std::condition_variable with
// clang thread-safety annotations (core/thread_annotations.h), after
// LevelDB's port::Mutex / MutexLock / port::CondVar and Abseil's Mutex.
//
// libstdc++'s std::mutex is not a capability, so clang cannot check a
// DYAD_GUARDED_BY(mu_) whose mu_ is one; these thin wrappers are, and cost
// nothing over the std types. Use them for every mutex that guards members.
// Thread-safe, as a mutex is; no errors (std::system_error from the
// underlying lock, as with std::mutex, ends the process).
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <shared_mutex>

#include "core/thread_annotations.h"

namespace dyad {

class DYAD_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() DYAD_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() DYAD_UNLOCK_FUNCTION() { mu_.unlock(); }
  bool TryLock() DYAD_EXCLUSIVE_TRYLOCK_FUNCTION(true) { return mu_.try_lock(); }
  // Tells the analysis the caller holds it (checks nothing at run time).
  void AssertHeld() const DYAD_ASSERT_EXCLUSIVE_LOCK() {}

 private:
  friend class CondVar;
  std::mutex mu_;
};

// Holds a Mutex for its scope.
class DYAD_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) DYAD_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() DYAD_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

// A reader/writer mutex (std::shared_mutex) the analysis can see: many
// readers, or one writer. Abseil's Mutex ReaderLock shape.
class DYAD_LOCKABLE SharedMutex {
 public:
  SharedMutex() = default;
  SharedMutex(const SharedMutex&) = delete;
  SharedMutex& operator=(const SharedMutex&) = delete;

  void Lock() DYAD_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() DYAD_UNLOCK_FUNCTION() { mu_.unlock(); }
  void ReaderLock() DYAD_SHARED_LOCK_FUNCTION() { mu_.lock_shared(); }
  void ReaderUnlock() DYAD_UNLOCK_FUNCTION() { mu_.unlock_shared(); }

 private:
  std::shared_mutex mu_;
};

// Holds a SharedMutex shared (as a reader) for its scope.
class DYAD_SCOPED_LOCKABLE ReaderMutexLock {
 public:
  explicit ReaderMutexLock(SharedMutex* mu) DYAD_SHARED_LOCK_FUNCTION(mu) : mu_(mu) { mu_->ReaderLock(); }
  ~ReaderMutexLock() DYAD_UNLOCK_FUNCTION() { mu_->ReaderUnlock(); }
  ReaderMutexLock(const ReaderMutexLock&) = delete;
  ReaderMutexLock& operator=(const ReaderMutexLock&) = delete;

 private:
  SharedMutex* const mu_;
};

// Holds a SharedMutex exclusively (as the writer) for its scope.
class DYAD_SCOPED_LOCKABLE WriterMutexLock {
 public:
  explicit WriterMutexLock(SharedMutex* mu) DYAD_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~WriterMutexLock() DYAD_UNLOCK_FUNCTION() { mu_->Unlock(); }
  WriterMutexLock(const WriterMutexLock&) = delete;
  WriterMutexLock& operator=(const WriterMutexLock&) = delete;

 private:
  SharedMutex* const mu_;
};

// A condition variable waited on with a Mutex held (Abseil's CondVar shape:
// the mutex is named at each wait, so the analysis can check it is held).
// Waits may wake spuriously: loop on the condition.
class CondVar {
 public:
  CondVar() = default;
  CondVar(const CondVar&) = delete;
  CondVar& operator=(const CondVar&) = delete;

  void Wait(Mutex* mu) DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    cv_.wait(lock);
    lock.release();  // still held: the caller's
  }
  // False when `timeout` passed without a signal.
  bool WaitFor(Mutex* mu, std::chrono::nanoseconds timeout) DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    bool signalled = cv_.wait_for(lock, timeout) == std::cv_status::no_timeout;
    lock.release();
    return signalled;
  }
  void Signal() { cv_.notify_one(); }
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace dyad
