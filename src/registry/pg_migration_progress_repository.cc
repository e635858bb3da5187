#include "registry/pg_migration_progress_repository.h"

#include "core/time_format.h"

namespace dyad {
namespace {

class PgMigrationProgressRepository final : public MigrationProgressRepository {
 public:
  PgMigrationProgressRepository(std::shared_ptr<PgDb> db, const Clock& clock) : db_(std::move(db)), clock_(clock) {}

  Result<std::map<std::string, MigrationRecord>> Load(const std::string& migration) override {
    using Records = std::map<std::string, MigrationRecord>;
    return db_->With<Records>([&](PgConnection& c) -> Result<Records> {
      DYAD_ASSIGN_OR_RETURN(PgRows rows, c.Query(
          "SELECT provider_id, state, source_version, target_version, fingerprint, credentials_version "
          "FROM migration_progress WHERE migration = $1",
          {migration}));
      Records out;
      for (int i = 0; i < rows.size(); ++i) {
        MigrationRecord r{rows.Text(i, 0), rows.Text(i, 1), rows.Text(i, 2), rows.Text(i, 3), rows.Text(i, 4),
                          rows.Int(i, 5)};
        out.emplace(r.provider_id, std::move(r));
      }
      return out;
    });
  }

  Status Put(const std::string& migration, const MigrationRecord& r) override {
    return Run("INSERT INTO migration_progress(migration, provider_id, state, source_version, target_version, "
               "fingerprint, credentials_version, updated_at) VALUES($1, $2, $3, $4, $5, $6, $7, $8) "
               "ON CONFLICT(migration, provider_id) DO UPDATE SET state = excluded.state, "
               "source_version = excluded.source_version, target_version = excluded.target_version, "
               "fingerprint = excluded.fingerprint, credentials_version = excluded.credentials_version, "
               "updated_at = excluded.updated_at",
               {migration, r.provider_id, r.state, r.source_version, r.target_version, r.fingerprint,
                r.credentials_version, FormatIso8601(clock_.WallNow())});
  }

  Status ClearFingerprints(const std::string& migration) override {
    return Run("UPDATE migration_progress SET fingerprint = '', updated_at = $1 "
               "WHERE migration = $2 AND fingerprint <> ''",
               {FormatIso8601(clock_.WallNow()), migration});
  }

 private:
  Status Run(const std::string& sql, const std::vector<PgParam>& params) {
    auto done = db_->With<bool>([&](PgConnection& c) -> Result<bool> {
      DYAD_RETURN_IF_ERROR(c.Query(sql, params));
      return true;
    });
    if (!done.ok()) return done.error();
    return OkStatus();
  }

  std::shared_ptr<PgDb> db_;
  const Clock& clock_;
};

}  // namespace

std::unique_ptr<MigrationProgressRepository> NewPgMigrationProgressRepository(std::shared_ptr<PgDb> db,
                                                                               const Clock& clock) {
  return std::make_unique<PgMigrationProgressRepository>(std::move(db), clock);
}

}  // namespace dyad
