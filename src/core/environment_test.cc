#include "core/environment.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <fstream>
#include <string>

#include "core/secret_bytes.h"

namespace dyad {
namespace {

std::string TempFile(const std::string& name, const std::string& content) {
  std::string path = ::testing::TempDir() + "/" + name + "-" + std::to_string(::getpid());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
  return path;
}

std::string Pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>('a' + (i * 7 + i / 26) % 26);
  return s;
}

// Security review, finding 3: ReadSmallFile keeps its contract (whole file,
// kNotFound, kInvalidArgument past max_bytes) across its buffer growth.
TEST(ReadSmallFile, ReadsWholeFileAcrossGrowth) {
  for (size_t n : {size_t{0}, size_t{1}, size_t{4095}, size_t{4096}, size_t{4097}, size_t{8192}, size_t{70000}}) {
    std::string content = Pattern(n);
    std::string path = TempFile("rsf", content);
    auto text = ReadSmallFile(path);
    ASSERT_TRUE(text.ok()) << n << ": " << text.error().message;
    EXPECT_EQ(*text, content) << n;
    auto exact = ReadSmallFile(path, n);
    ASSERT_TRUE(exact.ok()) << n;
    EXPECT_EQ(*exact, content) << n;
    if (n > 0) {
      auto big = ReadSmallFile(path, n - 1);
      ASSERT_FALSE(big.ok()) << n;
      EXPECT_EQ(big.code(), ErrorCode::kInvalidArgument);
    }
    ::unlink(path.c_str());
  }
  auto missing = ReadSmallFile(::testing::TempDir() + "/no-such-file-here");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.code(), ErrorCode::kNotFound);
}

}  // namespace
}  // namespace dyad
