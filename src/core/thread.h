// StartThread: std::thread's constructor with its failure as a value. When the
// system refuses a thread (EAGAIN: RLIMIT_NPROC, memory, a cgroup's pids.max)
// std::thread throws std::system_error; a thread started at run time (for a
// request, from a background loop) must fail that one operation, never end
// the process. StartThread answers kUnavailable instead, with the system's
// words ("Resource temporarily unavailable"); the caller says what the
// thread was for ("cannot start a thread to …: ").
//
// ThreadStarter is the same as an injectable seam: a component that starts
// threads at run time takes one in its options (null: StartThread), so a
// test can refuse a thread. Thread-safe; `body` must not throw.
#pragma once

#include <functional>
#include <thread>

#include "core/result.h"

namespace dyad {

using ThreadStarter = std::function<Result<std::thread>(std::function<void()> body)>;

Result<std::thread> StartThread(std::function<void()> body);
// `starter` when set, else StartThread.
Result<std::thread> StartThread(const ThreadStarter& starter, std::function<void()> body);

}  // namespace dyad
