// ChangeFeed: what one gateway instance changed that another's memory may
// hold — a provider's credentials written or deleted, a key's epoch (its
// primary version or a version's state) — told to every other instance on
// the same registry database, so each drops the cache entry or reloads the
// key versions at once instead of when a TTL runs out.
//
// The registry's `registry_changes` table (migration 11) is the log: Publish()
// appends a row (after the write it describes succeeded) and prunes rows
// older than `keep`. A listener remembers the last row it applied and reads
// the rows after it: on PostgreSQL when a NOTIFY on `dyad_registry` arrives
// (a LISTEN on a connection of its own, outside the pool) and every
// `recheck` in case one was lost; on SQLite (processes sharing one file)
// every `poll`. When the listener cannot know what it missed — its
// connection was lost and made again, or the rows after the last it applied
// were pruned — it delivers one Change of kind kEverything.
//
// Subscribers see only the changes other feeds published (another process,
// or another feed on the same database in this one): a feed never delivers
// its own Publish()es, whose writer acted on them already. Callbacks run on
// the feed's thread (or the caller's, in CheckNow()), one at a time, never
// under a lock a Publish() takes; a callback must not Subscribe/Unsubscribe.
// Unsubscribe() waits for a running callback, so after it returns the
// callback's captures may go.
//
// Thread-safe. Errors: Publish() returns the database's (kUnavailable while
// it cannot be reached). The write stands, and a change refused with
// kUnavailable is kept: the listener's next step that reaches the database
// records it (or the feed's stop), so other instances learn of it then, or
// at their TTL if this process ends first. The listener logs and retries,
// never throws.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "core/clock.h"
#include "core/result.h"

namespace dyad {

class Metrics;
class PgDb;
class SqliteDb;

struct Change {
  enum class Kind : uint8_t {
    kCredentials,  // subject: provider id; its stored credentials were written
    kDeleted,      // subject: provider id; its credentials were deleted
    kKeyEpoch,     // subject: key id; a version was made primary, retiring or retired
    kEverything,   // no subject: anything may have changed (a gap in the feed)
  };
  Kind kind = Kind::kEverything;
  std::string subject;
};

// "credentials", "deleted", "key_epoch", "everything": the table's `kind`
// and the metrics label.
std::string_view ChangeKindName(Change::Kind kind);

class ChangeFeed {
 public:
  using Callback = std::function<void(const Change&)>;

  virtual ~ChangeFeed() = default;

  // Records `change` for the other instances (kEverything included: a
  // restore that replaced the registry, for example). Call after the write.
  virtual Status Publish(const Change& change) = 0;
  // Returns an id for Unsubscribe().
  virtual uint64_t Subscribe(Callback callback) = 0;
  virtual void Unsubscribe(uint64_t id) = 0;

  // Starts the listener thread (idempotent). Without it nothing is
  // delivered but by CheckNow().
  // kUnavailable when the system refuses the thread.
  virtual Status Start() = 0;
  // Stops and joins it (idempotent; the destructor calls it).
  virtual void Stop() = 0;
  // Reads and delivers, on the caller's thread, every change recorded since
  // the last one applied: what the listener does on a NOTIFY or a timer.
  // First it records the changes Publish() could not (see Errors above).
  virtual Status CheckNow() = 0;
};

struct ChangeFeedOptions {
  // SQLite: how often the table is read.
  std::chrono::milliseconds poll{1000};
  // PostgreSQL: how often the table is read when no NOTIFY came (one may
  // be lost), and the longest wait before reconnecting a lost listener.
  std::chrono::milliseconds recheck{3000};
  std::chrono::milliseconds max_backoff{5000};
  // Rows older than this are pruned by Publish() (the newest row stays).
  std::chrono::seconds keep{3600};
  // Optional: dyad_registry_changes_applied_total{kind} and
  // dyad_registry_change_feed_reconnects_total.
  Metrics* metrics = nullptr;
};

// `clock` times the rows (wall time) for pruning; the listener's waits are real time.
Result<std::unique_ptr<ChangeFeed>> NewSqliteChangeFeed(std::shared_ptr<SqliteDb> db, const Clock& clock,
                                                        ChangeFeedOptions options = {});
Result<std::unique_ptr<ChangeFeed>> NewPgChangeFeed(std::shared_ptr<PgDb> db, const Clock& clock,
                                                    ChangeFeedOptions options = {});

}  // namespace dyad
