// Backup and restore of the registry database (gateway.db): the one SQLite
// file that holds the provider registry, the environment backend's sealed
// secrets and local keyring, the settings (rotation toggle, fingerprint
// key), the rotation history and lock, the audit key and the audit head.
//
// A backup is a plain SQLite database file (rollback journal, no -wal/-shm
// beside it), so `sqlite3 FILE` opens it and nothing else defines its
// format. It is taken with SQLite's online backup API in one step, inside
// one read transaction on the source: a consistent snapshot of everything
// committed before it began, while other connections and processes keep
// writing (WAL mode lets them). A plain `cp` of a running gateway.db misses
// what still sits in gateway.db-wal.
//
// Both directions write a temporary file next to the target (created 0600),
// check it (a schema version this build knows, holding exactly the tables,
// indexes and triggers its migrations create at that version — what a
// schema defines runs in the gateway that opens it — then PRAGMA
// integrity_check), fsync it and rename it into place without replacing
// anything (renameat2 RENAME_NOREPLACE): a crash leaves either no target or
// a whole one, never half a file under the target's name, and an existing
// target is never overwritten; nor is a target with a -wal, -shm or
// -journal beside its name written (SQLite would pair it with the new
// file). A failed run removes its temporary file.
//
// Errors: kAlreadyExists (the target, or a -wal/-shm/-journal of its name, exists), kNotFound (no source),
// kDataLoss (the file is damaged or not a gateway database: integrity check
// or schema), kFailedPrecondition (a schema newer than this build),
// kUnavailable (I/O, or the source stays busy). Messages name the file.
// The functions are thread-safe (each opens its own connections).
#pragma once

#include <cstdint>
#include <string>

#include "core/result.h"

namespace dyad {

struct BackupInfo {
  int schema_version = 0;  // the highest migration applied in the file
  int64_t bytes = 0;       // size of the file written
};

// Snapshots the database at `database_path` (which must exist) into the new
// file `out_path` (mode 0600).
Result<BackupInfo> BackupDatabase(const std::string& database_path, const std::string& out_path);

// Checks `backup_path` and installs a copy of it as `database_path`, which
// must not exist (its directory must).
Result<BackupInfo> RestoreDatabase(const std::string& backup_path, const std::string& database_path);

}  // namespace dyad
