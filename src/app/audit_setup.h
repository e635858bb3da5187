// The audit log's key and head, kept in the registry database.
//
// The chain's HMAC key is a random data key made once by the KeyManager
// (GenerateDataKey) and stored only wrapped, so the data dir alone does not
// give it: opening it needs the KMS or the master ENCRYPTION_KEY. A key
// rotation retires key versions that no stored blob uses; the wrapped audit
// key is not a stored blob, so GuardAuditKey() puts itself in front of the
// KeyManager and moves the audit key to the primary version (ReEncrypt)
// before any version it is on is retired — if that move fails, so does the
// retirement, and the key is never left on a retired version. A writer also
// moves it to the primary at start. The key is kept in an AuditKeyRepository
// and the chain's head (seq and MAC of its last line) in an AuditHeadStore
// (registry/sqlite_audit_repository.h). All thread-safe; errors are the
// KeyManager's and the repository's, and kNotFound when no audit key was
// ever made.
#pragma once

#include <memory>

#include "app/backend.h"
#include "audit/audit_log.h"
#include "backends/key_manager.h"
#include "core/clock.h"
#include "core/config.h"
#include "registry/audit_key_repository.h"

namespace dyad {

// Unwraps the deployment's audit key; with `create`, makes it on first use
// (the first process to store one wins) and moves it to the primary version.
Result<SecretBytes> LoadAuditKey(AuditKeyRepository& audit_keys, KeyManager& keys, const Clock& clock, bool create);

// `migrate`: re-wraps the deployment's audit key (the same key, so the chain
// goes on) from `from` to `to`'s primary version; OK when no audit key was
// made, or when `to` opens it already (a resumed migration).
Status MoveAuditKeyTo(AuditKeyRepository& audit_keys, KeyManager& from, KeyManager& to);

// A KeyManager that moves the wrapped audit key off a version before
// `inner` retires it; everything else goes straight to `inner`.
std::unique_ptr<KeyManager> GuardAuditKey(std::unique_ptr<KeyManager> inner,
                                          std::shared_ptr<AuditKeyRepository> audit_keys);

// `audit verify`: checks the log at `path` (AUDIT_LOG_PATH when empty) under
// the configured deployment's audit key and against its recorded head.
// Writes nothing. `path` is set to the log checked.
Result<AuditVerifyReport> VerifyConfiguredAuditLog(const Config& config, std::string& path, const Clock& clock,
                                                   const BackendRegistry& backends = BuiltinBackends());

}  // namespace dyad
