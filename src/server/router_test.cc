#include "server/router.h"

#include <gtest/gtest.h>

#include "core/encoding.h"
#include <nlohmann/json.hpp>

#include "server/envelope.h"

namespace dyad {
namespace {

class RouterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tokens = R"({"tokens":[{"name":"ci","role":"viewer","sha256":")" + HexEncode(Sha256("viewer-token")) +
                         R"("},{"name":"ops","role":"admin","sha256":")" + HexEncode(Sha256("ops-token")) + "\"}]}";
    auto a = TokenAuthenticator::FromTokensJson(SecretBytes(std::string("admin-key-0123456789")), tokens);
    ASSERT_TRUE(a.ok()) << a.error().message;
    auth_ = std::move(a).value();
    router_ = std::make_unique<Router>(auth_.get());
    router_->Add("GET", "/admin/things/{id}", [](const RouteContext& c) {
      return JsonSuccess({{"id", c.params[0]}, {"who", c.principal.identity}});
    });
    router_->Add("DELETE", "/admin/things/{id}", [](const RouteContext& c) { return JsonSuccess(true); });
    router_->Add("GET", "/healthz", [](const RouteContext&) { return JsonSuccess(true); });
  }
  HttpResponse Call(std::string method, std::string path, std::string auth = "") {
    HttpRequest r;
    r.method = std::move(method);
    r.path = std::move(path);
    r.authorization = std::move(auth);
    Principal who;
    return router_->Handle(r, who);
  }
  std::unique_ptr<TokenAuthenticator> auth_;
  std::unique_ptr<Router> router_;
};

TEST_F(RouterTest, AdminRoutesNeedAToken) {
  auto r = Call("GET", "/admin/things/1");
  EXPECT_EQ(r.status, 401);
  EXPECT_NE(r.body.find("\"code\":\"UNAUTHORIZED\""), std::string::npos);
  EXPECT_EQ(Call("GET", "/admin/things/1", "Bearer wrong").status, 401);
  EXPECT_EQ(Call("GET", "/admin/things/1", "Basic admin-key-0123456789").status, 401);
  EXPECT_EQ(Call("GET", "/admin/nothing-here").status, 401);  // no route enumeration without a token
}

TEST_F(RouterTest, AdminAndViewerRoles) {
  auto r = Call("GET", "/admin/things/42", "Bearer admin-key-0123456789");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("\"who\":\"admin\""), std::string::npos);
  EXPECT_NE(r.body.find("\"id\":\"42\""), std::string::npos);
  EXPECT_EQ(Call("GET", "/admin/things/1", "Bearer viewer-token").status, 200);
  r = Call("DELETE", "/admin/things/1", "Bearer viewer-token");
  EXPECT_EQ(r.status, 403);
  EXPECT_NE(r.body.find("FORBIDDEN"), std::string::npos);
  EXPECT_EQ(Call("DELETE", "/admin/things/1", "bearer ops-token").status, 200);
}

TEST_F(RouterTest, UnknownRouteAndWrongMethod) {
  EXPECT_EQ(Call("GET", "/nope").status, 404);
  EXPECT_EQ(Call("GET", "/admin/nope", "Bearer ops-token").status, 404);
  auto r = Call("POST", "/admin/things/1", "Bearer ops-token");
  EXPECT_EQ(r.status, 405);
  ASSERT_FALSE(r.headers.empty());
  EXPECT_EQ(r.headers[0].second, "GET, DELETE");
  EXPECT_EQ(Call("POST", "/healthz").status, 405);
  EXPECT_EQ(Call("GET", "/healthz").status, 200);
}

TEST(TokensFile, ErrorsNameTheEntry) {
  auto bad = [](std::string json) {
    auto r = TokenAuthenticator::FromTokensJson(std::nullopt, json);
    EXPECT_FALSE(r.ok());
    return r.ok() ? "" : r.error().message;
  };
  EXPECT_NE(bad("{").find("not valid JSON"), std::string::npos);
  EXPECT_NE(bad("{\"tokens\":{}}").find("no \"tokens\" array"), std::string::npos);
  EXPECT_NE(bad(R"({"tokens":[{"name":"a","role":"root","sha256":"00"}]})").find("tokens[0].role"), std::string::npos);
  EXPECT_NE(bad(R"({"tokens":[{"name":"a","role":"admin","sha256":"00"}]})").find("tokens[0].sha256"), std::string::npos);
}

TEST(QueryParams, Decodes) {
  EXPECT_EQ(*QueryParam("a=1&limit=5", "limit"), "5");
  EXPECT_EQ(*QueryParam("q=a%20b+c", "q"), "a b c");
  EXPECT_FALSE(QueryParam("a=1", "b").has_value());
}

}  // namespace
}  // namespace dyad
