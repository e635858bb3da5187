#include "server/router.h"

#include <gtest/gtest.h>

#include <tuple>

#include "core/encoding.h"
#include <nlohmann/json.hpp>

#include "server/envelope.h"
#include "testing/fakes.h"

namespace dyad {
namespace {

class RouterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tokens = R"({"tokens":[{"name":"ci","role":"viewer","sha256":")" + HexEncode(Sha256("viewer-token")) +
                         R"("},{"name":"ops","role":"admin","sha256":")" + HexEncode(Sha256("ops-token")) +
                         R"("},{"name":"app","role":"client","sha256":")" + HexEncode(Sha256("client-token")) + "\"}]}";
    auto a = TokenAuthenticator::FromTokensJson(SecretBytes(std::string("admin-key-0123456789")), tokens);
    ASSERT_TRUE(a.ok()) << a.error().message;
    auth_ = std::move(a).value();
    router_ = std::make_unique<Router>(auth_.get(), &audit_, &clock_);
    router_->Add("GET", "/admin/things/{id}", [](const RouteContext& c) {
      return JsonSuccess({{"id", c.params[0]}, {"who", c.principal.identity}});
    });
    router_->Add("DELETE", "/admin/things/{id}", [](const RouteContext& c) { return JsonSuccess(true); });
    router_->Add("GET", "/healthz", [](const RouteContext&) { return JsonSuccess(true); }, HandlerCost::kInline);
    router_->Add("GET", "/admin/inline", [](const RouteContext&) { return JsonSuccess(true); }, HandlerCost::kInline);
    router_->Add("POST", "/admin/things", [this](const RouteContext&) {
      ++admin_runs_;
      return JsonSuccess(true, 201);
    });
    router_->Add("POST", "/things/throw", [](const RouteContext&) -> HttpResponse {
      throw std::runtime_error("boom with a secret sk-never-logged");
    });
    router_->Add("POST", "/v1/throw", [](const RouteContext&) -> HttpResponse {
      throw std::runtime_error("boom with a secret sk-never-logged");
    });
  }
  HttpResponse Call(std::string method, std::string path, std::string auth = "", std::string peer = "10.0.0.1") {
    HttpRequest r;
    r.method = std::move(method);
    r.path = std::move(path);
    r.authorization = std::move(auth);
    r.peer = std::move(peer);
    r.request_id = "rid-1234";
    Principal who;
    return router_->Handle(r, who);
  }
  testing::MemoryAudit audit_;
  FakeClock clock_;
  int admin_runs_ = 0;
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
  EXPECT_EQ(r.headers[0].second, "GET, HEAD, DELETE");
  EXPECT_EQ(Call("POST", "/healthz").status, 405);
  EXPECT_EQ(Call("GET", "/healthz").status, 200);
  // A /v1 handler's 500 is in OpenAI's shape (its client is an OpenAI SDK).
  r = Call("POST", "/v1/throw", "Bearer client-token");
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(r.body, R"({"error":{"code":"internal_error","message":"internal error; request id rid-1234",)"
                    R"("param":null,"type":"server_error"}})");
}

// Issue 9, item 1: `POST //admin/…` ran without a token (auth looked at the
// raw target, routing dropped the empty segment).
TEST_F(RouterTest, NonCanonicalTargetsAre400BeforeAuthOrHandler) {
  for (const std::string& target : std::vector<std::string>{"//admin/things", "/admin//things", "/admin/things/", "/./admin/things",
                             "/admin/./things", "/x/../admin/things", "/admin/x/../things", "/%61dmin/things",
                             "/admin%2Fthings", "/admin%2fthings", "/admin/thing%73", "/admin/things%2E",
                             "/admin\\things", "\\admin/things", "http://host/admin/things", "*", "",
                             "admin/things", "/admin/things%", "/admin/things%4", "/admin/things%zz",
                             "/admin/th ings", "/admin/things#x", "/admin/%00things", std::string("/admin/\0x", 10)}) {
    for (std::string auth : {"", "Bearer viewer-token", "Bearer wrong"}) {
      auto r = Call("POST", target, auth);
      EXPECT_EQ(r.status, 400) << "'" << target << "' " << auth << ": " << r.body;
      EXPECT_NE(r.body.find("canonical"), std::string::npos) << target;
    }
  }
  EXPECT_EQ(admin_runs_, 0);
  EXPECT_TRUE(audit_.events().empty());  // no auth decision was made
  EXPECT_EQ(Call("POST", "/admin/things", "Bearer ops-token").status, 201);
  EXPECT_EQ(admin_runs_, 1);
  EXPECT_EQ(Call("GET", "/").status, 404);
}

