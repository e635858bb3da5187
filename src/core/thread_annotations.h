// Clang thread-safety annotations (https://clang.llvm.org/docs/ThreadSafetyAnalysis.html),
// after LevelDB's port/thread_annotations.h and Abseil's thread_annotations.h.
//
// With clang they declare which mutex guards which member and which lock a
// function needs, and `-Wthread-safety` (the CMake option
// DYAD_THREAD_SAFETY_ANALYSIS) turns a missed lock into a compile error;
// with other compilers they expand to nothing. libstdc++'s std::mutex
// carries no capability attribute, so the analysis only sees locks taken
// through dyad::Mutex and dyad::MutexLock (core/mutex.h).
//
//   class Counter {
//    public:
//     void Add() DYAD_LOCKS_EXCLUDED(mu_) { MutexLock l(&mu_); ++n_; }
//    private:
//     void AddLocked() DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu_) { ++n_; }
//     Mutex mu_;
//     int n_ DYAD_GUARDED_BY(mu_) = 0;
//   };
#pragma once

#if defined(__clang__)
#define DYAD_THREAD_ANNOTATION_(x) __attribute__((x))
#else
#define DYAD_THREAD_ANNOTATION_(x)
#endif

// On a data member: reads need the mutex held (shared or exclusive), writes
// need it held exclusively.
#define DYAD_GUARDED_BY(x) DYAD_THREAD_ANNOTATION_(guarded_by(x))
// On a pointer member: the pointee is guarded, the pointer itself is not.
#define DYAD_PT_GUARDED_BY(x) DYAD_THREAD_ANNOTATION_(pt_guarded_by(x))

// Lock ordering: this mutex is taken after / before the named ones.
#define DYAD_ACQUIRED_AFTER(...) DYAD_THREAD_ANNOTATION_(acquired_after(__VA_ARGS__))
#define DYAD_ACQUIRED_BEFORE(...) DYAD_THREAD_ANNOTATION_(acquired_before(__VA_ARGS__))

// On a function: the caller must hold the mutex (exclusively / at least shared).
#define DYAD_EXCLUSIVE_LOCKS_REQUIRED(...) DYAD_THREAD_ANNOTATION_(exclusive_locks_required(__VA_ARGS__))
#define DYAD_SHARED_LOCKS_REQUIRED(...) DYAD_THREAD_ANNOTATION_(shared_locks_required(__VA_ARGS__))
// On a function: the caller must not hold the mutex (the function takes it).
#define DYAD_LOCKS_EXCLUDED(...) DYAD_THREAD_ANNOTATION_(locks_excluded(__VA_ARGS__))
// On a function that returns a reference to a mutex.
#define DYAD_LOCK_RETURNED(x) DYAD_THREAD_ANNOTATION_(lock_returned(x))

// On a class: it is a mutex (a capability) / an RAII holder of one.
#define DYAD_LOCKABLE DYAD_THREAD_ANNOTATION_(capability("mutex"))
#define DYAD_SCOPED_LOCKABLE DYAD_THREAD_ANNOTATION_(scoped_lockable)

// On the lock and unlock functions of a mutex or scoped holder.
#define DYAD_EXCLUSIVE_LOCK_FUNCTION(...) DYAD_THREAD_ANNOTATION_(exclusive_lock_function(__VA_ARGS__))
#define DYAD_SHARED_LOCK_FUNCTION(...) DYAD_THREAD_ANNOTATION_(shared_lock_function(__VA_ARGS__))
#define DYAD_EXCLUSIVE_TRYLOCK_FUNCTION(...) DYAD_THREAD_ANNOTATION_(exclusive_trylock_function(__VA_ARGS__))
#define DYAD_UNLOCK_FUNCTION(...) DYAD_THREAD_ANNOTATION_(unlock_function(__VA_ARGS__))
// On a function that checks (e.g. asserts) that the mutex is held.
#define DYAD_ASSERT_EXCLUSIVE_LOCK(...) DYAD_THREAD_ANNOTATION_(assert_exclusive_lock(__VA_ARGS__))

// Turns the analysis off for one function; say why next to it.
#define DYAD_NO_THREAD_SAFETY_ANALYSIS DYAD_THREAD_ANNOTATION_(no_thread_safety_analysis)
