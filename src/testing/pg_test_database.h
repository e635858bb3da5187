// PgTestDatabase: a database of its own, on the PostgreSQL server at
// DYAD_TEST_PG_URL (scripts/test.sh starts one and always sets it), created
// empty and dropped at the end, so tests running in parallel share nothing.
// Tests that need PostgreSQL skip when DYAD_TEST_PG_URL is unset, and fail
// when it is set but the server does not answer.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <unistd.h>

#include "registry/pg_db.h"

namespace dyad::testing {

class PgTestDatabase {
 public:
  // The server's URL; nullopt when DYAD_TEST_PG_URL is unset or empty.
  static std::optional<std::string> ServerUrl() {
    const char* url = std::getenv("DYAD_TEST_PG_URL");
    if (!url || !*url) return std::nullopt;
    return std::string(url);
  }

  PgTestDatabase() {
    std::random_device rd;
    name_ = "dyad_test_" + std::to_string(::getpid()) + "_" + std::to_string(rd());
    auto url = ServerUrl();
    if (!url) {
      status_ = MakeError(ErrorCode::kFailedPrecondition, "DYAD_TEST_PG_URL is unset");
      return;
    }
    url_ = *url;
    PgDb::Options admin;
    admin.max_connections = 1;
    admin.migrate = false;
    auto db = PgDb::Open(url_, admin);
    if (!db.ok()) {
      status_ = db.error();
      return;
    }
    admin_ = *db;
    status_ = Exec("CREATE DATABASE " + name_);
  }

  ~PgTestDatabase() {
    if (admin_ && status_.ok()) (void)Exec("DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
  }

  // Whether the database was created (the server's error otherwise).
  const Status& status() const { return status_; }
  const std::string& url() const { return url_; }
  const std::string& name() const { return name_; }

  // Options that point a pool at this database.
  PgDb::Options Options() const {
    PgDb::Options o;
    o.database = name_;
    return o;
  }
  // A new pool (an instance) on this database, migrated.
  Result<std::shared_ptr<PgDb>> Open() const { return PgDb::Open(url_, Options()); }
  Result<std::shared_ptr<PgDb>> Open(const PgDb::Options& options) const { return PgDb::Open(url_, options); }

  // Runs `sql` on the server's own database (for CREATE/DROP DATABASE).
  Status Exec(const std::string& sql) {
    auto r = admin_->With<bool>([&](PgConnection& c) -> Result<bool> {
      DYAD_RETURN_IF_ERROR(c.Exec(sql));
      return true;
    });
    if (!r.ok()) return r.error();
    return OkStatus();
  }

 private:
  std::string url_;
  std::string name_;
  std::shared_ptr<PgDb> admin_;
  Status status_;
};

}  // namespace dyad::testing

// Skips the test when DYAD_TEST_PG_URL is unset (never when it is set).
#define DYAD_SKIP_WITHOUT_TEST_PG()                                                                  \
  do {                                                                                               \
    if (!::dyad::testing::PgTestDatabase::ServerUrl()) {                                             \
      GTEST_SKIP() << "DYAD_TEST_PG_URL is unset: no PostgreSQL to test on (scripts/test.sh sets it)"; \
    }                                                                                                \
  } while (0)
