// KeyVersionBook: a cloud key manager's copy of its key's versions as the
// registry (KeyVersionRepository) records them under one row key — each
// version's state, creation time and material — and the primary (the
// highest version). The KMS, Transit and Key Vault key managers share it:
// the registry is the truth every instance agrees on, this is the copy read
// on every call and reloaded when it may be out of date (LivePrimary: at most
// every 500 ms, or at once after MarkStale(); CheckUsable: once for a version not known).
// Of two reloads that overlap, the one begun last is what the copy keeps.
//
// `key_name` ("KMS key alias/x") opens its errors; `version_word` is how a
// version is named in "has no <version_word> N". Thread-safe (one mutex of its
// own; no callback runs under it). Errors: the repository's, kNotFound for a
// version not recorded (CurrentState, CheckUsable), kFailedPrecondition for a
// retired one or for retiring the primary.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "backends/key_manager.h"
#include "core/clock.h"
#include "core/mutex.h"
#include "core/result.h"
#include "registry/key_version_repository.h"

namespace dyad {

class KeyVersionBook {
 public:
  KeyVersionBook(std::shared_ptr<KeyVersionRepository> repo, std::string row_key, const Clock& clock,
                 std::string key_name, std::string version_word = "version");

  // Reads every version from the registry again.
  Status Reload() DYAD_LOCKS_EXCLUDED(mu_);
  // The primary as last read (0: no version yet).
  uint32_t Primary() const DYAD_LOCKS_EXCLUDED(mu_);
  // The primary as the registry has it, read again at most every 500 ms (a
  // database read, not a KMS call): a version another instance made is the
  // one new writes are labelled with within a second.
  Result<uint32_t> LivePrimary() DYAD_LOCKS_EXCLUDED(mu_);
  // Makes the next LivePrimary() read the registry again (the key epoch
  // changed elsewhere: KeyManager::MarkStale()).
  void MarkStale() DYAD_LOCKS_EXCLUDED(mu_);
  // The versions as last read, by version.
  std::map<uint32_t, KeyVersionRecord> Versions() const DYAD_LOCKS_EXCLUDED(mu_);
  std::optional<KeyVersionRecord> Find(uint32_t version) const DYAD_LOCKS_EXCLUDED(mu_);

  // A version's state, from the registry (reloaded first).
  Result<std::string> CurrentState(uint32_t version) DYAD_LOCKS_EXCLUDED(mu_);
  // The primary and every version (reloaded first), for KnownState().
  Result<KeyState> KnownState(const std::string& kind, const std::string& key_id) DYAD_LOCKS_EXCLUDED(mu_);
  // Sets a version's state (reloaded before and after); never the primary's
  // (kFailedPrecondition). The registry ignores an unknown version.
  Status SetState(uint32_t version, const char* state) DYAD_LOCKS_EXCLUDED(mu_);
  // OK for a known version that is not retired. A version not known may be
  // another instance's rotation: the registry is read again (and then
  // `after_reload`, if given, may learn more) before it is refused.
  Status CheckUsable(uint32_t version, const std::function<Status()>& after_reload = nullptr)
      DYAD_LOCKS_EXCLUDED(mu_);

  // True at most once a second: status pages poll Describe(), and the KMS is
  // asked for its versions then.
  bool SyncDue() DYAD_LOCKS_EXCLUDED(mu_);

  // "<key_name> has no <version_word> N".
  std::string NoVersion(uint32_t version) const;

 private:
  const std::shared_ptr<KeyVersionRepository> repo_;
  const std::string row_key_;
  const Clock& clock_;
  const std::string key_name_, version_word_;
  mutable Mutex mu_;
  std::map<uint32_t, KeyVersionRecord> versions_ DYAD_GUARDED_BY(mu_);
  uint32_t primary_ DYAD_GUARDED_BY(mu_) = 0;
  std::optional<Clock::Instant> last_reload_ DYAD_GUARDED_BY(mu_);
  std::optional<Clock::Instant> last_sync_ DYAD_GUARDED_BY(mu_);
  // Each Reload takes a ticket before it reads; the copy is replaced only by
  // a read newer than the one it holds (`applied_`), so it never goes back.
  std::atomic<uint64_t> tickets_{0};
  uint64_t applied_ DYAD_GUARDED_BY(mu_) = 0;
};

}  // namespace dyad
