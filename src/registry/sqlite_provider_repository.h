// The SQLite ProviderRepository (the embedded default).
#pragma once

#include <memory>

#include "registry/provider_repository.h"
#include "registry/sqlite_db.h"

namespace dyad {

std::unique_ptr<ProviderRepository> NewSqliteProviderRepository(std::shared_ptr<SqliteDb> db);

}  // namespace dyad
