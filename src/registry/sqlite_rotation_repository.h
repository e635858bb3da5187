// The SQLite RotationRepository: the `rotation_lock` and `rotation_runs`
// tables (migration 3), heartbeats from `clock`'s wall time. Begin and
// SaveProgress run in BEGIN IMMEDIATE transactions, so they are atomic
// across connections and processes on one database file.
#pragma once

#include <memory>

#include "core/clock.h"
#include "registry/rotation_repository.h"
#include "registry/sqlite_db.h"

namespace dyad {

std::unique_ptr<RotationRepository> NewSqliteRotationRepository(std::shared_ptr<SqliteDb> db, const Clock& clock);

}  // namespace dyad
