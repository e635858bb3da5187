#include "registry/pg_migrations.h"

namespace dyad {

int64_t PgMigrationLockKey() {
  return 0x6479616400000001;  // "dyad", then 1: the schema's lock
}

const std::string& PgSchemaMigrationsTable() {
  static const std::string kTable =
      "CREATE TABLE IF NOT EXISTS schema_migrations(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)";
  return kTable;
}

// Types: INTEGER counters and times in ms -> BIGINT, flags -> BOOLEAN, BLOB ->
// BYTEA; times kept as the same ISO-8601 TEXT the SQLite build writes.
const std::vector<std::string>& PgMigrations() {
  static const std::vector<std::string> kMigrations = {
      // 1: provider registry and settings. `seq` is SQLite's rowid: creation order.
      R"sql(
CREATE TABLE providers(
  seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
  id TEXT PRIMARY KEY,
  slug TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  type TEXT NOT NULL,
  description TEXT NOT NULL DEFAULT '',
  enabled BOOLEAN NOT NULL DEFAULT TRUE,
  models TEXT NOT NULL DEFAULT '[]',
  adapter_config TEXT NOT NULL DEFAULT '{}',
  credential_fields TEXT NOT NULL DEFAULT '',
  credentials_version BIGINT NOT NULL DEFAULT 0,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL);
CREATE TABLE settings(key TEXT PRIMARY KEY, value TEXT NOT NULL);
)sql",
      // 2: the environment backend's sealed secrets and local keyring.
      R"sql(
CREATE TABLE secrets(
  name TEXT PRIMARY KEY,
  value TEXT NOT NULL,
  updated_at TEXT NOT NULL);
CREATE TABLE key_versions(
  key_id TEXT NOT NULL,
  version BIGINT NOT NULL,
  sealed BYTEA NOT NULL,
  state TEXT NOT NULL,
  created_at TEXT NOT NULL,
  PRIMARY KEY(key_id, version));
)sql",
      // 3: key rotation runs, the deployment-wide rotation lock. `seq` is
      // SQLite's rowid: the order runs were started in (History, LatestRunning).
      R"sql(
CREATE TABLE rotation_runs(
  seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
  id TEXT PRIMARY KEY,
  trigger TEXT NOT NULL,
  status TEXT NOT NULL,
  force BOOLEAN NOT NULL,
  started_at TEXT NOT NULL,
  finished_at TEXT,
  from_version BIGINT NOT NULL,
  to_version BIGINT NOT NULL DEFAULT 0,
  total BIGINT NOT NULL DEFAULT 0,
  done BIGINT NOT NULL DEFAULT 0,
  reencrypted BIGINT NOT NULL DEFAULT 0,
  skipped BIGINT NOT NULL DEFAULT 0,
  failed BIGINT NOT NULL DEFAULT 0,
  cursor TEXT NOT NULL DEFAULT '',
  error TEXT NOT NULL DEFAULT '',
  duration_ms BIGINT NOT NULL DEFAULT 0);
CREATE TABLE rotation_lock(
  id INTEGER PRIMARY KEY CHECK (id = 1),
  run_id TEXT NOT NULL,
  owner TEXT NOT NULL,
  heartbeat_at BIGINT NOT NULL);
)sql",
      // 4: key wear: encryptions made under each key version (an upper bound).
      R"sql(
ALTER TABLE key_versions ADD COLUMN encryptions BIGINT NOT NULL DEFAULT 0;
)sql",
      // 5: SQLite's move of secrets to a name-clustered table. A PostgreSQL
      // table is a heap with its primary key's index either way: nothing to do.
      R"sql(
SELECT 1;
)sql",
      // 6: the audit chain's key and head.
      R"sql(
CREATE TABLE audit_key(
  id INTEGER PRIMARY KEY CHECK (id = 1),
  kind TEXT NOT NULL,
  key_id TEXT NOT NULL,
  key_version BIGINT NOT NULL,
  wrapped BYTEA NOT NULL,
  created_at TEXT NOT NULL);
CREATE TABLE audit_head(
  id INTEGER PRIMARY KEY CHECK (id = 1),
  seq BIGINT NOT NULL,
  mac TEXT NOT NULL,
  seal TEXT NOT NULL,
  updated_at TEXT NOT NULL);
)sql",
      // 7: per-provider leases and the provider row's revision.
      R"sql(
CREATE TABLE provider_leases(
  provider_id TEXT PRIMARY KEY,
  owner TEXT NOT NULL,
  expires_at_ms BIGINT NOT NULL);
ALTER TABLE providers ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
)sql",
      // 8: a revision per stored secret (the environment backend's version
      // token). SQLite's triggers guard against binaries from before this
      // migration writing to the same file; no such binary ever wrote to
      // PostgreSQL, so the column is all there is.
      R"sql(
ALTER TABLE secrets ADD COLUMN revision BIGINT NOT NULL DEFAULT 1;
)sql",
      // 9: `migrate --to-env-file` progress per provider.
      R"sql(
CREATE TABLE migration_progress(
  migration TEXT NOT NULL,
  provider_id TEXT NOT NULL,
  state TEXT NOT NULL,
  source_version TEXT NOT NULL DEFAULT '',
  target_version TEXT NOT NULL DEFAULT '',
  fingerprint TEXT NOT NULL DEFAULT '',
  credentials_version BIGINT NOT NULL DEFAULT 0,
  updated_at TEXT NOT NULL,
  PRIMARY KEY(migration, provider_id));
)sql",
      // 10: one wrapping of the audit key per KeyManager (kind, key id); the
      // stored row is kept as its KeyManager's.
      R"sql(
CREATE TABLE audit_key_wrappings(
  kind TEXT NOT NULL,
  key_id TEXT NOT NULL,
  key_version BIGINT NOT NULL,
  wrapped BYTEA NOT NULL,
  created_at TEXT NOT NULL,
  PRIMARY KEY(kind, key_id));
INSERT INTO audit_key_wrappings(kind, key_id, key_version, wrapped, created_at)
  SELECT kind, key_id, key_version, wrapped, created_at FROM audit_key;
DROP TABLE audit_key;
ALTER TABLE audit_key_wrappings RENAME TO audit_key;
)sql",
      // 11: the change feed (registry/change_feed.h); NOTIFY on
      // dyad_registry tells listeners a row is there.
      R"sql(
CREATE TABLE registry_changes(
  id BIGSERIAL PRIMARY KEY,
  kind TEXT NOT NULL,
  subject TEXT NOT NULL DEFAULT '',
  at_ms BIGINT NOT NULL);
)sql",
      // 12: one audit chain head per log, keyed by the log's id; the one row
      // kept so far is kept under the id '' until its log claims it.
      R"sql(
CREATE TABLE audit_heads(
  log_id TEXT PRIMARY KEY,
  seq BIGINT NOT NULL,
  mac TEXT NOT NULL,
  seal TEXT NOT NULL,
  origin TEXT NOT NULL DEFAULT '',
  updated_at TEXT NOT NULL);
INSERT INTO audit_heads(log_id, seq, mac, seal, updated_at) SELECT '', seq, mac, seal, updated_at FROM audit_head;
DROP TABLE audit_head;
ALTER TABLE audit_heads RENAME TO audit_head;
)sql",
  };
  return kMigrations;
}

}  // namespace dyad
