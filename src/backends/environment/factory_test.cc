#include "backends/environment/factory.h"

#include <gtest/gtest.h>

#include "backends/environment/local_keyring.h"
#include "testing/fakes.h"

namespace dyad {
namespace {

const std::string kKey(64, 'a');

struct Fixture {
  Fixture() { EXPECT_TRUE(RegisterEnvironmentBackend(registry).ok()); }
  std::string ErrorFor(EnvMap env, bool dev = false) {
    auto c = LoadConfig(env, dev);
    if (!c.ok()) return "config: " + c.error().message;
    Status s = registry.Check(*c);
    return s.ok() ? "" : s.error().message;
  }
  BackendRegistry registry;
};

EnvMap Base() { return {{"ENCRYPTION_KEY", kKey}, {"GATEWAY_ADMIN_API_KEY", "0123456789abcdef-admin"}}; }

TEST(EnvironmentBackend, IsTheDefault) {
  Fixture f;
  EXPECT_EQ(f.ErrorFor(Base()), "");
  EXPECT_EQ(f.registry.Names(), (std::vector<std::string>{"environment"}));
}

TEST(EnvironmentBackend, EncryptionKeyRequiredOutsideDev) {
  Fixture f;
  EnvMap env = {{"GATEWAY_ADMIN_API_KEY", "0123456789abcdef-admin"}};
  EXPECT_EQ(f.ErrorFor(env).rfind("ENCRYPTION_KEY: is required when SECRETS_PROVIDER=environment", 0), 0u);
  EXPECT_EQ(f.ErrorFor(env, /*dev=*/true), "");
}

TEST(EnvironmentBackend, RefusesProviderModeItHasNoEncryptionOfItsOwn) {
  Fixture f;
  EnvMap env = Base();
  env["SECRETS_ENCRYPTION_MODE"] = "provider";
  std::string m = f.ErrorFor(env);
  EXPECT_EQ(m.rfind("SECRETS_ENCRYPTION_MODE:", 0), 0u) << m;
  EXPECT_NE(m.find("use envelope"), std::string::npos);
}

TEST(EnvironmentBackend, SecretsPrefixRule) {
  Fixture f;
  EnvMap env = Base();
  env["SECRETS_PREFIX"] = "a/b_c+d=e.f@g-h";
  EXPECT_EQ(f.ErrorFor(env), "");
  for (std::string bad : {std::string("has space"), std::string(), std::string(129, 'p')}) {
    env["SECRETS_PREFIX"] = bad;
    EXPECT_EQ(f.ErrorFor(env), "SECRETS_PREFIX: use 1 to 128 characters of letters, digits and /_+=.@-") << bad;
  }
}

TEST(EnvironmentBackend, OpensTheKeyringAndTheSqliteStore) {
  Fixture f;
  testing::TempDir dir;
  auto config = LoadConfig(Base(), false);
  ASSERT_TRUE(config.ok());
  auto db = SqliteDb::Open(dir.File("t.db"));
  ASSERT_TRUE(db.ok());
  FakeClock clock;
  auto backend = f.registry.Open(BackendContext{*config, SqliteDatabase(*db), clock, DefaultRandom()});
  ASSERT_TRUE(backend.ok()) << backend.error().message;
  EXPECT_EQ(backend->keys->Kind(), "local");
  ASSERT_NE(backend->store, nullptr);
  EXPECT_TRUE(backend->traits.env_is_source);
  EXPECT_EQ(backend->traits.longest_write.count(), 0);
  EXPECT_EQ(backend->traits.rotation_parallelism, 1u);
  // Dev mode passes the check without a key, but nothing opens without one.
  auto dev = LoadConfig({{"GATEWAY_ADMIN_API_KEY", "0123456789abcdef-admin"}}, true);
  ASSERT_TRUE(dev.ok());
  auto keyless = f.registry.Open(BackendContext{*dev, SqliteDatabase(*db), clock, DefaultRandom()});
  ASSERT_FALSE(keyless.ok());
  EXPECT_EQ(keyless.error().message.rfind("ENCRYPTION_KEY:", 0), 0u);
}

// The keyring records encryptions ahead of use in blocks; with a small wear
// limit a block of 4096 was recorded at the first encryption, so a fresh key
// counted as worn at once (and so did each one a rotation made: a rotation
// every tick). The block follows the limit.
TEST(EnvironmentBackend, TheKeyringsReservationsStayFarBelowTheWearLimit) {
  EXPECT_EQ(ReserveBlockFor(1000), 3u);
  EXPECT_EQ(ReserveBlockFor(255), 1u);
  EXPECT_EQ(ReserveBlockFor(4294967295ULL), 4096u);
  Fixture f;
  testing::TempDir dir;
  EnvMap env = Base();
  env["KEY_ROTATION_MAX_ENCRYPTIONS"] = "1000";
  auto config = LoadConfig(env, false);
  ASSERT_TRUE(config.ok()) << config.error().message;
  auto db = SqliteDb::Open(dir.File("t.db"));
  ASSERT_TRUE(db.ok());
  FakeClock clock;
  auto backend = f.registry.Open(BackendContext{*config, SqliteDatabase(*db), clock, DefaultRandom()});
  ASSERT_TRUE(backend.ok()) << backend.error().message;
  for (int round = 0; round < 2; ++round) {  // the first version, then the one a rotation makes
    for (int i = 0; i < 10; ++i) ASSERT_TRUE(backend->keys->GenerateDataKey().ok());
    auto state = backend->keys->Describe();
    ASSERT_TRUE(state.ok());
    const KeyVersionInfo& primary = state->versions.back();
    ASSERT_EQ(primary.version, state->primary_version);
    EXPECT_GE(primary.encryptions, 10u);
    EXPECT_LE(primary.encryptions, 12u) << "round " << round;  // 10, recorded in blocks of 3
    ASSERT_TRUE(backend->keys->Rotate().ok());
  }
}

}  // namespace
}  // namespace dyad
