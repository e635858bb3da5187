#include "registry/migrations.h"

namespace dyad {

const std::string& SchemaMigrationsTable() {
  static const std::string kTable =
      "CREATE TABLE IF NOT EXISTS schema_migrations(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)";
  return kTable;
}

const std::vector<std::string>& Migrations() {
  static const std::vector<std::string> kMigrations = {
      // 1: provider registry and settings.
      R"sql(
CREATE TABLE providers(
  id TEXT PRIMARY KEY,
  slug TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  type TEXT NOT NULL,
  description TEXT NOT NULL DEFAULT '',
  enabled INTEGER NOT NULL DEFAULT 1,
  models TEXT NOT NULL DEFAULT '[]',
  adapter_config TEXT NOT NULL DEFAULT '{}',
  credential_fields TEXT NOT NULL DEFAULT '',
  credentials_version INTEGER NOT NULL DEFAULT 0,
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
  version INTEGER NOT NULL,
  sealed BLOB NOT NULL,
  state TEXT NOT NULL,
  created_at TEXT NOT NULL,
  PRIMARY KEY(key_id, version));
)sql",
      // 3: key rotation runs, the deployment-wide rotation lock.
      R"sql(
CREATE TABLE rotation_runs(
  id TEXT PRIMARY KEY,
  trigger TEXT NOT NULL,
  status TEXT NOT NULL,
  force INTEGER NOT NULL,
  started_at TEXT NOT NULL,
  finished_at TEXT,
  from_version INTEGER NOT NULL,
  to_version INTEGER NOT NULL DEFAULT 0,
  total INTEGER NOT NULL DEFAULT 0,
  done INTEGER NOT NULL DEFAULT 0,
  reencrypted INTEGER NOT NULL DEFAULT 0,
  skipped INTEGER NOT NULL DEFAULT 0,
  failed INTEGER NOT NULL DEFAULT 0,
  cursor TEXT NOT NULL DEFAULT '',
  error TEXT NOT NULL DEFAULT '',
  duration_ms INTEGER NOT NULL DEFAULT 0);
CREATE TABLE rotation_lock(
  id INTEGER PRIMARY KEY CHECK (id = 1),
  run_id TEXT NOT NULL,
  owner TEXT NOT NULL,
  heartbeat_at INTEGER NOT NULL);
)sql",
      // 4: key wear: encryptions made under each key version (an upper bound).
      R"sql(
ALTER TABLE key_versions ADD COLUMN encryptions INTEGER NOT NULL DEFAULT 0;
)sql",
      // 5: secrets clustered by name, so a re-encryption pass in name order
      // rewrites neighbouring rows on the same pages.
      R"sql(
CREATE TABLE secrets_by_name(
  name TEXT PRIMARY KEY,
  value TEXT NOT NULL,
  updated_at TEXT NOT NULL) WITHOUT ROWID;
INSERT INTO secrets_by_name(name, value, updated_at) SELECT name, value, updated_at FROM secrets;
DROP TABLE secrets;
ALTER TABLE secrets_by_name RENAME TO secrets;
)sql",
      // 6: the audit chain's key (a data key wrapped by the KeyManager) and
      // its head (seq and MAC of the last line), so `audit verify` sees a
      // removed tail or a chain recomputed without the key.
      R"sql(
CREATE TABLE audit_key(
  id INTEGER PRIMARY KEY CHECK (id = 1),
  kind TEXT NOT NULL,
  key_id TEXT NOT NULL,
  key_version INTEGER NOT NULL,
  wrapped BLOB NOT NULL,
  created_at TEXT NOT NULL);
CREATE TABLE audit_head(
  id INTEGER PRIMARY KEY CHECK (id = 1),
  seq INTEGER NOT NULL,
  mac TEXT NOT NULL,
  seal TEXT NOT NULL,
  updated_at TEXT NOT NULL);
)sql",
      // 7: per-provider leases, so instances on one database serialise each
      // read-modify-write of a provider row and its secret, and a row
      // revision that fences a writer whose lease ran out.
      R"sql(
