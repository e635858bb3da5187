// HostResolver: the addresses a host name resolves to, as the system's
// resolver (getaddrinfo: /etc/hosts, DNS) gives them.
//
// For the check at provider create and update that an upstream's baseUrl
// does not lead to a link-local or metadata address (DESIGN.md §12); the
// connection itself is checked again by UpstreamClient on the address it
// actually reaches. Tests inject a fake. Thread-safe.
//
// Errors: kNotFound when the name has no address (NXDOMAIN, no A/AAAA),
// kUnavailable when the resolver could not answer, or when the system
// refused the thread a lookup runs on ("cannot start a thread to resolve
// 'host': …"; that request fails, the next one tries again).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "core/thread.h"

namespace dyad {

class HostResolver {
 public:
  virtual ~HostResolver() = default;
  // Numeric addresses ("93.184.216.34", "2606:2800:220:1::"), each once.
  virtual Result<std::vector<std::string>> Resolve(std::string_view host) = 0;
};

// `start_thread`: starts each lookup's thread (StartThread when unset).
std::unique_ptr<HostResolver> NewSystemResolver(ThreadStarter start_thread = nullptr);

}  // namespace dyad
