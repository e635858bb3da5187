// The SQLite MigrationProgressRepository: the `migration_progress` table
// (migration 9).
#pragma once

#include <memory>

#include "core/clock.h"
#include "registry/migration_progress_repository.h"
#include "registry/sqlite_db.h"

namespace dyad {

std::unique_ptr<MigrationProgressRepository> NewSqliteMigrationProgressRepository(std::shared_ptr<SqliteDb> db,
                                                                                   const Clock& clock);

}  // namespace dyad
