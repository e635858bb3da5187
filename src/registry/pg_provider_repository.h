// The PostgreSQL ProviderRepository (cluster mode): the `providers` table of
// registry/pg_migrations.cc, creation order by its `seq` identity column;
// and the PostgreSQL ProviderLeases, the `provider_leases` table: each call
// is one statement (TryAcquire an INSERT … ON CONFLICT DO UPDATE whose
// condition PostgreSQL checks on the row as committed), expiries in
// milliseconds of `clock`'s wall time, so instances on several hosts share
// them (as far as their clocks agree; the TTL covers the skew).
#pragma once

#include <memory>

#include "core/clock.h"
#include "registry/pg_db.h"
#include "registry/provider_lease.h"
#include "registry/provider_repository.h"

namespace dyad {

std::unique_ptr<ProviderRepository> NewPgProviderRepository(std::shared_ptr<PgDb> db);
std::unique_ptr<ProviderLeases> NewPgProviderLeases(std::shared_ptr<PgDb> db, const Clock& clock);

}  // namespace dyad
