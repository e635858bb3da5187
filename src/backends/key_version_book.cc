#include "backends/key_version_book.h"

#include <utility>

namespace dyad {

KeyVersionBook::KeyVersionBook(std::shared_ptr<KeyVersionRepository> repo, std::string row_key, const Clock& clock,
                               std::string key_name, std::string version_word)
    : repo_(std::move(repo)),
      row_key_(std::move(row_key)),
      clock_(clock),
      key_name_(std::move(key_name)),
      version_word_(std::move(version_word)) {}

Status KeyVersionBook::Reload() {
  std::map<uint32_t, KeyVersionRecord> rows;
  const uint64_t ticket = tickets_.fetch_add(1, std::memory_order_relaxed) + 1;  // before the read
  DYAD_ASSIGN_OR_RETURN(std::vector<KeyVersionRecord> listed, repo_->List(row_key_));
  for (auto& row : listed) rows[row.version] = std::move(row);
  MutexLock lock(&mu_);
  // A reload begun after this one has been applied: this older view would
  // set the primary (or a state) back.
  if (ticket < applied_) return OkStatus();
  applied_ = ticket;
  versions_ = std::move(rows);
  primary_ = versions_.empty() ? 0 : versions_.rbegin()->first;
  last_reload_ = clock_.Now();
  return OkStatus();
}

uint32_t KeyVersionBook::Primary() const {
  MutexLock lock(&mu_);
  return primary_;
}

Result<uint32_t> KeyVersionBook::LivePrimary() {
  bool due;
  {
    MutexLock lock(&mu_);
    due = !last_reload_ || clock_.Now() - *last_reload_ >= std::chrono::milliseconds(500);
  }
  if (due) DYAD_RETURN_IF_ERROR(Reload());
  return Primary();
}

void KeyVersionBook::MarkStale() {
  MutexLock lock(&mu_);
  last_reload_.reset();
}

std::map<uint32_t, KeyVersionRecord> KeyVersionBook::Versions() const {
  MutexLock lock(&mu_);
  return versions_;
}

std::optional<KeyVersionRecord> KeyVersionBook::Find(uint32_t version) const {
  MutexLock lock(&mu_);
  auto it = versions_.find(version);
  if (it == versions_.end()) return std::nullopt;
  return it->second;
}

Result<std::string> KeyVersionBook::CurrentState(uint32_t version) {
  DYAD_RETURN_IF_ERROR(Reload());
  auto row = Find(version);
  if (!row) return MakeError(ErrorCode::kNotFound, NoVersion(version));
  return row->state;
}

Result<KeyState> KeyVersionBook::KnownState(const std::string& kind, const std::string& key_id) {
  DYAD_RETURN_IF_ERROR(Reload());
  KeyState s;
  s.kind = kind;
  s.key_id = key_id;
  MutexLock lock(&mu_);
  s.primary_version = primary_;
  for (const auto& [v, row] : versions_) s.versions.push_back({v, row.state, row.created_at, 0});
  return s;
}

Status KeyVersionBook::SetState(uint32_t version, const char* state) {
  DYAD_RETURN_IF_ERROR(Reload());
  {
    MutexLock lock(&mu_);
    if (version == primary_) return MakeError(ErrorCode::kFailedPrecondition, "cannot retire the primary key version");
  }
  DYAD_RETURN_IF_ERROR(repo_->SetState(row_key_, version, state));
  return Reload();
}

Status KeyVersionBook::CheckUsable(uint32_t version, const std::function<Status()>& after_reload) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (auto row = Find(version)) {
      if (row->state == "retired") {
        return MakeError(ErrorCode::kFailedPrecondition,
                         key_name_ + " version " + std::to_string(version) + " is retired");
      }
      return OkStatus();
    }
    if (attempt == 0) {
      DYAD_RETURN_IF_ERROR(Reload());
      if (after_reload) DYAD_RETURN_IF_ERROR(after_reload());
    }
  }
  return MakeError(ErrorCode::kNotFound, NoVersion(version));
}

bool KeyVersionBook::SyncDue() {
  MutexLock lock(&mu_);
  auto now = clock_.Now();
  if (last_sync_ && now - *last_sync_ < std::chrono::seconds(1)) return false;
  last_sync_ = now;
  return true;
}

std::string KeyVersionBook::NoVersion(uint32_t version) const {
  return key_name_ + " has no " + version_word_ + " " + std::to_string(version);
}

}  // namespace dyad
