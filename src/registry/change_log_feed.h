// ChangeLogFeed: what the SQLite and PostgreSQL change feeds share (see
// change_feed.h): the subscribers, the last row applied, reading the rows
// after it, the listener thread's start, stop and wake-up. An engine gives
// the table's four statements and the thread's loop (Listen()).
//
// Invariant: `last_` only grows, except after kEverything (then it is the
// newest row). Rows are applied in id order, and an engine's ids become
// visible in that order (SQLite: one writer at a time; PostgreSQL: a
// publisher takes a transaction-scoped advisory lock before its id is drawn),
// so reading `id > last_` never skips a row that commits later with a
// smaller id. Ids may skip (an id never used), so a gap is not read from the
// ids: a prune deletes a prefix of the ids, so the row after `last_` was
// pruned exactly when the oldest row left is above `last_ + 1`, checked
// after the rows are read (a prune between reading the bounds and the rows
// is caught). A gap or too many rows at once is delivered as kEverything.
//
// A change whose row could not be appended (kUnavailable: the database did
// not answer) is kept and appended again at every listener step
// (CheckNow(), ApplyEverything()) and when the feed stops, so the other
// instances learn of it once the database answers, not at their cache TTL.
// Appended twice (the first answer was lost), it is one spare invalidation.
// More than kMaxBatch kept changes are one kEverything.
// Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "core/mutex.h"
#include "core/thread.h"
#include "registry/change_feed.h"

namespace dyad {

class ChangeLogFeed : public ChangeFeed {
 public:
  ~ChangeLogFeed() override;

  Status Publish(const Change& change) override DYAD_LOCKS_EXCLUDED(mu_);
  uint64_t Subscribe(Callback callback) override DYAD_LOCKS_EXCLUDED(mu_, deliver_mu_);
  void Unsubscribe(uint64_t id) override DYAD_LOCKS_EXCLUDED(mu_, deliver_mu_);
  Status Start() override DYAD_LOCKS_EXCLUDED(thread_mu_);
  void Stop() override DYAD_LOCKS_EXCLUDED(thread_mu_);
  Status CheckNow() override DYAD_LOCKS_EXCLUDED(check_mu_, mu_);

  // At most this many rows are read at once; more is kEverything.
  static constexpr int kMaxBatch = 1000;

 protected:
  struct Row {
    int64_t id = 0;
    std::string kind, subject;
  };
  struct Span {
    int64_t min = 0, max = 0;  // 0, 0: no rows
  };

  ChangeLogFeed(const Clock& clock, ChangeFeedOptions options);
  // Reads where the table stands now and starts after its newest row (a
  // feed made at start has nothing cached to drop). Call from the factory.
  Status Init() DYAD_LOCKS_EXCLUDED(check_mu_, mu_);
  // Must be called by the engine's destructor (before its members go):
  // stops the listener and appends what is still kept (logged if it cannot).
  void StopListener() DYAD_LOCKS_EXCLUDED(mu_);

  // The engine's statements.
  virtual Result<int64_t> Append(std::string_view kind, const std::string& subject, int64_t at_ms) = 0;
  // Deletes the rows up to the newest one older than `before_ms`, never the
  // newest row: always a prefix of the ids, whatever order the publishers'
  // clocks put the rows in, so the oldest id left says what was pruned.
  virtual Status Prune(int64_t before_ms) = 0;
  virtual Result<Span> Bounds() = 0;
  // Up to `limit` rows with id > `after`, by id.
  virtual Result<std::vector<Row>> After(int64_t after, int limit) = 0;
  // The listener thread's body: returns once stopping() (Wait() says so).
  virtual void Listen() = 0;

  // Delivers kEverything and continues after the newest row.
  Status ApplyEverything() DYAD_LOCKS_EXCLUDED(check_mu_, mu_);
  // Waits up to `timeout` (real time) or until Stop(); false when stopping.
  // `fd` (>= 0): also returns when it is readable; `*readable` says whether it is.
  bool Wait(std::chrono::milliseconds timeout, int fd = -1, bool* readable = nullptr);
  bool stopping() const { return stopping_.load(std::memory_order_acquire); }
  const ChangeFeedOptions& options() const { return options_; }
  // A listener error, logged at most once a minute (and when it clears).
  void NoteListenerError(const Status& s);

 private:
  void Deliver(const Change& change) DYAD_LOCKS_EXCLUDED(mu_, deliver_mu_);
  // Appends the kept changes, oldest first; those not appended stay kept.
  Status SendUnsent() DYAD_LOCKS_EXCLUDED(mu_);
  Status Send(const Change& change) DYAD_LOCKS_EXCLUDED(mu_);
  void Keep(const Change& change) DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Clock& clock_;
  const ChangeFeedOptions options_;
  int wake_[2] = {-1, -1};  // a pipe: Stop() writes, Wait() polls
  std::atomic<bool> stopping_{false};

  Mutex thread_mu_;
  std::thread thread_ DYAD_GUARDED_BY(thread_mu_);

  Mutex check_mu_;  // one reader of the table at a time
  int64_t last_ DYAD_GUARDED_BY(check_mu_) = 0;

  Mutex deliver_mu_;  // held while callbacks run, so Unsubscribe() can wait for them
  Mutex mu_;
  std::map<uint64_t, Callback> subscribers_ DYAD_GUARDED_BY(mu_);
  uint64_t next_id_ DYAD_GUARDED_BY(mu_) = 1;
  std::set<int64_t> own_ DYAD_GUARDED_BY(mu_);  // ids this feed published, not yet read back
  std::vector<Change> unsent_ DYAD_GUARDED_BY(mu_);  // published, not yet appended
  std::optional<Clock::Instant> last_prune_ DYAD_GUARDED_BY(mu_);
  std::optional<Clock::Instant> last_error_log_ DYAD_GUARDED_BY(mu_);
  bool failing_ DYAD_GUARDED_BY(mu_) = false;
};

}  // namespace dyad
