#include "registry/sqlite_db.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>

#include "registry/migrations.h"
#include "registry/transaction.h"

namespace dyad {
namespace {

Error SqliteError(sqlite3* db, int rc, std::string_view what) {
  ErrorCode code = ErrorCode::kInternal;
  int primary = rc & 0xff;
  if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) code = ErrorCode::kAlreadyExists;
  else if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED) code = ErrorCode::kUnavailable;
  else if (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB) code = ErrorCode::kDataLoss;
  else if (primary == SQLITE_CANTOPEN || primary == SQLITE_IOERR || primary == SQLITE_FULL) code = ErrorCode::kUnavailable;
  const char* msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  return MakeError(code, std::string(what) + ": " + msg);
}

// How long a statement waits for another connection's lock.
constexpr int kBusyTimeoutMs = 5000;

}  // namespace

Statement::~Statement() {
  if (stmt_) {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
}

Statement& Statement::Bind(int index, std::string_view text) {
  sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
  return *this;
}
Statement& Statement::BindBlob(int index, std::string_view bytes) {
  sqlite3_bind_blob(stmt_, index, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
  return *this;
}
Statement& Statement::Bind(int index, int64_t value) {
  sqlite3_bind_int64(stmt_, index, value);
  return *this;
}
Statement& Statement::BindNull(int index) {
  sqlite3_bind_null(stmt_, index);
  return *this;
}

Result<bool> Statement::Step() {
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return SqliteError(sqlite3_db_handle(stmt_), sqlite3_extended_errcode(sqlite3_db_handle(stmt_)), "sqlite");
}

Status Statement::Run() {
  while (true) {
    auto r = Step();
    if (!r.ok()) {
      sqlite3_reset(stmt_);
      return r.error();
    }
    if (!*r) break;
  }
  sqlite3_reset(stmt_);  // ready to run again with new bindings
  return OkStatus();
}

std::string Statement::Text(int col) const {
  auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
  return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(stmt_, col))) : std::string();
}
std::string Statement::Blob(int col) const {
  auto* p = static_cast<const char*>(sqlite3_column_blob(stmt_, col));
  return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(stmt_, col))) : std::string();
}
int64_t Statement::Int(int col) const { return sqlite3_column_int64(stmt_, col); }
bool Statement::IsNull(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }

SqliteConnection::~SqliteConnection() {
  for (auto& [sql, stmt] : cache_) sqlite3_finalize(stmt);
  sqlite3_close(db_);
}

Result<Statement> SqliteConnection::Prepare(const std::string& sql) {
  auto it = cache_.find(sql);
  if (it != cache_.end()) return Statement(it->second);
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v3(db_, sql.c_str(), static_cast<int>(sql.size()),
                              SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
  if (rc != SQLITE_OK) return SqliteError(db_, rc, "sqlite prepare");
  cache_.emplace(sql, stmt);
  return Statement(stmt);
}

Status SqliteConnection::Exec(const std::string& sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    Error e = SqliteError(nullptr, sqlite3_extended_errcode(db_), "sqlite");
    size_t first = std::min(sql.find_first_not_of(" \n"), sql.size());
    std::string start = sql.substr(first, 60);  // one line in the log
    bool cut = sql.size() - first > start.size();
    std::replace(start.begin(), start.end(), '\n', ' ');
    e.message = "sqlite: " + msg + " (in: " + start + (cut ? "…" : "") + ")";
    return e;
  }
  return OkStatus();
}

int64_t SqliteConnection::Changes() const { return sqlite3_changes64(db_); }

Result<std::shared_ptr<SqliteDb>> SqliteDb::Open(const std::string& path) {
  // Owner only, also for files an older build made 0644: SQLite gives the
  // WAL and SHM files it creates the database file's mode.
  auto owner_only = [&path] {
    for (const char* suffix : {"", "-wal", "-shm", "-journal"}) ::chmod((path + suffix).c_str(), 0600);
  };
  owner_only();
  std::shared_ptr<SqliteDb> db(new SqliteDb(path));
  DYAD_RETURN_IF_ERROR(db->Migrate());
  owner_only();  // and the files the first connection made
  return db;
}

