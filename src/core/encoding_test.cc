#include "core/encoding.h"

#include <cctype>

#include <gtest/gtest.h>

namespace dyad {
namespace {

TEST(Encoding, Base64RoundTripsEveryLength) {
  std::string data;
  for (int i = 0; i < 40; ++i) {
    auto back = Base64Decode(Base64Encode(data));
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(*back, data);
    data.push_back(static_cast<char>(i * 37));
  }
}

TEST(Encoding, Base64RejectsMalformed) {
  EXPECT_FALSE(Base64Decode("abc").has_value());
  EXPECT_FALSE(Base64Decode("ab!d").has_value());
  EXPECT_FALSE(Base64Decode("a=bc").has_value());
  EXPECT_FALSE(Base64Decode("ab=c").has_value());
}

TEST(Encoding, HexRoundTripAndRejects) {
  EXPECT_EQ(HexEncode("\x01\xab"), "01ab");
  EXPECT_EQ(*HexDecode("01AB"), "\x01\xab");
  EXPECT_FALSE(HexDecode("0g").has_value());
  EXPECT_FALSE(HexDecode("abc").has_value());
}

TEST(Encoding, Sha256KnownAnswer) {
  EXPECT_EQ(HexEncode(Sha256("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Encoding, Utf8WellFormedOnly) {
  EXPECT_TRUE(IsValidUtf8("plain ascii"));
  EXPECT_TRUE(IsValidUtf8("ключ \xf0\x9f\x94\x91 密钥"));
  EXPECT_TRUE(IsValidUtf8(std::string("nul\0inside", 11)));
  EXPECT_FALSE(IsValidUtf8("\xff"));
  EXPECT_FALSE(IsValidUtf8("\xc3\x28"));          // bad continuation
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // a surrogate
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xe2\x82"));          // cut short
}

TEST(Encoding, AsciiLowerTouchesOnlyAToZ) {
  EXPECT_EQ(AsciiLower("Vault-B.INTERNAL:8200"), "vault-b.internal:8200");
  EXPECT_EQ(AsciiLower(""), "");
  // UTF-8 bytes (here "É") and punctuation around the letters stay as they are.
  EXPECT_EQ(AsciiLower("\xC3\x89@[]`{Z"), "\xC3\x89@[]`{z");
}

TEST(Encoding, LowerNameLowersAToZIntoItsBufferAndSaysWhenCut) {
  const LowerName short_name("Content-Length");
  EXPECT_EQ(short_name.view(), "content-length");
  EXPECT_FALSE(short_name.full());
  EXPECT_EQ(LowerName("X-\xC4-Z_1").view(), "x-\xC4-z_1");
  EXPECT_EQ(LowerName("").view(), "");
  const std::string exact(LowerName::kSize, 'A');
  EXPECT_EQ(LowerName(exact).view(), std::string(LowerName::kSize, 'a'));
  EXPECT_FALSE(LowerName(exact).full());
  const LowerName cut("Proxy-" + std::string(40, 'B'));
  EXPECT_TRUE(cut.full());
  EXPECT_EQ(cut.view(), "proxy-" + std::string(LowerName::kSize - 6, 'b'));
}

TEST(Encoding, HttpTokenIsTcharOnly) {
  EXPECT_TRUE(IsHttpToken("X-Api-Key"));
  EXPECT_TRUE(IsHttpToken("!#$%&'*+-.^_`|~09azAZ"));
  EXPECT_FALSE(IsHttpToken(""));
  // Every other byte, each alone and inside a name.
  for (int c = 0; c < 256; ++c) {
    const char ch = static_cast<char>(c);
    const bool tchar = std::isalnum(c) || std::string_view("!#$%&'*+-.^_`|~").find(ch) != std::string_view::npos;
    std::string inside = "a?b";
    inside[1] = ch;
    EXPECT_EQ(IsHttpToken(std::string(1, ch)), tchar) << c;
    EXPECT_EQ(IsHttpToken(inside), tchar) << c;
  }
}

TEST(Encoding, HttpFieldValueHasNoControlCharacterButTab) {
  EXPECT_TRUE(IsHttpFieldValue(""));
  EXPECT_TRUE(IsHttpFieldValue("Bearer sk-1\tx \xC3\xA9\x80\xFF"));
  for (int c = 0; c < 256; ++c) {
    const bool control = (c < 0x20 && c != '\t') || c == 0x7f;
    std::string inside = "a?b";
    inside[1] = static_cast<char>(c);
    EXPECT_EQ(IsHttpFieldValue(inside), !control) << c;
  }
}

}  // namespace
}  // namespace dyad
