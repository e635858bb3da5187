#include "transport/host_resolver.h"

#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>

namespace dyad {
namespace {

class SystemResolver final : public HostResolver {
 public:
  Result<std::vector<std::string>> Resolve(std::string_view host) override {
    std::string name(host);
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
};

}  // namespace

std::unique_ptr<HostResolver> NewSystemResolver() { return std::make_unique<SystemResolver>(); }

}  // namespace dyad
