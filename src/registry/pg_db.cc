#include "registry/pg_db.h"

#include <libpq-fe.h>

#include <cstdlib>

#include "registry/pg_migrations.h"
#include "registry/transaction.h"

namespace dyad {
namespace {

// Every occurrence of `secret` in `text` as `***`.
std::string Scrub(std::string text, const std::string& secret) {
  if (secret.empty()) return text;
  for (size_t at = text.find(secret); at != std::string::npos; at = text.find(secret, at + 3)) {
    text.replace(at, secret.size(), "***");
  }
  return text;
}

std::string Trimmed(const char* message) {
  std::string s = message ? message : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// SQLSTATEs a caller may retry: connection exceptions (08), serialization
// failure and deadlock (40001, 40P01), insufficient resources (53), operator
// intervention such as a shutdown (57P01-57P03).
bool Retryable(std::string_view state) {
  return state.rfind("08", 0) == 0 || state == "40001" || state == "40P01" || state.rfind("53", 0) == 0 ||
         state == "57P01" || state == "57P02" || state == "57P03";
}

// The password of `url` as libpq reads it (decoded), or "" when it has none.
std::string PasswordOf(const std::string& url) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(url.c_str(), &err);
  if (err) PQfreemem(err);
  std::string password;
  if (!opts) return password;
  for (PQconninfoOption* o = opts; o->keyword; ++o) {
    if (std::string_view(o->keyword) == "password" && o->val) password = o->val;
  }
  PQconninfoFree(opts);
  return password;
}

void IgnoreNotice(void*, const char*) {}  // NOTICEs (e.g. "already exists, skipping") are not errors

}  // namespace

std::string RedactDatabaseUrl(std::string_view url) {
  const size_t scheme = url.find("://");
  if (scheme == std::string_view::npos) return std::string(url);
  const size_t start = scheme + 3;
  size_t end = url.find_first_of("/?#", start);
  if (end == std::string_view::npos) end = url.size();
  const size_t at = url.rfind('@', end);
  if (at == std::string_view::npos || at < start) return std::string(url);
  const size_t colon = url.find(':', start);
  if (colon == std::string_view::npos || colon > at) return std::string(url);
  return std::string(url.substr(0, colon + 1)) + "***" + std::string(url.substr(at));
}

PgRows& PgRows::operator=(PgRows&& o) noexcept {
  if (this != &o) {
    if (res_) PQclear(res_);
    res_ = o.res_;
    o.res_ = nullptr;
  }
  return *this;
}
PgRows::~PgRows() {
  if (res_) PQclear(res_);
}
int PgRows::size() const { return PQntuples(res_); }
bool PgRows::IsNull(int row, int col) const { return PQgetisnull(res_, row, col) != 0; }
std::string PgRows::Text(int row, int col) const {
  return std::string(PQgetvalue(res_, row, col), static_cast<size_t>(PQgetlength(res_, row, col)));
}
int64_t PgRows::Int(int row, int col) const { return std::strtoll(PQgetvalue(res_, row, col), nullptr, 10); }
bool PgRows::Bool(int row, int col) const { return PQgetvalue(res_, row, col)[0] == 't'; }
std::string PgRows::Bytes(int row, int col) const {
  size_t n = 0;
  unsigned char* raw = PQunescapeBytea(reinterpret_cast<const unsigned char*>(PQgetvalue(res_, row, col)), &n);
  if (!raw) return std::string();
  std::string out(reinterpret_cast<const char*>(raw), n);
  PQfreemem(raw);
  return out;
}
int64_t PgRows::Affected() const { return std::strtoll(PQcmdTuples(res_), nullptr, 10); }

PgConnection::~PgConnection() { PQfinish(conn_); }

bool PgConnection::Healthy() const {
  return PQstatus(conn_) == CONNECTION_OK && PQtransactionStatus(conn_) == PQTRANS_IDLE;
}

Error PgConnection::ConnectionError(std::string_view what) const {
  return MakeError(ErrorCode::kUnavailable,
                   std::string(what) + ": postgresql: " + Scrub(Trimmed(PQerrorMessage(conn_)), password_));
}

Error PgConnection::ResultError(pg_result* res, std::string_view what) const {
  if (!res || PQstatus(conn_) != CONNECTION_OK) {
    if (res) PQclear(res);
    return ConnectionError(what);
  }
  const char* state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
  const std::string_view sqlstate = state ? state : "";
  ErrorCode code = ErrorCode::kInternal;
  if (sqlstate == "23505") code = ErrorCode::kAlreadyExists;
  else if (Retryable(sqlstate)) code = ErrorCode::kUnavailable;
  std::string message = std::string(what) + ": postgresql: " + Scrub(Trimmed(PQresultErrorMessage(res)), password_);
  PQclear(res);
  return MakeError(code, std::move(message));
}

Result<PgRows> PgConnection::Query(const std::string& sql, const std::vector<PgParam>& params) {
  auto it = prepared_.find(sql);
  if (it == prepared_.end()) {
    std::string name = "dyad_" + std::to_string(prepared_.size() + 1);
    PGresult* res = PQprepare(conn_, name.c_str(), sql.c_str(), 0, nullptr);
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) return ResultError(res, "prepare");
    PQclear(res);
    it = prepared_.emplace(sql, std::move(name)).first;
  }
  std::vector<const char*> values(params.size());
  std::vector<int> lengths(params.size());
  std::vector<int> formats(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    values[i] = params[i].value ? params[i].value->data() : nullptr;
    lengths[i] = params[i].value ? static_cast<int>(params[i].value->size()) : 0;
    formats[i] = params[i].binary ? 1 : 0;
  }
  PGresult* res = PQexecPrepared(conn_, it->second.c_str(), static_cast<int>(params.size()), values.data(),
                                 lengths.data(), formats.data(), 0);
  const ExecStatusType status = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) return ResultError(res, "query");
  return PgRows(res);
}

