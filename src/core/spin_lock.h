// SpinLock: a test-and-test-and-set lock for sections of a few instructions
// that one thread takes almost always and others only rarely (the owner's
// lock then costs one uncontended exchange and one release store, where
// std::mutex pays two atomic read-modify-writes). A waiter spins briefly,
// then yields, so a holder preempted on a busy machine is not starved of its
// core. Not for sections that block or allocate under contention: use Mutex.
// Annotated as a capability like Mutex (core/mutex.h).
#pragma once

#include <atomic>
#include <thread>

#include "core/thread_annotations.h"

namespace dyad {

class DYAD_LOCKABLE SpinLock {
 public:
  SpinLock() = default;
  SpinLock(const SpinLock&) = delete;
  SpinLock& operator=(const SpinLock&) = delete;

  void Lock() DYAD_EXCLUSIVE_LOCK_FUNCTION() {
    while (held_.exchange(true, std::memory_order_acquire)) {
      for (int spins = 0; held_.load(std::memory_order_relaxed); ++spins) {
        if (spins < 64) {
          Pause();
        } else {
          std::this_thread::yield();
        }
      }
    }
  }
  void Unlock() DYAD_UNLOCK_FUNCTION() { held_.store(false, std::memory_order_release); }

 private:
  static void Pause() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();  // spin politely: the other hyperthread and the memory bus
#endif
  }
  std::atomic<bool> held_{false};
};

// Holds a SpinLock for its scope.
class DYAD_SCOPED_LOCKABLE SpinLockHolder {
 public:
  explicit SpinLockHolder(SpinLock* lock) DYAD_EXCLUSIVE_LOCK_FUNCTION(lock) : lock_(lock) { lock_->Lock(); }
  ~SpinLockHolder() DYAD_UNLOCK_FUNCTION() { lock_->Unlock(); }
  SpinLockHolder(const SpinLockHolder&) = delete;
  SpinLockHolder& operator=(const SpinLockHolder&) = delete;

 private:
  SpinLock* const lock_;
};

}  // namespace dyad
