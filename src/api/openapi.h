// The OpenAPI 3.1 description of the HTTP API: src/api/openapi.json, built
// into the binary as it is (CMake writes it into a generated source), served
// at GET /admin/openapi.json. A unit test (src/app/openapi_test.cc) checks
// that its (method, path) pairs are exactly the router's routes, so neither
// can change without the other. Thread-safe (a constant).
#pragma once

#include <string_view>

namespace dyad {

std::string_view OpenApiDocument();

}  // namespace dyad
