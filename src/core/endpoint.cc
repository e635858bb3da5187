#include "core/endpoint.h"

namespace dyad {

std::optional<Endpoint> ParseEndpoint(std::string_view e) {
  while (!e.empty() && e.back() == '/') e.remove_suffix(1);
  size_t scheme = e.find("://");
  if (scheme == std::string_view::npos) return std::nullopt;
  std::string_view name = e.substr(0, scheme), host = e.substr(scheme + 3);
  if ((name != "https" && name != "http") || host.empty() || host.find_first_of("/?#@ ") != std::string_view::npos) {
    return std::nullopt;
  }
  return Endpoint{std::string(e), std::string(host)};
}

}  // namespace dyad