TEST_F(RouterTest, EscapesOfReservedCharactersAreDecodedOnce) {
  auto r = Call("GET", "/admin/things/a%20b%25%3A", "Bearer ops-token");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("\"id\":\"a b%:\""), std::string::npos) << r.body;
  EXPECT_EQ(Call("GET", "/admin/things/a:b@c!$&'()*+,;=", "Bearer ops-token").status, 200);
}

TEST(CanonicalPath, Parses) {
  auto p = ParseCanonicalPath("/admin/providers/p-1");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(*p, (std::vector<std::string>{"admin", "providers", "p-1"}));
  EXPECT_TRUE(ParseCanonicalPath("/")->empty());
  EXPECT_FALSE(ParseCanonicalPath("/a/").ok());
  EXPECT_FALSE(ParseCanonicalPath("/a/%2e%2e").ok());
}

// Issue 9, item 9: denials are audited, at most one line per source per second.
TEST_F(RouterTest, DenialsAreAuditedOncePerSourcePerSecond) {
  for (int i = 0; i < 5; ++i) EXPECT_EQ(Call("GET", "/admin/things/1", "Bearer wrong", "10.0.0.1").status, 401);
  auto events = audit_.events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].action, "auth.unauthenticated");
  EXPECT_EQ(events[0].outcome, "denied");
  EXPECT_EQ(events[0].error_code, "UNAUTHORIZED");
  EXPECT_EQ(events[0].request_id, "rid-1234");
  EXPECT_NE(events[0].detail.find("10.0.0.1"), std::string::npos);
  EXPECT_EQ(events[0].detail.find("wrong"), std::string::npos);
  EXPECT_EQ(Call("DELETE", "/admin/things/1", "Bearer viewer-token", "10.0.0.2").status, 403);
  ASSERT_EQ(audit_.events().size(), 2u);
  EXPECT_EQ(audit_.events()[1].action, "auth.forbidden");
  EXPECT_EQ(audit_.events()[1].actor, "ci");
  clock_.Advance(std::chrono::milliseconds(999));
  Call("GET", "/admin/things/1", "", "10.0.0.1");
  EXPECT_EQ(audit_.events().size(), 2u);
  clock_.Advance(std::chrono::milliseconds(1));
  Call("GET", "/admin/things/1", "", "10.0.0.1");
  events = audit_.events();
  ASSERT_EQ(events.size(), 3u);
  EXPECT_NE(events[2].detail.find("5 denial(s)"), std::string::npos) << events[2].detail;
}

// Security review: a 401 and a 403 from one address are rate-limited apart,
// so an anonymous probe does not hide a viewer's forbidden attempt.
TEST_F(RouterTest, UnauthenticatedDenialDoesNotHideForbidden) {
  EXPECT_EQ(Call("GET", "/admin/things/1", "", "10.0.0.9").status, 401);
  clock_.Advance(std::chrono::milliseconds(100));
  EXPECT_EQ(Call("DELETE", "/admin/things/1", "Bearer viewer-token", "10.0.0.9").status, 403);
  auto events = audit_.events();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].action, "auth.unauthenticated");
  EXPECT_EQ(events[1].action, "auth.forbidden");
  EXPECT_EQ(events[1].actor, "ci");
  // Each kind is still limited on its own.
  EXPECT_EQ(Call("DELETE", "/admin/things/1", "Bearer viewer-token", "10.0.0.9").status, 403);
  EXPECT_EQ(Call("GET", "/admin/things/1", "", "10.0.0.9").status, 401);
  EXPECT_EQ(audit_.events().size(), 2u);
}

