// The backend seam end to end: the built-in registry, and a backend that
// exists only in the test tree (src/testing/memory_backend.h) opening
// through the same path as production.
#include "app/backend.h"

#include <gtest/gtest.h>

#include "app/app.h"
#include "service/provider_service.h"
#include "service/secrets_service.h"
#include "testing/memory_backend.h"

namespace dyad {
namespace {

constexpr char kCanary[] = "sk-MEMORY-CANARY-5e1d";

EnvMap Env(const testing::TempDir& dir, const std::string& provider) {
  return {{"SECRETS_PROVIDER", provider},
          {"GATEWAY_DATA_DIR", dir.File("data")},
          {"GATEWAY_ADMIN_API_KEY", "0123456789abcdef-admin"}};
}

TEST(BuiltinBackends, AreEnvironmentAwsAzureAndVault) {
  EXPECT_EQ(BuiltinBackends().Names(), (std::vector<std::string>{"aws", "azure", "environment", "vault"}));
  testing::TempDir dir;
  auto config = LoadConfig(Env(dir, "gcp"), false);
  ASSERT_TRUE(config.ok()) << config.error().message;
  Status s = BuiltinBackends().Check(*config);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(s.error().message,
            "SECRETS_PROVIDER: 'gcp' is not a backend of this build; use one of: aws, azure, environment, vault");
}

// As the CLI loads its configuration: the backend's errors come after the
// generic settings' and before a missing admin token's.
TEST(BuiltinBackends, AreCheckedWhileTheConfigurationLoads) {
  auto check = [](const Config& c) { return BuiltinBackends().Check(c); };
  auto config = LoadConfig({{"SECRETS_PROVIDER", "gcp"}}, false, check);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.error().message.rfind("SECRETS_PROVIDER: 'gcp' is not a backend of this build", 0), 0u);
  config = LoadConfig({}, false, check);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.error().message.rfind("ENCRYPTION_KEY: is required", 0), 0u) << config.error().message;
  config = LoadConfig({{"SECRETS_PROVIDER", "aws"}, {"GATEWAY_PORT", "x"}}, false, check);
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.error().message.rfind("GATEWAY_PORT:", 0), 0u) << config.error().message;
  EXPECT_TRUE(LoadConfig({}, true, check).ok());  // dev: the key comes from the data dir
}

TEST(BuiltinBackends, TheTestBackendIsNotOneOfThem) {
  testing::TempDir dir;
  auto config = LoadConfig(Env(dir, "memory"), false);
  ASSERT_TRUE(config.ok());
  Status s = BuiltinBackends().Check(*config);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("'memory' is not a backend of this build"), std::string::npos);
}

// Issue 10: adding a backend touches its folder, one registration and CMake.
// The memory backend is registered here only, and opens through App as the
// built-in ones do: a provider is created, stored in its store, and read
// back through the services.
TEST(BackendSeam, ATestOnlyBackendRunsTheServiceThroughTheProductionPath) {
  testing::TempDir dir;
  BackendRegistry registry;
  ASSERT_TRUE(RegisterBuiltinBackends(registry).ok());
  auto log = std::make_shared<testing::MemoryBackendLog>();
  ASSERT_TRUE(testing::RegisterMemoryBackend(registry, log).ok());
  EXPECT_EQ(registry.Names(), (std::vector<std::string>{"aws", "azure", "environment", "memory", "vault"}));

  auto config = LoadConfig(Env(dir, "memory"), false);
  ASSERT_TRUE(config.ok()) << config.error().message;
  ASSERT_TRUE(registry.Check(*config).ok());
  ASSERT_TRUE(EnsureDataDir(config->data_dir).ok());
  SystemClock clock;
  auto app = App::Create(*config, clock, false, registry);
  ASSERT_TRUE(app.ok()) << app.error().message;
  EXPECT_EQ(log->opened.load(), 1);
  testing::MemoryStore* store = log->last_store.load();
  ASSERT_NE(store, nullptr);

  ProviderPatch patch;
  patch.name = "OpenAI";
  patch.slug = "openai";
  patch.type = "http-sdk";
  patch.adapter_config_json = R"({"baseUrl":"http://127.0.0.1:9"})";
  patch.credentials = CredentialFields{};
  patch.credentials->emplace("api_key", SecretBytes(std::string_view(kCanary)));
  Caller caller{"tester", "rid-1"};
  auto created = (*app)->providers().Create(patch, caller);
  ASSERT_TRUE(created.ok()) << created.error().message;

  auto stored = store->data();
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored.begin()->first, "dyad-gateway/providers/" + created->id);
  EXPECT_EQ(stored.begin()->second.find(kCanary), std::string::npos) << "stored unsealed";

  (*app)->secrets().ClearCache(caller);
  auto read = (*app)->secrets().Get(created->id, caller);
  ASSERT_TRUE(read.ok()) << read.error().message;
  EXPECT_EQ(read->source, "store");
  EXPECT_EQ(read->credentials->fields.at("api_key").view(), kCanary);
}

TEST(BackendSeam, TheTestBackendRefusesProviderModeByItsOwnCheck) {
  testing::TempDir dir;
  BackendRegistry registry;
  ASSERT_TRUE(testing::RegisterMemoryBackend(registry).ok());
  auto env = Env(dir, "memory");
  env["SECRETS_ENCRYPTION_MODE"] = "provider";
  auto config = LoadConfig(env, false);
  ASSERT_TRUE(config.ok());
  Status s = registry.Check(*config);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message.rfind("SECRETS_ENCRYPTION_MODE:", 0), 0u);
}

}  // namespace
}  // namespace dyad
