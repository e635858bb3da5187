// The PostgreSQL half of OpenDatabase (registry/database.h). Until every
// repository the service uses exists on PostgreSQL, a postgresql:// URL is
// refused here rather than half served.
#include "registry/database.h"

namespace dyad {

Result<std::shared_ptr<Database>> OpenPostgresqlDatabase(const std::string& url, const PgDb::Options& options) {
  (void)url;
  (void)options;
  return MakeError(ErrorCode::kUnimplemented,
                   "GATEWAY_DATABASE_URL: PostgreSQL (cluster mode) is not complete in this build: the key version, "
                   "rotation, provider lease, audit key and head, migration progress repositories and the "
                   "environment backend's secret store are missing on PostgreSQL; use sqlite://PATH");
}

}  // namespace dyad
