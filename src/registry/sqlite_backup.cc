#include "registry/sqlite_backup.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>

#include "registry/migrations.h"
#include "registry/sqlite_db.h"

namespace dyad {
namespace {

std::string Quoted(const std::string& path) { return "'" + path + "'"; }

Error SqliteFailure(sqlite3* db, int rc, const std::string& what) {
  int primary = rc & 0xff;
  ErrorCode code = primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB ? ErrorCode::kDataLoss
                   : primary == SQLITE_BUSY || primary == SQLITE_LOCKED || primary == SQLITE_IOERR ||
                           primary == SQLITE_FULL || primary == SQLITE_CANTOPEN
                       ? ErrorCode::kUnavailable
                       : ErrorCode::kInternal;
  return MakeError(code, what + ": " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
}

// Opens an existing file (`flags` never holds SQLITE_OPEN_CREATE). The
// connection closes the handle, also after a failed open.
Result<std::unique_ptr<SqliteConnection>> OpenFile(const std::string& path, int flags) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags | SQLITE_OPEN_NOMUTEX, nullptr);
  auto conn = std::make_unique<SqliteConnection>(raw);  // closes `raw` in every case
  if (rc != SQLITE_OK) return SqliteFailure(raw, rc, "cannot open " + Quoted(path));
  sqlite3_busy_timeout(raw, 5000);
  return conn;
}

// The schema objects of `conn` by "type 'name'", each with its table and
// SQL text. Reads only sqlite_schema, which runs nothing.
Result<std::map<std::string, std::string>> SchemaObjects(SqliteConnection& conn) {
  DYAD_ASSIGN_OR_RETURN(Statement st, conn.Prepare("SELECT type, name, tbl_name, sql FROM sqlite_schema"));
  std::map<std::string, std::string> objects;
  while (true) {
    DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    objects[st.Text(0) + " '" + st.Text(1) + "'"] = st.Text(2) + "\n" + (st.IsNull(3) ? "" : st.Text(3));
  }
  return objects;
}

// The objects a database holds once migrated to `version` by this build.
Result<std::map<std::string, std::string>> ExpectedSchema(int version) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(":memory:", &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_MEMORY, nullptr);
  SqliteConnection conn(raw);  // closes `raw` in every case
  if (rc != SQLITE_OK) return SqliteFailure(raw, rc, "cannot open an in-memory database");
  DYAD_RETURN_IF_ERROR(conn.Exec(SchemaMigrationsTable()));
  for (int v = 0; v < version; ++v) DYAD_RETURN_IF_ERROR(conn.Exec(Migrations()[static_cast<size_t>(v)]));
  return SchemaObjects(conn);
}

