// The SQLite SettingsRepository: the `settings` table (migration 1).
// PutIfAbsent inserts and reads back in one BEGIN IMMEDIATE transaction.
#pragma once

#include <memory>

#include "registry/settings_repository.h"
#include "registry/sqlite_db.h"

namespace dyad {

std::unique_ptr<SettingsRepository> NewSqliteSettingsRepository(std::shared_ptr<SqliteDb> db);

}  // namespace dyad
