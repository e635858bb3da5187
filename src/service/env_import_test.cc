#include "service/env_import.h"

#include <gtest/gtest.h>

#include "backends/environment/local_keyring.h"
#include "registry/sqlite_key_version_repository.h"
#include "registry/sqlite_provider_repository.h"
#include "testing/fakes.h"

namespace dyad {
namespace {

TEST(EnvImportTest, StoresOnlyProvidersWithoutAStoredSecretAndNamesTheirVariables) {
  testing::TempDir dir;
  FakeClock clock;
  auto db = *SqliteDb::Open(dir.File("t.db"));
  auto repo = NewSqliteProviderRepository(db);
  auto keys = std::move(NewLocalKeyring({"k", SecretBytes(std::string(32, 'm')), {}}, NewSqliteKeyVersionRepository(db),
                                        DefaultRandom(), clock)).value();
  testing::MemoryStore store;
  testing::MemoryAudit audit;
  Metrics metrics;
  EnvMap env = {{"DYAD_PROVIDER_FROM_ENV_API_KEY", "sk-env-value"}, {"DYAD_PROVIDER_STORED_API_KEY", "sk-fallback"}};
  SecretsService secrets(SecretsOptions{}, store, *keys, *repo, audit, metrics, clock, DefaultRandom(), env);
  ProviderService providers(*repo, secrets, clock, DefaultRandom(), audit);
  auto make = [&](const std::string& slug, std::optional<std::string> key) {
    ProviderPatch p;
    p.name = p.slug = slug;
    p.type = "http-sdk";
    if (key) p.credentials = CredentialFields{{"api_key", SecretBytes(*key)}};
    return providers.Create(p, Caller{})->id;
  };
  std::string from_env = make("from-env", std::nullopt), stored = make("stored", "sk-stored");
  make("none", std::nullopt);

  auto dry = ImportEnvironmentCredentials(*repo, providers, secrets, true, Caller{});
  ASSERT_TRUE(dry.ok());
  ASSERT_EQ(dry->size(), 2u);
  EXPECT_EQ((*dry)[0].outcome, "would store");
  EXPECT_EQ((*dry)[0].variables, std::vector<std::string>{"DYAD_PROVIDER_FROM_ENV_API_KEY"});
  EXPECT_EQ((*dry)[1].outcome, "already stored");
  EXPECT_EQ(store.size(), 1u);

  auto done = ImportEnvironmentCredentials(*repo, providers, secrets, false, Caller{});
  ASSERT_TRUE(done.ok());
  EXPECT_EQ((*done)[0].outcome, "stored");
  EXPECT_EQ(store.size(), 2u);
  auto raw = secrets.ReadRaw(from_env);
  ASSERT_TRUE(raw.ok() && *raw);
  auto fields = secrets.OpenRaw(from_env, **raw, repo->Get(from_env)->credentials_version);
  ASSERT_TRUE(fields.ok());
  EXPECT_EQ(fields->at("api_key").view(), "sk-env-value");
  auto kept = secrets.OpenRaw(stored, **secrets.ReadRaw(stored), 1);
  EXPECT_EQ(kept->at("api_key").view(), "sk-stored");  // a stored secret is never replaced by its fallback
  EXPECT_EQ(ImportEnvironmentCredentials(*repo, providers, secrets, false, Caller{})->at(0).outcome, "already stored");
}

}  // namespace
}  // namespace dyad
