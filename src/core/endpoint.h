// A service endpoint as the AWS_ENDPOINT_URL variables give it:
// http(s)://host[:port], trailing slashes allowed, nothing else (no path,
// query, fragment or user info). Pure.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace dyad {

struct Endpoint {
  std::string url;   // without trailing slashes
  std::string host;  // host[:port], as the Host header carries it
};

std::optional<Endpoint> ParseEndpoint(std::string_view text);

}  // namespace dyad
