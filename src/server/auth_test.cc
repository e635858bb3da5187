#include "server/auth.h"

#include <gtest/gtest.h>

#include "core/encoding.h"

namespace dyad {
namespace {

// Issue 13, TLS listener: identities from a client certificate's subject.
std::unique_ptr<TokenAuthenticator> WithSubjects() {
  std::string tokens = R"({"tokens":[
    {"name":"ci","role":"viewer","clientCertSubject":"CN=ci-runner,O=Example"},
    {"name":"ops","role":"admin","sha256":")" + HexEncode(Sha256("ops-token")) + R"(","clientCertSubject":"CN=ops"},
    {"name":"legacy","role":"viewer","sha256":")" + HexEncode(Sha256("legacy-token")) + R"("}]})";
  auto a = TokenAuthenticator::FromTokensJson(std::nullopt, tokens);
  EXPECT_TRUE(a.ok()) << a.error().message;
  return a.ok() ? std::move(a).value() : nullptr;
}

TEST(ClientCertSubject, ExactSubjectIsTheIdentity) {
  auto auth = WithSubjects();
  ASSERT_TRUE(auth);
  EXPECT_TRUE(auth->HasClientCertSubjects());
  EXPECT_TRUE(auth->HasTokens());
  auto who = auth->Authenticate("", "CN=ci-runner,O=Example");
  ASSERT_TRUE(who);
  EXPECT_EQ(who->identity, "ci");
  EXPECT_EQ(who->role, Role::kViewer);
  who = auth->Authenticate("", "CN=ops");
  ASSERT_TRUE(who);
  EXPECT_EQ(who->role, Role::kAdmin);
  // The legacy token still works, with or without a certificate.
  EXPECT_EQ(auth->Authenticate("Bearer legacy-token")->identity, "legacy");
  EXPECT_EQ(auth->Authenticate("Bearer legacy-token", "CN=ops")->identity, "legacy");
}

// Only subjects: no bearer token is known (App refuses to start so without a
// client CA).
TEST(ClientCertSubject, OnlySubjectsHaveNoTokens) {
  auto a = TokenAuthenticator::FromTokensJson(
      std::nullopt, R"({"tokens":[{"name":"ci","role":"viewer","clientCertSubject":"CN=ci"}]})");
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_TRUE((*a)->HasClientCertSubjects());
  EXPECT_FALSE((*a)->HasTokens());
}

TEST(ClientCertSubject, NothingButTheExactStringMatches) {
  auto auth = WithSubjects();
  ASSERT_TRUE(auth);
  for (const char* near : {"CN=ci-runner", "CN=ci-runner,O=Example,C=US", "cn=ci-runner,O=Example",
                           "CN=ci-runner, O=Example", "CN=ci-runner,O=Example ", "O=Example,CN=ci-runner",
                           "CN=ci-runner+O=Example", "CN=ci-runner\\,O=Example", "CN=op", "CN=ops,O=Example",
                           "CN=ops\n", ""}) {
    EXPECT_FALSE(auth->Authenticate("", near)) << near;
  }
}

TEST(ClientCertSubject, ABearerTokenWhenPresentDecidesAlone) {
  auto auth = WithSubjects();
  ASSERT_TRUE(auth);
  // An invalid token is refused even with a mapped certificate.
  EXPECT_FALSE(auth->Authenticate("Bearer wrong", "CN=ops"));
  EXPECT_FALSE(auth->Authenticate("Basic Zm9vOmJhcg==", "CN=ops"));
  // A valid one names its own identity, not the certificate's.
  EXPECT_EQ(auth->Authenticate("Bearer ops-token", "CN=ci-runner,O=Example")->identity, "ops");
  // The single-argument form never looks at certificates.
  EXPECT_FALSE(auth->Authenticate(""));
  // A subject entry has no token: its subject is not one.
  EXPECT_FALSE(auth->Authenticate("Bearer CN=ci-runner,O=Example"));
}

