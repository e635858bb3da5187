// Wycheproof AES-GCM: every case with a 256-bit key, a 96-bit nonce and a
// 128-bit tag gives the expected result; invalid cases must fail to open.
#include "secrets/aes_gcm.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/encoding.h"

namespace dyad {
namespace {

std::string VectorsDir() {
  const char* env = std::getenv("DYAD_VECTORS_DIR");
  return env ? env : DYAD_VECTORS_DIR;
}

TEST(AesGcmWycheproof, Aes256Nonce96) {
  std::ifstream in(VectorsDir() + "/wycheproof/aes_gcm_test.json");
  ASSERT_TRUE(in) << "missing " << VectorsDir() << "/wycheproof/aes_gcm_test.json";
  auto doc = nlohmann::json::parse(in);
  int checked = 0, invalid = 0;
  for (const auto& group : doc["testGroups"]) {
    if (group["keySize"] != 256 || group["ivSize"] != 96 || group["tagSize"] != 128) continue;
    for (const auto& t : group["tests"]) {
      SCOPED_TRACE("tcId " + std::to_string(t["tcId"].get<int>()));
      SecretBytes key(*HexDecode(t["key"].get<std::string>()));
      std::string iv = *HexDecode(t["iv"].get<std::string>());
      std::string aad = *HexDecode(t["aad"].get<std::string>());
      std::string msg = *HexDecode(t["msg"].get<std::string>());
      std::string ct_tag = *HexDecode(t["ct"].get<std::string>()) + *HexDecode(t["tag"].get<std::string>());
      std::string result = t["result"];
      auto opened = AesGcmOpen(key, iv, aad, ct_tag);
      if (result == "valid") {
        ASSERT_TRUE(opened.ok());
        EXPECT_EQ(opened->view(), msg);
        auto sealed = AesGcmSeal(key, iv, aad, msg);
        ASSERT_TRUE(sealed.ok());
        EXPECT_EQ(*sealed, ct_tag);
      } else if (result == "invalid") {
        ++invalid;
        EXPECT_FALSE(opened.ok());
        if (!opened.ok()) {
          EXPECT_EQ(opened.code(), ErrorCode::kDataLoss);
        }
      }
      ++checked;
    }
  }
  EXPECT_GE(checked, 60);
  EXPECT_GT(invalid, 0);
}

TEST(AesGcm, RejectsWrongSizes) {
  SecretBytes short_key(std::string(16, 'k'));
  EXPECT_EQ(AesGcmSeal(short_key, std::string(12, 'n'), "", "x").code(), ErrorCode::kInvalidArgument);
  SecretBytes key(std::string(32, 'k'));
  EXPECT_EQ(AesGcmSeal(key, std::string(8, 'n'), "", "x").code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(AesGcmOpen(key, std::string(12, 'n'), "", "short").code(), ErrorCode::kDataLoss);
}

}  // namespace
}  // namespace dyad