// Issue 9, item 2: a throwing handler is a 500 naming the request id.
TEST_F(RouterTest, HandlerExceptionIs500WithTheRequestId) {
  auto r = Call("POST", "/things/throw");
  EXPECT_EQ(r.status, 500);
  EXPECT_NE(r.body.find("rid-1234"), std::string::npos);
  EXPECT_EQ(r.body.find("sk-never-logged"), std::string::npos);
  EXPECT_EQ(Call("GET", "/healthz").status, 200);
}

// Issue 9, item 6: the server asks which handlers may wait on a backend.
// RFC 9110 §9.3.2: HEAD runs the GET route, under the same auth (the
// server drops the body), and Allow names HEAD wherever GET is.
TEST_F(RouterTest, HeadRunsTheGetRouteUnderTheSameAuth) {
  auto r = Call("HEAD", "/healthz");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, Call("GET", "/healthz").body);
  EXPECT_EQ(Call("HEAD", "/admin/things/1").status, 401);
  EXPECT_EQ(Call("HEAD", "/admin/things/1", "Bearer wrong").status, 401);
  r = Call("HEAD", "/admin/things/7", "Bearer viewer-token");  // a viewer may HEAD what it may GET
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("\"id\":\"7\""), std::string::npos) << r.body;
  r = Call("HEAD", "/admin/things", "Bearer ops-token");  // POST only: no GET to run
  EXPECT_EQ(r.status, 405);
  ASSERT_FALSE(r.headers.empty());
  EXPECT_EQ(r.headers[0].second, "POST");
  r = Call("PUT", "/admin/things/1", "Bearer ops-token");
  ASSERT_EQ(r.status, 405);
  EXPECT_EQ(r.headers[0].second, "GET, HEAD, DELETE");
  EXPECT_EQ(Call("HEAD", "/nope").status, 404);
  HttpRequest head;
  head.method = "HEAD";
  head.path = "/admin/things/1";
  EXPECT_TRUE(router_->MayBlock(head));
  head.path = "/healthz";
  EXPECT_FALSE(router_->MayBlock(head));
}

TEST_F(RouterTest, MayBlockFollowsTheRoute) {
  HttpRequest r;
  r.method = "GET";
  r.path = "/healthz";
  EXPECT_FALSE(router_->MayBlock(r));
  r.method = "POST";
  r.path = "/admin/things";
  EXPECT_TRUE(router_->MayBlock(r));
  r.path = "//admin/things";
  EXPECT_FALSE(router_->MayBlock(r));  // a 400, answered inline
  // No route in a realm: the token is checked first, a refusal audited.
  for (const auto& [method, path] : std::vector<std::pair<std::string, std::string>>{
           {"GET", "/admin/nope"}, {"PUT", "/admin/things/1"}, {"POST", "/v1"}, {"GET", "/v1/nope"}}) {
    r.method = method;
    r.path = path;
    EXPECT_TRUE(router_->MayBlock(r)) << method << " " << path;
  }
  r.method = "GET";
  r.path = "/nope";  // no realm: a 404 inline
  EXPECT_FALSE(router_->MayBlock(r));
  // An inline route in a realm runs inline for its caller; a refused caller's
  // denial is audited (a file written): off the I/O threads.
  r.path = "/admin/inline";
  EXPECT_TRUE(router_->MayBlock(r));
  r.authorization = "Bearer viewer-token";
  EXPECT_FALSE(router_->MayBlock(r));
  r.authorization = "Bearer client-token";
  EXPECT_TRUE(router_->MayBlock(r));  // a 403, audited
  r.path = "/admin/nope";
  r.authorization = "Bearer ops-token";
  EXPECT_FALSE(router_->MayBlock(r));  // a 404 for a known caller: nothing audited
  EXPECT_TRUE(audit_.events().empty());
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

// Issue 9, item 13: a configuration nobody could log in with does not start.
TEST(TokensFile, NoTokenAtAllIsRefused) {
  for (std::string json : {"", R"({"tokens":[]})"}) {
    auto r = TokenAuthenticator::FromTokensJson(std::nullopt, json);
    ASSERT_FALSE(r.ok()) << json;
    EXPECT_NE(r.error().message.find("nobody could log in"), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find("GATEWAY_ADMIN_API_KEY"), std::string::npos);
  }
  EXPECT_TRUE(TokenAuthenticator::FromTokensJson(SecretBytes(std::string("admin-key-0123456789")), "").ok());
}

TEST(QueryParams, Decodes) {
  EXPECT_EQ(*QueryParam("a=1&limit=5", "limit"), "5");
  EXPECT_EQ(*QueryParam("q=a%20b+c", "q"), "a b c");
  EXPECT_FALSE(QueryParam("a=1", "b").has_value());
}

}  // namespace
}  // namespace dyad

