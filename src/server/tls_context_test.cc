#include "server/tls_context.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <vector>

#include "testing/test_certificates.h"

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

// Review: subjects crafted to print as another identity's. Every byte that
// could fake an RDN boundary, an escape or a hex value is escaped itself, and
// every non-ASCII byte is shown as \XX, so a lookalike prints differently.
TEST(NameRfc2253, CraftedSubjectsCannotPrintAsAnotherSubject) {
  const std::string target = "CN=ci-runner,O=Example";
  const std::vector<std::string> crafted = {
      NameRfc2253(Name({{"CN", "ci-runner,O=Example", 0}}).get()),
      NameRfc2253(Name({{"O", "Example", 0}, {"CN", "ci-runner", -1}}).get()),       // one multi-valued RDN
      NameRfc2253(Name({{"O", "Example", 0}, {"CN", "ci-\xd1\x80unner", 0}}).get()),  // Cyrillic er for "r"
      NameRfc2253(Name({{"O", "Example", 0}, {"CN", "ci-runner ", 0}}).get()),
      NameRfc2253(Name({{"O", "Example", 0}, {"2.5.4.3", "ci-runner", 0}, {"CN", "x", 0}}).get()),
  };
  for (const auto& s : crafted) EXPECT_NE(s, target);
  EXPECT_EQ(crafted[1], "CN=ci-runner+O=Example");
  EXPECT_EQ(crafted[2], "CN=ci-\\D1\\80unner,O=Example");
  EXPECT_EQ(crafted[4], "CN=x,CN=ci-runner,O=Example");  // both CNs, in order
  EXPECT_EQ(NameRfc2253(Name({{"CN", "\\5C", 0}}).get()), "CN=\\\\5C");  // a backslash is escaped
  EXPECT_EQ(NameRfc2253(Name({{"CN", "#41", 0}}).get()), "CN=\\#41");   // not read as hex
  EXPECT_EQ(NameRfc2253(Name({{"CN", "a\nb", 0}}).get()), "CN=a\\0Ab");
  EXPECT_EQ(NameRfc2253(Name({{"1.2.3.4", "ci", 0}}).get()), "1.2.3.4=#0C026369");  // unknown type: DER in hex
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

TEST(TlsServerContext, PolicyIsTls12PlusWithoutCompressionOrRenegotiation) {
  TlsFiles files = MakeCertAndKey("policy");
  auto ctx = NewTlsServerContext(files);
  ASSERT_TRUE(ctx.ok()) << ctx.error().message;
  SSL_CTX* c = ctx->get();
  EXPECT_EQ(SSL_CTX_get_min_proto_version(c), TLS1_2_VERSION);
  uint64_t options = SSL_CTX_get_options(c);
  EXPECT_TRUE(options & SSL_OP_NO_COMPRESSION);
  EXPECT_TRUE(options & SSL_OP_NO_RENEGOTIATION);
  EXPECT_FALSE(options & SSL_OP_ALLOW_CLIENT_RENEGOTIATION);
  EXPECT_EQ(SSL_CTX_get_verify_mode(c), SSL_VERIFY_NONE);  // no client CA: no certificate asked for
  // Every TLS 1.2 suite offered is ECDHE with an AEAD.
  SSL* ssl = SSL_new(c);
  STACK_OF(SSL_CIPHER)* ciphers = SSL_get1_supported_ciphers(ssl);
  ASSERT_NE(ciphers, nullptr);
  int tls12 = 0;
  for (int i = 0; i < sk_SSL_CIPHER_num(ciphers); ++i) {
    const SSL_CIPHER* cipher = sk_SSL_CIPHER_value(ciphers, i);
    if (SSL_CIPHER_get_kx_nid(cipher) == NID_kx_any) continue;  // TLS 1.3 (all AEAD)
    ++tls12;
    EXPECT_EQ(SSL_CIPHER_get_kx_nid(cipher), NID_kx_ecdhe) << SSL_CIPHER_get_name(cipher);
    EXPECT_TRUE(SSL_CIPHER_is_aead(cipher)) << SSL_CIPHER_get_name(cipher);
  }
  EXPECT_GT(tls12, 0);
  sk_SSL_CIPHER_free(ciphers);
  SSL_free(ssl);
  // With a client CA: a certificate is required.
  files.client_ca_file = files.cert_file;
  ctx = NewTlsServerContext(files);
  ASSERT_TRUE(ctx.ok()) << ctx.error().message;
  EXPECT_EQ(SSL_CTX_get_verify_mode(ctx->get()), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
}

TEST(TlsServerContext, KeyOfAnotherCertificateIsRefused) {
  TlsFiles a = MakeCertAndKey("a");
  TlsFiles b = MakeCertAndKey("b");
  auto ctx = NewTlsServerContext(TlsFiles{a.cert_file, b.key_file, ""});
  ASSERT_FALSE(ctx.ok());
  EXPECT_NE(ctx.error().message.find("GATEWAY_TLS_KEY_FILE: '" + b.key_file + "' does not match the certificate of "
                                     "GATEWAY_TLS_CERT_FILE '" + a.cert_file + "'"),
            std::string::npos)
      << ctx.error().message;
  EXPECT_EQ(ctx.error().message.find("PRIVATE KEY"), std::string::npos);
}

}  // namespace
}  // namespace dyad
