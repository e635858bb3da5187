// The environment backend's SecretStore: secret values (envelope documents)
// in the registry's SQLite database, table `secrets`. ListWithTimes() gives
// each row's updated_at (set by every create, put and re-encryption).
// Thread-safe; errors are the registry database's (kUnavailable when busy).
#pragma once

#include <memory>

#include "backends/secret_store.h"
#include "core/clock.h"
#include "registry/sqlite_db.h"

namespace dyad {

std::unique_ptr<SecretStore> NewSqliteSecretStore(std::shared_ptr<SqliteDb> db, const Clock& clock);

}  // namespace dyad
