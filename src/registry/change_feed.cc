#include "registry/change_feed.h"

#include <fcntl.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "metrics/metrics.h"
#include "registry/change_log_feed.h"

namespace dyad {
namespace {

constexpr Change::Kind kKinds[] = {Change::Kind::kCredentials, Change::Kind::kDeleted, Change::Kind::kKeyEpoch,
                                   Change::Kind::kEverything};

// A kind this build does not know (a newer instance wrote it): kEverything.
Change ChangeOf(const std::string& kind, std::string subject) {
  for (Change::Kind k : kKinds) {
    if (ChangeKindName(k) == kind) return Change{k, k == Change::Kind::kEverything ? std::string() : std::move(subject)};
  }
  return Change{Change::Kind::kEverything, {}};
}

}  // namespace

std::string_view ChangeKindName(Change::Kind kind) {
  switch (kind) {
    case Change::Kind::kCredentials: return "credentials";
    case Change::Kind::kDeleted: return "deleted";
    case Change::Kind::kKeyEpoch: return "key_epoch";
    case Change::Kind::kEverything: return "everything";
  }
  return "everything";
}

ChangeLogFeed::ChangeLogFeed(const Clock& clock, ChangeFeedOptions options)
    : clock_(clock), options_(std::move(options)) {
  if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) wake_[0] = wake_[1] = -1;  // Wait() then only times out
}

ChangeLogFeed::~ChangeLogFeed() {
  Stop();
  for (int fd : wake_) {
    if (fd >= 0) ::close(fd);
  }
}

Status ChangeLogFeed::Init() {
  DYAD_ASSIGN_OR_RETURN(Span span, Bounds());
  MutexLock lock(&check_mu_);
  last_ = span.max;
  return OkStatus();
}

Status ChangeLogFeed::Publish(const Change& change) {
  Status s = Send(change);
  if (!s.ok() && s.code() == ErrorCode::kUnavailable) {
    MutexLock lock(&mu_);
    Keep(change);
  }
  return s;
}

Status ChangeLogFeed::SendUnsent() {
  std::vector<Change> sending;
  {
    MutexLock lock(&mu_);
    sending.swap(unsent_);
  }
  for (auto it = sending.begin(); it != sending.end(); ++it) {
    if (Status s = Send(*it); !s.ok()) {
      if (s.code() != ErrorCode::kUnavailable) ++it;  // refused for good: not kept (it would be refused again)
      MutexLock lock(&mu_);
      std::vector<Change> meanwhile = std::exchange(unsent_, std::vector<Change>(it, sending.end()));
      for (const Change& c : meanwhile) Keep(c);
      return s;
    }
  }
  return OkStatus();
}

void ChangeLogFeed::Keep(const Change& change) {
  const bool kept = std::any_of(unsent_.begin(), unsent_.end(), [&](const Change& c) {
    return c.kind == Change::Kind::kEverything || (c.kind == change.kind && c.subject == change.subject);
  });
  if (kept) return;
  if (change.kind == Change::Kind::kEverything || unsent_.size() >= static_cast<size_t>(kMaxBatch)) {
    unsent_ = {Change{Change::Kind::kEverything, {}}};
  } else {
    unsent_.push_back(change);
  }
}

void ChangeLogFeed::StopListener() {
  Stop();
  if (Status s = SendUnsent(); !s.ok()) {
    MutexLock lock(&mu_);
    spdlog::warn("change feed: {} change(s) not told to the other instances, who learn of them at their cache TTL: {}",
                 unsent_.size(), s.error().message);
  }
}

Status ChangeLogFeed::Send(const Change& change) {
  const std::string subject = change.kind == Change::Kind::kEverything ? std::string() : change.subject;
  const auto wall = clock_.WallNow();
  const int64_t at_ms = std::chrono::duration_cast<std::chrono::milliseconds>(wall.time_since_epoch()).count();
  DYAD_ASSIGN_OR_RETURN(int64_t id, Append(ChangeKindName(change.kind), subject, at_ms));
  bool prune = false;
  {
    MutexLock lock(&mu_);
    own_.insert(id);
    const auto now = clock_.Now();
    if (!last_prune_ || now - *last_prune_ >= std::chrono::minutes(1)) {
      last_prune_ = now;
      prune = true;
    }
  }
  if (prune) {
    const int64_t keep_ms = std::chrono::duration_cast<std::chrono::milliseconds>(options_.keep).count();
    if (Status s = Prune(at_ms - keep_ms); !s.ok()) spdlog::warn("change feed: pruning old rows: {}", s.error().message);
  }
  return OkStatus();
}

uint64_t ChangeLogFeed::Subscribe(Callback callback) {
  MutexLock deliver(&deliver_mu_);
  MutexLock lock(&mu_);
  const uint64_t id = next_id_++;
  subscribers_.emplace(id, std::move(callback));
  return id;
}

void ChangeLogFeed::Unsubscribe(uint64_t id) {
  MutexLock deliver(&deliver_mu_);  // a running callback ends first
  MutexLock lock(&mu_);
  subscribers_.erase(id);
}

