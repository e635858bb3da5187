#include "server/http_types.h"

#include "core/encoding.h"

namespace dyad {

void SetTarget(HttpRequest& request, std::string_view target) {
  auto q = target.find('?');
  request.path = std::string(target.substr(0, q));
  request.query = q == std::string_view::npos ? std::string() : std::string(target.substr(q + 1));
}

std::optional<std::string> QueryParam(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    auto eq = pair.find('=');
    if (PercentDecode(pair.substr(0, eq), true) == name) {
      return eq == std::string_view::npos ? std::string() : PercentDecode(pair.substr(eq + 1), true);
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

}  // namespace dyad