Status PgConnection::Exec(const std::string& sql) {
  PGresult* res = PQexec(conn_, sql.c_str());
  const ExecStatusType status = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) return ResultError(res, "exec");
  // COMMIT of a transaction that had failed answers ROLLBACK, not an error.
  const bool rolled_back = sql == "COMMIT" && std::string_view(PQcmdStatus(res)) == "ROLLBACK";
  PQclear(res);
  if (rolled_back) return MakeError(ErrorCode::kInternal, "commit: postgresql: the transaction had failed and was rolled back");
  return OkStatus();
}

PgDb::PgDb(std::string url, std::string password, Options options)
    : url_(std::move(url)),
      password_(std::move(password)),
      redacted_url_(RedactDatabaseUrl(url_)),
      options_(std::move(options)) {}

PgDb::~PgDb() = default;

Result<std::shared_ptr<PgDb>> PgDb::Open(const std::string& url, Options options) {
  std::string password = PasswordOf(url);
  if (url.rfind("postgresql://", 0) != 0 && url.rfind("postgres://", 0) != 0) {
    return MakeError(ErrorCode::kInvalidArgument, "GATEWAY_DATABASE_URL: '" + Scrub(RedactDatabaseUrl(url), password) +
                                                      "' is not a postgresql:// URL");
  }
  char* err = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(url.c_str(), &err);
  if (!parsed) {
    std::string why = Scrub(Trimmed(err ? err : "out of memory"), password);
    if (err) PQfreemem(err);
    return MakeError(ErrorCode::kInvalidArgument,
                     "GATEWAY_DATABASE_URL: '" + Scrub(RedactDatabaseUrl(url), password) + "': " + why);
  }
  PQconninfoFree(parsed);
  if (options.max_connections < 1) options.max_connections = 1;
  std::shared_ptr<PgDb> db(new PgDb(url, std::move(password), std::move(options)));
  // One connection now: a wrong host, database or password fails at start, not at the first request.
  DYAD_ASSIGN_OR_RETURN(std::unique_ptr<PgConnection> first, db->Acquire());
  db->Release(std::move(first));
  if (db->options_.migrate) DYAD_RETURN_IF_ERROR(db->Migrate());
  return db;
}

