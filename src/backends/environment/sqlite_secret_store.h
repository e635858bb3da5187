// The environment backend's SecretStore: secret values (envelope documents)
// in the registry's SQLite database, table `secrets`, named
// `<prefix>/providers/<id>`. The version token is the row's revision: the
// creation time in microseconds, moved on by every write, so Replace() is one
// conditional UPDATE (atomic across processes on one database) and a name
// created again after a delete does not repeat an old token. List() gives each row's updated_at.
// Thread-safe; errors are the registry database's (kUnavailable when busy).
#pragma once

#include <memory>
#include <string>

#include "backends/secret_store.h"
#include "core/clock.h"
#include "registry/sqlite_db.h"

namespace dyad {

std::unique_ptr<SecretStore> NewSqliteSecretStore(std::shared_ptr<SqliteDb> db, const Clock& clock,
                                                  std::string prefix);

}  // namespace dyad
