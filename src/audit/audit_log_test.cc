#include "audit/audit_log.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "core/encoding.h"
#include "testing/fakes.h"

namespace dyad {
namespace {

std::vector<std::string> ReadLines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

void WriteLines(const std::string& path, const std::vector<std::string>& lines) {
  std::ofstream out(path, std::ios::trunc);
  for (const auto& l : lines) out << l << "\n";
}

class AuditTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.File("audit.log");
    auto log = FileAuditLog::Open(path_, clock_);
    ASSERT_TRUE(log.ok());
    for (int i = 0; i < 4; ++i) {
      AuditEvent e;
      e.actor = "admin";
      e.action = "secret.get";
      e.resource = "p" + std::to_string(i);
      (*log)->Record(e);
    }
  }
  size_t BadLine() {
    auto r = VerifyAuditLog(path_);
    EXPECT_TRUE(r.ok());
    return r->first_bad_line;
  }
  testing::TempDir dir_;
  FakeClock clock_;
  std::string path_;
};

TEST_F(AuditTest, IntactChainVerifiesAndContinuesAfterReopen) {
  EXPECT_EQ(BadLine(), 0u);
  {
    auto log = FileAuditLog::Open(path_, clock_);
    AuditEvent e;
    e.action = "cache.clear";
    (*log)->Record(e);
  }
  EXPECT_EQ(BadLine(), 0u);
  EXPECT_EQ(VerifyAuditLog(path_)->lines, 5u);
}

TEST_F(AuditTest, EditedLineIsNamed) {
  auto lines = ReadLines(path_);
  lines[2].replace(lines[2].find("p2"), 2, "p9");
  WriteLines(path_, lines);
  EXPECT_EQ(BadLine(), 3u);
}

TEST_F(AuditTest, RemovedLineIsNamed) {
  auto lines = ReadLines(path_);
  lines.erase(lines.begin() + 1);
  WriteLines(path_, lines);
  EXPECT_EQ(BadLine(), 2u);
}

TEST_F(AuditTest, ReorderedLinesAreNamed) {
  auto lines = ReadLines(path_);
  std::swap(lines[2], lines[3]);
  WriteLines(path_, lines);
  EXPECT_EQ(BadLine(), 3u);
}

TEST_F(AuditTest, RehashedEditStillBreaksTheChain) {
  // Someone edits line 2 and recomputes its hash: line 3's "prev" no longer matches.
  auto lines = ReadLines(path_);
  std::string body = lines[1].substr(0, lines[1].rfind(",\"hash\"")) + "}";
  body.replace(body.find("p1"), 2, "p8");
  lines[1] = body.substr(0, body.size() - 1) + ",\"hash\":\"" + HexEncode(Sha256(body)) + "\"}";
  WriteLines(path_, lines);
  EXPECT_EQ(BadLine(), 3u);
}

}  // namespace
}  // namespace dyad
