// The PostgreSQL KeyVersionRepository (cluster mode): the `key_versions`
// table of registry/pg_migrations.cc (`material` is its BYTEA `sealed`
// column). CreateFirst and Advance run in transactions that first take a
// transaction-scoped advisory lock on the key id, so two instances on one
// database never make the same version and Advance decides on the latest
// version as committed; ReserveEncryptions is one UPDATE, which PostgreSQL
// re-evaluates on the row's latest version when it waited for its lock.
#pragma once

#include <memory>

#include "registry/key_version_repository.h"
#include "registry/pg_db.h"

namespace dyad {

std::unique_ptr<KeyVersionRepository> NewPgKeyVersionRepository(std::shared_ptr<PgDb> db);

}  // namespace dyad