namespace dyad {
namespace {

TEST(RouterRoutes, ListsEachRouteAsAdded) {
  Router router(nullptr);
  router.Add("GET", "/admin/things/{id}", [](const RouteContext&) { return JsonSuccess(true); });
  router.Add("PATCH", "/admin/things/{id}", [](const RouteContext&) { return JsonSuccess(true); });
  router.Add("GET", "/healthz", [](const RouteContext&) { return JsonSuccess(true); }, HandlerCost::kInline);
  EXPECT_EQ(router.Routes(), (std::vector<Router::RouteKey>{{"GET", "/admin/things/{id}"},
                                                            {"PATCH", "/admin/things/{id}"},
                                                            {"GET", "/healthz"}}));
}

// Issue 13: the route pattern, never the path, is what metrics label by.
TEST_F(RouterTest, ReportsThePatternOfTheRouteThatRanAndNothingOtherwise) {
  HttpRequest r;
  r.method = "GET";
  r.path = "/admin/things/6f1c2d3e-secret-looking-id";
  r.authorization = "Bearer ops-token";
  Principal who;
  std::string_view route = "stale";
  EXPECT_EQ(router_->Handle(r, who, &route).status, 200);
  EXPECT_EQ(route, "/admin/things/{id}");
  r.path = "/nope";
  EXPECT_EQ(router_->Handle(r, who, &route).status, 404);
  EXPECT_EQ(route, "");
  r.path = "/admin/things/1";
  r.method = "POST";
  EXPECT_EQ(router_->Handle(r, who, &route).status, 405);
  EXPECT_EQ(route, "");
  r.method = "GET";
  r.authorization = "";
  EXPECT_EQ(router_->Handle(r, who, &route).status, 401);
  EXPECT_EQ(route, "");
}
// Whether the head alone is refused, whatever the body: what the server
// asks before it reads a body (HttpServerOptions::refuses_head). The same
// decisions Handle makes; asking audits nothing.
TEST_F(RouterTest, RefusesHeadWhenNoBodyCouldMakeItRun) {
  auto refused = [&](std::string method, std::string path, std::string auth) {
    HttpRequest head;
    head.method = std::move(method);
    head.path = std::move(path);
    head.authorization = std::move(auth);
    head.peer = "10.0.0.1";
    return router_->RefusesHead(head);
  };
  for (const auto& [method, path, auth] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"POST", "/admin/things", ""},                      // 401
           {"POST", "/admin/things", "Bearer wrong"},          // 401
           {"POST", "/admin/things", "Bearer viewer-token"},   // 403: a viewer may not write
           {"POST", "/admin/things", "Bearer client-token"},   // 403: a client under /admin
           {"POST", "/v1/throw", "Bearer ops-token"},          // 403: an admin on /v1
           {"POST", "/v1/throw", "Bearer wrong"},              // 401
           {"POST", "//admin/things", "Bearer ops-token"},     // 400
           {"POST", "/admin/things/1", "Bearer ops-token"},    // 405
           {"POST", "/nothing", ""},                           // 404
           {"POST", "/healthz", ""}}) {                        // 405
    EXPECT_TRUE(refused(method, path, auth)) << method << " " << path << " " << auth;
  }
  EXPECT_TRUE(refused("HEAD", "/admin/things/1", ""));  // HEAD as GET, under the same auth
  EXPECT_FALSE(refused("HEAD", "/admin/things/1", "Bearer viewer-token"));
  EXPECT_FALSE(refused("POST", "/admin/things", "Bearer ops-token"));
  EXPECT_FALSE(refused("POST", "/v1/throw", "Bearer client-token"));
  EXPECT_FALSE(refused("POST", "/things/throw", ""));
  EXPECT_TRUE(audit_.events().empty());
  EXPECT_EQ(admin_runs_, 0);
}

