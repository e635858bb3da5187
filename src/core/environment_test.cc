#include "core/environment.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <cstring>
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

// Whether `marker` lies in the stack just below the caller's frame, where a
// callee's locals (the old `char buf[8192]`) were left behind.
[[gnu::noinline]] bool StackHolds(const std::string& marker) {
  char region[64 * 1024];
  asm volatile("" : : "r"(region) : "memory");  // its contents are whatever was there
  return memmem(region, sizeof region, marker.data(), marker.size()) != nullptr;
}

[[gnu::noinline]] void ReadAndWipe(const std::string& path, const std::string& expect) {
  auto text = ReadSmallFile(path);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, expect);
  Cleanse(*text);  // what MergeDotenvFile does with it
}

// Security review, finding 3: an --env-file's plaintext does not stay in
// memory. ReadSmallFile reads with read(2) straight into the result string
// (no ifstream buffer, no stack buffer); when the string must grow, the old
// buffer is wiped after the copy; on errors the partial result is wiped. So
// once the caller Cleanse()s the result, no copy is left — observed here for
// the stack, where the former `char buf[8192]` kept the file's text.
TEST(ReadSmallFile, LeavesNoCopyOnTheStack) {
  std::string marker = "ENCRYPTION_KEY=stack-marker-" + std::to_string(::getpid()) + "-5f3a9c";
  std::string path = TempFile("rsf-stack", marker + "\n");
  // The marker must not be built on the stack by the test itself: it lives
  // on the heap (longer than any short-string buffer).
  std::string needle = marker.substr(15);
  ReadAndWipe(path, marker + "\n");
  EXPECT_FALSE(StackHolds(needle)) << "the file's text was left on the stack";
  ::unlink(path.c_str());
}

}  // namespace
}  // namespace dyad
