// The registry's schema on PostgreSQL: the same logical schema, version by
// version, as registry/migrations.h's SQLite migrations (entry i brings the
// schema from version i to i+1; appended, never edited once released), in
// PostgreSQL's types. PgDb applies them at open, all in one transaction under
// pg_advisory_xact_lock(PgMigrationLockKey()), on a connection of its own that
// holds the lock throughout (PgDb::Migrate).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dyad {

const std::vector<std::string>& PgMigrations();

// The table that records the migrations applied (created before the first).
const std::string& PgSchemaMigrationsTable();

// The advisory lock key the migrations run under (the same in every build).
int64_t PgMigrationLockKey();

}  // namespace dyad
