#include "backends/vault/vault_auth.h"

#include <gtest/gtest.h>

#include <deque>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "testing/fakes.h"

namespace dyad {
namespace {

using nlohmann::json;
using std::chrono::seconds;

// A Vault that answers by path (below /v1/): each path's replies in order,
// the last one repeating; a path with none answers 500. Records every call.
class FakeVault final : public HttpTransport {
 public:
  void On(const std::string& path, int status, std::string body) {
    MutexLock lock(&mu_);
    replies_[path].push_back(HttpReply{status, {}, std::move(body)});
  }
  Result<HttpReply> Send(const HttpCall& call) override {
    MutexLock lock(&mu_);
    calls.push_back(call);
    std::string path = call.url.substr(call.url.find("/v1/") + 4);
    auto& queue = replies_[path];
    if (queue.empty()) return HttpReply{500, {}, R"({"errors":["no reply scripted for )" + path + R"("]})"};
    HttpReply r = queue.front();
    if (queue.size() > 1) queue.pop_front();
    return r;
  }
  int Count(const std::string& path) {
    int n = 0;
    for (const auto& c : calls) n += c.url.ends_with("/v1/" + path);
    return n;
  }
  const HttpCall& Last() { return calls.back(); }
  std::vector<HttpCall> calls;

 private:
  Mutex mu_;
  std::map<std::string, std::deque<HttpReply>> replies_ DYAD_GUARDED_BY(mu_);
};

std::string Header(const HttpCall& call, std::string_view name) { return testing::ScriptedTransport::HeaderOf(call, name); }

std::string LookupAnswer(long long ttl, bool renewable, long long creation_ttl = 0) {
  return json{{"data", {{"id", "hvs.echoed-canary"}, {"ttl", ttl}, {"renewable", renewable}, {"creation_ttl", creation_ttl}}}}
      .dump();
}
std::string AuthAnswer(const std::string& token, json lease, bool renewable) {
  return json{{"auth", {{"client_token", token}, {"lease_duration", lease}, {"renewable", renewable}}}}.dump();
}

struct Harness {
  explicit Harness(const VaultSettings& s, const std::string& name_space = "") {
    auto transport = std::make_unique<FakeVault>();
    vault = transport.get();
    VaultClientOptions o{"http://vault:8200", name_space, RetryPolicy{1}, nullptr};
    login = VaultClient::Create(o, nullptr, std::move(transport), clock, random).value();
    auth = std::make_unique<VaultTokenAuth>(s, *login, clock);
  }
  // The token a data call carries, or the error.
  Result<std::string> Token() {
    CloudRequest r{"GET", "vault:8200", "/v1/secret/data/x", "", {}, ""};
    DYAD_RETURN_IF_ERROR(auth->Authorize(r));
    std::string t;
    for (const auto& [k, v] : r.headers) {
      if (k == "X-Vault-Token") t = v;
    }
    return t;
  }
  bool Rejected() { return auth->OnRejected("kv.read", HttpReply{403, {}, R"({"errors":["permission denied"]})"}); }

