// The audit log's key and head, kept in the registry database.
//
// The chain's HMAC key is a random data key made once by the KeyManager
// (GenerateDataKey) and stored only wrapped, so the data dir alone does not
// give it: opening it needs the KMS or the master ENCRYPTION_KEY. Each
// KeyManager (kind and key id) that may write the chain holds its own
// wrapping of the same key: `migrate` adds the target's beside the source's,
// so both configurations go on writing one chain. A key rotation retires
// key versions that no stored blob uses; the wrapped audit key is not a
// stored blob, so GuardAuditKey() puts itself in front of the KeyManager and
// moves its wrapping to the primary version (ReEncrypt) before any version
// it is on is retired — if that move fails, so does the retirement, and the
// key is never left on a retired version. A writer also moves it to the
// primary at start. The key is kept in an AuditKeyRepository and each
// log's chain head (seq and MAC of its last line, keyed by the log's id:
// audit/audit_log.h) in an AuditHeadStore (registry/database.h makes both). All thread-safe; errors are the
// KeyManager's and the repository's, kNotFound when no audit key was ever
// made, and kFailedPrecondition (naming the KeyManagers that hold it) when
// only other KeyManagers hold a wrapping.
#pragma once

#include <memory>

#include "app/backend.h"
#include "audit/audit_log.h"
#include "backends/key_manager.h"
#include "core/clock.h"
#include "core/config.h"
#include "registry/audit_key_repository.h"

namespace dyad {

// Unwraps `keys`' wrapping of the deployment's audit key; with `create`,
// makes the key on first use (the first process to store one wins) and
// moves the wrapping to the primary version.
Result<SecretBytes> LoadAuditKey(AuditKeyRepository& audit_keys, KeyManager& keys, const Clock& clock, bool create);

// `migrate`: adds `to`'s wrapping of the deployment's audit key (the same
// key, so the chain goes on) beside `from`'s, which stays. OK when no audit
// key was made, or when `to` holds a wrapping that opens to the same key
// (a resumed run, a migration back); kConflict when it opens to another.
Status AddAuditKeyWrapping(AuditKeyRepository& audit_keys, KeyManager& from, KeyManager& to);

// `migrate`, before anything is copied: whether `to` can take the audit key
// (AddAuditKeyWrapping's checks, with a new wrapping made and opened in
// memory only: nothing is stored).
Status CheckAuditKeyWrapping(AuditKeyRepository& audit_keys, KeyManager& from, KeyManager& to);

// `migrate --delete-source`, once the source is deleted: drops `from`'s
// wrapping, only while `to` holds one; true when it was dropped.
Result<bool> DropAuditKeyWrapping(AuditKeyRepository& audit_keys, const KeyManager& from, const KeyManager& to);

// A KeyManager that moves the wrapped audit key off a version before
// `inner` retires it; everything else goes straight to `inner`.
std::unique_ptr<KeyManager> GuardAuditKey(std::unique_ptr<KeyManager> inner,
                                          std::shared_ptr<AuditKeyRepository> audit_keys);

// Where the audit log at `path` says it is written, recorded with its head
// (AuditLogOrigin): AUDIT_LOG_ORIGIN when set and `path` is the configured
// log (AUDIT_LOG_PATH), so that a container recreated under another host
// name keeps the check; otherwise the host name (when the registry is
// shared by hosts) and the absolute path.
std::string ConfiguredAuditLogOrigin(const Config& config, const std::string& path, bool shared_registry);

// `audit verify`: checks the log at `path` (AUDIT_LOG_PATH when empty) under
// the configured deployment's audit key and against the head recorded for
// that log (by its id; another host's log has its own).
// Writes nothing. `path` is set to the log checked.
Result<AuditVerifyReport> VerifyConfiguredAuditLog(const Config& config, std::string& path, const Clock& clock,
                                                   const BackendRegistry& backends = BuiltinBackends());

}  // namespace dyad