// What a restore trusts: a schema whose migrations this build knows (older
// ones are migrated at the next open), holding exactly the objects those
// migrations create, as they create them — a trigger, view or changed
// table in the file would run in the gateway that opens it — and SQLite's
// own integrity check. The schema is read before anything else: reading a
// view, or checking a table's constraints, runs what the file defines.
Result<int> CheckContents(SqliteConnection& conn, const std::string& path) {
  auto objects = SchemaObjects(conn);
  if (!objects.ok()) {
    return MakeError(ErrorCode::kDataLoss, Quoted(path) + " is not a readable SQLite database: " + objects.error().message);
  }
  auto migrations = objects->find("table 'schema_migrations'");
  if (migrations == objects->end()) {
    return MakeError(ErrorCode::kDataLoss, Quoted(path) + " is not a dyad-gateway database (no table 'schema_migrations')");
  }
  // Its version is read next: only from the table as this build defines it
  // (a generated column or a virtual table would run the file's code).
  DYAD_ASSIGN_OR_RETURN(auto bare, ExpectedSchema(0));
  if (migrations->second != bare.at("table 'schema_migrations'")) {
    return MakeError(ErrorCode::kDataLoss, Quoted(path) + " defines table 'schema_migrations' otherwise than a "
                                                          "dyad-gateway database does (what its schema defines runs "
                                                          "in the gateway)");
  }
  int version = 0;
  {
    auto st = conn.Prepare("SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
    if (!st.ok()) return MakeError(ErrorCode::kDataLoss, Quoted(path) + ": " + st.error().message);
    auto row = st->Step();
    if (!row.ok()) return MakeError(ErrorCode::kDataLoss, Quoted(path) + ": " + row.error().message);
    version = *row ? static_cast<int>(st->Int(0)) : 0;
  }
  const int known = static_cast<int>(Migrations().size());
  if (version < 1) return MakeError(ErrorCode::kDataLoss, Quoted(path) + " is not a dyad-gateway database (no schema migration applied)");
  if (version > known) {
    return MakeError(ErrorCode::kFailedPrecondition, Quoted(path) + " has schema version " + std::to_string(version) +
                                                         ", newer than this build knows (" + std::to_string(known) + ")");
  }
  DYAD_ASSIGN_OR_RETURN(auto expected, ExpectedSchema(version));
  const std::string of_version = "a dyad-gateway database of schema version " + std::to_string(version);
  auto refused = [&](const std::string& what) {
    return MakeError(ErrorCode::kDataLoss, Quoted(path) + " " + what + " (what its schema defines runs in the gateway)");
  };
  for (const auto& [object, definition] : *objects) {
    auto want = expected.find(object);
    if (want == expected.end()) return refused("holds " + object + ", which " + of_version + " does not");
    if (want->second != definition) return refused("defines " + object + " otherwise than " + of_version + " does");
  }
  for (const auto& [object, definition] : expected) {
    if (!objects->count(object)) return refused("lacks " + object + ", which " + of_version + " holds");
  }
  auto st = conn.Prepare("PRAGMA integrity_check(5)");
  if (!st.ok()) return MakeError(ErrorCode::kDataLoss, Quoted(path) + " is not a readable SQLite database: " + st.error().message);
  std::string problems;
  while (true) {
    auto row = st->Step();
    if (!row.ok()) return MakeError(ErrorCode::kDataLoss, Quoted(path) + " fails SQLite's integrity check: " + row.error().message);
    if (!*row) break;
    std::string line = st->Text(0);
    if (line != "ok") problems += (problems.empty() ? "" : "; ") + line;
  }
  if (!problems.empty()) return MakeError(ErrorCode::kDataLoss, Quoted(path) + " fails SQLite's integrity check: " + problems);
  return version;
}

// A 0600 temporary file next to `target`, removed on destruction unless
// installed.
class TempFile {
 public:
  static Result<std::unique_ptr<TempFile>> Beside(const std::string& target) {
    std::filesystem::path t(target);
    std::string dir = t.parent_path().empty() ? "." : t.parent_path().string();
    std::string pattern = dir + "/." + t.filename().string() + ".tmp-XXXXXX";
    int fd = ::mkstemp(pattern.data());
    if (fd < 0) {
      return MakeError(ErrorCode::kUnavailable, "cannot create a temporary file in " + Quoted(dir) + ": " + std::strerror(errno));
    }
    ::fchmod(fd, 0600);
    ::close(fd);
    return std::unique_ptr<TempFile>(new TempFile(pattern, dir));
  }
  ~TempFile() {
    if (installed_) return;
    for (const char* suffix : {"", "-journal", "-wal", "-shm"}) ::unlink((path_ + suffix).c_str());
  }
  const std::string& path() const { return path_; }

  // fsyncs the file, renames it to `target` unless that exists, and fsyncs
  // the directory so the rename survives a power cut.
  Status Install(const std::string& target) {
    int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ::fsync(fd) != 0) {
      std::string why = std::strerror(errno);
      if (fd >= 0) ::close(fd);
      return MakeError(ErrorCode::kUnavailable, "cannot sync " + Quoted(path_) + ": " + why);
    }
    ::close(fd);
    if (::renameat2(AT_FDCWD, path_.c_str(), AT_FDCWD, target.c_str(), RENAME_NOREPLACE) != 0) {
      if (errno == EEXIST) return MakeError(ErrorCode::kAlreadyExists, Quoted(target) + " already exists and is never replaced");
      return MakeError(ErrorCode::kUnavailable, "cannot rename " + Quoted(path_) + " to " + Quoted(target) + ": " +
                                                    std::strerror(errno));
    }
    installed_ = true;
    int dfd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
    return OkStatus();
  }

 private:
  TempFile(std::string path, std::string dir) : path_(std::move(path)), dir_(std::move(dir)) {}
  std::string path_, dir_;
  bool installed_ = false;
};

