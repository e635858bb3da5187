// The PostgreSQL ProviderRepository (cluster mode): the `providers` table of
// registry/pg_migrations.cc, creation order by its `seq` identity column.
#pragma once

#include <memory>

#include "registry/pg_db.h"
#include "registry/provider_repository.h"

namespace dyad {

std::unique_ptr<ProviderRepository> NewPgProviderRepository(std::shared_ptr<PgDb> db);

}  // namespace dyad
