#include "core/secret_bytes.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

namespace dyad {
namespace {

// The object's own bytes (not its heap buffer) contain `needle`.
bool ObjectHolds(const SecretBytes& s, std::string_view needle) {
  std::string_view raw(reinterpret_cast<const char*>(&s), sizeof(s));
  return raw.find(needle) != std::string_view::npos;
}

TEST(SecretBytes, MovedFromObjectKeepsNoBytes) {
  const std::string secret = "sk-0123456";  // short: would sit in a small-string buffer
  SecretBytes a{std::string_view(secret)};
  SecretBytes b(std::move(a));
  EXPECT_EQ(b.view(), secret);
  EXPECT_FALSE(ObjectHolds(a, "sk-0123")) << "the moved-from object still holds the secret";
  EXPECT_TRUE(a.empty());

  SecretBytes c;
  c = std::move(b);
  EXPECT_EQ(c.view(), secret);
  EXPECT_FALSE(ObjectHolds(b, "sk-0123")) << "the moved-from object still holds the secret";
  EXPECT_TRUE(b.empty());
}

std::vector<std::vector<uint8_t>>* freed = nullptr;

void RecordFree(const uint8_t* p, size_t n) {
  if (freed) freed->emplace_back(p, p + n);
}

TEST(SecretBytes, BuffersAreWipedBeforeTheyAreFreed) {
  std::vector<std::vector<uint8_t>> seen;
  freed = &seen;
  SetSecretFreeObserverForTesting(&RecordFree);
  {
    SecretBytes s{std::string_view("sk-CANARY-abcdefghijklmnopqrstuvwxyz")};
    for (size_t n = s.size(); n < 4096; n *= 2) {
      size_t old = s.size();
      s.resize(n * 2);  // growth moves the bytes to a new buffer and frees the old one
      std::memset(s.data() + old, 'k', s.size() - old);
    }
    SecretBytes copy = s;
    copy = SecretBytes(std::string_view("other"));  // the copy's buffer is freed
    s.resize(3);
  }
  SetSecretFreeObserverForTesting(nullptr);
  freed = nullptr;
  ASSERT_GE(seen.size(), 4u) << "every growth and the destruction free a buffer through the wiping allocator";
  for (const auto& buffer : seen) {
    EXPECT_TRUE(std::all_of(buffer.begin(), buffer.end(), [](uint8_t b) { return b == 0; }))
        << "a freed buffer of " << buffer.size() << " bytes was not wiped";
  }
}

TEST(SecretBytes, KeepsItsApi) {
  SecretBytes a(4);
  EXPECT_EQ(a.size(), 4u);
  EXPECT_EQ(a.view(), std::string(4, '\0'));
  SecretBytes b{std::string_view("abcdef")};
  b.resize(3);
  EXPECT_EQ(b.view(), "abc");
  SecretBytes c = b;
  EXPECT_TRUE(c == b);
  c.clear();
  EXPECT_TRUE(c.empty());
  EXPECT_FALSE(c == b);
}

TEST(SecretBytes, CleanseWipesTheWholeCapacity) {
  std::string s(100, 'x');
  s.resize(10);
  const char* p = s.data();
  Cleanse(s);
  EXPECT_TRUE(s.empty());
  EXPECT_EQ(std::count(p, p + 100, 'x'), 0);
}

}  // namespace
}  // namespace dyad
