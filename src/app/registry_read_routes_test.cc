// Where the App answers registry reads (GET /admin/providers, …/{id},
// /readyz): on the I/O thread with SQLite, off it with PostgreSQL, whose
// round trip would otherwise stall every connection of that thread (issue 14
// review: GETs through three instances waited seconds and timed out).
#include <gtest/gtest.h>

#include <string>

#include "testing/pg_test_database.h"
#include "testing/test_app.h"

namespace dyad {
namespace {

HttpRequest Get(const std::string& path) {
  HttpRequest r;
  r.method = "GET";
  SetTarget(r, path);
  r.authorization = std::string("Bearer ") + testing::kAdminToken;
  return r;
}

// The server's URL with its database replaced by `name`.
std::string DatabaseUrl(const std::string& server, const std::string& name) {
  const size_t host = server.find("://");
  const size_t path = server.find('/', host == std::string::npos ? 0 : host + 3);
  const size_t query = server.find('?', path);
  return server.substr(0, path) + "/" + name + (query == std::string::npos ? "" : server.substr(query));
}

TEST(RegistryReadRoutes, AnsweredInlineOnSqlite) {
  testing::TestApp t;
  EXPECT_EQ(t.app().PoolFor(Get("/admin/providers/some-id")), HandlerPool::kIo);
  EXPECT_EQ(t.app().PoolFor(Get("/admin/providers")), HandlerPool::kIo);
  EXPECT_EQ(t.app().PoolFor(Get("/readyz")), HandlerPool::kIo);
}

TEST(RegistryReadRoutes, AnsweredOffTheIoThreadsOnPostgresql) {
  DYAD_SKIP_WITHOUT_TEST_PG();
  testing::PgTestDatabase pg;
  ASSERT_TRUE(pg.status().ok()) << pg.status().error().message;
  testing::TestApp t({{"GATEWAY_DATABASE_URL", DatabaseUrl(pg.url(), pg.name())}});
  EXPECT_EQ(t.app().PoolFor(Get("/admin/providers/some-id")), HandlerPool::kBlocking);
  EXPECT_EQ(t.app().PoolFor(Get("/admin/providers")), HandlerPool::kBlocking);
  // A probe stays inline: on the blocking pool it would queue behind /admin
  // calls hung on a slow backend.
  EXPECT_EQ(t.app().PoolFor(Get("/readyz")), HandlerPool::kIo);
  EXPECT_EQ(t.app().PoolFor(Get("/healthz")), HandlerPool::kIo);  // answers without the registry
  // And still answered: the read itself works on this registry.
  HttpResponse r = t.Call("GET", "/admin/providers/unknown-id");
  EXPECT_EQ(r.status, 404) << r.body;
}

}  // namespace
}  // namespace dyad
