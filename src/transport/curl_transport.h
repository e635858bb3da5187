// The libcurl HttpTransport: a pool of easy handles, each keeping its
// connection alive, so consecutive requests to one endpoint reuse a TCP (and
// TLS) connection. TLS peer and host verification are always on; `ca_file`
// replaces the system trust store (AWS_CA_BUNDLE). Thread-safe: a request
// leases a handle for its duration.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "transport/http_transport.h"

namespace dyad {

struct CurlOptions {
  std::string ca_file;  // empty: the system store
  std::chrono::milliseconds connect_timeout{2000};
  std::chrono::milliseconds request_timeout{10000};
  size_t max_response_bytes = 4 << 20;
};

std::unique_ptr<HttpTransport> NewCurlTransport(CurlOptions options = {});

}  // namespace dyad
