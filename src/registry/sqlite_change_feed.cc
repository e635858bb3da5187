// The change feed on SQLite: processes sharing one database file read the
// table every `poll` (one `SELECT min(id), max(id)` when nothing changed).
#include "registry/change_log_feed.h"
#include "registry/sqlite_db.h"

namespace dyad {
namespace {

class SqliteChangeFeed final : public ChangeLogFeed {
 public:
  SqliteChangeFeed(std::shared_ptr<SqliteDb> db, const Clock& clock, ChangeFeedOptions options)
      : ChangeLogFeed(clock, std::move(options)), db_(std::move(db)) {}
  ~SqliteChangeFeed() override { StopListener(); }

  using ChangeLogFeed::Init;

 protected:
  Result<int64_t> Append(std::string_view kind, const std::string& subject, int64_t at_ms) override {
    return db_->With<int64_t>([&](SqliteConnection& c) -> Result<int64_t> {
      DYAD_ASSIGN_OR_RETURN(Statement st,
                            c.Prepare("INSERT INTO registry_changes(kind, subject, at_ms) VALUES(?,?,?) RETURNING id"));
      st.Bind(1, kind).Bind(2, subject).Bind(3, at_ms);
      DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) return MakeError(ErrorCode::kInternal, "change feed: the insert returned no id");
      const int64_t id = st.Int(0);
      DYAD_RETURN_IF_ERROR(st.Run());  // to the end, so the statement is done and reset
      return id;
    });
  }

  Status Prune(int64_t before_ms) override {
    auto r = db_->With<bool>([&](SqliteConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
          "DELETE FROM registry_changes WHERE id <= (SELECT max(id) FROM registry_changes WHERE at_ms < ?) "
          "AND id < (SELECT max(id) FROM registry_changes)"));
      DYAD_RETURN_IF_ERROR(st.Bind(1, before_ms).Run());
      return true;
    });
    return r.ok() ? OkStatus() : Status(r.error());
  }

  Result<Span> Bounds() override {
    return db_->With<Span>([&](SqliteConnection& c) -> Result<Span> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare("SELECT min(id), max(id) FROM registry_changes"));
      DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
      Span span;
      if (row && !st.IsNull(1)) span = Span{st.Int(0), st.Int(1)};
      return span;
    });
  }

  Result<std::vector<Row>> After(int64_t after, int limit) override {
    return db_->With<std::vector<Row>>([&](SqliteConnection& c) -> Result<std::vector<Row>> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
          "SELECT id, kind, subject FROM registry_changes WHERE id > ? ORDER BY id LIMIT ?"));
      st.Bind(1, after).Bind(2, static_cast<int64_t>(limit));
      std::vector<Row> rows;
      while (true) {
        DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
        if (!row) break;
        rows.push_back(Row{st.Int(0), st.Text(1), st.Text(2)});
      }
      return rows;
    });
  }

  void Listen() override {
    while (Wait(options().poll)) NoteListenerError(CheckNow());
  }

 private:
  const std::shared_ptr<SqliteDb> db_;
};

}  // namespace

Result<std::unique_ptr<ChangeFeed>> NewSqliteChangeFeed(std::shared_ptr<SqliteDb> db, const Clock& clock,
                                                        ChangeFeedOptions options) {
  if (!db) return MakeError(ErrorCode::kInvalidArgument, "change feed: no database");
  auto feed = std::make_unique<SqliteChangeFeed>(std::move(db), clock, std::move(options));
  DYAD_RETURN_IF_ERROR(feed->Init());
  return std::unique_ptr<ChangeFeed>(std::move(feed));
}

}  // namespace dyad
