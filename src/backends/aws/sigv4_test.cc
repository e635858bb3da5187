// The AWS SigV4 signing suite: every case folder under ../shared/vectors/
// aws-sigv4 (or SIGV4_SUITE_DIR) — canonical request, string to sign and
// signature for header signing.
#include "backends/aws/sigv4.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace dyad {
namespace {

namespace fs = std::filesystem;

std::string Read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::chrono::system_clock::time_point ParseTime(const std::string& iso) {
  std::tm tm{};
  strptime(iso.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

// request.txt: "METHOD TARGET HTTP/1.1", header lines, a blank line, body.
SigningRequest ParseRequest(const std::string& text) {
  SigningRequest r;
  std::istringstream in(text);
  std::string line;
  std::getline(in, line);
  auto sp = line.find(' ');
  auto http = line.rfind(" HTTP/");
  r.method = line.substr(0, sp);
  std::string target = line.substr(sp + 1, http - sp - 1);
  auto q = target.find('?');
  r.path = target.substr(0, q);
  if (q != std::string::npos) r.query = target.substr(q + 1);
  while (std::getline(in, line) && !line.empty()) {
    auto colon = line.find(':');
    r.headers.emplace_back(line.substr(0, colon), line.substr(colon + 1));
  }
  std::stringstream rest;
  rest << in.rdbuf();
  r.body = rest.str();
  return r;
}

fs::path SuiteDir() {
  if (const char* dir = std::getenv("SIGV4_SUITE_DIR")) return dir;
  return fs::path(DYAD_VECTORS_DIR) / "aws-sigv4";
}

TEST(sigv4_suite, HeaderSigningMatchesEveryCase) {
  ASSERT_TRUE(fs::is_directory(SuiteDir())) << SuiteDir();
  int cases = 0;
  SigV4Signer signer;
  for (const auto& entry : fs::directory_iterator(SuiteDir())) {
    if (!entry.is_directory() || !fs::exists(entry.path() / "header-signature.txt")) continue;
    SCOPED_TRACE(entry.path().filename().string());
    auto ctx = nlohmann::json::parse(Read(entry.path() / "context.json"));
    AwsCredentials creds{ctx["credentials"]["access_key_id"], SecretBytes(ctx["credentials"]["secret_access_key"].get<std::string>()),
                         ctx["credentials"].value("token", "")};
    SigningParams params{ctx["region"], ctx["service"], ParseTime(ctx["timestamp"]), ctx.value("normalize", true),
                         ctx.value("sign_body", false)};
    auto signed_req = signer.Sign(ParseRequest(Read(entry.path() / "request.txt")), creds, params);
    ASSERT_TRUE(signed_req.ok()) << signed_req.error().message;
    EXPECT_EQ(signed_req->canonical_request, Read(entry.path() / "header-canonical-request.txt"));
    EXPECT_EQ(signed_req->string_to_sign, Read(entry.path() / "header-string-to-sign.txt"));
    EXPECT_EQ(signed_req->signature, Read(entry.path() / "header-signature.txt"));
    ++cases;
  }
  EXPECT_GE(cases, 25);
}

TEST(sigv4_unit, CanonicalUriIsAlwaysAbsolute) {
  // Found by sigv4_fuzz: a path without its leading slash, unnormalised.
  EXPECT_EQ(SigV4CanonicalUri(".example space/", false), "/.example%20space/");
  EXPECT_EQ(SigV4CanonicalUri("a/../b", true), "/b");
  EXPECT_EQ(SigV4CanonicalUri("", false), "/");
}

TEST(sigv4_unit, MissingCredentialsAreAnErrorWithoutTheSecret) {
  SigV4Signer signer;
  auto r = signer.Sign({"GET", "/", "", {{"Host", "x"}}, ""}, AwsCredentials{"", SecretBytes(std::string("s3cr3t")), ""},
                       SigningParams{"us-east-1", "kms", std::chrono::system_clock::now()});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message.find("s3cr3t"), std::string::npos);
}

}  // namespace
}  // namespace dyad
