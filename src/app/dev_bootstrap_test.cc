// PrepareDevSecrets (`serve --dev`): the key file it generates is never
// written over, and none is generated beside a registry sealed with a key
// it does not have.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "app/app.h"
#include "core/config.h"
#include "testing/fakes.h"

namespace dyad {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Config DevConfig(const std::string& data_dir, const std::string& provider = "environment") {
  auto c = LoadConfig({{"GATEWAY_DATA_DIR", data_dir}, {"SECRETS_PROVIDER", provider}, {"AWS_REGION", "eu-west-1"}},
                      /*dev=*/true);
  EXPECT_TRUE(c.ok()) << c.error().message;
  return *c;
}

TEST(DevSecrets, AKeyFileThatIsThereIsNeverWrittenOver) {
  testing::TempDir dir;
  const std::string key = dir.File("data/dev-encryption-key");
  for (const std::string& content : {std::string(), "\n" + std::string(64, 'a') + "\n"}) {
    Config c = DevConfig(dir.File("data"));
    ASSERT_TRUE(EnsureDataDir(c.data_dir).ok());
    std::ofstream(key, std::ios::trunc) << content;
    Status s = PrepareDevSecrets(c, /*generate=*/true);
    ASSERT_FALSE(s.ok()) << "content of " << content.size() << " bytes";
    EXPECT_EQ(s.code(), ErrorCode::kDataLoss);
    EXPECT_NE(s.error().message.find("first line is blank"), std::string::npos) << s.error().message;
    EXPECT_EQ(Slurp(key), content);
  }
}

TEST(DevSecrets, GeneratedOnceThenRead) {
  testing::TempDir dir;
  Config first = DevConfig(dir.File("data"));
  ASSERT_TRUE(PrepareDevSecrets(first, /*generate=*/true).ok());
  ASSERT_TRUE(first.encryption_key.has_value());
  Config second = DevConfig(dir.File("data"));
  ASSERT_TRUE(PrepareDevSecrets(second, /*generate=*/true).ok());
  EXPECT_TRUE(*second.encryption_key == *first.encryption_key);
  EXPECT_EQ(Slurp(dir.File("data/dev-encryption-key")).size(), 65u);  // 64 hex and the line's end
  for (const auto& entry : std::filesystem::directory_iterator(dir.File("data"))) {  // no staged file left
    EXPECT_EQ(entry.path().filename().string().find(".new-"), std::string::npos) << entry.path();
  }
}

// Beside an existing registry: refused for the environment backend, whose
// keyring the key seals; another backend does not use it.
TEST(DevSecrets, NoKeyIsGeneratedBesideARegistryItDidNotSeal) {
  testing::TempDir dir;
  Config c = DevConfig(dir.File("data"));
  ASSERT_TRUE(EnsureDataDir(c.data_dir).ok());
  std::ofstream(c.database_path) << "a registry";
  Status s = PrepareDevSecrets(c, /*generate=*/true);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), ErrorCode::kFailedPrecondition);
  EXPECT_FALSE(std::ifstream(dir.File("data/dev-encryption-key")).good());
  Config aws = DevConfig(dir.File("data"), "aws");
  EXPECT_TRUE(PrepareDevSecrets(aws, /*generate=*/true).ok());
}

}  // namespace
}  // namespace dyad
