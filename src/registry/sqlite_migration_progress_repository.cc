#include "registry/sqlite_migration_progress_repository.h"

#include "core/time_format.h"

namespace dyad {
namespace {

class SqliteMigrationProgressRepository final : public MigrationProgressRepository {
 public:
  SqliteMigrationProgressRepository(std::shared_ptr<SqliteDb> db, const Clock& clock)
      : db_(std::move(db)), clock_(clock) {}

  Result<std::map<std::string, MigrationRecord>> Load(const std::string& migration) override {
    using Records = std::map<std::string, MigrationRecord>;
    return db_->With<Records>([&](SqliteConnection& c) -> Result<Records> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
          "SELECT provider_id, state, source_version, target_version, fingerprint, credentials_version "
          "FROM migration_progress WHERE migration=?"));
      st.Bind(1, migration);
      Records out;
      for (;;) {
        DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
        if (!row) break;
        MigrationRecord r{st.Text(0), st.Text(1), st.Text(2), st.Text(3), st.Text(4), st.Int(5)};
        out.emplace(r.provider_id, std::move(r));
      }
      return out;
    });
  }

  Status Put(const std::string& migration, const MigrationRecord& r) override {
    auto done = db_->With<bool>([&](SqliteConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
          "INSERT INTO migration_progress(migration, provider_id, state, source_version, target_version, fingerprint, "
          "credentials_version, updated_at) VALUES(?,?,?,?,?,?,?,?) ON CONFLICT(migration, provider_id) DO UPDATE SET "
          "state=excluded.state, source_version=excluded.source_version, target_version=excluded.target_version, "
          "fingerprint=excluded.fingerprint, credentials_version=excluded.credentials_version, "
          "updated_at=excluded.updated_at"));
      DYAD_RETURN_IF_ERROR(st.Bind(1, migration).Bind(2, r.provider_id).Bind(3, r.state).Bind(4, r.source_version)
                               .Bind(5, r.target_version).Bind(6, r.fingerprint).Bind(7, r.credentials_version)
                               .Bind(8, FormatIso8601(clock_.WallNow())).Run());
      return true;
    });
    if (!done.ok()) return done.error();
    return OkStatus();
  }

  Status ClearFingerprints(const std::string& migration) override {
    auto done = db_->With<bool>([&](SqliteConnection& c) -> Result<bool> {
      DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
          "UPDATE migration_progress SET fingerprint='', updated_at=? WHERE migration=? AND fingerprint<>''"));
      DYAD_RETURN_IF_ERROR(st.Bind(1, FormatIso8601(clock_.WallNow())).Bind(2, migration).Run());
      return true;
    });
    if (!done.ok()) return done.error();
    return OkStatus();
  }

 private:
  std::shared_ptr<SqliteDb> db_;
  const Clock& clock_;
};

}  // namespace

std::unique_ptr<MigrationProgressRepository> NewSqliteMigrationProgressRepository(std::shared_ptr<SqliteDb> db,
                                                                                   const Clock& clock) {
  return std::make_unique<SqliteMigrationProgressRepository>(std::move(db), clock);
}

}  // namespace dyad
