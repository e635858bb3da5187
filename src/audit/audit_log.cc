#include "audit/audit_log.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/encoding.h"
#include "core/time_format.h"

namespace dyad {
namespace {

constexpr std::string_view kMacKey = ",\"mac\":\"";
constexpr std::string_view kLegacyKey = ",\"hash\":\"";

// Splits a line into its authenticated text (closed with '}') and the hex
// digest after `key`; false when the line does not end that way.
bool SplitLine(std::string_view line, std::string_view key, std::string& body, std::string& digest) {
  const size_t suffix = key.size() + 64 + 2;  // ,"mac":"<64>"}
  if (line.size() < suffix + 2 || line.back() != '}' || line[line.size() - 2] != '"') return false;
  size_t at = line.size() - suffix;
  if (line.compare(at, key.size(), key) != 0) return false;
  digest = std::string(line.substr(at + key.size(), 64));
  body = std::string(line.substr(0, at)) + "}";
  return true;
}

std::string Mac(const SecretBytes& key, std::string_view body) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(body.data()),
       body.size(), out, &len);
  return HexEncode(std::string_view(reinterpret_cast<const char*>(out), len));
}

std::string HeadSeal(const SecretBytes& key, uint64_t seq, const std::string& mac) {
  return Mac(key, "dyad-audit-head:" + std::to_string(seq) + ":" + mac);
}

// The flock of one append, released when it goes out of scope. Waited for
// at most kLockWait of real time (it waits on another process, not on the
// service's clock): a writer in another process that hangs (or is stopped)
// holding it makes this append fail — the log then refuses what it cannot
// audit — rather than block every other process for good.
constexpr std::chrono::seconds kLockWait{2};

class FileLock {
 public:
  explicit FileLock(int fd) : fd_(fd) {
    const auto deadline = std::chrono::steady_clock::now() + kLockWait;
    auto pause = std::chrono::milliseconds(1);
    while (true) {
      if (flock(fd_, LOCK_EX | LOCK_NB) == 0) {
        held_ = true;
        return;
      }
      if (errno == EINTR) continue;
      if (errno != EWOULDBLOCK || std::chrono::steady_clock::now() >= deadline) return;
      std::this_thread::sleep_for(pause);
      pause = std::min<std::chrono::milliseconds>(pause * 2, std::chrono::milliseconds(50));
    }
  }
  ~FileLock() {
    if (held_) flock(fd_, LOCK_UN);
  }
  FileLock(const FileLock&) = delete;
  bool held() const { return held_; }

 private:
  int fd_;
  bool held_ = false;
};

// The id of the log open at `fd` (audit_log.h): read from its first keyed
// line, found by reading lines from the start (normally the first one).
AuditLogId ScanLogId(int fd) {
  std::string buffer;
  int64_t at = 0;
  size_t from = 0;
  while (true) {
    size_t nl = buffer.find('\n', from);
    if (nl == std::string::npos) {
      char chunk[65536];
      ssize_t n = pread(fd, chunk, sizeof chunk, at);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return {};  // no keyed line (a torn last line is no record)
      buffer.erase(0, from);
      from = 0;
      buffer.append(chunk, static_cast<size_t>(n));
      at += n;
      continue;
    }
    std::string_view line(buffer.data() + from, nl - from);
    from = nl + 1;
    std::string body, digest;
    if (!SplitLine(line, kMacKey, body, digest)) continue;  // unkeyed lines of earlier releases, or damage
    auto j = nlohmann::json::parse(body, nullptr, false);
    if (j.is_object() && j.contains("chain") && j["chain"].is_string() && !j["chain"].get<std::string>().empty()) {
      return AuditLogId{j["chain"].get<std::string>(), false};
    }
    return AuditLogId{digest, true};
  }
}

constexpr char kLockBusy[] = "another process has held the audit log's lock for more than 2 s";

bool WriteAll(int fd, std::string_view data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t w = ::write(fd, data.data() + off, data.size() - off);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    off += static_cast<size_t>(w);
  }
  return true;
}

}  // namespace

void SetFailure(AuditEvent& event, const Error& error) {
  event.outcome = "failure";
  event.error_code = std::string(ErrorCodeName(error.code));
  event.detail = error.message;
}

