// The PostgreSQL audit key and head stores (cluster mode): the `audit_key`
// table of registry/pg_migrations.cc (one row per KeyManager's wrapping,
// keyed by kind and key id) and `audit_head` (one row per audit log, keyed
// by the log's id since migration 12).
//
// Under READ COMMITTED a conditional statement alone does not make every
// AuditKeyRepository write atomic against another instance: two InsertFirst
// calls would both find the table empty, and two crossed RemoveBeside calls
// would each find the other's row. So InsertFirst and RemoveBeside run in a
// transaction that first takes `audit_key` in SHARE ROW EXCLUSIVE mode (which
// conflicts with itself and with every write, never with a read); the
// condition is then evaluated on what the previous holder committed.
// InsertIfAbsent is INSERT … ON CONFLICT DO NOTHING then a read;
// ReplaceWrapping is one conditional UPDATE (a concurrent one waits for the
// row and re-checks its condition on the row the first left).
//
// The head store's Save is one upsert on the log's row that only moves the
// head to a higher seq (stamped with `clock`'s wall time); ON CONFLICT … DO
// UPDATE … WHERE is atomic against concurrent savers, so the highest seq
// stands. Claim is one UPDATE of the legacy row (log id ''): a concurrent
// claimer waits for that row and then finds it renamed; one that meets the
// log's own row inserted meanwhile (a unique violation) has nothing to claim.
#pragma once

#include <memory>

#include "audit/audit_log.h"
#include "core/clock.h"
#include "registry/audit_key_repository.h"
#include "registry/pg_db.h"

namespace dyad {

std::unique_ptr<AuditKeyRepository> NewPgAuditKeyRepository(std::shared_ptr<PgDb> db);
std::unique_ptr<AuditHeadStore> NewPgAuditHeadStore(std::shared_ptr<PgDb> db, const Clock& clock);

}  // namespace dyad
