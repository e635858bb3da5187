// App::PoolFor for /v1 calls: a POST of a known client token runs evented
// (on the I/O thread); any other /v1 call goes to the upstream pool. The
// caller it authenticated is noted for the router, so that a token is hashed
// once per call: a /v1 POST's client before any route lookup (the router
// answers a path that is no route itself), else the caller of a route that
// runs; a refused caller is not noted.
#include <gtest/gtest.h>

#include <fstream>
#include <optional>
#include <string>

#include "core/encoding.h"
#include "testing/fakes.h"
#include "testing/test_app.h"

namespace dyad {
namespace {

constexpr char kClientToken[] = "client-token-0123456789";

HttpRequest V1Post(std::string authorization) {
  HttpRequest r;
  r.method = "POST";
  SetTarget(r, "/v1/chat/completions");
  r.authorization = std::move(authorization);
  return r;
}

TEST(PoolFor, AV1CallOfAKnownClientRunsEventedWithTheClientNoted) {
  testing::TempDir dir;
  std::ofstream(dir.File("clients.json")) << R"({"tokens":[{"name":"app","role":"client","sha256":")" +
                                                 HexEncode(Sha256(kClientToken)) + "\"}]}";
  testing::TestApp t({{"GATEWAY_CLIENT_API_KEYS_FILE", dir.File("clients.json")}});

  std::optional<Principal> noted;
  EXPECT_EQ(t.app().PoolFor(V1Post(std::string("Bearer ") + kClientToken), &noted), HandlerPool::kEvented);
  ASSERT_TRUE(noted.has_value());
  EXPECT_EQ(noted->identity, "app");
  EXPECT_EQ(noted->role, Role::kClient);

  for (const std::string& refused : {std::string("Bearer wrong-token"), std::string(""),
                                     std::string("Bearer ") + testing::kAdminToken}) {
    noted.reset();
    EXPECT_EQ(t.app().PoolFor(V1Post(refused), &noted), HandlerPool::kUpstream) << refused;
    EXPECT_FALSE(noted.has_value()) << refused;
  }
  // A POST to no /v1 route: the router's 404 on the I/O thread for a known
  // client (no route looked up to classify it); a refused token's 401 on the
  // pool, where it is audited.
  HttpRequest unknown = V1Post(std::string("Bearer ") + kClientToken);
  SetTarget(unknown, "/v1/no-such-route");
  EXPECT_EQ(t.app().PoolFor(unknown, &noted), HandlerPool::kEvented);
  EXPECT_EQ(t.app().Handle(unknown).status, 404);
  noted.reset();
  unknown.authorization = "Bearer wrong-token";
  EXPECT_EQ(t.app().PoolFor(unknown, &noted), HandlerPool::kUpstream);
  EXPECT_FALSE(noted.has_value());
  HttpRequest get = V1Post(std::string("Bearer ") + kClientToken);
  get.method = "GET";
  SetTarget(get, "/v1/models");
  EXPECT_EQ(t.app().PoolFor(get, &noted), HandlerPool::kUpstream);
  ASSERT_TRUE(noted.has_value());
  EXPECT_EQ(noted->identity, "app");
  // Under /admin: the admin noted for the route; a client token is refused
  // there (403, audited on a pool), and not noted.
  HttpRequest admin = get;
  SetTarget(admin, "/admin/providers");
  admin.authorization = std::string("Bearer ") + testing::kAdminToken;
  noted.reset();
  EXPECT_NE(t.app().PoolFor(admin, &noted), HandlerPool::kEvented);
  ASSERT_TRUE(noted.has_value());
  EXPECT_EQ(noted->role, Role::kAdmin);
  admin.authorization = std::string("Bearer ") + kClientToken;
  noted.reset();
  EXPECT_NE(t.app().PoolFor(admin, &noted), HandlerPool::kIo);
  EXPECT_FALSE(noted.has_value());
}

TEST(PoolFor, WithEventedCallsOffTheClientRunsOnThePool) {
  testing::TempDir dir;
  std::ofstream(dir.File("clients.json")) << R"({"tokens":[{"name":"app","role":"client","sha256":")" +
                                                 HexEncode(Sha256(kClientToken)) + "\"}]}";
  testing::TestApp t({{"GATEWAY_CLIENT_API_KEYS_FILE", dir.File("clients.json")}, {"GATEWAY_V1_EVENTED", "false"}});
  std::optional<Principal> noted;
  EXPECT_EQ(t.app().PoolFor(V1Post(std::string("Bearer ") + kClientToken), &noted), HandlerPool::kUpstream);
  ASSERT_TRUE(noted.has_value());
  EXPECT_EQ(noted->identity, "app");
}

}  // namespace
}  // namespace dyad
