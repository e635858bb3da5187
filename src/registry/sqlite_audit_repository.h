// The SQLite audit key and head stores: the `audit_key` table (migration 6;
// one row per KeyManager's wrapping since migration 10, keyed by kind and
// key id) and `audit_head` (one row per audit log, keyed by the log's id
// since migration 12; the row of before is kept under kLegacyAuditLogId
// until claimed). The head store's Save is one statement that only moves
// the log's head to a higher seq (stamped with `clock`'s wall time); Claim
// is one conditional UPDATE.
#pragma once

#include <memory>

#include "audit/audit_log.h"
#include "core/clock.h"
#include "registry/audit_key_repository.h"
#include "registry/sqlite_db.h"

namespace dyad {

std::unique_ptr<AuditKeyRepository> NewSqliteAuditKeyRepository(std::shared_ptr<SqliteDb> db);
std::unique_ptr<AuditHeadStore> NewSqliteAuditHeadStore(std::shared_ptr<SqliteDb> db, const Clock& clock);

}  // namespace dyad
