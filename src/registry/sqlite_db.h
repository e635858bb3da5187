// SqliteDb: a pool of SQLite connections to one database file, with the
// schema migrations applied at open.
//
// Thread-safe: each thread leases its own connection (WAL mode lets readers
// run beside one writer). A connection caches its prepared statements.
// Errors carry SQLite's own message; a UNIQUE violation is kAlreadyExists,
// SQLITE_BUSY after the busy timeout is kUnavailable.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/mutex.h"
#include "core/result.h"

struct sqlite3;
struct sqlite3_stmt;

namespace dyad {

// A prepared statement, reset when it goes out of scope.
class Statement {
 public:
  explicit Statement(sqlite3_stmt* stmt) : stmt_(stmt) {}
  Statement(Statement&& o) noexcept : stmt_(o.stmt_) { o.stmt_ = nullptr; }
  Statement(const Statement&) = delete;
  ~Statement();

  Statement& Bind(int index, std::string_view text);
  Statement& BindBlob(int index, std::string_view bytes);
  Statement& Bind(int index, int64_t value);
  Statement& BindNull(int index);

  // Steps once: true with a row, false when done.
  Result<bool> Step();
  // Steps to the end (for statements without rows), then resets so the
  // statement can run again with new bindings.
  Status Run();

  std::string Text(int col) const;
  std::string Blob(int col) const;
  int64_t Int(int col) const;
  bool IsNull(int col) const;

 private:
  sqlite3_stmt* stmt_;
};

class SqliteConnection {
 public:
  explicit SqliteConnection(sqlite3* db) : db_(db) {}
  ~SqliteConnection();
  SqliteConnection(const SqliteConnection&) = delete;

  Result<Statement> Prepare(const std::string& sql);
  // Constant SQL only (values go through Prepare): its error quotes the
  // statement's start.
  Status Exec(const std::string& sql);
  int64_t Changes() const;
  // The SQLite handle, for what the wrapper does not cover (the backup API).
  sqlite3* handle() const { return db_; }

 private:
  sqlite3* db_;
  std::unordered_map<std::string, sqlite3_stmt*> cache_;
};

class SqliteDb {
 public:
  // Opens (creating if needed) the file, sets WAL and applies migrations.
  static Result<std::shared_ptr<SqliteDb>> Open(const std::string& path);
  // A private in-memory copy of the database at `path` (which must exist),
  // taken in one read transaction (sqlite3_serialize; the backup API into
  // a memdb database its connections share): what is
  // written to the copy stays in this process and is gone with the last
  // reference; the file is only read. For a dry run that has to open a
  // backend (which may write key versions) and must write nothing.
  static Result<std::shared_ptr<SqliteDb>> OpenMemoryCopy(const std::string& path);
  ~SqliteDb();

  // Runs `fn` on a leased connection.
  template <typename T>
  Result<T> With(const std::function<Result<T>(SqliteConnection&)>& fn) {
    auto conn = Acquire();
    if (!conn.ok()) return conn.error();
    auto result = fn(**conn);
    Release(std::move(conn).value());
    return result;
  }
  // Runs `fn` inside BEGIN IMMEDIATE (or, for reads, BEGIN) … COMMIT;
  // rolls back when it fails.
  Status Transaction(const std::function<Status(SqliteConnection&)>& fn, bool write = true);

  int SchemaVersion() const { return schema_version_; }

 private:
  explicit SqliteDb(std::string path) : path_(std::move(path)) {}
  Result<std::unique_ptr<SqliteConnection>> Acquire();
  void Release(std::unique_ptr<SqliteConnection> conn);
  Status Migrate();

  std::string path_;  // a file, or (uri_) the URI of a memdb copy
  bool uri_ = false;
  // A memdb copy lives while a connection to it is open: this one.
  std::unique_ptr<SqliteConnection> keeper_;
  int schema_version_ = 0;
  Mutex mu_;
  std::vector<std::unique_ptr<SqliteConnection>> idle_ DYAD_GUARDED_BY(mu_);
};

}  // namespace dyad
