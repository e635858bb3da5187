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
// Each log has its own head, keyed by the log's id: the "chain" member of
// its first keyed line, a random UUID drawn when the chain starts (a log
// written before heads were keyed has none there: its id is that line's
// MAC). Every later line repeats the id, so a writer learns it from the
// tail it reads anyway, and a line copied in from another log of the same
// deployment (same key, other host) is named. The id lives in the log and
// is covered by its MACs: it survives a move or a rename and needs no host
// name, and instances on many hosts sharing one registry never share a head.
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
#include <utility>
#include <vector>

#include "audit/audit_sink.h"
#include "core/clock.h"
#include "core/mutex.h"
#include "core/random.h"
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
  std::string origin = {};  // where the log was written when this head was saved (AuditLogOrigin)
};

// The key under which a registry keeps the one head it held before heads
// were keyed by log (schema migration 12 carries the old row over to it).
inline const std::string kLegacyAuditLogId;

// AuditHeadStore: keeps each log's chain head beside it (the registry
// database), one per log id. Thread-safe. Save() never moves a log's head
// back to a lower seq (concurrent savers of one log: the highest stands);
// the heads of two logs are independent. Claim() gives the head carried
// over from before heads were keyed (kept under kLegacyAuditLogId) to `log`,
// only while `log` has none, atomically: of concurrent claimers one gets it;
// true when this one did. AtOrigin() lists the heads whose last save came
// from `origin`, by log id (so verify sees a log at that place replaced by
// a new one). Errors: the database's; kInvalidArgument for an empty log id
// (Save, Claim).
class AuditHeadStore {
 public:
  virtual ~AuditHeadStore() = default;
  virtual Status Save(const std::string& log, const AuditHead& head) = 0;
  virtual Result<std::optional<AuditHead>> Load(const std::string& log) = 0;
  virtual Result<bool> Claim(const std::string& log) = 0;
  virtual Result<std::vector<std::pair<std::string, AuditHead>>> AtOrigin(const std::string& origin) = 0;
};

// Where the log at `path` is written: the path made absolute, after this
// host's name when the registry is shared by hosts ("host:/var/lib/dyad/audit.log").
// Recorded with each head. A registry of one host (SQLite) leaves the name
// out: a container's host name changes when it is recreated, and a log
// replaced meanwhile must still be found at its place.
std::string AuditLogOrigin(const std::string& path, bool shared_registry = true);

struct AuditLogOptions {
  std::string path;
  SecretBytes key;  // 32 bytes; or, when empty, asked of key_source
  std::function<Result<SecretBytes>()> key_source;
  AuditHeadStore* heads = nullptr;  // optional; must outlive the log
  uint64_t headroom_bytes = 64 * 1024;
  Random* random = nullptr;  // draws a new chain's id; DefaultRandom() when null
  std::string origin = {};   // AuditLogOrigin(path) when empty
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
  // With mu_ and the flock held: the chain's id for the next line (drawn
  // here when the chain starts with it).
  const std::string& ChainId() DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int fd_;
  AuditLogOptions options_;  // key: guarded by mu_ (the rest is constant, so the struct is not annotated)
  const Clock& clock_;
  Mutex mu_;
  std::optional<Clock::Instant> key_asked_ DYAD_GUARDED_BY(mu_);
  std::string problem_ DYAD_GUARDED_BY(mu_);
  uint64_t seq_ DYAD_GUARDED_BY(mu_) = 0;
  std::string last_mac_ DYAD_GUARDED_BY(mu_);
  std::string chain_ DYAD_GUARDED_BY(mu_);  // the log's id; empty before its first keyed line
  bool legacy_chain_ DYAD_GUARDED_BY(mu_) = false;  // id from a first line without "chain"
  bool claimed_ DYAD_GUARDED_BY(mu_) = false;       // Claim() asked for chain_
  int64_t end_ DYAD_GUARDED_BY(mu_) = -1;      // file size after our last write
  uint64_t dropped_ DYAD_GUARDED_BY(mu_) = 0;  // events lost since the last write failed
  std::atomic<bool> healthy_{true};
};

struct AuditVerifyReport {
  std::string log_id;         // the log's id (see above); empty when it has no keyed line
  size_t lines = 0;
  size_t legacy_lines = 0;    // unkeyed lines before the keyed chain
  uint64_t last_seq = 0;
  size_t first_bad_line = 0;  // 1-based; lines + 1 for a removed tail; 0 for none
  std::string problem;        // empty when intact
};

// Checks the chain under `key` and, when given, that it reaches `head`.
Result<AuditVerifyReport> VerifyAuditLog(const std::string& path, const SecretBytes& key,
                                         const std::optional<AuditHead>& head);

// The id of the log at `path`, read from its first keyed line (`id` empty
// when it has none); `legacy` when that line carries no "chain" member (a
// log begun before heads were keyed: its id is the line's MAC). Not
// authenticated here: VerifyAuditLog checks the line. kNotFound when the
// file cannot be read.
struct AuditLogId {
  std::string id;
  bool legacy = false;
};
Result<AuditLogId> ReadAuditLogId(const std::string& path);

// VerifyAuditLog against the head `heads` holds for the log's id (for a
// legacy log without one yet: the head carried over from before heads were
// keyed). A head of another log last saved from the same `origin`
// (AuditLogOrigin(path) when empty) is reported too: the log there was
// deleted or emptied and begun again; so is a head carried over from before
// heads were keyed that no log claimed, beside a log begun since (the log it
// belonged to was replaced before its first write after the upgrade). Reads
// only.
Result<AuditVerifyReport> VerifyAuditLog(const std::string& path, const SecretBytes& key, AuditHeadStore& heads,
                                         const std::string& origin = "");

// The genesis "prev" of the first line.
inline const std::string kAuditGenesis(64, '0');

}  // namespace dyad
