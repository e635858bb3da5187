#include "audit/audit_log.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/encoding.h"
#include "core/time_format.h"

namespace dyad {
namespace {

constexpr std::string_view kHashKey = ",\"hash\":\"";
constexpr size_t kHashSuffix = kHashKey.size() + 64 + 2;  // ,"hash":"<64>"}

// Splits a line into its hashed text (closed with '}') and its hash.
bool SplitLine(const std::string& line, std::string& body, std::string& hash) {
  if (line.size() < kHashSuffix + 2 || line.back() != '}' || line[line.size() - 2] != '"') return false;
  size_t at = line.size() - kHashSuffix;
  if (line.compare(at, kHashKey.size(), kHashKey) != 0) return false;
  hash = line.substr(at + kHashKey.size(), 64);
  body = line.substr(0, at) + "}";
  return true;
}

std::string LastHash(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string line, last;
  while (std::getline(in, line)) {
    if (!line.empty()) last = line;
  }
  std::string body, hash;
  return SplitLine(last, body, hash) ? hash : kAuditGenesis;
}

}  // namespace

void SetFailure(AuditEvent& event, const Error& error) {
  event.outcome = "failure";
  event.error_code = std::string(ErrorCodeName(error.code));
  event.detail = error.message;
}

Result<std::unique_ptr<FileAuditLog>> FileAuditLog::Open(const std::string& path, const Clock& clock) {
  std::string last = LastHash(path);
  std::FILE* f = std::fopen(path.c_str(), "ae");
  if (!f) return MakeError(ErrorCode::kUnavailable, "AUDIT_LOG_PATH: cannot open '" + path + "' for appending");
  return std::unique_ptr<FileAuditLog>(new FileAuditLog(f, std::move(last), clock));
}

FileAuditLog::~FileAuditLog() {
  if (file_) std::fclose(file_);
}

void FileAuditLog::Record(const AuditEvent& e) {
  nlohmann::json j = {{"time", FormatIso8601(clock_.WallNow())},
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
  std::lock_guard lock(mu_);
  j["prev"] = last_hash_;
  std::string body = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::string hash = HexEncode(Sha256(body));
  body.pop_back();  // reopen the object to append the hash
  body += kHashKey;
  body += hash;
  body += "\"}\n";
  if (std::fwrite(body.data(), 1, body.size(), file_) != body.size() || std::fflush(file_) != 0) {
    healthy_ = false;
    return;
  }
  last_hash_ = std::move(hash);
}

Result<AuditVerifyReport> VerifyAuditLog(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return MakeError(ErrorCode::kNotFound, "cannot read audit log '" + path + "'");
  AuditVerifyReport report;
  std::string line, prev = kAuditGenesis;
  while (std::getline(in, line)) {
    ++report.lines;
    auto fail = [&](std::string problem) {
      report.first_bad_line = report.lines;
      report.problem = std::move(problem);
      return report;
    };
    std::string body, hash;
    if (!SplitLine(line, body, hash)) return fail("line has no trailing \"hash\" member");
    if (HexEncode(Sha256(body)) != hash) return fail("hash does not match the line's content (edited)");
    auto j = nlohmann::json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("prev") || !j["prev"].is_string()) {
      return fail("line is not a JSON object with \"prev\"");
    }
    if (j["prev"].get<std::string>() != prev) {
      return fail("\"prev\" does not match the previous line's hash (a line was removed or reordered)");
    }
    prev = hash;
  }
  return report;
}

}  // namespace dyad