Result<std::unique_ptr<FileAuditLog>> FileAuditLog::Open(AuditLogOptions options, const Clock& clock) {
  if (options.key.size() != 32 && !(options.key.empty() && options.key_source)) {
    return MakeError(ErrorCode::kInvalidArgument, "the audit key must be 32 bytes");
  }
  if (!options.random) options.random = &DefaultRandom();
  if (options.origin.empty()) options.origin = AuditLogOrigin(options.path);
  int fd = ::open(options.path.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return MakeError(ErrorCode::kUnavailable, "AUDIT_LOG_PATH: cannot open '" + options.path + "' for appending");
  }
  std::unique_ptr<FileAuditLog> log(new FileAuditLog(fd, std::move(options), clock));
  {
    MutexLock lock(&log->mu_);
    FileLock file_lock(fd);
    if (file_lock.held()) {
      log->SyncTail();
    } else {
      log->problem_ = kLockBusy;
      log->healthy_.store(false);
    }
    if (!log->HaveKey()) log->healthy_.store(false);
  }
  return log;
}

FileAuditLog::~FileAuditLog() { ::close(fd_); }

void FileAuditLog::SyncTail() {
  struct stat st;
  if (fstat(fd_, &st) != 0 || st.st_size == end_) return;
  // Read back from the end until the last complete line is in hand.
  int64_t size = st.st_size, start = size;
  std::string tail;
  auto complete = [&] {
    if (start == 0) return true;
    size_t nl = tail.rfind('\n');
    return nl != std::string::npos && nl > 0 && tail.rfind('\n', nl - 1) != std::string::npos;
  };
  while (!complete()) {
    int64_t from = std::max<int64_t>(0, start - 65536);
    std::string chunk(static_cast<size_t>(start - from), '\0');
    ssize_t n = pread(fd_, chunk.data(), chunk.size(), from);
    if (n != static_cast<ssize_t>(chunk.size())) return;  // cannot read it: the next append retries
    tail.insert(0, chunk);
    start = from;
  }
  size_t nl = tail.rfind('\n');
  int64_t whole = nl == std::string::npos ? start : start + static_cast<int64_t>(nl) + 1;
  if (whole < size) {
    // A torn last line (a writer died or the disk filled mid-line): not a
    // record of anything, and the next line must start on its own.
    if (ftruncate(fd_, whole) == 0) size = whole;
  }
  std::string line;
  if (nl != std::string::npos) {
    size_t from = nl == 0 ? std::string::npos : tail.rfind('\n', nl - 1);
    line = tail.substr(from == std::string::npos ? 0 : from + 1, nl - (from == std::string::npos ? 0 : from + 1));
  }
  seq_ = 0;
  last_mac_ = kAuditGenesis;
  std::string body, digest, tail_chain;
  bool keyed = true;  // whether the file may hold a keyed line (and so an id)
  if (line.empty() && whole == 0) {
    keyed = false;  // empty log: the chain starts here
  } else if (SplitLine(line, kMacKey, body, digest)) {
    auto j = nlohmann::json::parse(body, nullptr, false);
    if (j.is_object() && j.contains("seq") && j["seq"].is_number_unsigned()) seq_ = j["seq"].get<uint64_t>();
    if (j.is_object() && j.contains("chain") && j["chain"].is_string()) tail_chain = j["chain"].get<std::string>();
    last_mac_ = digest;
  } else if (SplitLine(line, kLegacyKey, body, digest)) {
    keyed = false;
    last_mac_ = digest;  // the keyed chain goes on from an unkeyed one
  } else {
    last_mac_ = HexEncode(Sha256(line));  // a damaged line: verify names it; link past it
  }
  // The tail names the chain's id; it is read from the first keyed line
  // when it is not the one in hand (at open, after another log's lines were
  // put here) or the tail does not carry it (written by an earlier release).
  if (!keyed) {
    chain_.clear();
    legacy_chain_ = false;
  } else if (tail_chain.empty() || tail_chain != chain_) {
    AuditLogId id = ScanLogId(fd_);
    if (id.id != chain_) claimed_ = false;
    chain_ = std::move(id.id);
    legacy_chain_ = id.legacy;
  }
  end_ = size;
}