CREATE TABLE provider_leases(
  provider_id TEXT PRIMARY KEY,
  owner TEXT NOT NULL,
  expires_at_ms INTEGER NOT NULL) WITHOUT ROWID;
ALTER TABLE providers ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
)sql",
      // 8: a revision per stored secret: the version token of the
      // environment backend's conditional writes. The triggers keep it
      // honest against a binary from before this migration still running on
      // the database: its writes change the value without the revision, and
      // its inserts start every secret at 1.
      R"sql(
ALTER TABLE secrets ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;
CREATE TRIGGER secrets_revision_on_update AFTER UPDATE OF value ON secrets
  WHEN NEW.revision = OLD.revision
  BEGIN UPDATE secrets SET revision = OLD.revision + 1 WHERE name = NEW.name; END;
CREATE TRIGGER secrets_revision_on_insert AFTER INSERT ON secrets
  WHEN NEW.revision = 1
  BEGIN UPDATE secrets SET revision = CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)
        WHERE name = NEW.name; END;
)sql",
      // 9: `migrate --to-env-file`: per provider, how far the copy to another
      // backend got (resumable after a kill; never a value, only the keyed
      // fingerprint and the version tokens).
      R"sql(
CREATE TABLE migration_progress(
  migration TEXT NOT NULL,
  provider_id TEXT NOT NULL,
  state TEXT NOT NULL,
  source_version TEXT NOT NULL DEFAULT '',
  target_version TEXT NOT NULL DEFAULT '',
  fingerprint TEXT NOT NULL DEFAULT '',
  credentials_version INTEGER NOT NULL DEFAULT 0,
  updated_at TEXT NOT NULL,
  PRIMARY KEY(migration, provider_id)) WITHOUT ROWID;
)sql",
      // 10: one wrapping of the audit key per KeyManager (kind, key id), so
      // `migrate` adds the target's beside the source's instead of replacing
      // the only one; the stored row is kept as its KeyManager's.
      R"sql(
CREATE TABLE audit_key_wrappings(
  kind TEXT NOT NULL,
  key_id TEXT NOT NULL,
  key_version INTEGER NOT NULL,
  wrapped BLOB NOT NULL,
  created_at TEXT NOT NULL,
  PRIMARY KEY(kind, key_id)) WITHOUT ROWID;
INSERT INTO audit_key_wrappings(kind, key_id, key_version, wrapped, created_at)
  SELECT kind, key_id, key_version, wrapped, created_at FROM audit_key;
DROP TABLE audit_key;
ALTER TABLE audit_key_wrappings RENAME TO audit_key;
)sql",
      // 11: the change feed (registry/change_feed.h): credential writes and
      // key epoch changes, read by the other instances to drop what they
      // cache. AUTOINCREMENT: an id is never reused after a prune.
      R"sql(
CREATE TABLE registry_changes(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  kind TEXT NOT NULL,
  subject TEXT NOT NULL DEFAULT '',
  at_ms INTEGER NOT NULL);
)sql",
      // 12: one audit chain head per log, keyed by the log's id (audit/
      // audit_log.h), so instances on several hosts, each appending to its
      // own log, never share one. The one row kept so far was the (then
      // only) local log's: it is kept under the id '' until that log's first
      // writer under this schema claims it (AuditHeadStore::Claim). `origin`
      // (host and path the log was last written at) shows a log replaced.
      R"sql(
CREATE TABLE audit_heads(
  log_id TEXT PRIMARY KEY,
  seq INTEGER NOT NULL,
  mac TEXT NOT NULL,
  seal TEXT NOT NULL,
  origin TEXT NOT NULL DEFAULT '',
  updated_at TEXT NOT NULL) WITHOUT ROWID;
INSERT INTO audit_heads(log_id, seq, mac, seal, updated_at) SELECT '', seq, mac, seal, updated_at FROM audit_head;
DROP TABLE audit_head;
ALTER TABLE audit_heads RENAME TO audit_head;
)sql",
  };
  return kMigrations;
}

}  // namespace dyad
