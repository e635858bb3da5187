// FileAuditLog: the audit log as JSON lines with a hash chain.
//
// Each line is a JSON object whose "prev" is the previous line's hash and
// whose last member is "hash": hex SHA-256 of the line's text up to the
// ",\"hash\"" suffix, closed with "}". Editing, removing or reordering a line
// breaks the chain; VerifyAuditLog() names the first bad line. A reopened
// log continues the chain from its last line. Thread-safe.
#pragma once

#include <cstdio>
#include <memory>
#include <mutex>
#include <string>

#include "audit/audit_sink.h"
#include "core/clock.h"
#include "core/result.h"

namespace dyad {

class FileAuditLog final : public AuditSink {
 public:
  static Result<std::unique_ptr<FileAuditLog>> Open(const std::string& path, const Clock& clock);
  ~FileAuditLog() override;
  void Record(const AuditEvent& event) override;
  bool Healthy() const override { return healthy_; }

 private:
  FileAuditLog(std::FILE* f, std::string last_hash, const Clock& clock)
      : file_(f), last_hash_(std::move(last_hash)), clock_(clock) {}
  std::mutex mu_;
  std::FILE* file_;
  std::string last_hash_;
  const Clock& clock_;
  bool healthy_ = true;
};

struct AuditVerifyReport {
  size_t lines = 0;
  size_t first_bad_line = 0;  // 1-based; 0 when intact
  std::string problem;
};

Result<AuditVerifyReport> VerifyAuditLog(const std::string& path);

// The genesis "prev" of the first line.
inline const std::string kAuditGenesis(64, '0');

}  // namespace dyad