// A request whose body the server left unread never reaches a handler,
// even when its caller is allowed by the time it is handled.
TEST_F(RouterTest, ARequestWithItsBodyUnreadRunsNoHandler) {
  HttpRequest r;
  r.method = "POST";
  r.path = "/admin/things";
  r.authorization = "Bearer ops-token";
  r.body_unread = true;
  Principal who;
  auto answer = router_->Handle(r, who);
  EXPECT_EQ(answer.status, 503);
  EXPECT_EQ(admin_runs_, 0);
  r.authorization = "Bearer wrong";  // refused as ever, and audited
  EXPECT_EQ(router_->Handle(r, who).status, 401);
  EXPECT_EQ(audit_.events().size(), 1u);
}

}  // namespace
}  // namespace dyad

namespace dyad {
namespace {

// Issue 16: the client role, its realm (/v1) and its allow-lists.
class V1RealmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string admin_file = R"({"tokens":[{"name":"ops","role":"admin","sha256":")" + HexEncode(Sha256("ops-token")) +
                             R"("},{"name":"ci","role":"viewer","sha256":")" + HexEncode(Sha256("viewer-token")) +
                             R"("},{"name":"ops-as-client","role":"client","sha256":")" +
                             HexEncode(Sha256("both-token")) + R"("},{"name":"ops2","role":"admin","sha256":")" +
                             HexEncode(Sha256("both-token")) + "\"}]}";
    std::string client_file = R"({"tokens":[{"name":"app","role":"client","sha256":")" +
                              HexEncode(Sha256("client-token")) +
                              R"(","providers":["openai"],"models":["gpt-4o"]}]})";
    auto a = TokenAuthenticator::FromTokensJson(std::nullopt, admin_file, true, client_file);
    ASSERT_TRUE(a.ok()) << a.error().message;
    auth_ = std::move(a).value();
    router_ = std::make_unique<Router>(auth_.get(), &audit_, &clock_);
    router_->Add("GET", "/v1/models", [this](const RouteContext& c) {
      seen_ = c.principal;
      return JsonSuccess(true);
    });
    router_->Add("GET", "/admin/things", [](const RouteContext&) { return JsonSuccess(true); });
  }
  HttpResponse Call(std::string method, std::string path, std::string auth = "") {
    HttpRequest r;
    r.method = std::move(method);
    r.path = std::move(path);
    r.authorization = std::move(auth);
    r.peer = "10.0.0.9";
    Principal who;
    return router_->Handle(r, who);
  }
  static std::string ErrorType(const HttpResponse& r) {
    auto j = nlohmann::json::parse(r.body, nullptr, false);
    if (!j.contains("error") || !j["error"].contains("type") || !j["error"].contains("param") ||
        !j["error"].contains("code") || !j["error"].contains("message"))
      return "<not OpenAI's shape>";
    return j["error"]["type"].get<std::string>();
  }
  testing::MemoryAudit audit_;
  FakeClock clock_;
  Principal seen_;
  std::unique_ptr<TokenAuthenticator> auth_;
  std::unique_ptr<Router> router_;
};

TEST_F(V1RealmTest, ClientTokensCallV1Only) {
  EXPECT_EQ(Call("GET", "/v1/models", "Bearer client-token").status, 200);
  EXPECT_EQ(seen_.identity, "app");
  EXPECT_EQ(seen_.role, Role::kClient);
  ASSERT_NE(seen_.scope, nullptr);
  EXPECT_TRUE(seen_.scope->AllowsProvider("openai"));
  EXPECT_FALSE(seen_.scope->AllowsProvider("anthropic"));
  ASSERT_TRUE(seen_.scope->models.has_value());
  EXPECT_EQ(*seen_.scope->models, std::vector<std::string>{"gpt-4o"});
  auto r = Call("GET", "/admin/things", "Bearer client-token");
  EXPECT_EQ(r.status, 403);
  EXPECT_NE(r.body.find("client role"), std::string::npos) << r.body;
}