Result<std::shared_ptr<SqliteDb>> SqliteDb::OpenMemoryCopy(const std::string& path) {
  // memdb: one database shared by the connections of this process that name
  // it, with SQLite's locking between them (busy timeouts apply).
  static std::atomic<uint64_t> next{0};
  std::shared_ptr<SqliteDb> db(new SqliteDb("file:/dyad-copy-" + std::to_string(::getpid()) + "-" +
                                            std::to_string(next++) + "?vfs=memdb"));
  db->uri_ = true;
  DYAD_ASSIGN_OR_RETURN(db->keeper_, db->Acquire());
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
  SqliteConnection source(raw);  // closes `raw` in every case
  if (rc != SQLITE_OK) return SqliteError(raw, rc, "cannot open database " + path);
  sqlite3_busy_timeout(raw, kBusyTimeoutMs);
  // One read transaction (the WAL's frames included). The image says WAL
  // (bytes 18-19), which a memdb cannot do: marked a rollback-journal
  // database, staged in a private connection, then copied into the shared
  // one (sqlite3_deserialize alone would unshare it).
  sqlite3_int64 size = 0;
  unsigned char* image = sqlite3_serialize(raw, "main", &size, 0);
  if (!image) return SqliteError(raw, sqlite3_errcode(raw), "cannot read database " + path);
  if (size >= 20) image[18] = image[19] = 1;
  sqlite3* staged_raw = nullptr;
  rc = sqlite3_open_v2(":memory:", &staged_raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  SqliteConnection staged(staged_raw);
  if (rc != SQLITE_OK) {
    sqlite3_free(image);
    return SqliteError(staged_raw, rc, "copy of " + path);
  }
  // FREEONCLOSE: SQLite owns `image` from here, also when this fails.
  rc = sqlite3_deserialize(staged_raw, "main", image, size, size,
                           SQLITE_DESERIALIZE_FREEONCLOSE | SQLITE_DESERIALIZE_RESIZEABLE);
  if (rc != SQLITE_OK) return SqliteError(staged_raw, rc, "copy of " + path);
  sqlite3* keeper = db->keeper_->handle();
  sqlite3_backup* backup = sqlite3_backup_init(keeper, "main", staged_raw, "main");
  if (!backup) return SqliteError(keeper, sqlite3_errcode(keeper), "copy of " + path);
  rc = sqlite3_backup_step(backup, -1);
  sqlite3_backup_finish(backup);
  if (rc != SQLITE_DONE) return SqliteError(keeper, rc, "copy of " + path);
  DYAD_RETURN_IF_ERROR(db->Migrate());
  return db;
}

SqliteDb::~SqliteDb() = default;

Result<std::unique_ptr<SqliteConnection>> SqliteDb::Acquire() {
  {
    MutexLock lock(&mu_);
    if (!idle_.empty()) {
      auto conn = std::move(idle_.back());
      idle_.pop_back();
      return conn;
    }
  }
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path_.c_str(), &raw,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | (uri_ ? SQLITE_OPEN_URI : 0),
                           nullptr);
  if (rc != SQLITE_OK) {
    Error e = SqliteError(raw, rc, "cannot open database " + path_);
    sqlite3_close(raw);
    return e;
  }
  auto conn = std::make_unique<SqliteConnection>(raw);
  sqlite3_busy_timeout(raw, kBusyTimeoutMs);
  // mmap and a 32 MiB page cache keep reads out of pread() for registries of
  // 100k credentials; NORMAL is durable across process crashes in WAL mode.
  // Switching a new file to WAL takes an exclusive lock that SQLite does not
  // wait for: a connection (another process's) opening the same new file at
  // that moment gets SQLITE_BUSY. Only that is tried again, until the busy
  // timeout has passed in all (a lock held by another program, which each
  // attempt waits out, fails as it did); once the file is WAL the pragma
  // takes no lock. The pragmas only set values: running them again is safe.
  static constexpr const char* kSetup =
      "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; "
      "PRAGMA mmap_size=268435456; PRAGMA cache_size=-32768;";
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(kBusyTimeoutMs);
  Status set = conn->Exec(kSetup);
  while (!set.ok() && (sqlite3_errcode(raw) & 0xff) == SQLITE_BUSY && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    set = conn->Exec(kSetup);
  }
  DYAD_RETURN_IF_ERROR(set);
  return conn;
}

void SqliteDb::Release(std::unique_ptr<SqliteConnection> conn) {
  MutexLock lock(&mu_);
  if (idle_.size() < 16) idle_.push_back(std::move(conn));
}

Status SqliteDb::Transaction(const std::function<Status(SqliteConnection&)>& fn, bool write) {
  return InTransaction<SqliteConnection>(*this, write ? "BEGIN IMMEDIATE" : "BEGIN", fn);
}

Status SqliteDb::Migrate() {
  return Transaction([this](SqliteConnection& c) -> Status {
    DYAD_RETURN_IF_ERROR(c.Exec(SchemaMigrationsTable()));
    int current = 0;
    {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare("SELECT COALESCE(MAX(version),0) FROM schema_migrations"));
      DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
      if (row) current = static_cast<int>(st.Int(0));
    }
    const auto& migrations = Migrations();
    if (current > static_cast<int>(migrations.size())) {
      return MakeError(ErrorCode::kFailedPrecondition,
                       "database schema version " + std::to_string(current) +
                           " is newer than this build knows (" + std::to_string(migrations.size()) + ")");
    }
    for (size_t v = static_cast<size_t>(current); v < migrations.size(); ++v) {
      DYAD_RETURN_IF_ERROR(c.Exec(migrations[v]));
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
          "INSERT INTO schema_migrations(version, applied_at) VALUES(?, strftime('%Y-%m-%dT%H:%M:%fZ','now'))"));
      DYAD_RETURN_IF_ERROR(st.Bind(1, static_cast<int64_t>(v + 1)).Run());
    }
    schema_version_ = static_cast<int>(migrations.size());
    return OkStatus();
  });
}

}  // namespace dyad
