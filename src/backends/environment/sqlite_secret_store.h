// The environment backend's SecretStore: secret values (envelope documents)
// in the registry's SQLite database, table `secrets`.
#pragma once

#include <memory>

#include "backends/secret_store.h"
#include "core/clock.h"
#include "registry/sqlite_db.h"

namespace dyad {

std::unique_ptr<SecretStore> NewSqliteSecretStore(std::shared_ptr<SqliteDb> db, const Clock& clock);

}  // namespace dyad
