#include "core/thread.h"

#include <system_error>

namespace dyad {

Result<std::thread> StartThread(std::function<void()> body) {
  try {
    return std::thread(std::move(body));
  } catch (const std::system_error& e) {
    return MakeError(ErrorCode::kUnavailable, e.what());
  }
}

Result<std::thread> StartThread(const ThreadStarter& starter, std::function<void()> body) {
  return starter ? starter(std::move(body)) : StartThread(std::move(body));
}

}  // namespace dyad
