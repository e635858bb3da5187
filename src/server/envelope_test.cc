#include "server/envelope.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace dyad {
namespace {

using nlohmann::json;

TEST(Envelope, ErrorWithDetailsKeepsCodeAndMessage) {
  HttpResponse r = JsonError(422, "UPSTREAM_REJECTED", "refused", json{{"upstreamStatus", 401}, {"code", "spoofed"}});
  EXPECT_EQ(r.status, 422);
  EXPECT_EQ(r.body.rfind("{\"status\":\"error\",\"error\":", 0), 0u) << r.body;
  json j = json::parse(r.body);
  EXPECT_EQ(j["error"], (json{{"code", "UPSTREAM_REJECTED"}, {"message", "refused"}, {"upstreamStatus", 401}}));
  EXPECT_EQ(json::parse(JsonError(404, "NOT_FOUND", "x").body)["error"], (json{{"code", "NOT_FOUND"}, {"message", "x"}}));
}

}  // namespace
}  // namespace dyad
