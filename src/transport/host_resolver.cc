#include "transport/host_resolver.h"

#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

namespace dyad {
namespace {

// getaddrinfo has no timeout: a slow DNS server would hold a provider write
// for as long as the resolver's retries take (seconds each). The lookup runs
// on a thread of its own; past the deadline the caller goes on with
// kUnavailable and the thread, holding the only other reference to the
// shared answer, finishes on its own.
constexpr std::chrono::milliseconds kDeadline{2000};

Result<std::vector<std::string>> Lookup(const std::string& name);

class SystemResolver final : public HostResolver {
 public:
  explicit SystemResolver(ThreadStarter start_thread) : start_thread_(std::move(start_thread)) {}
  Result<std::vector<std::string>> Resolve(std::string_view host) override {
    struct Answer {
      std::mutex mu;
      std::condition_variable done;
      std::optional<Result<std::vector<std::string>>> result;
    };
    auto answer = std::make_shared<Answer>();
    auto lookup = StartThread(start_thread_, [answer, name = std::string(host)] {
      auto r = Lookup(name);
      std::lock_guard lock(answer->mu);
      answer->result = std::move(r);
      answer->done.notify_all();
    });
    if (!lookup.ok()) {
      return MakeError(ErrorCode::kUnavailable,
                       "cannot start a thread to resolve '" + std::string(host) + "': " + lookup.error().message);
    }
    lookup->detach();
    std::unique_lock lock(answer->mu);
    if (!answer->done.wait_for(lock, kDeadline, [&] { return answer->result.has_value(); })) {
      return MakeError(ErrorCode::kUnavailable, "resolving '" + std::string(host) + "': no answer within " +
                                                    std::to_string(kDeadline.count()) + " ms");
    }
    return std::move(*answer->result);
  }

 private:
  const ThreadStarter start_thread_;
};

Result<std::vector<std::string>> Lookup(const std::string& name) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  int rc = getaddrinfo(name.c_str(), nullptr, &hints, &list);
  if (rc == EAI_NONAME || rc == EAI_NODATA) {
    return MakeError(ErrorCode::kNotFound, "'" + name + "' does not resolve: " + gai_strerror(rc));
  }
  if (rc != 0) return MakeError(ErrorCode::kUnavailable, "resolving '" + name + "': " + gai_strerror(rc));
  std::vector<std::string> out;
  for (addrinfo* a = list; a; a = a->ai_next) {
    char text[NI_MAXHOST];
    if (getnameinfo(a->ai_addr, a->ai_addrlen, text, sizeof text, nullptr, 0, NI_NUMERICHOST) != 0) continue;
    if (std::find(out.begin(), out.end(), text) == out.end()) out.emplace_back(text);
  }
  freeaddrinfo(list);
  return out;
}

}  // namespace

std::unique_ptr<HostResolver> NewSystemResolver(ThreadStarter start_thread) {
  return std::make_unique<SystemResolver>(std::move(start_thread));
}

}  // namespace dyad
