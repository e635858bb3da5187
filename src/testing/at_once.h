// AtOnce: runs call(i) for i in [0, n) on n threads released together, so
// that the calls race (two instances doing the same thing at the same
// moment). Returns once every call has returned; `call` must be safe to run
// concurrently with itself. No errors of its own.
#pragma once

#include <atomic>
#include <thread>
#include <vector>

namespace dyad::testing {

template <typename F>
void AtOnce(int n, F call) {
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      ready.fetch_add(1);
      while (ready.load() < n) std::this_thread::yield();
      call(i);
    });
  }
  for (auto& t : threads) t.join();
}

}  // namespace dyad::testing