bool FileAuditLog::HaveKey() {
  if (!options_.key.empty()) return true;
  if (key_asked_ && clock_.Now() - *key_asked_ < std::chrono::seconds(1)) return false;
  key_asked_ = clock_.Now();
  auto key = options_.key_source();
  if (key.ok() && key->size() == 32) {
    options_.key = std::move(key).value();
    return true;
  }
  problem_ = key.ok() ? "the audit key is not 32 bytes" : key.error().message;
  return false;
}

const std::string& FileAuditLog::ChainId() {
  if (chain_.empty()) {
    chain_ = NewUuid(*options_.random);
    legacy_chain_ = false;
    claimed_ = true;  // a new log: no head from before heads were keyed is its
  }
  return chain_;
}

std::string FileAuditLog::Problem() {
  MutexLock lock(&mu_);
  return problem_;
}

bool FileAuditLog::Append(std::string json_text) {
  std::string mac = Mac(options_.key, json_text);
  json_text.pop_back();  // reopen the object to append the MAC
  json_text += kMacKey;
  json_text += mac;
  json_text += "\"}\n";
  if (!WriteAll(fd_, json_text)) {
    problem_ = std::string("cannot append to '") + options_.path + "': " + std::strerror(errno);
    // Cut back what part of the line made it (file-size limit, disk full).
    if (ftruncate(fd_, end_) != 0) end_ = -1;  // re-read the tail before the next line
    return false;
  }
  end_ += static_cast<int64_t>(json_text.size());
  ++seq_;
  last_mac_ = std::move(mac);
  // The head in the registry lags the file at most by the lines of a crash
  // between these two writes; verify accepts a log ahead of its head.
  if (options_.heads) {
    // A log begun before heads were keyed takes the one head the registry
    // kept then, before its first save under its own id would shadow it.
    // A claim that failed (the registry unreachable) is tried again on the
    // next line: a save under the log's own id first would orphan the old head.
    if (!claimed_) claimed_ = !legacy_chain_ || options_.heads->Claim(chain_).ok();
    if (claimed_) (void)options_.heads->Save(chain_,
                               AuditHead{seq_, last_mac_, HeadSeal(options_.key, seq_, last_mac_), options_.origin});
  }
  return true;
}

