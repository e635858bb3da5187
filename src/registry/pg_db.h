// PgDb: a pool of libpq connections to one PostgreSQL database (cluster
// mode's registry), with the schema migrations applied at open under an
// advisory lock, so instances starting together migrate once.
//
// The URL is GATEWAY_DATABASE_URL's `postgresql://USER[:PASSWORD]@HOST[:PORT]/DB?sslmode=…`: libpq reads it
// (TLS and `sslmode` from its query, the password from it or from PGPASSFILE). The password never appears in
// an error: messages name the URL with its password as `***` and have the password scrubbed.
//
// Thread-safe: a thread leases a connection for one With/Transaction call;
// at most `max_connections` are open, and a caller waits up to
// `acquire_timeout` for one. A connection prepares each statement once, under
// a name of its own, and reuses it. A connection found broken is dropped, and
// the next lease opens a new one.
//
// Errors carry PostgreSQL's own message: a unique violation is
// kAlreadyExists; a connection that fails or breaks, a serialization failure
// or deadlock, a lock not granted within lock_timeout, and a server shutting
// down or out of resources are kUnavailable (retryable); anything else is
// kInternal.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/mutex.h"
#include "core/result.h"

struct pg_conn;
struct pg_result;

namespace dyad {


// One query parameter: text (PostgreSQL converts it to the column's type),
// binary bytes (for BYTEA), or NULL.
struct PgParam {
  std::optional<std::string> value;
  bool binary = false;

  PgParam(std::string_view text) : value(std::string(text)) {}    // NOLINT: implicit by design
  PgParam(const std::string& text) : value(text) {}                // NOLINT
  PgParam(const char* text) : value(std::string(text)) {}          // NOLINT
  PgParam(int64_t n) : value(std::to_string(n)) {}                 // NOLINT
  PgParam(int n) : value(std::to_string(n)) {}                     // NOLINT
  PgParam(bool b) : value(b ? "true" : "false") {}                 // NOLINT
  static PgParam Bytes(std::string_view bytes) {
    PgParam p{std::string(bytes)};
    p.binary = true;
    return p;
  }
  static PgParam Null() {
    PgParam p{std::string()};
    p.value.reset();
    return p;
  }
};

// The rows (text format) and row count of one statement; owns the result.
class PgRows {
 public:
  explicit PgRows(pg_result* res) : res_(res) {}
  PgRows(PgRows&& o) noexcept : res_(o.res_) { o.res_ = nullptr; }
  PgRows& operator=(PgRows&& o) noexcept;
  PgRows(const PgRows&) = delete;
  ~PgRows();

  int size() const;
  bool IsNull(int row, int col) const;
  std::string Text(int row, int col) const;
  int64_t Int(int row, int col) const;
  bool Bool(int row, int col) const;
  // A BYTEA column's bytes.
  std::string Bytes(int row, int col) const;
  // Rows an INSERT/UPDATE/DELETE touched.
  int64_t Affected() const;

 private:
  pg_result* res_;
};

class PgConnection {
 public:
  PgConnection(pg_conn* conn, std::vector<std::string> secrets) : conn_(conn), secrets_(std::move(secrets)) {}
  ~PgConnection();
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  // Runs one statement with $1… parameters, prepared on this connection on
  // first use (under a generated name) and reused after.
  Result<PgRows> Query(const std::string& sql, const std::vector<PgParam>& params = {});
  // Runs SQL text without parameters (several statements allowed; DDL,
  // BEGIN/COMMIT, statements that cannot be prepared).
  Status Exec(const std::string& sql);
  // False once the connection to the server is lost, or while it is inside
  // a transaction (not to be handed to another caller).
  bool Healthy() const;
  // False once the connection to the server is lost (in a transaction or not).
  bool Connected() const;
  // Whether an idle connection can be leased: false when the server sent it
  // anything (its end: a termination, a shutdown) or it is lost. Does not
  // block.
  bool StillOpen() const;

  // For a LISTEN (ChangeFeed): the socket to wait on, and the notifications
  // that arrived — read from the socket without blocking and counted, the
  // payloads dropped. kUnavailable once the connection is lost.
  int Socket() const;
  Result<int> TakeNotifications();

 private:
  Error ResultError(pg_result* res, std::string_view what) const;
  Error ConnectionError(std::string_view what) const;

  pg_conn* conn_;
  std::vector<std::string> secrets_;  // the password's spellings: only to scrub messages
  std::unordered_map<std::string, std::string> prepared_;  // SQL text -> statement name
};

class PgDb {
 public:
  struct Options {
    int max_connections = 8;
    std::chrono::milliseconds acquire_timeout{10000};
    // Overrides the URL's database (tests: one database per test).
    std::string database;
    // Applies the migrations at open (PgDb::Open); off for an administrative pool.
    bool migrate = true;
    // How long a SettledTransaction waits for a lock that another
    // transaction holds (its write of the same row, still running).
    std::chrono::milliseconds settle_wait{2000};
  };

  // Checks the URL, connects once (so a wrong URL, host or password fails
  // here), and migrates. kInvalidArgument naming GATEWAY_DATABASE_URL for a
  // URL libpq cannot read; kUnavailable when the server cannot be reached.
  static Result<std::shared_ptr<PgDb>> Open(const std::string& url, Options options);
  static Result<std::shared_ptr<PgDb>> Open(const std::string& url) { return Open(url, Options()); }
  ~PgDb();

  // Runs `fn` on a leased connection.
  template <typename T>
  Result<T> With(const std::function<Result<T>(PgConnection&)>& fn) {
    auto conn = Acquire();
    if (!conn.ok()) return conn.error();
    auto result = fn(**conn);
    Release(std::move(conn).value());
    return result;
  }
  // Runs `fn` inside BEGIN … COMMIT (READ COMMITTED); rolls back when it or
  // the COMMIT fails.
  Status Transaction(const std::function<Status(PgConnection&)>& fn);
  // A Transaction whose lock waits end after Options::settle_wait (SET
  // LOCAL lock_timeout): SQLSTATE 55P03, kUnavailable, for the caller to retry.
  // For reads and writes that must wait for another's write to settle
  // without waiting on it forever (its client may be gone).
  Status SettledTransaction(const std::function<Status(PgConnection&)>& fn);

  // A connection of its own, outside the pool and its limit, for a caller
  // that keeps it (a LISTEN); the same settings and errors as a pooled one.
  Result<std::unique_ptr<PgConnection>> ConnectDedicated() const { return Connect(); }

  int SchemaVersion() const { return schema_version_; }
  // postgresql://user@host:port/database, for messages: built from the
  // parsed URL, so no password in any spelling.
  const std::string& display_name() const { return display_; }

 private:
  PgDb(std::string url, std::vector<std::string> secrets, std::string display, Options options);
  Result<std::unique_ptr<PgConnection>> Acquire();
  void Release(std::unique_ptr<PgConnection> conn);
  Result<std::unique_ptr<PgConnection>> Connect() const;
  Status Migrate();

  const std::string url_;
  const std::vector<std::string> secrets_;  // the password's spellings, to scrub libpq's messages
  const std::string display_;
  const Options options_;
  int schema_version_ = 0;
  Mutex mu_;
  CondVar freed_;
  std::vector<std::unique_ptr<PgConnection>> idle_ DYAD_GUARDED_BY(mu_);
  int open_ DYAD_GUARDED_BY(mu_) = 0;  // leased + idle
};

}  // namespace dyad
