// ParallelFor: fn(i) for every i in [0, n) on up to `threads` threads, the
// caller's among them; returns when every call has. With threads <= 1 the
// calls run inline, in order. For fanning out independent network calls
// (a remote store's batch); `fn` must be safe to call concurrently. When no
// more threads can be started, the calls run on those that could (the
// caller's at least).
#pragma once

#include <cstddef>
#include <functional>

namespace dyad {

void ParallelFor(size_t n, size_t threads, const std::function<void(size_t)>& fn);

}  // namespace dyad