  FakeClock clock;
  testing::ConstantRandom random{7};
  FakeVault* vault;
  std::unique_ptr<VaultClient> login;
  std::unique_ptr<VaultTokenAuth> auth;
};

VaultSettings TokenSettings(std::string_view token = "hvs.static-canary") {
  VaultSettings s;
  s.address = "http://vault:8200";
  s.token = SecretBytes(token);
  return s;
}

VaultSettings AppRole(const std::string& secret_id_file = "") {
  VaultSettings s;
  s.address = "http://vault:8200";
  s.auth = VaultAuthMethod::kAppRole;
  s.role_id = "role-1";
  if (secret_id_file.empty()) s.secret_id = SecretBytes(std::string_view("sid-canary"));
  s.secret_id_file = secret_id_file;
  return s;
}

TEST(VaultAuth, ARootTokenWithTtlZeroIsLookedUpOnceAndNeverExpires) {
  Harness h(TokenSettings(), "team");
  h.vault->On("auth/token/lookup-self", 200, LookupAnswer(0, false));
  EXPECT_EQ(h.Token().value(), "hvs.static-canary");
  ASSERT_EQ(h.vault->calls.size(), 1u);
  EXPECT_EQ(h.vault->Last().method, "GET");
  EXPECT_EQ(Header(h.vault->Last(), "X-Vault-Token"), "hvs.static-canary");
  EXPECT_EQ(Header(h.vault->Last(), "X-Vault-Namespace"), "team");
  h.clock.Advance(std::chrono::hours(24 * 365));
  EXPECT_EQ(h.Token().value(), "hvs.static-canary");
  EXPECT_EQ(h.vault->calls.size(), 1u);
  EXPECT_FALSE(h.Rejected()) << "VAULT_TOKEN cannot be replaced: a 403 fails closed";
  EXPECT_EQ(h.vault->calls.size(), 1u);
}

TEST(VaultAuth, ARenewableTokenIsRenewedAtTwoThirdsUntilItsMaxTtlCapsIt) {
  Harness h(TokenSettings());
  h.vault->On("auth/token/lookup-self", 200, LookupAnswer(3000, true, 3600));
  h.vault->On("auth/token/renew-self", 200, AuthAnswer("hvs.static-canary", 3600, true));
  h.vault->On("auth/token/renew-self", 200, AuthAnswer("hvs.static-canary", 1200, true));  // capped
  ASSERT_TRUE(h.Token().ok());
  h.clock.Advance(seconds(1999));
  ASSERT_TRUE(h.Token().ok());
  EXPECT_EQ(h.vault->Count("auth/token/renew-self"), 0);
  h.clock.Advance(seconds(1));  // 2/3 of 3000 s
  ASSERT_TRUE(h.Token().ok());
  ASSERT_EQ(h.vault->Count("auth/token/renew-self"), 1);
  const HttpCall& renew = h.vault->Last();
  EXPECT_EQ(renew.method, "POST");
  EXPECT_EQ(json::parse(renew.body), (json{{"increment", 3600}}));  // the lease's length
  EXPECT_EQ(Header(renew, "X-Vault-Token"), "hvs.static-canary");
  h.clock.Advance(seconds(2400));  // 2/3 of the renewed 3600 s
  ASSERT_TRUE(h.Token().ok());
  EXPECT_EQ(h.vault->Count("auth/token/renew-self"), 2);
  // Granted 1200 s of the 3600 asked: at its max TTL; VAULT_TOKEN has no successor.
  h.clock.Advance(std::chrono::hours(10));
  EXPECT_EQ(h.Token().value(), "hvs.static-canary");
  EXPECT_EQ(h.vault->Count("auth/token/renew-self"), 2);
  EXPECT_EQ(h.vault->Count("auth/token/lookup-self"), 1);
}

TEST(VaultAuth, ARefusedRenewalOfVaultTokenStopsRenewingIt) {
  Harness h(TokenSettings());
  h.vault->On("auth/token/lookup-self", 200, LookupAnswer(3000, true, 3000));
  h.vault->On("auth/token/renew-self", 403, R"({"errors":["permission denied"]})");
  ASSERT_TRUE(h.Token().ok());
  h.clock.Advance(seconds(2000));
  EXPECT_EQ(h.Token().value(), "hvs.static-canary");
  h.clock.Advance(seconds(990));  // close to the end: no renewal or lookup storm
  EXPECT_EQ(h.Token().value(), "hvs.static-canary");
  EXPECT_EQ(h.vault->Count("auth/token/renew-self"), 1);
  EXPECT_EQ(h.vault->Count("auth/token/lookup-self"), 1);
}

// VAULT_TOKEN_FILE, as an agent writes it.
struct TokenFile {
  explicit TokenFile(const std::string& token) { Write(token); }
  void Write(const std::string& token) const { std::ofstream(path) << token << "\n"; }
  VaultSettings Settings() const {
    VaultSettings s;
    s.token_file = path;
    return s;
  }
  testing::TempDir dir;
  const std::string path = dir.File("t");
};

TEST(VaultAuth, ATokenFileWhoseRenewalIsRefusedIsReadAgainAndAnUnchangedTokenNotRenewed) {
  TokenFile file("hvs.file-one");
  Harness h(file.Settings());
  h.vault->On("auth/token/lookup-self", 200, LookupAnswer(3000, true, 3000));
  h.vault->On("auth/token/renew-self", 403, R"({"errors":["permission denied"]})");
  ASSERT_EQ(h.Token().value(), "hvs.file-one");
  h.clock.Advance(seconds(2000));
  EXPECT_EQ(h.Token().value(), "hvs.file-one");  // refused, file read again: the same token
  EXPECT_EQ(h.vault->Count("auth/token/lookup-self"), 2);
  h.clock.Advance(seconds(990));
  EXPECT_EQ(h.Token().value(), "hvs.file-one");
  EXPECT_EQ(h.vault->Count("auth/token/renew-self"), 1);
  // At two thirds of the new lookup's ttl the file is read again: an agent's new token is taken.
  file.Write("hvs.file-two");
  h.clock.Advance(seconds(1100));
  EXPECT_EQ(h.Token().value(), "hvs.file-two");
}

TEST(VaultAuth, ALookupTheTokenMayNotMakeIsANonExpiringToken) {
  Harness h(TokenSettings());
  h.vault->On("auth/token/lookup-self", 403, R"({"errors":["1 error occurred:\n\t* permission denied\n\n"]})");
  EXPECT_EQ(h.Token().value(), "hvs.static-canary");
  h.clock.Advance(std::chrono::hours(1000));
  EXPECT_EQ(h.Token().value(), "hvs.static-canary");
  EXPECT_EQ(h.vault->calls.size(), 1u);
}

TEST(VaultAuth, AnUnavailableOrMalformedLookupIsAnErrorWithoutTheToken) {
  for (auto [status, body] : std::vector<std::pair<int, std::string>>{
           {503, R"({"errors":["Vault is sealed"]})"},
           {200, "not json"},
           {200, R"({"data":{"ttl":"forever"}})"},
           {200, R"({"data":{"ttl":-5}})"},
           {200, R"({"data":[]})"},
           {200, R"({})"}}) {
    Harness h(TokenSettings());
    h.vault->On("auth/token/lookup-self", status, body);
    auto t = h.Token();
    ASSERT_FALSE(t.ok()) << body;
    EXPECT_EQ(t.error().code, ErrorCode::kUnavailable) << body;
    EXPECT_EQ(t.error().message.find("canary"), std::string::npos) << t.error().message;
  }
  // A huge ttl is clamped, not overflowed.
  Harness h(TokenSettings());
  h.vault->On("auth/token/lookup-self", 200, R"({"data":{"ttl":1e300,"renewable":true}})");
  EXPECT_TRUE(h.Token().ok());
  Harness h2(TokenSettings());
  h2.vault->On("auth/token/lookup-self", 200, R"({"data":{"ttl":18446744073709551615,"renewable":true}})");
  EXPECT_TRUE(h2.Token().ok());
  h2.clock.Advance(std::chrono::hours(24 * 365));
  EXPECT_TRUE(h2.Token().ok());
  EXPECT_EQ(h2.vault->Count("auth/token/renew-self"), 0);
}

TEST(VaultAuth, ATokenFileIsReadAgainWhenATokenIsRefused) {
  TokenFile file("hvs.file-one");
  Harness h(file.Settings());
  h.vault->On("auth/token/lookup-self", 200, LookupAnswer(0, false));  // the first use
  h.vault->On("auth/token/lookup-self", 200, LookupAnswer(0, false));  // after a 403: alive
  h.vault->On("auth/token/lookup-self", 403, R"({"errors":["permission denied"]})");  // then dead
  EXPECT_EQ(h.Token().value(), "hvs.file-one");
  h.clock.Advance(seconds(31));
  EXPECT_FALSE(h.Rejected()) << "the token is alive: the policy refused";
  EXPECT_EQ(h.vault->Count("auth/token/lookup-self"), 2);
  file.Write("hvs.file-two");  // an agent wrote a new one
  EXPECT_TRUE(h.Rejected());
  EXPECT_EQ(Header(h.vault->Last(), "X-Vault-Token"), "hvs.file-one");
  h.vault->On("auth/token/lookup-self", 200, LookupAnswer(0, false));
  EXPECT_EQ(h.Token().value(), "hvs.file-two");
  EXPECT_EQ(h.vault->Count("auth/token/revoke-self"), 0) << "a file's token belongs to whoever wrote it";
}

// Vault revoked the file's token before the file was rewritten: the same
// token read again (its lookup refused too) is not kept as one that never
// expires, which held it for good; the file is read again after the
// back-off, and its next token used.
TEST(VaultAuth, ARefusedTokenStillInItsFileIsNotHeldForGood) {
  TokenFile file("hvs.file-one");
  Harness h(file.Settings());
  h.vault->On("auth/token/lookup-self", 200, LookupAnswer(0, false));  // the first use
  h.vault->On("auth/token/lookup-self", 403, R"({"errors":["permission denied"]})");  // revoked
  EXPECT_EQ(h.Token().value(), "hvs.file-one");
  h.clock.Advance(seconds(31));
  EXPECT_TRUE(h.Rejected());  // dead: the file is read again
  const int lookups = h.vault->Count("auth/token/lookup-self");
  for (int i = 0; i < 3; ++i) {  // however long the file keeps it
    auto t = h.Token();
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.error().message.find("which holds it still"), std::string::npos) << t.error().message;
    EXPECT_EQ(t.error().message.find("policy needs"), std::string::npos) << t.error().message;
    h.clock.Advance(seconds(300));
  }
  EXPECT_EQ(h.vault->Count("auth/token/lookup-self"), lookups) << "no lookup of a token known dead";
  file.Write("hvs.file-two");  // the agent's next token, taken at once
  h.vault->On("auth/token/lookup-self", 200, LookupAnswer(0, false));
  EXPECT_EQ(h.Token().value(), "hvs.file-two");
}

TEST(VaultAuth, AppRoleLogsInWithoutATokenInTheAuthNamespaceAndReadsTheSecretIdFileEachTime) {
  testing::TempDir dir;
  std::ofstream(dir.File("sid")) << "sid-one\n";
  Harness h(AppRole(dir.File("sid")), "admin");
  h.vault->On("auth/approle/login", 200, AuthAnswer("hvs.login-one", 60, false));
  h.vault->On("auth/approle/login", 200, AuthAnswer("hvs.login-two", 60, false));
  EXPECT_EQ(h.Token().value(), "hvs.login-one");
  ASSERT_EQ(h.vault->calls.size(), 1u);
  const HttpCall login = h.vault->Last();
  EXPECT_EQ(login.method, "POST");
  EXPECT_EQ(login.url, "http://vault:8200/v1/auth/approle/login");
  EXPECT_EQ(Header(login, "X-Vault-Token"), "");
  EXPECT_EQ(Header(login, "X-Vault-Namespace"), "admin");
  EXPECT_EQ(json::parse(login.body), (json{{"role_id", "role-1"}, {"secret_id", "sid-one"}}));
  // Not renewable: a new login at two thirds of the lease.
  std::ofstream(dir.File("sid")) << "sid-two";
  h.clock.Advance(seconds(39));
  EXPECT_EQ(h.Token().value(), "hvs.login-one");
  h.clock.Advance(seconds(1));
  EXPECT_EQ(h.Token().value(), "hvs.login-two");
  ASSERT_EQ(h.vault->calls.size(), 3u);
  EXPECT_EQ(json::parse(h.vault->calls[1].body)["secret_id"], "sid-two");
  EXPECT_EQ(h.vault->Count("auth/token/renew-self"), 0);
  // The token it replaced, still valid for 20 s, is revoked with itself.
  const HttpCall revoke = h.vault->calls[2];
  EXPECT_EQ(revoke.method, "POST");
  EXPECT_EQ(revoke.url, "http://vault:8200/v1/auth/token/revoke-self");
  EXPECT_EQ(Header(revoke, "X-Vault-Token"), "hvs.login-one");
  EXPECT_EQ(Header(revoke, "X-Vault-Namespace"), "admin");
}

TEST(VaultAuth, ALoginTokenIsRenewedThenLogsInAgainAtItsMaxTtl) {
  VaultSettings s = AppRole();
  s.approle_mount = "ar";
  Harness h(s);
  h.vault->On("auth/ar/login", 200, AuthAnswer("hvs.login-one", 300, true));
  h.vault->On("auth/ar/login", 200, AuthAnswer("hvs.login-two", 300, true));
  h.vault->On("auth/token/renew-self", 200, AuthAnswer("hvs.login-one", 300, true));
  h.vault->On("auth/token/renew-self", 200, AuthAnswer("hvs.login-one", 90, true));  // capped by max TTL
  EXPECT_EQ(h.Token().value(), "hvs.login-one");
  h.clock.Advance(seconds(200));
  EXPECT_EQ(h.Token().value(), "hvs.login-one");
  EXPECT_EQ(h.vault->Count("auth/token/renew-self"), 1);
  EXPECT_EQ(json::parse(h.vault->Last().body), (json{{"increment", 300}}));
  h.clock.Advance(seconds(200));
  EXPECT_EQ(h.Token().value(), "hvs.login-one");
  EXPECT_EQ(h.vault->Count("auth/token/renew-self"), 2);
  h.clock.Advance(seconds(60));  // 2/3 of the 90 s left: log in again instead of renewing
  EXPECT_EQ(h.Token().value(), "hvs.login-two");
  EXPECT_EQ(h.vault->Count("auth/token/renew-self"), 2);
  EXPECT_EQ(h.vault->Count("auth/ar/login"), 2);
}

TEST(VaultAuth, ARefusedRenewalLogsInAgainAndAnUnavailableOneKeepsTheToken) {
  Harness h(AppRole());
  h.vault->On("auth/approle/login", 200, AuthAnswer("hvs.login-one", 300, true));
  h.vault->On("auth/approle/login", 200, AuthAnswer("hvs.login-two", 300, true));
  h.vault->On("auth/token/renew-self", 503, R"({"errors":["Vault is sealed"]})");
  h.vault->On("auth/token/renew-self", 403, R"({"errors":["permission denied"]})");
  EXPECT_EQ(h.Token().value(), "hvs.login-one");
  h.clock.Advance(seconds(200));
  EXPECT_EQ(h.Token().value(), "hvs.login-one");  // sealed: kept until it expires
  EXPECT_EQ(h.vault->Count("auth/approle/login"), 1);
  h.clock.Advance(seconds(31));  // the retry interval
  EXPECT_EQ(h.Token().value(), "hvs.login-two");
  EXPECT_EQ(h.vault->Count("auth/token/renew-self"), 2);
  EXPECT_EQ(h.vault->Count("auth/approle/login"), 2);
}

TEST(VaultAuth, ARefusedLoginTokenIsReplacedOnceButAFreshOneFailsClosed) {
  Harness h(AppRole());
  h.vault->On("auth/approle/login", 200, AuthAnswer("hvs.login-one", 3600, true));
  h.vault->On("auth/approle/login", 200, AuthAnswer("hvs.login-two", 3600, true));
  h.vault->On("auth/token/lookup-self", 403, R"({"errors":["permission denied"]})");  // dead
  h.vault->On("auth/token/revoke-self", 403, R"({"errors":["permission denied"]})");
  EXPECT_EQ(h.Token().value(), "hvs.login-one");
  EXPECT_FALSE(h.Rejected());  // dead, but just logged in: no new login within 30 s
  EXPECT_EQ(h.vault->Count("auth/approle/login"), 1);
  h.clock.Advance(seconds(60));
  EXPECT_TRUE(h.Rejected());  // dead: one new login
  EXPECT_EQ(h.Token().value(), "hvs.login-two");
  EXPECT_EQ(h.vault->Count("auth/token/revoke-self"), 1);  // refused (it is dead): ignored
  h.clock.Advance(seconds(60));
  // The fresh token's lookup is refused too: it may not look itself up (no
  // default policy), so the refusal is the policy's; no third login.
  EXPECT_FALSE(h.Rejected());
  EXPECT_FALSE(h.Rejected());
  EXPECT_EQ(h.vault->Count("auth/approle/login"), 2);
  EXPECT_EQ(h.Token().value(), "hvs.login-two");
}

TEST(VaultAuth, ATokenThatMayNotLookItselfUpIsKeptOnA403AndAnUnavailableLookupFailsClosed) {
  TokenFile file("hvs.file-one");
  Harness h(file.Settings());
  h.vault->On("auth/token/lookup-self", 403, R"({"errors":["1 error occurred:\n\t* permission denied\n\n"]})");
  EXPECT_EQ(h.Token().value(), "hvs.file-one");
  h.clock.Advance(seconds(60));
  EXPECT_FALSE(h.Rejected());
  EXPECT_EQ(h.vault->Count("auth/token/lookup-self"), 2);

  Harness a(AppRole());
  a.vault->On("auth/approle/login", 200, AuthAnswer("hvs.login-one", 3600, true));
  a.vault->On("auth/token/lookup-self", 503, R"({"errors":["Vault is sealed"]})");
  EXPECT_EQ(a.Token().value(), "hvs.login-one");
  a.clock.Advance(seconds(60));
  EXPECT_FALSE(a.Rejected());
  EXPECT_EQ(a.vault->Count("auth/approle/login"), 1);
  a.vault->On("auth/token/lookup-self", 200, "not json");
  EXPECT_FALSE(a.Rejected());
  EXPECT_EQ(a.vault->Count("auth/approle/login"), 1);
}

// Lends a transport to a second client.
class Lent final : public HttpTransport {
 public:
  explicit Lent(HttpTransport& t) : t_(t) {}
  Result<HttpReply> Send(const HttpCall& call) override { return t_.Send(call); }