// The server's pool classifier authenticated the caller already
// (App::PoolFor): the router takes it in the realm its role belongs to, and
// checks the token itself in the other.
TEST_F(V1RealmTest, ACallerTheClassifierFoundIsTakenInItsRealmOnly) {
  HttpRequest r;
  r.method = "GET";
  r.authorization = "Bearer client-token";
  r.caller = Principal{"noted-by-the-classifier", Role::kClient, nullptr};
  Principal who;
  r.path = "/v1/models";
  EXPECT_EQ(router_->Handle(r, who).status, 200);
  EXPECT_EQ(seen_.identity, "noted-by-the-classifier");  // not hashed and found again
  r.path = "/admin/things";
  EXPECT_EQ(router_->Handle(r, who).status, 403) << "a /v1 client is no admin";
  r.authorization = "Bearer ops-token";
  EXPECT_EQ(router_->Handle(r, who).status, 200);
  EXPECT_EQ(who.identity, "ops");

  r.caller = Principal{"noted-admin", Role::kAdmin, nullptr};
  EXPECT_EQ(router_->Handle(r, who).status, 200);
  EXPECT_EQ(who.identity, "noted-admin");
  r.path = "/v1/models";
  EXPECT_EQ(router_->Handle(r, who).status, 403) << "an admin is no /v1 client";
}

// MayBlock notes whom it authenticated when a route would run, for Handle
// to take; nobody for a refused caller or a public route.
TEST_F(V1RealmTest, MayBlockNotesTheCallerOfARouteThatRuns) {
  router_->Add("GET", "/healthz", [](const RouteContext&) { return JsonSuccess(true); });
  HttpRequest r;
  r.method = "GET";
  r.path = "/admin/things";
  r.authorization = "Bearer viewer-token";
  std::optional<Principal> caller;
  router_->MayBlock(r, &caller);
  ASSERT_TRUE(caller.has_value());
  EXPECT_EQ(caller->identity, "ci");
  EXPECT_EQ(caller->role, Role::kViewer);
  r.path = "/v1/models";
  r.authorization = "Bearer client-token";
  caller.reset();
  router_->MayBlock(r, &caller);
  ASSERT_TRUE(caller.has_value());
  EXPECT_EQ(caller->identity, "app");
  for (auto [path, token] : {std::pair{"/admin/things", "Bearer client-token"}, std::pair{"/v1/models", "Bearer nobody"},
                             std::pair{"/healthz", "Bearer ops-token"}, std::pair{"/admin/nothing", "Bearer ops-token"}}) {
    r.path = path;
    r.authorization = token;
    caller.reset();
    router_->MayBlock(r, &caller);
    EXPECT_FALSE(caller.has_value()) << path << " " << token;
  }
}

TEST_F(V1RealmTest, AdminAndViewerTokensAreRefusedOnV1UnlessAlsoClients) {
  for (const char* token : {"Bearer ops-token", "Bearer viewer-token"}) {
    auto r = Call("GET", "/v1/models", token);
    EXPECT_EQ(r.status, 403) << token;
    EXPECT_EQ(ErrorType(r), "permission_error") << r.body;
  }
  auto r = Call("GET", "/v1/models");
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(ErrorType(r), "invalid_request_error") << r.body;
  EXPECT_EQ(Call("GET", "/v1/models", "Bearer nobody").status, 401);
  // One token listed in both realms is each in its own.
  EXPECT_EQ(Call("GET", "/v1/models", "Bearer both-token").status, 200);
  EXPECT_EQ(seen_.identity, "ops-as-client");
  EXPECT_EQ(Call("GET", "/admin/things", "Bearer both-token").status, 200);
}

