// The PostgreSQL RotationRepository (cluster mode): the `rotation_lock` and
// `rotation_runs` tables of registry/pg_migrations.cc (runs in `seq` order).
// Heartbeats are the database server's clock_timestamp() in milliseconds
// (`heartbeat_at`), written and judged by the server alone, so the lease
// means the same on every host whatever their clocks say; `clock` is not
// read (kept for the signature every engine's factory shares). Begin runs in a transaction that first takes a
// transaction-scoped advisory lock (Begins are one at a time across every
// instance) and reads the lock row FOR UPDATE (a heartbeat committed
// meanwhile is the one it judges); SaveProgress is one transaction;
// Heartbeat and Release are single conditional statements. A test that needs
// a stale lease writes an old `heartbeat_at` (milliseconds) itself.
#pragma once

#include <memory>

#include "core/clock.h"
#include "registry/pg_db.h"
#include "registry/rotation_repository.h"

namespace dyad {

std::unique_ptr<RotationRepository> NewPgRotationRepository(std::shared_ptr<PgDb> db, const Clock& clock);

}  // namespace dyad