TEST(ClientCertSubject, BadEntriesAreRefusedNamingTheEntry) {
  auto bad = [](std::string json) {
    auto r = TokenAuthenticator::FromTokensJson(std::nullopt, json);
    EXPECT_FALSE(r.ok()) << json;
    return r.ok() ? "" : r.error().message;
  };
  EXPECT_NE(bad(R"({"tokens":[{"name":"a","role":"admin"}]})").find("tokens[0] needs \"sha256\" or \"clientCertSubject\""),
            std::string::npos);
  EXPECT_NE(bad(R"({"tokens":[{"name":"a","role":"admin","clientCertSubject":""}]})").find("tokens[0].clientCertSubject"),
            std::string::npos);
  EXPECT_NE(bad(R"({"tokens":[{"name":"a","role":"admin","clientCertSubject":7}]})").find("must be a string"),
            std::string::npos);
  EXPECT_NE(bad(R"({"tokens":[{"name":"a","role":"admin","clientCertSubject":"ci-runner"}]})").find("RFC2253"),
            std::string::npos);
  EXPECT_NE(bad(R"({"tokens":[{"name":"a","role":"admin","clientCertSubject":"CN=a\u0000b"}]})").find("control"),
            std::string::npos);
  EXPECT_NE(bad(R"({"tokens":[{"name":"a","role":"admin","clientCertSubject":"CN=ci-runner, O=Example"}]})")
                .find("tokens[0].clientCertSubject has a space after a separating comma"),
            std::string::npos);
  EXPECT_TRUE(TokenAuthenticator::FromTokensJson(
                  std::nullopt, R"({"tokens":[{"name":"a","role":"admin","clientCertSubject":"CN=ci,O=Example\\, Inc."}]})")
                  .ok());  // an escaped comma in a value
  std::string dup = bad(R"({"tokens":[{"name":"a","role":"viewer","clientCertSubject":"CN=x"},
                                      {"name":"b","role":"admin","clientCertSubject":"CN=x"}]})");
  EXPECT_NE(dup.find("tokens[1].clientCertSubject is also the subject of identity 'a'"), std::string::npos) << dup;
  // A file of certificate identities alone lets somebody log in.
  EXPECT_TRUE(TokenAuthenticator::FromTokensJson(std::nullopt,
                                                 R"({"tokens":[{"name":"a","role":"admin","clientCertSubject":"CN=x"}]})")
                  .ok());
}

// A token listed twice in one realm would be whichever identity came first:
// refused, naming the entry. In the two realms (admin or viewer, and
// client) one token may be listed once each.
TEST(TokensFile, ATokenIsOneIdentityPerRealm) {
  const std::string h = HexEncode(Sha256("shared-token-0123456789"));
  auto twice = TokenAuthenticator::FromTokensJson(
      std::nullopt, R"({"tokens":[{"name":"a","role":"viewer","sha256":")" + h +
                        R"("},{"name":"b","role":"admin","sha256":")" + h + "\"}]}");
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.error().message.find("tokens[1].sha256 is also the token of identity 'a'"), std::string::npos)
      << twice.error().message;
  auto key = TokenAuthenticator::FromTokensJson(SecretBytes(std::string("shared-token-0123456789")),
                                                R"({"tokens":[{"name":"b","role":"viewer","sha256":")" + h + "\"}]}");
  ASSERT_FALSE(key.ok());
  EXPECT_NE(key.error().message.find("identity 'admin'"), std::string::npos) << key.error().message;
  auto clients = TokenAuthenticator::FromTokensJson(
      std::nullopt, R"({"tokens":[{"name":"ops","role":"admin","sha256":")" + h + "\"}]}", true,
      R"({"tokens":[{"name":"c1","role":"client","sha256":")" + h + R"("},{"name":"c2","role":"client","sha256":")" + h +
          "\"}]}");
  ASSERT_FALSE(clients.ok());
  EXPECT_NE(clients.error().message.find("GATEWAY_CLIENT_API_KEYS_FILE: tokens[1].sha256 is also the token of identity 'c1'"),
            std::string::npos)
      << clients.error().message;
  auto both = TokenAuthenticator::FromTokensJson(
      std::nullopt, R"({"tokens":[{"name":"ops","role":"admin","sha256":")" + h + "\"}]}", true,
      R"({"tokens":[{"name":"ops-as-client","role":"client","sha256":")" + h + "\"}]}");
  ASSERT_TRUE(both.ok()) << both.error().message;
  EXPECT_EQ((*both)->Authenticate("Bearer shared-token-0123456789")->identity, "ops");
  EXPECT_EQ((*both)->AuthenticateClient("Bearer shared-token-0123456789", "")->identity, "ops-as-client");
}

}  // namespace
}  // namespace dyad