TEST_F(V1RealmTest, NoSpellingOfV1EscapesItsRealm) {
  // Not canonical: 400 before any handler; other spellings are no route.
  for (const char* path : {"//v1/models", "/v1//models", "/v1/./models", "/v1/../v1/models", "/./v1/models",
                           "/%76%31/models", "/v1/%6dodels", "/v1/models/", "/v1\\models", "/v1%2fmodels"}) {
    seen_ = Principal{};
    auto r = Call("GET", path);
    EXPECT_EQ(r.status, 400) << path;
    EXPECT_EQ(seen_.identity, "") << path;
  }
  for (const char* path : {"/V1/models", "/v1/Models", "/v1 /models"}) {
    seen_ = Principal{};
    int status = Call("GET", path, "Bearer ops-token").status;
    EXPECT_NE(status, 200) << path;
    EXPECT_EQ(seen_.identity, "") << path;
  }
  auto r = Call("POST", "/v1/models", "Bearer client-token");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(ErrorType(r), "invalid_request_error");
  r = Call("GET", "/v1/nothing", "Bearer client-token");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(ErrorType(r), "invalid_request_error");
  EXPECT_EQ(Call("GET", "/v1/nothing").status, 401);  // no route enumeration without a token
}

// An OpenAI SDK reads OpenAI's error shape: a non-canonical spelling aimed at
// /v1 (its first segment "v1", as written, after empty and "." ones) is still
// refused (400, no auth decision, no handler) but in that shape; other
// non-canonical targets keep the service's envelope.
TEST_F(V1RealmTest, NonCanonicalV1PathsAreRefusedInOpenAisErrorShape) {
  for (const char* path : {"//v1/models", "/v1//chat/completions", "/v1/./models", "/./v1/models", "/v1/../admin/things",
                           "/v1/models/", "//./v1/chat/completions", "/v1/%6dodels", "/v1/a%zz"}) {
    for (const char* auth : {"", "Bearer client-token", "Bearer ops-token", "Bearer wrong"}) {
      seen_ = Principal{};
      auto r = Call("POST", path, auth);
      EXPECT_EQ(r.status, 400) << path;
      EXPECT_EQ(seen_.identity, "") << path;
      auto j = nlohmann::json::parse(r.body, nullptr, false);
      ASSERT_TRUE(j.is_object()) << r.body;
      EXPECT_FALSE(j.contains("status")) << r.body;
      ASSERT_TRUE(j.contains("error") && j["error"].is_object()) << r.body;
      EXPECT_EQ(j["error"].value("type", ""), "invalid_request_error") << r.body;
      EXPECT_EQ(j["error"].value("code", ""), "bad_request") << r.body;
      EXPECT_NE(j["error"].value("message", "").find("canonical"), std::string::npos) << r.body;
      EXPECT_TRUE(j["error"].contains("param")) << r.body;
    }
  }
  for (const char* path : {"//admin/things", "/%76%31/models", "/v1%2fmodels", "/v1\\models", "//v2/models", "/V1//models"}) {
    auto r = Call("POST", path, "Bearer client-token");
    EXPECT_EQ(r.status, 400) << path;
    auto j = nlohmann::json::parse(r.body, nullptr, false);
    EXPECT_EQ(j.value("status", ""), "error") << path << ": " << r.body;
  }
}

