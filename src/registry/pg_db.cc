#include "registry/pg_db.h"

#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <cstdlib>

#include "registry/pg_migrations.h"
#include "registry/transaction.h"

namespace dyad {
namespace {

// Every occurrence of each of `secrets` in `text` as `***`.
std::string Scrub(std::string text, const std::vector<std::string>& secrets) {
  for (const std::string& secret : secrets) {
    if (secret.empty()) continue;
    for (size_t at = text.find(secret); at != std::string::npos; at = text.find(secret, at + 3)) {
      text.replace(at, secret.size(), "***");
    }
  }
  return text;
}

std::string Trimmed(const char* message) {
  std::string s = message ? message : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// SQLSTATEs a caller may retry: connection exceptions (08), serialization
// failure and deadlock (40001, 40P01), insufficient resources (53), a lock
// not granted within lock_timeout (55P03), operator intervention such as a
// shutdown (57P01-57P03).
bool Retryable(std::string_view state) {
  return state.rfind("08", 0) == 0 || state == "40001" || state == "40P01" || state.rfind("53", 0) == 0 ||
         state == "55P03" || state == "57P01" || state == "57P02" || state == "57P03";
}

// The password of a postgresql:// URL as it may appear in libpq's
// messages: as written in the user part and in each password= query
// parameter (percent-encoded or not), and decoded as libpq reads it.
std::vector<std::string> PasswordSpellings(std::string_view url, const PQconninfoOption* parsed) {
  std::vector<std::string> out;
  const size_t start = url.find("://") == std::string_view::npos ? 0 : url.find("://") + 3;
  const size_t end = std::min(url.find_first_of("/?#", start), url.size());
  const std::string_view authority = url.substr(start, end - start);
  if (const size_t at = authority.rfind('@'); at != std::string_view::npos) {
    const std::string_view user = authority.substr(0, at);
    if (const size_t colon = user.find(':'); colon != std::string_view::npos) out.emplace_back(user.substr(colon + 1));
  }
  if (const size_t q = url.find('?'); q != std::string_view::npos) {
    std::string_view query = url.substr(q + 1);
    while (!query.empty()) {
      const std::string_view pair = query.substr(0, query.find('&'));
      if (pair.rfind("password=", 0) == 0) out.emplace_back(pair.substr(9));
      query.remove_prefix(std::min(query.size(), pair.size() + 1));
    }
  }
  for (const PQconninfoOption* o = parsed; o && o->keyword; ++o) {
    if (std::string_view(o->keyword) == "password" && o->val) out.emplace_back(o->val);
  }
  // Longest first: a spelling that holds another is scrubbed whole.
  std::sort(out.begin(), out.end(), [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  return out;
}

// postgresql://user@host:port/database from the parsed URL (no password).
std::string DisplayName(const PQconninfoOption* parsed) {
  std::string user, host, port, db;
  for (const PQconninfoOption* o = parsed; o->keyword; ++o) {
    const std::string_view k = o->keyword;
    const std::string v = o->val ? o->val : "";
    if (k == "user") user = v;
    else if (k == "host" || (k == "hostaddr" && host.empty())) host = v;
    else if (k == "port") port = v;
    else if (k == "dbname") db = v;
  }
  return "postgresql://" + (user.empty() ? "" : user + "@") + host + (port.empty() ? "" : ":" + port) + "/" + db;
}

void IgnoreNotice(void*, const char*) {}  // NOTICEs (e.g. "already exists, skipping") are not errors

}  // namespace

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

bool PgConnection::Connected() const { return PQstatus(conn_) == CONNECTION_OK; }

bool PgConnection::StillOpen() const {
  if (PQstatus(conn_) != CONNECTION_OK) return false;
  // Nothing is sent to an idle connection but the news of its end (a
  // termination's FATAL, then the close), or a rare notice: either way it
  // is not reused.
  pollfd p{PQsocket(conn_), POLLIN, 0};
  return poll(&p, 1, 0) == 0;
}

int PgConnection::Socket() const { return PQsocket(conn_); }

Result<int> PgConnection::TakeNotifications() {
  if (PQconsumeInput(conn_) == 0 || PQstatus(conn_) != CONNECTION_OK) return ConnectionError("listen");
  int n = 0;
  while (PGnotify* note = PQnotifies(conn_)) {
    PQfreemem(note);
    ++n;
  }
  return n;
}

Error PgConnection::ConnectionError(std::string_view what) const {
  return MakeError(ErrorCode::kUnavailable,
                   std::string(what) + ": postgresql: " + Scrub(Trimmed(PQerrorMessage(conn_)), secrets_));
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
  std::string message = std::string(what) + ": postgresql: " + Scrub(Trimmed(PQresultErrorMessage(res)), secrets_);
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
    // A text parameter ends at its first NUL in libpq: "a\0b" would be sent as "a".
    if (!params[i].binary && params[i].value && params[i].value->find('\0') != std::string::npos) {
      return MakeError(ErrorCode::kInvalidArgument, "query: text parameter $" + std::to_string(i + 1) +
                                                        " holds a NUL byte (PostgreSQL text cannot)");
    }
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

PgDb::PgDb(std::string url, std::vector<std::string> secrets, std::string display, Options options)
    : url_(std::move(url)), secrets_(std::move(secrets)), display_(std::move(display)), options_(std::move(options)) {}

PgDb::~PgDb() = default;

// Nothing of the URL is echoed until it is parsed: libpq's messages about a
// URL it cannot read quote it, password and all, in some spelling.
Result<std::shared_ptr<PgDb>> PgDb::Open(const std::string& url, Options options) {
  if (url.rfind("postgresql://", 0) != 0 && url.rfind("postgres://", 0) != 0) {
    return MakeError(ErrorCode::kInvalidArgument, "GATEWAY_DATABASE_URL is not a postgresql:// URL");
  }
  const std::string_view rest = std::string_view(url).substr(url.find("://") + 3);
  const std::string_view authority = rest.substr(0, std::min(rest.find_first_of("/?#"), rest.size()));
  if (std::count(authority.begin(), authority.end(), '@') > 1) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "GATEWAY_DATABASE_URL: an '@' in the user name or password must be written %40");
  }
  char* err = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(url.c_str(), &err);
  std::vector<std::string> secrets = PasswordSpellings(url, parsed);
  if (!parsed) {
    std::string why = Scrub(Trimmed(err ? err : "out of memory"), secrets);
    if (err) PQfreemem(err);
    return MakeError(ErrorCode::kInvalidArgument, "GATEWAY_DATABASE_URL does not parse: " + why);
  }
  std::string display = DisplayName(parsed);
  PQconninfoFree(parsed);
  if (options.max_connections < 1) options.max_connections = 1;
  std::shared_ptr<PgDb> db(new PgDb(url, std::move(secrets), Scrub(display, secrets), std::move(options)));
  // One connection now: a wrong host, database or password fails at start, not at the first request.
  DYAD_ASSIGN_OR_RETURN(std::unique_ptr<PgConnection> first, db->Acquire());
  db->Release(std::move(first));
  if (db->options_.migrate) DYAD_RETURN_IF_ERROR(db->Migrate());
  return db;
}

Result<std::unique_ptr<PgConnection>> PgDb::Connect() const {
  // TCP keepalives and a user timeout: after a failover that sends no reset,
  // a query on a dead socket fails in about a minute, not TCP's fifteen.
  std::vector<const char*> keys = {"connect_timeout", "application_name", "keepalives", "keepalives_idle",
                                   "keepalives_interval", "keepalives_count", "tcp_user_timeout", "dbname"};
  std::vector<const char*> values = {"10", "dyad-gateway", "1", "30", "10", "3", "60000",
                                     url_.c_str()};  // the URL's own settings win
  if (!options_.database.empty()) {
    keys.push_back("dbname");
    values.push_back(options_.database.c_str());
  }
  keys.push_back(nullptr);
  values.push_back(nullptr);
  PGconn* conn = PQconnectdbParams(keys.data(), values.data(), 1);
  if (!conn) return MakeError(ErrorCode::kUnavailable, "cannot connect to " + display_ + ": out of memory");
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string why = Scrub(Trimmed(PQerrorMessage(conn)), secrets_);
    PQfinish(conn);
    return MakeError(ErrorCode::kUnavailable, "cannot connect to " + display_ + ": " + why);
  }
  PQsetNoticeProcessor(conn, IgnoreNotice, nullptr);
  return std::make_unique<PgConnection>(conn, secrets_);
}

Result<std::unique_ptr<PgConnection>> PgDb::Acquire() {
  std::unique_ptr<PgConnection> idle;
  const auto deadline = std::chrono::steady_clock::now() + options_.acquire_timeout;
  {
    MutexLock lock(&mu_);
    while (idle_.empty() && open_ >= options_.max_connections) {
      const auto left = deadline - std::chrono::steady_clock::now();
      if (left <= std::chrono::steady_clock::duration::zero()) {
        return MakeError(ErrorCode::kUnavailable, "all " + std::to_string(options_.max_connections) +
                                                      " connections to " + display_ + " stayed busy");
      }
      freed_.WaitFor(&mu_, left);
    }
    if (!idle_.empty()) {
      idle = std::move(idle_.back());
      idle_.pop_back();
    } else {
      ++open_;  // reserved; connected outside the lock
    }
  }
  // An idle connection the server ended meanwhile (a restart, a failover,
  // pg_terminate_backend) is replaced here, not failed on first use; its
  // slot goes to the new one.
  if (idle && idle->StillOpen()) return idle;
  idle.reset();
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

Status PgDb::SettledTransaction(const std::function<Status(PgConnection&)>& fn) {
  return Transaction([&](PgConnection& c) -> Status {
    DYAD_RETURN_IF_ERROR(c.Exec("SET LOCAL lock_timeout = '" + std::to_string(options_.settle_wait.count()) + "ms'"));
    return fn(c);
  });
}

// The migrations run on a connection of their own, outside the pool, in one
// transaction that holds the advisory lock from its first statement to its
// COMMIT: nothing can lease, reset or replace that session midway, so the
// lock is never silently re-taken (or not) on another connection. When the
// connection drops, the server aborts the transaction (none of it applied)
// and frees the lock, and the open fails saying so; it is not retried here,
// so no second migration ever runs beside another instance's.
Status PgDb::Migrate() {
  DYAD_ASSIGN_OR_RETURN(std::unique_ptr<PgConnection> conn, Connect());
  PgConnection& c = *conn;
  Status s = [&]() -> Status {
    DYAD_RETURN_IF_ERROR(c.Exec("BEGIN"));
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
    return c.Exec("COMMIT");
  }();
  if (s.ok()) {
    schema_version_ = static_cast<int>(PgMigrations().size());
    return OkStatus();
  }
  if (!c.Connected()) {
    return MakeError(ErrorCode::kUnavailable,
                     "schema migrations of " + display_ + ": the connection holding the migration lock was lost (" +
                         s.error().message + "); the migrations are one transaction, so the server applied all of "
                         "them or none: start again (what is applied is skipped)");
  }
  (void)c.Exec("ROLLBACK");
  return s;
}

}  // namespace dyad
