// FileAuditLog: the audit log as JSON lines on a keyed hash chain.
//
// Each line is a JSON object with a sequence number "seq" (1, 2, …), the
// previous line's MAC "prev", and as its last member "mac": hex
// HMAC-SHA-256, under the audit key, of the line's text up to the ",\"mac\""
// suffix, closed with "}". Without the key nobody can edit, remove, reorder
// or recompute lines unnoticed; the chain's head (seq and MAC of the last
// line) is also saved in an AuditHeadStore (the registry database), so a
// removed tail is seen too. VerifyAuditLog() names the first bad line.
//
// Several processes may append to one file: each append holds an exclusive
// flock on it and, when the file grew since this process last wrote, reads
// the tail again, so all of them extend one chain. A write that fails (disk
// full, file-size limit) is cut back so no torn line stays; the log is then
// unhealthy and Ready() is false until a write succeeds again, which first
// records an "audit.resumed" line counting the events lost. Ready() is also
// false, before any failure, while less than `headroom_bytes` can be written
// (free space, RLIMIT_FSIZE). When the key cannot be had at open (the KMS is
// down), the log is unhealthy and asks `key_source` again at most once a
// second. Lines written before the chain was keyed
// (a legacy "hash" member, unkeyed SHA-256) may only precede the keyed ones.
// Thread-safe. Errors: Open() returns kUnavailable when the file cannot be
// opened and kInvalidArgument for a key that is not 32 bytes.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "audit/audit_sink.h"
#include "core/clock.h"
#include "core/mutex.h"
#include "core/result.h"
#include "core/secret_bytes.h"

namespace dyad {

// The chain's last line, as remembered outside the log. `seal` is the hex
// HMAC of seq and mac under the audit key: pointing the head at an earlier
// line (to hide a removed tail) needs the key too.
struct AuditHead {
  uint64_t seq = 0;
  std::string mac;   // hex
  std::string seal;  // hex
};

// AuditHeadStore: keeps the chain's head beside the log (the registry
// database). Thread-safe. Save() never moves the head back to a lower seq.
class AuditHeadStore {
 public:
  virtual ~AuditHeadStore() = default;
  virtual Status Save(const AuditHead& head) = 0;
  virtual Result<std::optional<AuditHead>> Load() = 0;
};

struct AuditLogOptions {
  std::string path;
  SecretBytes key;  // 32 bytes; or, when empty, asked of key_source
  std::function<Result<SecretBytes>()> key_source;
  AuditHeadStore* heads = nullptr;  // optional; must outlive the log
  uint64_t headroom_bytes = 64 * 1024;
};

class FileAuditLog final : public AuditSink {
 public:
  static Result<std::unique_ptr<FileAuditLog>> Open(AuditLogOptions options, const Clock& clock);
  ~FileAuditLog() override;
  void Record(const AuditEvent& event) override DYAD_LOCKS_EXCLUDED(mu_);
  // False after a failed write, and also while less than headroom_bytes can
  // be appended (free space, RLIMIT_FSIZE), when every write is refused.
  // Cheap syscalls only (fstat, getrlimit, fstatvfs): never waits on mu_ or
  // the file lock, so I/O threads may call it.
  bool Healthy() const override { return healthy_.load(std::memory_order_acquire) && HasHeadroom(); }
  bool Ready() override DYAD_LOCKS_EXCLUDED(mu_);
  // Why the log cannot be written, when it cannot (no secret in it).
  std::string Problem() DYAD_LOCKS_EXCLUDED(mu_);

 private:
  FileAuditLog(int fd, AuditLogOptions options, const Clock& clock)
      : fd_(fd), options_(std::move(options)), clock_(clock) {}
  // With mu_ and the flock held: the chain's tail as the file has it now.
  void SyncTail() DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // With mu_ and the flock held: appends one line; false when it failed.
  bool Append(std::string body_without_chain) DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool HasHeadroom() const;
  // With mu_ held: whether the key is in hand, asking key_source if due.
  bool HaveKey() DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int fd_;
  AuditLogOptions options_;  // key: guarded by mu_ (the rest is constant, so the struct is not annotated)
  const Clock& clock_;
  Mutex mu_;
  std::optional<Clock::Instant> key_asked_ DYAD_GUARDED_BY(mu_);
  std::string problem_ DYAD_GUARDED_BY(mu_);
  uint64_t seq_ DYAD_GUARDED_BY(mu_) = 0;
  std::string last_mac_ DYAD_GUARDED_BY(mu_);
  int64_t end_ DYAD_GUARDED_BY(mu_) = -1;      // file size after our last write
  uint64_t dropped_ DYAD_GUARDED_BY(mu_) = 0;  // events lost since the last write failed
  std::atomic<bool> healthy_{true};
};

struct AuditVerifyReport {
  size_t lines = 0;
  size_t legacy_lines = 0;    // unkeyed lines before the keyed chain
  uint64_t last_seq = 0;
  size_t first_bad_line = 0;  // 1-based; lines + 1 for a removed tail; 0 for none
  std::string problem;        // empty when intact
};

// Checks the chain under `key` and, when given, that it reaches `head`.
Result<AuditVerifyReport> VerifyAuditLog(const std::string& path, const SecretBytes& key,
                                         const std::optional<AuditHead>& head);

// The genesis "prev" of the first line.
inline const std::string kAuditGenesis(64, '0');

}  // namespace dyad