namespace {

nlohmann::json EventJson(const AuditEvent& e, const Clock& clock) {
  nlohmann::json j = {{"time", FormatIso8601(clock.WallNow())},
                      {"actor", e.actor},
                      {"action", e.action},
                      {"outcome", e.outcome},
                      {"durationMs", std::round(e.duration_ms * 1000) / 1000}};
  if (!e.resource.empty()) j["resource"] = e.resource;
  if (!e.fields.empty()) j["fields"] = e.fields;
  if (!e.source.empty()) j["source"] = e.source;
  if (!e.error_code.empty()) j["errorCode"] = e.error_code;
  if (!e.request_id.empty()) j["requestId"] = e.request_id;
  if (!e.detail.empty()) j["detail"] = e.detail;
  return j;
}

std::string Dump(nlohmann::json& j, uint64_t seq, const std::string& prev, const std::string& chain) {
  j["seq"] = seq;
  j["prev"] = prev;
  j["chain"] = chain;
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace

void FileAuditLog::Record(const AuditEvent& e) {
  nlohmann::json j = EventJson(e, clock_);
  MutexLock lock(&mu_);
  if (!HaveKey()) {
    ++dropped_;
    return;
  }
  FileLock file_lock(fd_);
  if (!file_lock.held()) {
    problem_ = kLockBusy;
    ++dropped_;
    healthy_.store(false, std::memory_order_release);
    return;
  }
  SyncTail();
  if (!healthy_.load(std::memory_order_relaxed)) {
    AuditEvent resumed;
    resumed.actor = "system";
    resumed.action = "audit.resumed";
    resumed.detail = std::to_string(dropped_) + " event(s) could not be written while the audit log was unavailable";
    nlohmann::json r = EventJson(resumed, clock_);
    if (!Append(Dump(r, seq_ + 1, last_mac_, ChainId()))) {
      ++dropped_;
      return;
    }
    dropped_ = 0;
    healthy_.store(true, std::memory_order_release);
  }
  if (!Append(Dump(j, seq_ + 1, last_mac_, ChainId()))) {
    ++dropped_;
    healthy_.store(false, std::memory_order_release);
  }
}

bool FileAuditLog::HasHeadroom() const {
  struct stat st;
  if (fstat(fd_, &st) != 0) return false;
  const uint64_t need = static_cast<uint64_t>(st.st_size) + options_.headroom_bytes;
  struct rlimit limit;
  if (getrlimit(RLIMIT_FSIZE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY && need > limit.rlim_cur) return false;
  struct statvfs vfs;
  if (fstatvfs(fd_, &vfs) == 0 && static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize < options_.headroom_bytes) {
    return false;
  }
  return true;
}

bool FileAuditLog::Ready() {
  if (!HasHeadroom()) {
    MutexLock lock(&mu_);
    problem_ = "less than " + std::to_string(options_.headroom_bytes) + " bytes can be appended to '" +
               options_.path + "' (disk space or file-size limit)";
    return false;
  }
  if (healthy_.load(std::memory_order_acquire)) return true;
  // Room again after a failed write: prove it with the "audit.resumed" line.
  MutexLock lock(&mu_);
  if (healthy_.load(std::memory_order_relaxed)) return true;
  if (!HaveKey()) return false;
  FileLock file_lock(fd_);
  if (!file_lock.held()) {
    problem_ = kLockBusy;
    return false;
  }
  SyncTail();
  AuditEvent resumed;
  resumed.actor = "system";
  resumed.action = "audit.resumed";
  resumed.detail = std::to_string(dropped_) + " event(s) could not be written while the audit log was unavailable";
  nlohmann::json r = EventJson(resumed, clock_);
  if (!Append(Dump(r, seq_ + 1, last_mac_, ChainId()))) return false;
  dropped_ = 0;
  healthy_.store(true, std::memory_order_release);
  return true;
}

Result<AuditVerifyReport> VerifyAuditLog(const std::string& path, const SecretBytes& key,
                                         const std::optional<AuditHead>& head) {
  AuditVerifyReport report;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (!head) return MakeError(ErrorCode::kNotFound, "cannot read audit log '" + path + "'");
    report.first_bad_line = 1;
    report.problem = "the log cannot be read, but the registry recorded its head at seq " + std::to_string(head->seq);
    return report;
  }
  if (head && !ConstantTimeEquals(HeadSeal(key, head->seq, head->mac), head->seal)) {
    report.problem = "the chain head recorded in the registry is not sealed under the audit key (edited)";
    return report;
  }
  std::string line, prev = kAuditGenesis;
  bool keyed = false;
  while (std::getline(in, line)) {
    ++report.lines;
    auto fail = [&](std::string problem) {
      report.first_bad_line = report.lines;
      report.problem = std::move(problem);
      return report;
    };
    std::string body, digest;
    if (!keyed && SplitLine(line, kLegacyKey, body, digest)) {  // written before the chain was keyed
      if (HexEncode(Sha256(body)) != digest) return fail("hash does not match the line's content (edited)");
      auto j = nlohmann::json::parse(body, nullptr, false);
      if (!j.is_object() || !j.contains("prev") || !j["prev"].is_string() || j["prev"].get<std::string>() != prev) {
        return fail("\"prev\" does not match the previous line's hash (a line was removed or reordered)");
      }
      ++report.legacy_lines;
      prev = digest;
      continue;
    }
    if (!SplitLine(line, kMacKey, body, digest)) return fail("line has no trailing \"mac\" member");
    if (!ConstantTimeEquals(Mac(key, body), digest)) {
      return fail("MAC does not match the line's content (edited, or not written under this deployment's audit key)");
    }
    auto j = nlohmann::json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("prev") || !j["prev"].is_string() || !j.contains("seq") ||
        !j["seq"].is_number_unsigned()) {
      return fail("line is not a JSON object with \"seq\" and \"prev\"");
    }
    const uint64_t seq = j["seq"].get<uint64_t>();
    const uint64_t expected = keyed ? report.last_seq + 1 : 1;
    if (j["prev"].get<std::string>() != prev || seq != expected) {
      return fail("seq " + std::to_string(seq) + " where " + std::to_string(expected) +
                  " was expected, or \"prev\" does not match the previous line (a line was removed or reordered)");
    }
    std::string chain;
    if (j.contains("chain")) {
      if (!j["chain"].is_string()) return fail("\"chain\" is not a string");
      chain = j["chain"].get<std::string>();
    }
    if (!keyed) {
      report.log_id = chain.empty() ? digest : chain;
    } else if (!chain.empty() && chain != report.log_id) {
      return fail("\"chain\" names another audit log than this one's (a line of another log was put here)");
    }
    if (head && seq == head->seq && !ConstantTimeEquals(digest, head->mac)) {
      return fail("does not match the chain head recorded in the registry (the chain was rewritten)");
    }
    keyed = true;
    report.last_seq = seq;
    prev = digest;
  }
  if (head && head->seq > report.last_seq) {
    report.first_bad_line = report.lines + 1;
    report.problem = "the log ends at seq " + std::to_string(report.last_seq) + " but the registry recorded seq " +
                     std::to_string(head->seq) + ": the last " + std::to_string(head->seq - report.last_seq) +
                     " line(s) were removed";
  }
  return report;
}

Result<AuditLogId> ReadAuditLogId(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return MakeError(ErrorCode::kNotFound, "cannot read audit log '" + path + "'");
  AuditLogId id = ScanLogId(fd);
  ::close(fd);
  return id;
}

std::string AuditLogOrigin(const std::string& path, bool shared_registry) {
  std::error_code ec;
  auto absolute = std::filesystem::weakly_canonical(std::filesystem::absolute(path, ec), ec);
  std::string place = ec ? path : absolute.string();
  if (!shared_registry) return place;
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  return std::string(host) + ":" + place;
}

Result<AuditVerifyReport> VerifyAuditLog(const std::string& path, const SecretBytes& key, AuditHeadStore& heads,
                                         const std::string& origin) {
  std::optional<AuditHead> head;
  auto id = ReadAuditLogId(path);
  if (id.ok() && !id->id.empty()) {
    DYAD_ASSIGN_OR_RETURN(head, heads.Load(id->id));
    // No writer has saved under the id yet since the upgrade: the one head
    // kept before heads were keyed was this (then only) log's.
    if (!head && id->legacy) {
      DYAD_ASSIGN_OR_RETURN(head, heads.Load(kLegacyAuditLogId));
    }
  }
  DYAD_ASSIGN_OR_RETURN(AuditVerifyReport report, VerifyAuditLog(path, key, head));
  if (report.problem.empty() && id.ok() && report.log_id != id->id) {
    report.problem = "the log's first line changed while it was verified (replaced?): run `audit verify` again";
  }
  if (report.problem.empty() && !(id.ok() && id->legacy)) {
    // The head carried over from before heads were keyed is claimed by the
    // log it belongs to (begun then: a legacy id) at its first write after
    // the upgrade. Still unclaimed beside a log begun since, it is the head
    // of a log deleted, emptied or replaced before that write.
    DYAD_ASSIGN_OR_RETURN(std::optional<AuditHead> legacy, heads.Load(kLegacyAuditLogId));
    if (legacy) {
      report.first_bad_line = report.log_id.empty() ? report.lines + 1 : 1;
      report.problem = "the registry holds the head of an audit log written before heads were keyed by log (up to "
                       "seq " + std::to_string(legacy->seq) + "), and no log has claimed it: that log was deleted, "
                       "emptied or replaced before its first write after the upgrade (on a registry several hosts "
                       "share: or its host has not written since the upgrade)";
    }
  }
  if (report.problem.empty()) {
    // A log of another id was written here before: this one replaced it.
    DYAD_ASSIGN_OR_RETURN(auto here, heads.AtOrigin(origin.empty() ? AuditLogOrigin(path) : origin));
    for (const auto& [other, other_head] : here) {
      if (other == report.log_id) continue;
      // Named at its first line, or past its end when it holds no keyed line.
      report.first_bad_line = report.log_id.empty() ? report.lines + 1 : 1;
      report.problem = "the registry recorded another audit log (id " + other + ", up to seq " +
                       std::to_string(other_head.seq) + ") written at " + other_head.origin +
                       ": that log was deleted or emptied and this one begun in its place";
      break;
    }
  }
  return report;
}

}  // namespace dyad
