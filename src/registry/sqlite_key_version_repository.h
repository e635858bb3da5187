// The SQLite KeyVersionRepository: the `key_versions` table (migrations 2
// and 4; `material` is its `sealed` column). Advance and CreateFirst run in
// BEGIN IMMEDIATE transactions, so they are atomic across connections and
// processes on one database file.
#pragma once

#include <memory>

#include "registry/key_version_repository.h"
#include "registry/sqlite_db.h"

namespace dyad {

std::unique_ptr<KeyVersionRepository> NewSqliteKeyVersionRepository(std::shared_ptr<SqliteDb> db);

}  // namespace dyad