void ChangeLogFeed::Deliver(const Change& change) {
  MutexLock deliver(&deliver_mu_);
  std::vector<Callback> callbacks;
  {
    MutexLock lock(&mu_);
    for (const auto& [id, cb] : subscribers_) callbacks.push_back(cb);
  }
  for (const Callback& cb : callbacks) cb(change);
  if (options_.metrics) options_.metrics->CountChangeApplied(ChangeKindName(change.kind));
}

Status ChangeLogFeed::CheckNow() {
  (void)SendUnsent();  // kept until it succeeds; the failure was logged when the change was published
  MutexLock check(&check_mu_);
  DYAD_ASSIGN_OR_RETURN(Span span, Bounds());
  if (span.max == last_) return OkStatus();
  std::vector<Row> rows;
  // Fewer rows than we applied (a registry restored or replaced), the row
  // after the last applied pruned (the oldest row left is above it: at worst
  // a spare kEverything when that row was an id never used), or too many to
  // read: all of it.
  bool everything = span.max < last_ || span.min > last_ + 1;
  if (!everything) {
    DYAD_ASSIGN_OR_RETURN(rows, After(last_, kMaxBatch + 1));
    everything = rows.size() > static_cast<size_t>(kMaxBatch);
  }
  // A prune may have run between the bounds and the rows: the row after
  // last_ is gone although the bounds said it was there. An id after last_
  // that was never used proves nothing (a PostgreSQL sequence skips on a
  // rolled-back insert, and after a crash), so the table is asked again: a
  // prune deletes a prefix of the ids (Prune()) and ids only grow, so a row
  // after last_ that was pruned before the rows were read leaves the oldest
  // row still there above last_ + 1 from then on. An empty read (max said
  // there were rows) is a table emptied under the feed.
  if (!everything && (rows.empty() || rows.front().id != last_ + 1)) {
    DYAD_ASSIGN_OR_RETURN(Span now, Bounds());
    everything = rows.empty() || now.max < last_ || now.min > last_ + 1;
  }
  if (everything) {
    // This instance's whole cache is emptied by it: worth a line.
    spdlog::warn("change feed: the changes after row {} cannot be read one by one (newest row {}, oldest {}, {} read); "
                 "every cached credential is dropped",
                 last_, span.max, span.min, rows.size());
    Deliver(Change{Change::Kind::kEverything, {}});
    last_ = span.max;
  } else {
    for (Row& row : rows) {
      bool own;
      {
        MutexLock lock(&mu_);
        own = own_.erase(row.id) > 0;
      }
      last_ = row.id;
      if (!own) Deliver(ChangeOf(row.kind, std::move(row.subject)));
    }
  }
  MutexLock lock(&mu_);
  // Ids published here that the reading above delivered before Publish()
  // noted them (a spare invalidation): forgotten, they are behind last_.
  own_.erase(own_.begin(), own_.upper_bound(last_));
  return OkStatus();
}

Status ChangeLogFeed::ApplyEverything() {
  (void)SendUnsent();
  MutexLock check(&check_mu_);
  DYAD_ASSIGN_OR_RETURN(Span span, Bounds());
  Deliver(Change{Change::Kind::kEverything, {}});
  last_ = span.max;
  MutexLock lock(&mu_);
  own_.erase(own_.begin(), own_.upper_bound(last_));
  return OkStatus();
}

Status ChangeLogFeed::Start() {
  MutexLock lock(&thread_mu_);
  if (thread_.joinable()) return OkStatus();
  stopping_.store(false, std::memory_order_release);
  auto started = StartThread([this] { Listen(); });
  if (!started.ok()) {
    return MakeError(started.code(), "cannot start the change feed's thread: " + started.error().message);
  }
  thread_ = std::move(started).value();
  return OkStatus();
}

void ChangeLogFeed::Stop() {
  MutexLock lock(&thread_mu_);
  if (!thread_.joinable()) return;
  stopping_.store(true, std::memory_order_release);
  if (wake_[1] >= 0) {
    const char byte = 1;
    (void)!::write(wake_[1], &byte, 1);
  }
  thread_.join();
  char drain[64];
  while (wake_[0] >= 0 && ::read(wake_[0], drain, sizeof(drain)) > 0) {
  }
}

bool ChangeLogFeed::Wait(std::chrono::milliseconds timeout, int fd, bool* readable) {
  if (readable) *readable = false;
  if (stopping()) return false;
  pollfd fds[2] = {{wake_[0], POLLIN, 0}, {fd, POLLIN, 0}};
  const int n = ::poll(fds, fd >= 0 ? 2 : 1, static_cast<int>(std::max<int64_t>(0, timeout.count())));
  if (n > 0 && fd >= 0 && readable) *readable = (fds[1].revents & (POLLIN | POLLERR | POLLHUP)) != 0;
  return !stopping();
}

void ChangeLogFeed::NoteListenerError(const Status& s) {
  MutexLock lock(&mu_);
  const auto now = clock_.Now();
  if (s.ok()) {
    if (failing_) spdlog::info("change feed: the registry answers again");
    failing_ = false;
    return;
  }
  failing_ = true;
  if (last_error_log_ && now - *last_error_log_ < std::chrono::minutes(1)) return;
  last_error_log_ = now;
  spdlog::warn("change feed: {} (other instances' changes reach this one at its cache TTL until it recovers)",
               s.error().message);
}

}  // namespace dyad