TEST(ClientTokensFile, HoldsOnlyClientEntries) {
  std::string bad = R"({"tokens":[{"name":"app","role":"client","sha256":")" + HexEncode(Sha256("a")) +
                    R"("},{"name":"sneaky","role":"admin","sha256":")" + HexEncode(Sha256("b")) + "\"}]}";
  auto a = TokenAuthenticator::FromTokensJson(SecretBytes(std::string("admin-key-0123456789")), "", true, bad);
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.error().message.find("GATEWAY_CLIENT_API_KEYS_FILE"), std::string::npos) << a.error().message;
  EXPECT_NE(a.error().message.find("tokens[1]"), std::string::npos) << a.error().message;
  EXPECT_NE(a.error().message.find("sneaky"), std::string::npos) << a.error().message;
  for (std::string entry : std::vector<std::string>{R"({"name":"v","role":"viewer","sha256":")" + HexEncode(Sha256("c")) + "\"}",
                            R"({"name":"c","role":"client","sha256":")" + HexEncode(Sha256("c")) +
                                R"(","providers":"openai"})",
                            R"({"name":"c","role":"client","sha256":")" + HexEncode(Sha256("c")) +
                                R"(","models":[1]})"}) {
    auto r = TokenAuthenticator::FromTokensJson(SecretBytes(std::string("admin-key-0123456789")), "", true,
                                                R"({"tokens":[)" + entry + "]}");
    EXPECT_FALSE(r.ok()) << entry;
  }
  // Allow-lists are for clients only.
  auto r = TokenAuthenticator::FromTokensJson(
      std::nullopt, R"({"tokens":[{"name":"o","role":"admin","sha256":")" + HexEncode(Sha256("o")) +
                        R"(","providers":["x"]}]})");
  EXPECT_FALSE(r.ok());
  // Client tokens alone let nobody into /admin.
  r = TokenAuthenticator::FromTokensJson(std::nullopt, "", true,
                                         R"({"tokens":[{"name":"c","role":"client","sha256":")" +
                                             HexEncode(Sha256("c")) + "\"}]}");
  EXPECT_FALSE(r.ok());
}

// Review 38, B7: a caller identified by its client certificate alone may be
// a browser that holds it, made to send a cross-site form (a POST without a
// preflight). Such a POST must declare its body JSON, on /admin and /v1; a
// bearer token's caller (which no form can send) is not held to it.
TEST(CertificateOnlyPost, MustDeclareItsBodyJson) {
  const std::string tokens = R"({"tokens":[{"name":"deploy","role":"admin","clientCertSubject":"CN=deploy"},)"
                             R"({"name":"ops","role":"admin","sha256":")" + HexEncode(Sha256("ops-token")) + R"("}]})";
  const std::string clients = R"({"tokens":[{"name":"app","role":"client","clientCertSubject":"CN=app"}]})";
  auto auth = TokenAuthenticator::FromTokensJson(std::nullopt, tokens, true, clients);
  ASSERT_TRUE(auth.ok()) << auth.error().message;
  testing::MemoryAudit audit;
  FakeClock clock;
  Router router(auth->get(), &audit, &clock);
  int ran = 0;
  for (const char* path : {"/admin/things", "/v1/chat/completions"}) {
    router.Add("POST", path, [&](const RouteContext&) { return ++ran, JsonSuccess(true); });
  }
  auto call = [&](const std::string& path, const std::string& subject, const std::string& content_type,
                  const std::string& authorization = "") {
    HttpRequest r;
    r.method = "POST";
    r.path = path;
    r.client_cert_subject = subject;
    r.content_type = content_type;
    r.authorization = authorization;
    r.peer = "10.0.0.9";
    Principal who;
    HttpResponse answer = router.Handle(r, who);
    // The head alone decides it: the server's early question agrees.
    EXPECT_EQ(router.RefusesHead(r), answer.status != 200) << path << " " << subject << " " << content_type;
    return answer;
  };
  for (const char* type : {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""}) {
    SCOPED_TRACE(type);
    auto admin = call("/admin/things", "CN=deploy", type);
    EXPECT_EQ(admin.status, 415);
    EXPECT_NE(admin.body.find("UNSUPPORTED_MEDIA_TYPE"), std::string::npos) << admin.body;
    auto v1 = call("/v1/chat/completions", "CN=app", type);
    EXPECT_EQ(v1.status, 415);
    EXPECT_NE(v1.body.find("\"type\":\"invalid_request_error\""), std::string::npos) << v1.body;
  }
  EXPECT_EQ(ran, 0);
  EXPECT_EQ(call("/admin/things", "CN=deploy", "Application/JSON; charset=utf-8").status, 200);
  EXPECT_EQ(call("/v1/chat/completions", "CN=app", "application/json").status, 200);
  EXPECT_EQ(call("/admin/things", "CN=deploy", "text/plain", "Bearer ops-token").status, 200);
  EXPECT_EQ(ran, 3);
}

}  // namespace
}  // namespace dyad
