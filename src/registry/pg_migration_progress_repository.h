// The PostgreSQL MigrationProgressRepository (cluster mode): the
// `migration_progress` table of registry/pg_migrations.cc. Every call is one
// statement; Put is an upsert, so two instances recording one provider leave
// one row (the later writer's).
#pragma once

#include <memory>

#include "core/clock.h"
#include "registry/migration_progress_repository.h"
#include "registry/pg_db.h"

namespace dyad {

std::unique_ptr<MigrationProgressRepository> NewPgMigrationProgressRepository(std::shared_ptr<PgDb> db,
                                                                               const Clock& clock);

}  // namespace dyad
