// The SQLite ProviderRepository (the embedded default), and the SQLite
// ProviderLeases kept in the same database (times from `clock`).
#pragma once

#include <memory>

#include "core/clock.h"
#include "registry/provider_lease.h"
#include "registry/provider_repository.h"
#include "registry/sqlite_db.h"

namespace dyad {

std::unique_ptr<ProviderRepository> NewSqliteProviderRepository(std::shared_ptr<SqliteDb> db);
std::unique_ptr<ProviderLeases> NewSqliteProviderLeases(std::shared_ptr<SqliteDb> db, const Clock& clock);

}  // namespace dyad