// All pages in one step: one read transaction on the source, which WAL
// mode lets writers work beside.
Status CopyPages(SqliteConnection& from, SqliteConnection& to, const std::string& from_path) {
  sqlite3_backup* backup = sqlite3_backup_init(to.handle(), "main", from.handle(), "main");
  if (!backup) return SqliteFailure(to.handle(), sqlite3_errcode(to.handle()), "cannot copy " + Quoted(from_path));
  int rc = sqlite3_backup_step(backup, -1);
  int finished = sqlite3_backup_finish(backup);
  if (rc != SQLITE_DONE) return SqliteFailure(nullptr, rc, "cannot copy " + Quoted(from_path));
  if (finished != SQLITE_OK) return SqliteFailure(to.handle(), finished, "cannot copy " + Quoted(from_path));
  return OkStatus();
}

// Copies `from` whole into the temporary file in one backup step (one read
// transaction on `from`: a consistent snapshot), leaves it a single
// rollback-journal file, and checks what was written.
Result<BackupInfo> CopyInto(const std::string& from, int from_flags, const std::string& target) {
  std::error_code ec;
  if (std::filesystem::exists(target, ec)) {
    return MakeError(ErrorCode::kAlreadyExists, Quoted(target) + " already exists and is never replaced");
  }
  // SQLite pairs a file with whatever -wal or -journal carries its name: one
  // left by a database deleted after a crash would be replayed into the new
  // file at its first open.
  for (const char* suffix : {"-wal", "-shm", "-journal"}) {
    if (std::filesystem::symlink_status(target + suffix, ec).type() != std::filesystem::file_type::not_found) {
      return MakeError(ErrorCode::kAlreadyExists, Quoted(target + suffix) + " exists beside " + Quoted(target) +
                                                      ": SQLite would replay it into the new file; move it away "
                                                      "(it belongs to a database that is gone)");
    }
  }
  DYAD_ASSIGN_OR_RETURN(auto source, OpenFile(from, from_flags));
  DYAD_ASSIGN_OR_RETURN(auto temp, TempFile::Beside(target));
  BackupInfo info;
  {
    DYAD_ASSIGN_OR_RETURN(auto dest, OpenFile(temp->path(), SQLITE_OPEN_READWRITE));  // the empty temporary
    DYAD_RETURN_IF_ERROR(CopyPages(*source, *dest, from));
    // The copied header keeps the source's WAL flag: back to a rollback
    // journal, so the file stands alone (no -wal beside it to lose).
    DYAD_RETURN_IF_ERROR(dest->Exec("PRAGMA journal_mode=DELETE"));
    DYAD_ASSIGN_OR_RETURN(info.schema_version, CheckContents(*dest, from));
  }
  DYAD_RETURN_IF_ERROR(temp->Install(target));
  struct stat st;
  if (::stat(target.c_str(), &st) == 0) info.bytes = st.st_size;
  return info;
}

}  // namespace

Result<BackupInfo> BackupDatabase(const std::string& database_path, const std::string& out_path) {
  struct stat st;
  if (::stat(database_path.c_str(), &st) != 0) {
    return MakeError(ErrorCode::kNotFound, "no database at " + Quoted(database_path) + ": " + std::strerror(errno));
  }
  // Read-write without create: a WAL reader may need to recover the -shm.
  return CopyInto(database_path, SQLITE_OPEN_READWRITE, out_path);
}

Result<BackupInfo> RestoreDatabase(const std::string& backup_path, const std::string& database_path) {
  struct stat st;
  if (::stat(backup_path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return MakeError(ErrorCode::kNotFound, "no backup file at " + Quoted(backup_path));
  }
  // A name that starts with "file:" would be read as a URI (SQLITE_USE_URI
  // builds): another file than the one just looked at.
  const std::string name = backup_path.starts_with("file:") ? "./" + backup_path : backup_path;
  return CopyInto(name, SQLITE_OPEN_READONLY, database_path);
}

}  // namespace dyad
