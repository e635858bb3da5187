#include "backends/environment/factory.h"

#include <cctype>
#include <filesystem>

#include "backends/environment/local_keyring.h"
#include "backends/environment/pg_secret_store.h"
#include "backends/environment/sqlite_secret_store.h"
#include "core/env_vars.h"

namespace dyad {
namespace {

class EnvironmentBackendFactory final : public BackendFactory {
 public:
  const std::string& Name() const override { return name_; }

  Status Check(const Config& config) const override {
    if (config.encryption_mode == "provider") {
      return BadVariable("SECRETS_ENCRYPTION_MODE", "provider relies on the store's own encryption, which the "
                                                    "environment provider does not have; use envelope, or "
                                                    "SECRETS_PROVIDER=aws");
    }
    const std::string& prefix = config.secrets_prefix;
    bool ok = !prefix.empty() && prefix.size() <= 128;
    for (char ch : prefix) {
      ok = ok && (std::isalnum(static_cast<unsigned char>(ch)) || std::string_view("/_+=.@-").find(ch) != std::string_view::npos);
    }
    if (!ok) return BadVariable("SECRETS_PREFIX", "use 1 to 128 characters of letters, digits and /_+=.@-");
    if (!config.encryption_key && !config.dev) {
      return BadVariable("ENCRYPTION_KEY", "is required when SECRETS_PROVIDER=environment; set 64 hex characters "
                                           "(e.g. from `openssl rand -hex 32`) or run `serve --dev`");
    }
    return OkStatus();
  }

  // The registry database's secrets table, by prefix; an SQLite database by
  // its absolute path (the same file reached from another working directory
  // is one place), a PostgreSQL one by its URL without the password.
  Result<std::string> StoreLocation(const Config& config) const override {
    if (config.database_path.empty()) {
      return "environment, registry database " + DatabaseDisplayName(config.database_url) + ", SECRETS_PREFIX '" +
             config.secrets_prefix + "'";
    }
    std::error_code ec;
    std::filesystem::path path = std::filesystem::weakly_canonical(config.database_path, ec);
    if (ec) path = config.database_path;
    return "environment, registry database " + path.string() + ", SECRETS_PREFIX '" + config.secrets_prefix + "'";
  }

  Result<Backend> Open(const BackendContext& context) const override {
    const Config& config = context.config;
    // In dev mode the key is read (or generated) from the data dir by now.
    if (!config.encryption_key) return BadVariable("ENCRYPTION_KEY", "is required");
    Backend b;
    LocalKeyringOptions ko{config.encryption_key_id, *config.encryption_key, config.encryption_key_previous,
                           ReserveBlockFor(config.key_rotation_max_encryptions)};
    DYAD_ASSIGN_OR_RETURN(b.keys, NewLocalKeyring(std::move(ko), context.db->NewKeyVersionRepository(),
                                                  context.random, context.clock));
    // The secrets live in the registry database: its engine's table.
    if (auto sqlite = context.db->sqlite()) {
      b.store = NewSqliteSecretStore(std::move(sqlite), context.clock, config.secrets_prefix);
    } else if (auto pg = context.db->postgresql()) {
      b.store = NewPgSecretStore(std::move(pg), context.clock, config.secrets_prefix);
    } else {
      return MakeError(ErrorCode::kUnimplemented, "SECRETS_PROVIDER=environment: no secret store on the " +
                                                      std::string(context.db->engine()) + " registry");
    }
    b.traits.env_is_source = true;
    return b;
  }

 private:
  const std::string name_ = "environment";
};

}  // namespace

Status RegisterEnvironmentBackend(BackendRegistry& registry) {
  return registry.Register(std::make_unique<EnvironmentBackendFactory>());
}

}  // namespace dyad
