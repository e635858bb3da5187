#include "server/tls_context.h"

#include <gtest/gtest.h>
#include <openssl/x509.h>

#include <cstdio>
#include <fstream>

namespace dyad {
namespace {

struct NameFree {
  void operator()(X509_NAME* n) const { X509_NAME_free(n); }
};

// Entries in certificate order (least specific first); `set` -1 joins the
// previous entry's RDN (a multi-valued RDN), 0 starts a new one.
std::unique_ptr<X509_NAME, NameFree> Name(std::initializer_list<std::tuple<const char*, const char*, int>> entries) {
  std::unique_ptr<X509_NAME, NameFree> name(X509_NAME_new());
  for (auto [field, value, set] : entries) {
    X509_NAME_add_entry_by_txt(name.get(), field, MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(value), -1,
                               -1, set);
  }
  return name;
}

// Issue 13: the exact string a tokens file's clientCertSubject is compared with.
TEST(NameRfc2253, MostSpecificFirstWithSpecialCharactersEscaped) {
  EXPECT_EQ(NameRfc2253(Name({{"O", "Example", 0}, {"CN", "ci-runner", 0}}).get()), "CN=ci-runner,O=Example");
  // A comma inside a value is escaped, so it cannot forge an RDN boundary.
  EXPECT_EQ(NameRfc2253(Name({{"CN", "ci-runner,O=Example", 0}}).get()), "CN=ci-runner\\,O=Example");
  EXPECT_EQ(NameRfc2253(Name({{"CN", "a+b", 0}}).get()), "CN=a\\+b");
  // A multi-valued RDN is joined by an unescaped "+" (OpenSSL reverses its
  // entries too, as `openssl x509 -nameopt RFC2253` shows).
  EXPECT_EQ(NameRfc2253(Name({{"O", "Example", 0}, {"CN", "ci", 0}, {"UID", "42", -1}}).get()),
            "UID=42+CN=ci,O=Example");
  EXPECT_EQ(NameRfc2253(nullptr), "");
  EXPECT_EQ(PeerSubjectRfc2253(nullptr), "");
}

std::string TempFile(const std::string& name, const std::string& content) {
  std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path) << content;
  return path;
}

TEST(TlsServerContext, ErrorsNameTheVariableAndTheFile) {
  std::string junk = TempFile("tls_junk.pem", "not a certificate\n");
  auto r = NewTlsServerContext(TlsFiles{"/nonexistent/cert.pem", junk, ""});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("GATEWAY_TLS_CERT_FILE: '/nonexistent/cert.pem' cannot be read"), std::string::npos)
      << r.error().message;
  r = NewTlsServerContext(TlsFiles{junk, "/nonexistent/key.pem", ""});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("GATEWAY_TLS_KEY_FILE: '/nonexistent/key.pem' cannot be read"), std::string::npos)
      << r.error().message;
  r = NewTlsServerContext(TlsFiles{junk, junk, ""});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("GATEWAY_TLS_CERT_FILE: '" + junk + "' holds no usable PEM certificate"),
            std::string::npos)
      << r.error().message;
  EXPECT_EQ(r.error().message.find("not a certificate"), std::string::npos);  // never the content
  r = NewTlsServerContext(TlsFiles{::testing::TempDir(), junk, ""});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("is not a regular file"), std::string::npos) << r.error().message;
}

}  // namespace
}  // namespace dyad
