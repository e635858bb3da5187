#include "core/thread.h"

#include <new>
#include <system_error>

namespace dyad {

Result<std::thread> StartThread(std::function<void()> body) {
  try {
    return std::thread(std::move(body));
  } catch (const std::system_error& e) {
    return MakeError(ErrorCode::kUnavailable, e.what());
  } catch (const std::bad_alloc&) {  // the thread's state, under the same memory pressure
    return MakeError(ErrorCode::kUnavailable, "out of memory");
  }
}

Result<std::thread> StartThread(const ThreadStarter& starter, std::function<void()> body) {
  return starter ? starter(std::move(body)) : StartThread(std::move(body));
}

}  // namespace dyad
