// The AWS SigV4 signing suite: every case folder under ../shared/vectors/
// aws-sigv4 (or SIGV4_SUITE_DIR) — canonical request, string to sign,
// signature and the headers of the signed request, for header signing. The
// cases our signer does not support are skipped by what their context asks
// for, each with its reason, and listed in the output.
#include "backends/aws/sigv4.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "core/clock.h"

namespace dyad {
namespace {

namespace fs = std::filesystem;

// The suite's files, with Windows line ends removed (as the suite's own
// runner, aws-c-auth, reads them).
std::string Read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  text.erase(std::remove(text.begin(), text.end(), '\r'), text.end());
  return text;
}

std::chrono::system_clock::time_point ParseTime(const std::string& iso) {
  std::tm tm{};
  strptime(iso.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

std::string Lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// request.txt (and *-signed-request.txt): "METHOD TARGET HTTP/1.1" (the
// target may hold spaces), then "Name:value" header lines, then a blank line
// and the body, to the end of the file, byte for byte. A header may appear
// several times, and a line that starts with a space or a tab continues the
// header above it (an obs-fold): the suite's canonical form joins the folded
// lines with commas as it joins repeated headers, so each folded line is
// read as one more value of that header. No blank line: no body.
SigningRequest ParseRequest(const std::string& text) {
  SigningRequest r;
  size_t pos = 0;
  auto next_line = [&]() -> std::optional<std::string> {
    if (pos >= text.size()) return std::nullopt;
    size_t nl = text.find('\n', pos);
    std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? text.size() : nl + 1;
    return line;
  };
  std::string first = next_line().value_or("");
  auto sp = first.find(' ');
  auto http = first.rfind(" HTTP/");
  EXPECT_TRUE(sp != std::string::npos && http != std::string::npos && http > sp) << "request line: " << first;
  if (sp == std::string::npos || http == std::string::npos || http <= sp) return r;
  r.method = first.substr(0, sp);
  std::string target = first.substr(sp + 1, http - sp - 1);
  auto q = target.find('?');
  r.path = target.substr(0, q);
  if (q != std::string::npos) r.query = target.substr(q + 1);
  while (auto line = next_line()) {
    if (line->empty()) {  // the body follows
      r.body = text.substr(pos);
      break;
    }
    if (line->front() == ' ' || line->front() == '\t') {
      EXPECT_FALSE(r.headers.empty()) << "a continuation line before any header";
      if (!r.headers.empty()) r.headers.emplace_back(r.headers.back().first, *line);
      continue;
    }
    auto colon = line->find(':');
    EXPECT_NE(colon, std::string::npos) << "header line without a colon: " << *line;
    if (colon == std::string::npos) continue;
    r.headers.emplace_back(line->substr(0, colon), line->substr(colon + 1));
  }
  return r;
}

// Why our signer cannot run a case, from what its context asks for; empty
// when it can.
std::string Unsupported(const fs::path& dir, const nlohmann::json& ctx) {
  static const std::set<std::string> kKnown = {"credentials", "region", "service", "timestamp", "normalize",
                                               "sign_body", "expiration_in_seconds", "omit_session_token",
                                               "signed_body_value"};
  for (const auto& [key, value] : ctx.items()) {
    EXPECT_TRUE(kKnown.count(key)) << "context.json key this reader does not know: " << key;
  }
  if (!fs::exists(dir / "header-signature.txt")) {
    return "query-string signing only (presigned URLs): the signer signs headers";
  }
  if (ctx.value("omit_session_token", false)) {
    return "session token added after signing: the signer always signs X-Amz-Security-Token";
  }
  if (ctx.contains("signed_body_value")) {
    return "payload given as " + ctx["signed_body_value"].dump() + ": the signer always hashes the body";
  }
  return "";
}

fs::path SuiteDir() {
  if (const char* dir = std::getenv("SIGV4_SUITE_DIR")) return dir;
  return fs::path(DYAD_VECTORS_DIR) / "aws-sigv4";
}

TEST(sigv4_reader, FoldedRepeatedHeadersAndBody) {
  auto r = ParseRequest("POST /a b/?x=1 HTTP/1.1\nHost:h\nMy-Header1:value1\n  value2\n\tvalue3\nMy-Header1:v4\n"
                        "Content-Length:9\n\nline one\n\nand two\n");
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.path, "/a b/");
  EXPECT_EQ(r.query, "x=1");
  using H = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(r.headers, (H{{"Host", "h"},
                          {"My-Header1", "value1"},
                          {"My-Header1", "  value2"},
                          {"My-Header1", "\tvalue3"},
                          {"My-Header1", "v4"},
                          {"Content-Length", "9"}}));
  EXPECT_EQ(r.body, "line one\n\nand two\n");
  EXPECT_EQ(ParseRequest("GET / HTTP/1.1\nHost:h\n").body, "");
  SigV4Signer signer;
  auto s = signer.Sign(r, AwsCredentials{"AKID", SecretBytes(std::string("k")), ""},
                       SigningParams{"us-east-1", "service", ParseTime("2015-08-30T12:36:00Z")});
  ASSERT_TRUE(s.ok());
  EXPECT_NE(s->canonical_request.find("\nmy-header1:value1,value2,value3,v4\n"), std::string::npos)
      << s->canonical_request;
}

TEST(sigv4_suite, HeaderSigningMatchesEveryCase) {
  ASSERT_TRUE(fs::is_directory(SuiteDir())) << SuiteDir();
  std::vector<fs::path> dirs;
  for (const auto& entry : fs::directory_iterator(SuiteDir())) {
    if (entry.is_directory()) dirs.push_back(entry.path());
  }
  std::sort(dirs.begin(), dirs.end());
  int cases = 0;
  std::vector<std::string> skipped;
  SigV4Signer signer;
  for (const auto& dir : dirs) {
    SCOPED_TRACE(dir.filename().string());
    ASSERT_TRUE(fs::exists(dir / "context.json") && fs::exists(dir / "request.txt")) << "not a suite case";
    auto ctx = nlohmann::json::parse(Read(dir / "context.json"));
    if (std::string why = Unsupported(dir, ctx); !why.empty()) {
      skipped.push_back(dir.filename().string() + ": " + why);
      continue;
    }
    AwsCredentials creds{ctx["credentials"]["access_key_id"],
                         SecretBytes(ctx["credentials"]["secret_access_key"].get<std::string>()),
                         ctx["credentials"].value("token", "")};
    SigningParams params{ctx["region"], ctx["service"], ParseTime(ctx["timestamp"]), ctx.value("normalize", true),
                         ctx.value("sign_body", false)};
    auto signed_req = signer.Sign(ParseRequest(Read(dir / "request.txt")), creds, params);
    ASSERT_TRUE(signed_req.ok()) << signed_req.error().message;
    EXPECT_EQ(signed_req->canonical_request, Read(dir / "header-canonical-request.txt"));
    EXPECT_EQ(signed_req->string_to_sign, Read(dir / "header-string-to-sign.txt"));
    EXPECT_EQ(signed_req->signature, Read(dir / "header-signature.txt"));
    // Each header the signer says to send is in the suite's signed request, with the same value.
    if (fs::exists(dir / "header-signed-request.txt")) {
      auto expected = ParseRequest(Read(dir / "header-signed-request.txt"));
      for (const auto& header : signed_req->headers) {
        const std::string& name = header.first;
        const std::string& value = header.second;
        auto it = std::find_if(expected.headers.begin(), expected.headers.end(),
                               [&](const auto& h) { return Lower(h.first) == Lower(name); });
        ASSERT_NE(it, expected.headers.end()) << name << " is not in the signed request";
        EXPECT_EQ(it->second, value) << name;
      }
    }
    ++cases;
  }
  std::cout << "[ sigv4 ] " << cases << " case(s) run, " << skipped.size() << " skipped\n";
  for (const auto& s : skipped) std::cout << "[ sigv4 ] skipped " << s << "\n";
  EXPECT_EQ(static_cast<size_t>(cases) + skipped.size(), dirs.size());
  EXPECT_GE(cases, 30);
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


// A signer that has never signed: its key is derived afresh.
std::string FreshSignature(const SigningRequest& req, const AwsCredentials& creds, const SigningParams& params) {
  SigV4Signer fresh;
  auto r = fresh.Sign(req, creds, params);
  return r.ok() ? r->signature : "error: " + r.error().message;
}

std::string Header(const SignedRequest& r, std::string_view name) {
  for (const auto& [k, v] : r.headers) {
    if (k == name) return v;
  }
  return "";
}

TEST(sigv4_unit, TheCachedKeyRollsOverAtMidnight) {
  FakeClock clock;  // 2026-01-01T00:00:00Z
  clock.Advance(std::chrono::hours(24) - std::chrono::seconds(2));
  SigV4Signer signer;
  const AwsCredentials creds{"AKIDEXAMPLE", SecretBytes(std::string("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")), ""};
  const SigningRequest req{"POST", "/", "", {{"Host", "example.amazonaws.com"}, {"X-Amz-Target", "a.B"}}, "{}"};
  auto sign = [&] {
    SigningParams params{"us-east-1", "secretsmanager", clock.WallNow()};
    auto r = signer.Sign(req, creds, params);
    EXPECT_TRUE(r.ok());
    EXPECT_EQ(r->signature, FreshSignature(req, creds, params));
    return *r;
  };
  SignedRequest before = sign();
  EXPECT_NE(Header(before, "Authorization").find("Credential=AKIDEXAMPLE/20260101/us-east-1/"), std::string::npos);
  EXPECT_EQ(sign().signature, before.signature);  // the same second, from the cache
  EXPECT_EQ(signer.derived_keys(), 1u);
  clock.Advance(std::chrono::seconds(3));  // 2026-01-02T00:00:01Z
  SignedRequest after = sign();
  EXPECT_EQ(Header(after, "X-Amz-Date"), "20260102T000001Z");
  EXPECT_NE(Header(after, "Authorization").find("Credential=AKIDEXAMPLE/20260102/us-east-1/"), std::string::npos);
  EXPECT_EQ(signer.derived_keys(), 2u);
  sign();
  EXPECT_EQ(signer.derived_keys(), 2u);
}

TEST(sigv4_unit, KeysOfOtherScopesAndCredentialsAreNotMixedUp) {
  SigV4Signer signer;
  const SigningRequest req{"GET", "/", "a=1", {{"Host", "h"}}, ""};
  const auto t = std::chrono::system_clock::time_point(std::chrono::seconds(1767225600));
  size_t derived = 0;
  // More scopes than the cache holds, twice over: the oldest drop out and come back right.
  for (int round = 0; round < 2; ++round) {
    for (size_t i = 0; i < SigV4Signer::kMaxCachedKeys + 2; ++i) {
      AwsCredentials creds{"AKID" + std::to_string(i % 3), SecretBytes("secret" + std::to_string(i % 3)), ""};
      SigningParams params{"region-" + std::to_string(i), i % 2 ? "kms" : "secretsmanager", t};
      auto r = signer.Sign(req, creds, params);
      ASSERT_TRUE(r.ok());
      EXPECT_EQ(r->signature, FreshSignature(req, creds, params)) << i;
      ++derived;
    }
  }
  EXPECT_EQ(signer.derived_keys(), derived);  // each one pushed out before it came back
  // Another access key for a cached scope gets its own key.
  AwsCredentials other{"AKIDOTHER", SecretBytes(std::string("other")), ""};
  SigningParams params{"region-0", "secretsmanager", t};
  auto r = signer.Sign(req, other, params);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->signature, FreshSignature(req, other, params));
}

TEST(sigv4_unit, RepeatedHeadersAreJoinedInTheOrderGiven) {
  SigV4Signer signer;
  auto r = signer.Sign({"GET", "/", "", {{"Host", "h"}, {"X-B", " two  words "}, {"x-a", "1"}, {"X-b", "\tlast"}}, ""},
                       AwsCredentials{"AKID", SecretBytes(std::string("s")), ""},
                       SigningParams{"us-east-1", "kms", std::chrono::system_clock::time_point()});
  ASSERT_TRUE(r.ok());
  EXPECT_NE(r->canonical_request.find("host:h\nx-a:1\nx-amz-date:19700101T000000Z\nx-b:two words,last\n\n"
                                      "host;x-a;x-amz-date;x-b\n"),
            std::string::npos)
      << r->canonical_request;
}

// The cache was once keyed by the access key id, not by the
// secret. A secret access key corrected or re-issued under the same id (a
// credentials file fixed while the gateway runs, a source that re-reads it)
// must sign with the new secret at once, not with the old day's key until
// midnight (every request SignatureDoesNotMatch meanwhile).
TEST(sigv4_unit, ANewSecretUnderTheSameAccessKeyIdIsNotSignedWithTheOldKey) {
  SigV4Signer signer;
  const SigningRequest req{"POST", "/", "", {{"Host", "example.amazonaws.com"}}, "{}"};
  const SigningParams params{"us-east-1", "secretsmanager",
                             std::chrono::system_clock::time_point(std::chrono::seconds(1767225600))};
  const AwsCredentials wrong{"AKIDEXAMPLE", SecretBytes(std::string("the-old-or-mistyped-secret")), ""};
  const AwsCredentials right{"AKIDEXAMPLE", SecretBytes(std::string("the-new-secret")), ""};
  auto first = signer.Sign(req, wrong, params);
  ASSERT_TRUE(first.ok());
  auto second = signer.Sign(req, right, params);
  ASSERT_TRUE(second.ok());
  EXPECT_NE(second->signature, first->signature);
  EXPECT_EQ(second->signature, FreshSignature(req, right, params));
}

}  // namespace
}  // namespace dyad
