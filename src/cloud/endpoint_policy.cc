#include "cloud/endpoint_policy.h"

#include <string>

#include "transport/upstream_address.h"

namespace dyad {

Status CheckEndpointTransport(const EnvMap& env, std::string_view variable, const Endpoint& endpoint,
                              std::string_view carried) {
  if (!endpoint.url.starts_with("http://")) return OkStatus();
  // host[:port] without the port; an IPv6 literal keeps its brackets.
  std::string_view host = endpoint.host;
  host = host.starts_with('[') ? host.substr(0, host.find(']') + 1) : host.substr(0, host.find(':'));
  if (IsLoopbackHost(host)) return OkStatus();
  bool allowed = false;
  DYAD_RETURN_IF_ERROR(ReadBoolVariable(env, "SECRETS_ALLOW_PLAINTEXT_BACKEND", allowed));
  if (allowed) return OkStatus();
  return BadVariable(variable, "'" + endpoint.url + "' is plain http to a host that is not loopback: " +
                                   std::string(carried) +
                                   " would cross the network in clear; use https://, or set "
                                   "SECRETS_ALLOW_PLAINTEXT_BACKEND=true if the network between is trusted");
}

}  // namespace dyad