Result<std::unique_ptr<PgConnection>> PgDb::Connect() const {
  std::vector<const char*> keys = {"connect_timeout", "application_name", "dbname"};
  std::vector<const char*> values = {"10", "dyad-gateway", url_.c_str()};  // the URL's own settings win
  if (!options_.database.empty()) {
    keys.push_back("dbname");
    values.push_back(options_.database.c_str());
  }
  keys.push_back(nullptr);
  values.push_back(nullptr);
  PGconn* conn = PQconnectdbParams(keys.data(), values.data(), 1);
  if (!conn) return MakeError(ErrorCode::kUnavailable, "cannot connect to " + redacted_url_ + ": out of memory");
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string why = Scrub(Trimmed(PQerrorMessage(conn)), password_);
    PQfinish(conn);
    return MakeError(ErrorCode::kUnavailable, "cannot connect to " + Scrub(redacted_url_, password_) + ": " + why);
  }
  PQsetNoticeProcessor(conn, IgnoreNotice, nullptr);
  return std::make_unique<PgConnection>(conn, password_);
}

Result<std::unique_ptr<PgConnection>> PgDb::Acquire() {
  const auto deadline = std::chrono::steady_clock::now() + options_.acquire_timeout;
  {
    MutexLock lock(&mu_);
    while (idle_.empty() && open_ >= options_.max_connections) {
      const auto left = deadline - std::chrono::steady_clock::now();
      if (left <= std::chrono::steady_clock::duration::zero()) {
        return MakeError(ErrorCode::kUnavailable, "all " + std::to_string(options_.max_connections) +
                                                      " connections to " + redacted_url_ + " stayed busy");
      }
      freed_.WaitFor(&mu_, left);
    }
    if (!idle_.empty()) {
      auto conn = std::move(idle_.back());
      idle_.pop_back();
      return conn;
    }
    ++open_;  // reserved; connected outside the lock
  }
  auto conn = Connect();
  if (!conn.ok()) {
    MutexLock lock(&mu_);
    --open_;
    freed_.Signal();
  }
  return conn;
}

void PgDb::Release(std::unique_ptr<PgConnection> conn) {
  const bool keep = conn->Healthy();
  if (!keep) conn.reset();  // broken, or left inside a transaction: closed, not reused
  MutexLock lock(&mu_);
  if (keep) idle_.push_back(std::move(conn));
  else --open_;
  freed_.Signal();
}

Status PgDb::Transaction(const std::function<Status(PgConnection&)>& fn) {
  return InTransaction<PgConnection>(*this, "BEGIN", fn);
}

Status PgDb::Migrate() {
  return Transaction([this](PgConnection& c) -> Status {
    // Held until COMMIT: an instance starting beside another waits here, then finds nothing left to apply.
    DYAD_RETURN_IF_ERROR(c.Query("SELECT pg_advisory_xact_lock($1)", {PgMigrationLockKey()}));
    DYAD_RETURN_IF_ERROR(c.Exec(PgSchemaMigrationsTable()));
    DYAD_ASSIGN_OR_RETURN(PgRows rows, c.Query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"));
    const int current = static_cast<int>(rows.Int(0, 0));
    const auto& migrations = PgMigrations();
    if (current > static_cast<int>(migrations.size())) {
      return MakeError(ErrorCode::kFailedPrecondition,
                       "database schema version " + std::to_string(current) + " is newer than this build knows (" +
                           std::to_string(migrations.size()) + ")");
    }
    for (size_t v = static_cast<size_t>(current); v < migrations.size(); ++v) {
      DYAD_RETURN_IF_ERROR(c.Exec(migrations[v]));
      DYAD_RETURN_IF_ERROR(c.Query("INSERT INTO schema_migrations(version, applied_at) "
                                   "VALUES($1, to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'))",
                                   {static_cast<int64_t>(v + 1)}));
    }
    schema_version_ = static_cast<int>(migrations.size());
    return OkStatus();
  });
}

}  // namespace dyad
