// The PostgreSQL SettingsRepository: the `settings` table. Put is one upsert;
// PutIfAbsent is INSERT … ON CONFLICT DO NOTHING, then a read in a new
// statement (READ COMMITTED), which sees the row of whichever caller won.
#pragma once

#include <memory>

#include "registry/pg_db.h"
#include "registry/settings_repository.h"

namespace dyad {

std::unique_ptr<SettingsRepository> NewPgSettingsRepository(std::shared_ptr<PgDb> db);

}  // namespace dyad
