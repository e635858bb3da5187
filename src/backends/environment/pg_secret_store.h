// The environment backend's SecretStore on PostgreSQL (cluster mode): secret
// values (envelope documents) in the registry's `secrets` table, named
// `<prefix>/providers/<id>`, as sqlite_secret_store.h keeps them. The version
// token is the row's revision: the creation time in microseconds (`clock`'s
// wall time), moved on by every write.
//
// Conditional writes hold against every instance on the database: Replace and
// DeleteIfVersion are one conditional statement each (a concurrent writer of
// the row waits for it and re-checks the revision on the row the first left,
// so of two writers holding one token one wins and the other gets kConflict);
// ReplaceMany locks the batch's rows in name order (so two batches never
// deadlock), decides each item on the locked revisions exactly as one Replace
// after another would, and writes them in one UPDATE — all in one statement
// (one round trip) when no name repeats in the batch.
//
// Names and values are PostgreSQL text: one holding a NUL byte, or not UTF-8,
// is refused with kInvalidArgument before anything is written (never cut
// short), and so is a created name longer than kMaxPgSecretNameBytes (the
// primary key's index cannot hold it). Errors name the secret, never its value.
// Thread-safe; errors are otherwise the registry database's (kUnavailable
// when it cannot be reached).
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "backends/secret_store.h"
#include "core/clock.h"
#include "registry/pg_db.h"

namespace dyad {

inline constexpr size_t kMaxPgSecretNameBytes = 1024;

std::unique_ptr<SecretStore> NewPgSecretStore(std::shared_ptr<PgDb> db, const Clock& clock, std::string prefix);

}  // namespace dyad
