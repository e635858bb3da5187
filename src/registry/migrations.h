// The registry's schema, as migrations versioned in code. Entry i brings the
// schema from version i to i+1; entries are never edited once released, only
// appended.
#pragma once

#include <string>
#include <vector>

namespace dyad {

const std::vector<std::string>& Migrations();

// The table that records the migrations applied (created before the first).
const std::string& SchemaMigrationsTable();

}  // namespace dyad