 private:
  HttpTransport& t_;
};

TEST(VaultAuth, ADataCallRefusedForAnOldTokenIsSentOnceMoreWithANewOne) {
  Harness h(AppRole());
  h.vault->On("auth/approle/login", 200, AuthAnswer("hvs.login-one", 3600, true));
  h.vault->On("auth/approle/login", 200, AuthAnswer("hvs.login-two", 3600, true));
  h.vault->On("secret/data/x", 200, R"({"data":{"data":{"a":1}}})");
  h.vault->On("secret/data/x", 403, R"({"errors":["1 error occurred:\n\t* permission denied\n\n"]})");
  h.vault->On("secret/data/x", 200, R"({"data":{"data":{"a":2}}})");
  h.vault->On("secret/data/x", 403, R"({"errors":["permission denied"]})");
  h.vault->On("auth/token/lookup-self", 403, R"({"errors":["permission denied"]})");  // login-one: dead
  h.vault->On("auth/token/lookup-self", 200, LookupAnswer(3000, true));              // login-two: alive
  h.vault->On("auth/token/revoke-self", 204, "");
  VaultClientOptions o{"http://vault:8200", "", RetryPolicy{1}, nullptr};
  auto data = VaultClient::Create(o, std::move(h.auth), std::make_unique<Lent>(*h.vault), h.clock, h.random).value();
  VaultCall read;
  read.op = "kv.read";
  read.path = "secret/data/x";
  EXPECT_EQ(data->Call(read).value()["data"]["data"]["a"], 1);
  EXPECT_EQ(Header(h.vault->Last(), "X-Vault-Token"), "hvs.login-one");
  h.clock.Advance(seconds(60));
  EXPECT_EQ(data->Call(read).value()["data"]["data"]["a"], 2);  // refused, new login, sent again
  EXPECT_EQ(Header(h.vault->Last(), "X-Vault-Token"), "hvs.login-two");
  EXPECT_EQ(h.vault->Count("auth/approle/login"), 2);
  EXPECT_EQ(h.vault->Count("auth/token/lookup-self"), 1);
  ASSERT_EQ(h.vault->Count("auth/token/revoke-self"), 1);
  for (const auto& c : h.vault->calls) {
    if (c.url.ends_with("revoke-self")) {
      EXPECT_EQ(Header(c, "X-Vault-Token"), "hvs.login-one");
    }
  }
  // The new token refused later: it is alive, so the policy refused; no
  // further login or retry, however often it happens.
  for (int i = 0; i < 3; ++i) {
    h.clock.Advance(seconds(31));
    const size_t before = h.vault->calls.size();
    auto denied = data->Call(read);
    ASSERT_FALSE(denied.ok());
    EXPECT_EQ(denied.error().code, ErrorCode::kPermissionDenied);
    EXPECT_NE(denied.error().message.find("needs 'read' on 'secret/data/x'"), std::string::npos);
    ASSERT_EQ(h.vault->calls.size(), before + 2);  // the read, one lookup-self
    EXPECT_TRUE(h.vault->calls[before + 1].url.ends_with("/v1/auth/token/lookup-self"));
    EXPECT_EQ(Header(h.vault->calls[before + 1], "X-Vault-Token"), "hvs.login-two");
  }
  EXPECT_EQ(h.vault->Count("auth/approle/login"), 2);
  EXPECT_EQ(h.vault->Count("auth/token/revoke-self"), 1);
}

TEST(VaultAuth, KubernetesJwtAndCertLoginBodies) {
  testing::TempDir dir;
  std::ofstream(dir.File("sa")) << "eyJ.sa-canary.sig\n";
  VaultSettings k;
  k.auth = VaultAuthMethod::kKubernetes;
  k.k8s_role = "gateway";
  k.k8s_token_file = dir.File("sa");
  Harness hk(k);
  hk.vault->On("auth/kubernetes/login", 200, AuthAnswer("hvs.k8s", 600, true));
  EXPECT_EQ(hk.Token().value(), "hvs.k8s");
  EXPECT_EQ(json::parse(hk.vault->Last().body), (json{{"role", "gateway"}, {"jwt", "eyJ.sa-canary.sig"}}));

  VaultSettings j;
  j.auth = VaultAuthMethod::kJwt;
  j.jwt_role = "ci";
  j.jwt_file = dir.File("sa");
  j.jwt_mount = "oidc/ci";
  Harness hj(j);
  hj.vault->On("auth/oidc/ci/login", 200, AuthAnswer("hvs.jwt", 600, false));
  EXPECT_EQ(hj.Token().value(), "hvs.jwt");
  EXPECT_EQ(json::parse(hj.vault->Last().body), (json{{"role", "ci"}, {"jwt", "eyJ.sa-canary.sig"}}));

  VaultSettings c;
  c.auth = VaultAuthMethod::kCert;
  Harness hc(c);
  hc.vault->On("auth/cert/login", 200, AuthAnswer("hvs.cert", 600, false));
  EXPECT_EQ(hc.Token().value(), "hvs.cert");
  EXPECT_EQ(json::parse(hc.vault->Last().body), json::object());
  c.cert_role = "web";
  Harness hc2(c);
  hc2.vault->On("auth/cert/login", 200, AuthAnswer("hvs.cert", 600, false));
  EXPECT_TRUE(hc2.Token().ok());
  EXPECT_EQ(json::parse(hc2.vault->Last().body), (json{{"name", "web"}}));

  // A missing service-account file: no request, an error naming the variable.
  k.k8s_token_file = dir.File("none");
  Harness hm(k);
  auto t = hm.Token();
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_NE(t.error().message.find("VAULT_K8S_TOKEN_FILE: cannot read"), std::string::npos);
  EXPECT_TRUE(hm.vault->calls.empty());
}

TEST(VaultAuth, ARefusedOrMalformedLoginSaysSoWithoutTheSecrets) {
  struct Case {
    int status;
    std::string body;
    ErrorCode code;
    std::string says;
  };
  for (const Case& c : std::vector<Case>{
           {400, R"({"errors":["invalid role or secret ID"]})", ErrorCode::kPermissionDenied,
            "Vault login (approle at auth/approle) failed: auth.approle.login: HTTP 400: invalid role or secret ID"},
           {403, R"({"errors":["permission denied"]})", ErrorCode::kPermissionDenied, "permission denied"},
           {503, R"({"errors":["Vault is sealed"]})", ErrorCode::kUnavailable, "Vault is sealed"},
           {200, R"({"auth":null})", ErrorCode::kUnavailable, "auth.client_token is missing"},
           {200, R"({"auth":{"client_token":42,"lease_duration":1}})", ErrorCode::kUnavailable, "client_token"},
           {200, R"({"auth":{"client_token":"","lease_duration":1}})", ErrorCode::kUnavailable, "client_token"},
           {200, R"({"auth":{"client_token":"hvs.x-canary","lease_duration":"1h"}})", ErrorCode::kUnavailable,
            "lease_duration"},
           {200, "[1,2]", ErrorCode::kUnavailable, "not a JSON object"}}) {
    Harness h(AppRole());
    h.vault->On("auth/approle/login", c.status, c.body);
    auto t = h.Token();
    ASSERT_FALSE(t.ok()) << c.body;
    EXPECT_EQ(t.error().code, c.code) << c.body << ": " << t.error().message;
    EXPECT_NE(t.error().message.find(c.says), std::string::npos) << t.error().message;
    EXPECT_EQ(t.error().message.find("canary"), std::string::npos) << t.error().message;
  }
}

// A refused login (a wrong secret id, a locked role) is not tried again at
// each data call: every try counts toward Vault's login lockout, which
// would then lock the role for every instance using it. Its 403 names no
// token policy (no token was sent).
TEST(VaultAuth, ARefusedLoginIsNotRepeatedAtEachCall) {
  Harness h(AppRole());
  h.vault->On("auth/approle/login", 403, R"({"errors":["permission denied"]})");
  for (int i = 0; i < 20; ++i) {
    auto t = h.Token();
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.error().code, ErrorCode::kPermissionDenied);
    EXPECT_EQ(t.error().message.find("policy needs"), std::string::npos) << t.error().message;
  }
  EXPECT_EQ(h.vault->Count("auth/approle/login"), 1);
  h.vault->On("auth/approle/login", 200, AuthAnswer("hvs.login-2", 3600, true));  // after one more refusal
  h.clock.Advance(seconds(30));
  EXPECT_FALSE(h.Token().ok());
  EXPECT_EQ(h.vault->Count("auth/approle/login"), 2);
  h.clock.Advance(seconds(59));
  EXPECT_FALSE(h.Token().ok());  // backing off: 60 s after the second refusal
  h.clock.Advance(seconds(1));
  EXPECT_EQ(h.Token().value(), "hvs.login-2");
}

}  // namespace
}  // namespace dyad
