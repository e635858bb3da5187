// The PostgreSQL RotationRepository (cluster mode): the `rotation_lock` and
// `rotation_runs` tables of registry/pg_migrations.cc (runs in `seq` order),
// heartbeats from `clock`'s wall time, so the lease row means the same on
// every host. Begin runs in a transaction that first takes a
// transaction-scoped advisory lock (Begins are one at a time across every
// instance) and reads the lock row FOR UPDATE (a heartbeat committed
// meanwhile is the one it judges); SaveProgress is one transaction;
// Heartbeat and Release are single conditional statements.
#pragma once

#include <memory>

#include "core/clock.h"
#include "registry/pg_db.h"
#include "registry/rotation_repository.h"

namespace dyad {

std::unique_ptr<RotationRepository> NewPgRotationRepository(std::shared_ptr<PgDb> db, const Clock& clock);

}  // namespace dyad
