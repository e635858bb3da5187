// The change feed on PostgreSQL. Publish() draws the row's id under a
// transaction-scoped advisory lock and NOTIFYs `dyad_registry`, in one
// statement (one round trip; the notification leaves at its commit), so ids
// become visible in order. The listener keeps a connection of its own
// (outside the pool, application_name "dyad-gateway change feed") that
// LISTENs and waits on its socket; on a notification, and every `recheck`
// without one (a `SELECT 1` on that connection first, so a connection dead
// without a word is found), it reads the rows after the last applied. A
// lost connection is made again with a backoff (100 ms doubling to
// `max_backoff`) and then applies kEverything: what was published while it
// was gone may have been pruned, and its notifications are lost.
#include <spdlog/spdlog.h>

#include "metrics/metrics.h"
#include "registry/change_log_feed.h"
#include "registry/pg_db.h"

namespace dyad {
namespace {

// pg_advisory_xact_lock's key for publishers: "dyadchg" in ASCII.
constexpr const char* kPublishLock = "28548172605498215";

class PgChangeFeed final : public ChangeLogFeed {
 public:
  PgChangeFeed(std::shared_ptr<PgDb> db, const Clock& clock, ChangeFeedOptions options)
      : ChangeLogFeed(clock, std::move(options)), db_(std::move(db)) {}
  ~PgChangeFeed() override { StopListener(); }

  using ChangeLogFeed::Init;

 protected:
  Result<int64_t> Append(std::string_view kind, const std::string& subject, int64_t at_ms) override {
    return db_->With<int64_t>([&](PgConnection& c) -> Result<int64_t> {
      DYAD_ASSIGN_OR_RETURN(
          PgRows rows,
          c.Query(std::string("WITH l AS (SELECT pg_advisory_xact_lock(") + kPublishLock +
                      ")), ins AS (INSERT INTO registry_changes(kind, subject, at_ms) "
                      "SELECT $1, $2, $3 FROM l RETURNING id) "
                      "SELECT id, pg_notify('dyad_registry', id::text) FROM ins",
                  {std::string(kind), subject, at_ms}));
      if (rows.size() != 1) return MakeError(ErrorCode::kInternal, "change feed: the insert returned no id");
      return rows.Int(0, 0);
    });
  }

  Status Prune(int64_t before_ms) override {
    auto r = db_->With<bool>([&](PgConnection& c) -> Result<bool> {
      DYAD_RETURN_IF_ERROR(c.Query(
          "DELETE FROM registry_changes WHERE id <= (SELECT max(id) FROM registry_changes WHERE at_ms < $1) "
          "AND id < (SELECT max(id) FROM registry_changes)",
          {before_ms}));
      return true;
    });
    return r.ok() ? OkStatus() : Status(r.error());
  }

  Result<Span> Bounds() override {
    return db_->With<Span>([&](PgConnection& c) -> Result<Span> {
      DYAD_ASSIGN_OR_RETURN(PgRows rows, c.Query("SELECT min(id), max(id) FROM registry_changes"));
      Span span;
      if (rows.size() == 1 && !rows.IsNull(0, 1)) span = Span{rows.Int(0, 0), rows.Int(0, 1)};
      return span;
    });
  }

  Result<std::vector<Row>> After(int64_t after, int limit) override {
    return db_->With<std::vector<Row>>([&](PgConnection& c) -> Result<std::vector<Row>> {
      DYAD_ASSIGN_OR_RETURN(PgRows rows, c.Query(
          "SELECT id, kind, subject FROM registry_changes WHERE id > $1 ORDER BY id LIMIT $2",
          {after, static_cast<int64_t>(limit)}));
      std::vector<Row> out;
      out.reserve(static_cast<size_t>(rows.size()));
      for (int i = 0; i < rows.size(); ++i) out.push_back(Row{rows.Int(i, 0), rows.Text(i, 1), rows.Text(i, 2)});
      return out;
    });
  }

  void Listen() override {
    bool connected_before = false;
    std::chrono::milliseconds backoff{100};
    while (!stopping()) {
      auto conn = Connect();
      if (!conn.ok()) {
        NoteListenerError(conn.error());
        if (!Wait(backoff)) return;
        backoff = std::min(backoff * 2, options().max_backoff);
        continue;
      }
      backoff = std::chrono::milliseconds(100);
      // The first time, only what was published since the feed was made;
      // after a loss, everything (notifications and maybe rows are gone).
      // Counted before "everything" reaches the subscribers: whoever sees it
      // finds the reconnect already counted.
      if (connected_before && options().metrics) options().metrics->CountChangeFeedReconnect();
      Status caught_up = connected_before ? ApplyEverything() : CheckNow();
      if (connected_before) spdlog::info("change feed: listening again on {}", db_->display_name());
      connected_before = true;
      NoteListenerError(caught_up);
      Status lost = Serve(**conn);
      if (!lost.ok() && !stopping()) NoteListenerError(lost);
    }
  }

 private:
  Result<std::unique_ptr<PgConnection>> Connect() {
    DYAD_ASSIGN_OR_RETURN(std::unique_ptr<PgConnection> conn, db_->ConnectDedicated());
    DYAD_RETURN_IF_ERROR(conn->Exec("SET application_name = 'dyad-gateway change feed'"));
    DYAD_RETURN_IF_ERROR(conn->Exec("LISTEN dyad_registry"));
    return conn;
  }

  // Until the connection is lost (its error) or the feed stops (OK).
  Status Serve(PgConnection& conn) {
    while (true) {
      bool readable = false;
      if (!Wait(options().recheck, conn.Socket(), &readable)) return OkStatus();
      if (readable) {
        DYAD_ASSIGN_OR_RETURN(int notes, conn.TakeNotifications());
        if (notes == 0) continue;  // a partial message, or a notice
      } else {
        DYAD_RETURN_IF_ERROR(conn.Exec("SELECT 1"));  // alive? (and any notification it carried is read below)
        if (auto taken = conn.TakeNotifications(); !taken.ok()) return taken.error();
      }
      NoteListenerError(CheckNow());
    }
  }

  const std::shared_ptr<PgDb> db_;
};

}  // namespace

Result<std::unique_ptr<ChangeFeed>> NewPgChangeFeed(std::shared_ptr<PgDb> db, const Clock& clock,
                                                    ChangeFeedOptions options) {
  if (!db) return MakeError(ErrorCode::kInvalidArgument, "change feed: no database");
  auto feed = std::make_unique<PgChangeFeed>(std::move(db), clock, std::move(options));
  DYAD_RETURN_IF_ERROR(feed->Init());
  return std::unique_ptr<ChangeFeed>(std::move(feed));
}

}  // namespace dyad
