#include "testing/log_capture.h"
#include "backends/vault/transit_key_manager.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "core/encoding.h"
#include "core/mutex.h"
#include "registry/sqlite_key_version_repository.h"
#include "secrets/sealer.h"
#include "testing/fakes.h"

namespace dyad {
namespace {

using nlohmann::json;

const std::string kDenied = R"({"errors":["1 error occurred:\n\t* permission denied\n\n"]})";

std::string Errors(const std::string& m) { return json{{"errors", {m}}}.dump(); }

// Transit as Vault answers it, for one mount ("transit") and its keys:
// versions, min_decryption_version, encrypt / decrypt / rewrap (single and
// batch_input, with HashiCorp Vault's 400 for a batch whose items all failed),
// rotate, config, 403 for chosen paths, and a hook that answers a call in
// place of the emulation (hostile answers).
class FakeTransit final : public HttpTransport {
 public:
  struct Key {
    uint32_t latest = 1;
    uint32_t min_decryption = 1;
  };

  Result<HttpReply> Send(const HttpCall& call) override {
    MutexLock lock(&mu_);
    const std::string path = call.url.substr(call.url.find("/v1/") + 4);
    calls_.push_back(call.method + " " + path);
    if (hook_) {
      if (auto r = hook_(call.method, path, call.body)) return *r;
    }
    if (denied_.count(path)) return HttpReply{403, {}, kDenied};
    json body = call.body.empty() ? json::object() : json::parse(call.body);
    if (Strings(body) > 1000) {  // OpenBao's listener limit (max_request_json_strings)
      return HttpReply{400, {}, Errors("refused JSON input due to high complexity: exceeded maximum number of strings")};
    }
    if (body.contains("batch_input")) batch_sizes_.push_back(body["batch_input"].size());
    const std::string mount = "transit/";
    if (!path.starts_with(mount)) return HttpReply{404, {}, Errors("no handler for route")};
    std::string rest = path.substr(mount.size());
    auto slash = rest.find('/');
    std::string verb = rest.substr(0, slash);
    std::string name = rest.substr(slash + 1);
    std::string tail;
    if (auto s = name.find('/'); s != std::string::npos) {
      tail = name.substr(s + 1);
      name = name.substr(0, s);
    }
    if (verb == "keys") return KeysCall(call.method, name, tail, body);
    auto key = keys_.find(name);
    if (key == keys_.end()) return HttpReply{400, {}, Errors("encryption key not found")};
    if (!body.contains("batch_input")) {
      json out;
      std::string error;
      if (!Item(verb, key->second, body, out, error)) return HttpReply{400, {}, Errors(error)};
      return HttpReply{200, {}, json{{"data", out}}.dump()};
    }
    json results = json::array();
    bool any_ok = false;
    for (const auto& in : body["batch_input"]) {
      json out;
      std::string error;
      if (Item(verb, key->second, in, out, error)) {
        any_ok = true;
        results.push_back(out);
      } else {
        results.push_back(json{{"error", error}});
      }
    }
    batches_++;
    // HashiCorp Vault: all failed is 400, whatever partial_failure_response_code
    // says (OpenBao 2.7 answers 200 and ignores that parameter).
    int status = any_ok ? 200 : 400;
    return HttpReply{status, {}, json{{"data", {{"batch_results", results}}}}.dump()};
  }

  // The ciphertext of `plain` under `version` (as a test's own stored blob).
  std::string Wrap(const std::string& plain, uint32_t version) {
    MutexLock lock(&mu_);
    return Store(plain, version);
  }

  void Deny(const std::string& path) {
    MutexLock lock(&mu_);
    denied_.insert(path);
  }
  void Hook(std::function<std::optional<HttpReply>(const std::string&, const std::string&, const std::string&)> h) {
    MutexLock lock(&mu_);
    hook_ = std::move(h);
  }
  Key& key(const std::string& name) {
    MutexLock lock(&mu_);
    return keys_[name];
  }
  bool HasKey(const std::string& name) {
    MutexLock lock(&mu_);
    return keys_.count(name) > 0;
  }
  std::vector<std::string> Calls() {
    MutexLock lock(&mu_);
    return calls_;
  }
  size_t Count(const std::string& prefix) {
    MutexLock lock(&mu_);
    size_t n = 0;
    for (const auto& c : calls_) n += c.starts_with(prefix) ? 1 : 0;
    return n;
  }
  void Reset() {
    MutexLock lock(&mu_);
    calls_.clear();
    batch_sizes_.clear();
  }
  std::vector<size_t> BatchSizes() {
    MutexLock lock(&mu_);
    return batch_sizes_;
  }

 private:
  // JSON strings in `j`, object keys included (what OpenBao counts).
  static size_t Strings(const json& j) {
    if (j.is_string()) return 1;
    size_t n = 0;
    if (j.is_object()) {
      for (const auto& [k, v] : j.items()) n += 1 + Strings(v);
    } else if (j.is_array()) {
      for (const auto& v : j) n += Strings(v);
    }
    return n;
  }

  HttpReply KeysCall(const std::string& method, const std::string& name, const std::string& tail, const json& body)
      DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto key = keys_.find(name);
    if (tail.empty() && method == "POST") {
      if (key == keys_.end()) keys_[name] = Key{};
      return HttpReply{204, {}, ""};
    }
    if (key == keys_.end()) return HttpReply{404, {}, R"({"errors":[]})"};
    if (tail == "rotate") {
      key->second.latest++;
      return HttpReply{204, {}, ""};
    }
    if (tail == "config") {
      int64_t min = body.value("min_decryption_version", int64_t{0});
      if (min > key->second.latest) return HttpReply{400, {}, Errors("cannot set min decryption version above latest")};
      key->second.min_decryption = static_cast<uint32_t>(min);
      return HttpReply{204, {}, ""};
    }
    json keys = json::object();
    for (uint32_t v = 1; v <= key->second.latest; ++v) keys[std::to_string(v)] = 1767225600;
    return HttpReply{200, {}, json{{"data", {{"type", "aes256-gcm96"}, {"latest_version", key->second.latest},
                                             {"min_decryption_version", key->second.min_decryption},
                                             {"supports_encryption", true}, {"supports_decryption", true},
                                             {"keys", keys}}}}.dump()};
  }

  bool Item(const std::string& verb, Key& key, const json& in, json& out, std::string& error)
      DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (verb == "encrypt") {
      auto plain = Base64Decode(in.value("plaintext", ""));
      if (!plain) return (error = "failed to base64-decode plaintext"), false;
      out = {{"ciphertext", Store(*plain, key.latest)}, {"key_version", key.latest}};
      return true;
    }
    auto it = sealed_.find(in.value("ciphertext", ""));
    if (it == sealed_.end()) return (error = "cipher: message authentication failed"), false;
    if (it->second.second < key.min_decryption) {
      return (error = "ciphertext or signature version is disallowed by policy (too old)"), false;
    }
    if (verb == "decrypt") {
      out = {{"plaintext", Base64Encode(it->second.first)}};
      return true;
    }
    if (verb == "rewrap") {
      std::string plain = it->second.first;
      out = {{"ciphertext", Store(plain, key.latest)}, {"key_version", key.latest}};
      return true;
    }
    error = "unknown verb";
    return false;
  }

  std::string Store(const std::string& plain, uint32_t version) DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::string c = "vault:v" + std::to_string(version) + ":" + Base64Encode("c" + std::to_string(next_++));
    sealed_[c] = {plain, version};
    return c;
  }

  Mutex mu_;
  std::map<std::string, Key> keys_ DYAD_GUARDED_BY(mu_);
  std::map<std::string, std::pair<std::string, uint32_t>> sealed_ DYAD_GUARDED_BY(mu_);
  std::set<std::string> denied_ DYAD_GUARDED_BY(mu_);
  std::vector<std::string> calls_ DYAD_GUARDED_BY(mu_);
  std::function<std::optional<HttpReply>(const std::string&, const std::string&, const std::string&)> hook_
      DYAD_GUARDED_BY(mu_);
  int next_ DYAD_GUARDED_BY(mu_) = 0;
  int batches_ DYAD_GUARDED_BY(mu_) = 0;
  std::vector<size_t> batch_sizes_ DYAD_GUARDED_BY(mu_);
};

// A transport that forwards to one FakeTransit owned by the test.
class Forward final : public HttpTransport {
 public:
  explicit Forward(FakeTransit& to) : to_(to) {}
  Result<HttpReply> Send(const HttpCall& call) override { return to_.Send(call); }

 private:
  FakeTransit& to_;
};

using testing::LogCapture;

std::string Bound(const std::string& dek, const std::string& context) {
  return context.empty() ? dek : dek + Sha256(context).substr(0, 16);
}

class TransitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = *SqliteDb::Open(dir_.File("k.db"));
    VaultClientOptions o;
    o.address = "http://127.0.0.1:1";
    o.retry.max_attempts = 1;
    client_ = std::move(VaultClient::Create(o, nullptr, std::make_unique<Forward>(vault_), clock_, random_)).value();
  }

  std::unique_ptr<KeyManager> Open(bool retire_in_vault = false) {
    TransitOptions t;
    t.key = "dyad-gateway-k";
    t.retire_in_vault = retire_in_vault;
    return std::move(NewTransitKeyManager(t, *client_, NewSqliteKeyVersionRepository(db_), clock_, random_)).value();
  }

  testing::TempDir dir_;
  std::shared_ptr<SqliteDb> db_;
  FakeClock clock_;
  testing::ConstantRandom random_{7};
  FakeTransit vault_;
  std::unique_ptr<VaultClient> client_;
};

TEST_F(TransitTest, ChecksItsSettings) {
  for (const char* bad : {"", "a/b", "..", "k y"}) {
    TransitOptions t;
    t.key = bad;
    EXPECT_EQ(NewTransitKeyManager(t, *client_, NewSqliteKeyVersionRepository(db_), clock_, random_).code(),
              ErrorCode::kInvalidArgument) << bad;
  }
  TransitOptions t;
  t.key = "k";
  t.mount = "/transit";
  EXPECT_EQ(NewTransitKeyManager(t, *client_, NewSqliteKeyVersionRepository(db_), clock_, random_).code(),
            ErrorCode::kInvalidArgument);
  t.mount = "team/transit";
  EXPECT_TRUE(NewTransitKeyManager(t, *client_, NewSqliteKeyVersionRepository(db_), clock_, random_).ok());
  EXPECT_TRUE(vault_.Calls().empty());  // no Vault call at start: it may be down
}

TEST_F(TransitTest, CreatesTheKeyOnFirstUseAndBindsTheContext) {
  auto km = Open();
  EXPECT_EQ(km->Kind(), "vault-transit");
  EXPECT_EQ(km->KeyId(), "transit/dyad-gateway-k");
  auto dk = km->GenerateDataKey("dyad/providers/a");
  ASSERT_TRUE(dk.ok()) << dk.error().message;
  EXPECT_EQ(dk->plaintext.view(), std::string(32, '\x07'));
  EXPECT_EQ(dk->version, 1u);
  EXPECT_TRUE(dk->wrapped.starts_with("vault:v1:"));
  EXPECT_EQ(vault_.Calls(), (std::vector<std::string>{"GET transit/keys/dyad-gateway-k",
                                                      "POST transit/keys/dyad-gateway-k",
                                                      "GET transit/keys/dyad-gateway-k",
                                                      "POST transit/encrypt/dyad-gateway-k"}));
  auto back = km->Decrypt(1, dk->wrapped, "dyad/providers/a");
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->view(), dk->plaintext.view());
  // The binding: another name, or none, does not unwrap it.
  auto other = km->Decrypt(1, dk->wrapped, "dyad/providers/b");
  EXPECT_EQ(other.code(), ErrorCode::kDataLoss);
  EXPECT_EQ(other.error().message, "wrapped key bound to another secret");
  EXPECT_EQ(km->Decrypt(1, dk->wrapped, "").code(), ErrorCode::kDataLoss);
  // Without a context, the plaintext is the DEK alone.
  auto bare = km->GenerateDataKey();
  ASSERT_TRUE(bare.ok());
  EXPECT_TRUE(km->Decrypt(1, bare->wrapped).ok());
  EXPECT_EQ(km->Decrypt(1, bare->wrapped, "dyad/providers/a").code(), ErrorCode::kDataLoss);
  // Not created twice, nor read again per call.
  EXPECT_EQ(vault_.Count("POST transit/keys/"), 1u);
  EXPECT_EQ(vault_.Count("GET "), 2u);
}

// A process whose first call is a Decrypt (a reader after a restart, on a
// fresh registry) learns the versions from Vault first.
TEST_F(TransitTest, AFirstDecryptLearnsTheVersions) {
  vault_.key("dyad-gateway-k").latest = 3;
  std::string wrapped = vault_.Wrap(Bound(std::string(32, 'k'), "n"), 2);
  auto km = Open();
  auto dek = km->Decrypt(2, wrapped, "n");
  ASSERT_TRUE(dek.ok()) << dek.error().message;
  EXPECT_EQ(dek->view(), std::string(32, 'k'));
  EXPECT_EQ(km->KnownState()->primary_version, 3u);
}

TEST_F(TransitTest, DecryptRefusesWhatDoesNotMatch) {
  auto km = Open();
  auto dk = km->GenerateDataKey("n");
  ASSERT_TRUE(dk.ok());
  // The envelope's version and the ciphertext's own disagree.
  ASSERT_TRUE(km->Rotate().ok());
  EXPECT_EQ(km->Decrypt(2, dk->wrapped, "n").code(), ErrorCode::kDataLoss);
  EXPECT_EQ(km->Decrypt(9, dk->wrapped, "n").code(), ErrorCode::kNotFound);
  for (const char* bad : {"", "vault:", "vault:v:x", "vault:v01:x", "vault:v1", "vault:v1:", "vault:vx:y",
                          "vault:v99999999999:x", "vault:v-1:x"}) {
    EXPECT_EQ(km->Decrypt(1, bad, "n").code(), ErrorCode::kDataLoss) << bad;
  }
  // Vault's own refusal of a tampered ciphertext.
  auto tampered = km->Decrypt(1, "vault:v1:AAAA", "n");
  EXPECT_EQ(tampered.code(), ErrorCode::kDataLoss);
  EXPECT_NE(tampered.error().message.find("message authentication failed"), std::string::npos);
  vault_.Hook([](const std::string&, const std::string& path, const std::string&) -> std::optional<HttpReply> {
    if (path.find("decrypt") != std::string::npos) return HttpReply{400, {}, Errors("invalid ciphertext: no prefix")};
    return std::nullopt;
  });
  EXPECT_EQ(km->Decrypt(1, dk->wrapped, "n").code(), ErrorCode::kDataLoss);
}

TEST_F(TransitTest, HostileDecryptAnswers) {
  auto km = Open();
  auto dk = km->GenerateDataKey("n");
  ASSERT_TRUE(dk.ok());
  auto answer = [&](std::string body) {
    vault_.Hook([body](const std::string&, const std::string& path, const std::string&) -> std::optional<HttpReply> {
      if (path.find("decrypt") != std::string::npos) return HttpReply{200, {}, body};
      return std::nullopt;
    });
    return km->Decrypt(1, dk->wrapped, "n");
  };
  auto plain = [](const std::string& bytes) { return json{{"data", {{"plaintext", Base64Encode(bytes)}}}}.dump(); };
  EXPECT_EQ(answer(R"({"data":{"plaintext":"%%%not base64"}})").code(), ErrorCode::kDataLoss);
  EXPECT_EQ(answer(R"({"data":{"plaintext":12}})").code(), ErrorCode::kUnavailable);
  EXPECT_EQ(answer(R"({"data":[]})").code(), ErrorCode::kUnavailable);
  EXPECT_EQ(answer(R"({"nodata":1})").code(), ErrorCode::kUnavailable);
  EXPECT_EQ(answer("not json").code(), ErrorCode::kUnavailable);
  EXPECT_EQ(answer(plain(std::string(31, 'k'))).code(), ErrorCode::kDataLoss);
  EXPECT_EQ(answer(plain(std::string(1 << 16, 'k'))).code(), ErrorCode::kDataLoss);
  EXPECT_EQ(answer(plain("")).code(), ErrorCode::kDataLoss);
  // A DEK bound to another secret, answered for this one.
  auto moved = answer(plain(Bound(std::string(32, 'k'), "other")));
  EXPECT_EQ(moved.code(), ErrorCode::kDataLoss);
  EXPECT_EQ(moved.error().message, "wrapped key bound to another secret");
  auto right = answer(plain(Bound(std::string(32, 'k'), "n")));
  ASSERT_TRUE(right.ok());
  EXPECT_EQ(right->view(), std::string(32, 'k'));
}

TEST_F(TransitTest, HostileEncryptAndKeyAnswers) {
  auto km = Open();
  auto reply = [&](std::string verb, int status, std::string body) {
    vault_.Hook([=](const std::string&, const std::string& path, const std::string&) -> std::optional<HttpReply> {
      if (path.find(verb) != std::string::npos) return HttpReply{status, {}, body};
      return std::nullopt;
    });
  };
  reply("keys/", 200, R"({"data":{"latest_version":"1","min_decryption_version":1}})");
  EXPECT_EQ(km->GenerateDataKey("n").code(), ErrorCode::kUnavailable);
  reply("keys/", 200, R"({"data":{"latest_version":3,"min_decryption_version":4}})");
  EXPECT_EQ(km->GenerateDataKey("n").code(), ErrorCode::kUnavailable);
  reply("keys/", 200, R"({"data":{"latest_version":99999999999,"min_decryption_version":1}})");
  EXPECT_EQ(km->GenerateDataKey("n").code(), ErrorCode::kUnavailable);
  reply("keys/", 200, R"({"data":{"type":"ed25519","latest_version":1,"min_decryption_version":1,)"
                      R"("supports_encryption":false,"supports_decryption":false}})");
  EXPECT_EQ(km->GenerateDataKey("n").code(), ErrorCode::kFailedPrecondition);
  reply("keys/", 403, kDenied);
  auto denied = km->Probe();
  EXPECT_EQ(denied.code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(denied.error().message.find("'read' on 'transit/keys/dyad-gateway-k'"), std::string::npos)
      << denied.error().message;
  vault_.Hook(nullptr);
  ASSERT_TRUE(km->Probe().ok());
  EXPECT_TRUE(vault_.HasKey("dyad-gateway-k"));
  // Encrypt answers under a version it cannot have, or not a Transit ciphertext.
  reply("encrypt", 200, R"({"data":{"ciphertext":"vault:v7:abc"}})");
  EXPECT_EQ(km->GenerateDataKey("n").code(), ErrorCode::kDataLoss);
  reply("encrypt", 200, R"({"data":{"ciphertext":"AAAA"}})");
  EXPECT_EQ(km->GenerateDataKey("n").code(), ErrorCode::kDataLoss);
  reply("encrypt", 200, R"({"data":{}})");
  EXPECT_EQ(km->GenerateDataKey("n").code(), ErrorCode::kUnavailable);
  vault_.Hook(nullptr);
  EXPECT_EQ(km->Describe()->versions.size(), 1u);  // nothing hostile was recorded
}

TEST_F(TransitTest, VersionsFollowVaultAndLiveInTheRegistry) {
  auto km = Open();
  ASSERT_TRUE(km->GenerateDataKey("n").ok());
  auto v = km->Rotate();
  ASSERT_TRUE(v.ok()) << v.error().message;
  EXPECT_EQ(*v, 2u);
  EXPECT_EQ(vault_.key("dyad-gateway-k").latest, 2u);
  auto other = Open();  // a second instance on the same database
  size_t asked = vault_.Calls().size();
  EXPECT_EQ(other->KnownState()->primary_version, 2u);
  EXPECT_EQ(vault_.Calls().size(), asked);  // KnownState never asks Vault

  // Rotated twice in Vault by someone else: Describe learns it.
  vault_.key("dyad-gateway-k").latest = 4;
  clock_.Advance(std::chrono::seconds(1));
  auto state = km->Describe();
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->primary_version, 4u);
  ASSERT_EQ(state->versions.size(), 4u);
  EXPECT_EQ(state->versions[2].state, "active");
  // And an encrypt under a newer version than the registry's is learnt too.
  vault_.key("dyad-gateway-k").latest = 5;
  auto dk = km->GenerateDataKey("n");
  ASSERT_TRUE(dk.ok()) << dk.error().message;
  EXPECT_EQ(dk->version, 5u);
  EXPECT_EQ(other->CurrentState(5).value(), "active");

  // min_decryption_version raised in Vault: the versions below are retired.
  vault_.key("dyad-gateway-k").min_decryption = 3;
  clock_.Advance(std::chrono::seconds(1));
  state = km->Describe();
  EXPECT_EQ(state->versions[0].state, "retired");
  EXPECT_EQ(state->versions[1].state, "retired");
  EXPECT_EQ(state->versions[2].state, "active");
  EXPECT_EQ(other->Decrypt(1, "vault:v1:x").code(), ErrorCode::kFailedPrecondition);

  // The key deleted and created again: its versions are behind the registry's.
  vault_.key("dyad-gateway-k") = FakeTransit::Key{};
  auto third = Open();
  auto refused = third->GenerateDataKey("n");
  EXPECT_EQ(refused.code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(refused.error().message.find("created again"), std::string::npos) << refused.error().message;
}

TEST_F(TransitTest, RetireStaysInTheGatewayUnlessAskedAndNeverPassesALiveVersion) {
  vault_.key("dyad-gateway-k").latest = 3;
  auto km = Open();
  EXPECT_EQ(km->Describe()->primary_version, 3u);
  EXPECT_EQ(km->Retire(3).code(), ErrorCode::kFailedPrecondition);
  ASSERT_TRUE(km->RetireEverywhere(1).ok());
  EXPECT_EQ(vault_.Count("POST transit/keys/dyad-gateway-k/config"), 0u);
  EXPECT_EQ(vault_.key("dyad-gateway-k").min_decryption, 1u);

  auto in_vault = Open(/*retire_in_vault=*/true);
  ASSERT_TRUE(in_vault->BeginRetire(1).ok());
  EXPECT_EQ(in_vault->CurrentState(1).value(), "retired");  // not brought back to 'retiring'
  // Version 1 is retired already; 2 is marked retiring then retired: Vault's minimum moves past both.
  ASSERT_TRUE(in_vault->BeginRetire(2).ok());
  EXPECT_EQ(in_vault->CurrentState(2).value(), "retiring");
  ASSERT_TRUE(in_vault->RetireEverywhere(2).ok());
  EXPECT_EQ(vault_.key("dyad-gateway-k").min_decryption, 3u);

  // Retiring a version while an older one is still retiring raises nothing.
  vault_.key("dyad-gateway-k").latest = 6;
  clock_.Advance(std::chrono::seconds(1));
  ASSERT_EQ(in_vault->Describe()->primary_version, 6u);
  ASSERT_TRUE(in_vault->BeginRetire(3).ok());
  ASSERT_TRUE(in_vault->RetireEverywhere(4).ok());
  EXPECT_EQ(vault_.key("dyad-gateway-k").min_decryption, 3u);
  ASSERT_TRUE(in_vault->RetireEverywhere(3).ok());
  EXPECT_EQ(vault_.key("dyad-gateway-k").min_decryption, 5u);

  // Vault refuses the config: the gateway has it retired, and says Vault does not.
  vault_.Deny("transit/keys/dyad-gateway-k/config");
  auto refused = in_vault->RetireEverywhere(5);
  EXPECT_EQ(refused.code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(refused.error().message.find("Vault still decrypts it"), std::string::npos);
  EXPECT_EQ(in_vault->CurrentState(5).value(), "retired");
}

// Retire() is the gateway's alone even with VAULT_TRANSIT_RETIRE (a rotation
// that could not list the store calls it): Vault still decrypts the version
// for another instance, and a warning, once, says what the token lacks.
TEST_F(TransitTest, RetireWithoutEverywhereNeverRaisesVaultsMinimum) {
  vault_.key("dyad-gateway-k").latest = 4;
  auto km = Open(/*retire_in_vault=*/true);
  ASSERT_EQ(km->Describe()->primary_version, 4u);
  std::string old = vault_.Wrap(Bound(std::string(32, 'k'), "n"), 1);
  LogCapture log;
  ASSERT_TRUE(km->Retire(1).ok());
  ASSERT_TRUE(km->Retire(2).ok());
  EXPECT_EQ(km->CurrentState(1).value(), "retired");
  EXPECT_EQ(vault_.Count("POST transit/keys/dyad-gateway-k/config"), 0u);
  EXPECT_EQ(vault_.key("dyad-gateway-k").min_decryption, 1u);
  EXPECT_EQ(log.Count("retired in the gateway only"), 1u);
  EXPECT_EQ(log.Count("needs 'list' on <kv mount>/metadata/<prefix>/providers"), 1u);
  // Another instance, its own registry: still reads its blob under version 1.
  testing::TempDir other_dir;
  auto other_db = *SqliteDb::Open(other_dir.File("b.db"));
  TransitOptions t;
  t.key = "dyad-gateway-k";
  auto b = std::move(NewTransitKeyManager(t, *client_, NewSqliteKeyVersionRepository(other_db), clock_, random_)).value();
  auto got = b->Decrypt(1, old, "n");
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->view(), std::string(32, 'k'));
  // RetireEverywhere then raises it past both.
  ASSERT_TRUE(km->RetireEverywhere(3).ok());
  EXPECT_EQ(vault_.key("dyad-gateway-k").min_decryption, 4u);
}

// Two instances, each with its own registry, one Vault: the reader learns a
// version another instance's rotation made from Vault, at most once a second.
TEST_F(TransitTest, SeparateRegistriesReaderAfterOtherRotates) {
  testing::TempDir other_dir;
  auto other_db = *SqliteDb::Open(other_dir.File("b.db"));
  auto a = Open();
  TransitOptions t;
  t.key = "dyad-gateway-k";
  auto b = std::move(NewTransitKeyManager(t, *client_, NewSqliteKeyVersionRepository(other_db), clock_, random_)).value();
  auto dk1 = a->GenerateDataKey("n");
  ASSERT_TRUE(dk1.ok());
  ASSERT_TRUE(b->Decrypt(dk1->version, dk1->wrapped, "n").ok());  // b ensured its key
  ASSERT_TRUE(a->Rotate().ok());
  auto re = a->ReEncrypt(dk1->version, dk1->wrapped, "n", "n");
  ASSERT_TRUE(re.ok()) << re.error().message;
  EXPECT_EQ(re->version, 2u);
  clock_.Advance(std::chrono::seconds(5));
  vault_.Reset();
  auto got = b->Decrypt(re->version, re->wrapped, "n");
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->view(), dk1->plaintext.view());
  EXPECT_EQ(b->KnownState()->primary_version, 2u);
  EXPECT_EQ(vault_.Count("GET transit/keys/dyad-gateway-k"), 1u);
  // A version Vault does not have either: kNotFound, Vault asked at most once a second.
  EXPECT_EQ(b->Decrypt(7, "vault:v7:AAAA", "n").code(), ErrorCode::kNotFound);
  EXPECT_EQ(vault_.Count("GET transit/keys/dyad-gateway-k"), 1u);  // asked just now, for version 2
  clock_.Advance(std::chrono::seconds(1));
  vault_.Reset();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(b->Decrypt(7, "vault:v7:AAAA", "n").code(), ErrorCode::kNotFound);
  EXPECT_EQ(vault_.Count("GET transit/keys/dyad-gateway-k"), 1u);
  clock_.Advance(std::chrono::seconds(1));
  EXPECT_EQ(b->Decrypt(7, "vault:v7:AAAA", "n").code(), ErrorCode::kNotFound);
  EXPECT_EQ(vault_.Count("GET transit/keys/dyad-gateway-k"), 2u);
  // A hostile key read does not make the version known.
  clock_.Advance(std::chrono::seconds(1));
  vault_.Hook([](const std::string& m, const std::string& path, const std::string&) -> std::optional<HttpReply> {
    if (m == "GET" && path == "transit/keys/dyad-gateway-k") return HttpReply{200, {}, R"({"data":{"latest_version":"9"}})"};
    return std::nullopt;
  });
  EXPECT_EQ(b->Decrypt(9, "vault:v9:AAAA", "n").code(), ErrorCode::kUnavailable);
  EXPECT_EQ(b->KnownState()->primary_version, 2u);
}

// Shared registry: B's encrypt was answered under version 1 while A's
// rotation to 2 landed in the registry. Version 1 still decrypts: B asks
// once more (Vault answers under 2 now); an answer still under 1, or under
// a retired version, is refused.
TEST_F(TransitTest, EncryptRacingRotationIsAskedAgain) {
  auto a = Open();
  auto b = Open();
  ASSERT_TRUE(b->GenerateDataKey("n").ok());
  ASSERT_TRUE(a->Rotate().ok());
  clock_.Advance(std::chrono::seconds(5));
  int stale = 1;  // encrypt answers to give under version 1, as if sent before the rotation
  vault_.Hook([&stale](const std::string&, const std::string& path, const std::string&) -> std::optional<HttpReply> {
    if (path.starts_with("transit/encrypt/") && stale > 0) {
      --stale;
      return HttpReply{200, {}, R"({"data":{"ciphertext":"vault:v1:AAAA","key_version":1}})"};
    }
    return std::nullopt;
  });
  vault_.Reset();
  auto dk = b->GenerateDataKey("m");
  ASSERT_TRUE(dk.ok()) << dk.error().message;
  EXPECT_EQ(dk->version, 2u);
  EXPECT_TRUE(dk->wrapped.starts_with("vault:v2:"));
  EXPECT_EQ(vault_.Count("POST transit/encrypt/"), 2u);
  EXPECT_EQ(b->Decrypt(2, dk->wrapped, "m")->view(), dk->plaintext.view());

  // Still under 1 when asked again: refused, not asked a third time.
  stale = 2;
  vault_.Reset();
  auto twice = b->GenerateDataKey("m");
  EXPECT_EQ(twice.code(), ErrorCode::kConflict);
  EXPECT_NE(twice.error().message.find("another instance rotated it to 2"), std::string::npos);
  EXPECT_EQ(vault_.Count("POST transit/encrypt/"), 2u);

  // Version 1 retired: refused at once.
  ASSERT_TRUE(a->Retire(1).ok());
  clock_.Advance(std::chrono::seconds(5));
  stale = 1;
  vault_.Reset();
  auto retired = b->GenerateDataKey("m");
  EXPECT_EQ(retired.code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(retired.error().message.find("and retired"), std::string::npos) << retired.error().message;
  EXPECT_EQ(vault_.Count("POST transit/encrypt/"), 1u);

  // Below Vault's min_decryption_version: refused at once.
  vault_.key("dyad-gateway-k").min_decryption = 2;
  vault_.key("dyad-gateway-k").latest = 3;
  ASSERT_TRUE(a->Rotate().ok());  // registry at 4
  clock_.Advance(std::chrono::seconds(5));
  stale = 0;
  vault_.Hook([](const std::string&, const std::string& path, const std::string&) -> std::optional<HttpReply> {
    if (path.starts_with("transit/encrypt/")) return HttpReply{200, {}, R"({"data":{"ciphertext":"vault:v3:AAAA"}})"};
    return std::nullopt;
  });
  vault_.key("dyad-gateway-k").min_decryption = 4;
  vault_.Reset();
  auto below = b->GenerateDataKey("m");
  EXPECT_EQ(below.code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(below.error().message.find("re-created key"), std::string::npos) << below.error().message;
  EXPECT_EQ(vault_.Count("POST transit/encrypt/"), 1u);
}

TEST_F(TransitTest, ReEncryptRewrapsAndFallsBackOnceRefused) {
  auto km = Open();
  auto dk = km->GenerateDataKey("n");
  ASSERT_TRUE(dk.ok());
  ASSERT_TRUE(km->Rotate().ok());
  vault_.Reset();
  auto moved = km->ReEncrypt(1, dk->wrapped, "n", "n");
  ASSERT_TRUE(moved.ok()) << moved.error().message;
  EXPECT_EQ(moved->version, 2u);
  EXPECT_TRUE(moved->wrapped.starts_with("vault:v2:"));
  EXPECT_EQ(vault_.Calls(), (std::vector<std::string>{"POST transit/rewrap/dyad-gateway-k"}));
  EXPECT_EQ(km->Decrypt(2, moved->wrapped, "n")->view(), dk->plaintext.view());

  // Another context: rewrap cannot change the binding, so decrypt + encrypt.
  vault_.Reset();
  auto renamed = km->ReEncrypt(2, moved->wrapped, "n", "m");
  ASSERT_TRUE(renamed.ok());
  EXPECT_EQ(vault_.Calls(), (std::vector<std::string>{"POST transit/decrypt/dyad-gateway-k",
                                                      "POST transit/encrypt/dyad-gateway-k"}));
  EXPECT_EQ(km->Decrypt(2, renamed->wrapped, "m")->view(), dk->plaintext.view());
  EXPECT_EQ(km->ReEncrypt(2, renamed->wrapped, "n", "m").code(), ErrorCode::kDataLoss);  // wrong from

  // The seed's policy: rewrap is 403, said once, not asked again.
  LogCapture log;
  vault_.Deny("transit/rewrap/dyad-gateway-k");
  vault_.Reset();
  for (int i = 0; i < 3; ++i) {
    auto again = km->ReEncrypt(2, renamed->wrapped, "m", "m");
    ASSERT_TRUE(again.ok()) << again.error().message;
    EXPECT_EQ(km->Decrypt(2, again->wrapped, "m")->view(), dk->plaintext.view());
  }
  EXPECT_EQ(vault_.Count("POST transit/rewrap"), 1u);
  EXPECT_EQ(vault_.Count("POST transit/decrypt"), 6u);  // 3 moves + 3 checks
  EXPECT_EQ(log.Count("rewrap is not permitted"), 1u);
  EXPECT_EQ(log.Count("needs 'update' on transit/rewrap/dyad-gateway-k"), 1u);

  // A retired version is not moved.
  ASSERT_TRUE(km->Retire(1).ok());
  EXPECT_EQ(km->ReEncrypt(1, dk->wrapped, "n", "n").code(), ErrorCode::kFailedPrecondition);
}

TEST_F(TransitTest, ReEncryptManyIsOneBatchWithPerItemResults) {
  auto km = Open();
  std::vector<std::string> wrapped;
  std::vector<std::string> names;
  for (int i = 0; i < 5; ++i) {
    names.push_back("s" + std::to_string(i));
    wrapped.push_back(km->GenerateDataKey(names.back())->wrapped);
  }
  ASSERT_TRUE(km->Rotate().ok());
  std::string bogus = "vault:v1:AAAA";
  std::vector<ReEncryptItem> items;
  for (int i = 0; i < 5; ++i) items.push_back({1, wrapped[i], names[i], names[i]});
  items.push_back({1, bogus, "x", "x"});                   // Vault refuses it: its own error
  items.push_back({2, wrapped[0], names[0], names[0]});    // version mismatch: never sent
  items.push_back({1, wrapped[1], names[1], "renamed"});  // another context: decrypt + encrypt
  vault_.Reset();
  auto out = km->ReEncryptMany(items, 4);
  ASSERT_EQ(out.size(), items.size());
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(out[i].ok()) << i << ": " << out[i].error().message;
    EXPECT_EQ(out[i]->version, 2u);
    EXPECT_EQ(km->Decrypt(2, out[i]->wrapped, names[i])->view(), std::string(32, '\x07'));
  }
  EXPECT_EQ(out[5].code(), ErrorCode::kDataLoss);
  EXPECT_NE(out[5].error().message.find("message authentication failed"), std::string::npos);
  EXPECT_EQ(out[6].code(), ErrorCode::kDataLoss);
  ASSERT_TRUE(out[7].ok());
  EXPECT_TRUE(km->Decrypt(2, out[7]->wrapped, "renamed").ok());
  auto calls = vault_.Calls();
  ASSERT_GE(calls.size(), 3u);
  EXPECT_EQ(std::vector<std::string>(calls.begin(), calls.begin() + 3),
            (std::vector<std::string>{"POST transit/rewrap/dyad-gateway-k", "POST transit/decrypt/dyad-gateway-k",
                                      "POST transit/encrypt/dyad-gateway-k"}));

  // Every item of a batch failing: Vault's bare 400; each is then asked alone, for its own error.
  std::vector<ReEncryptItem> bad = {{1, bogus, "x", "x"}, {1, "vault:v1:BBBB", "y", "y"}};
  vault_.Reset();
  auto failed = km->ReEncryptMany(bad, 1);
  EXPECT_EQ(failed[0].code(), ErrorCode::kDataLoss);
  EXPECT_EQ(failed[1].code(), ErrorCode::kDataLoss);
  EXPECT_EQ(vault_.Count("POST transit/rewrap"), 3u);

  // Rewrap refused: one batch decrypt and one batch encrypt for all of them.
  vault_.Deny("transit/rewrap/dyad-gateway-k");
  std::vector<ReEncryptItem> again;
  for (int i = 0; i < 5; ++i) again.push_back({2, out[i]->wrapped, names[i], names[i]});
  vault_.Reset();
  auto fallback = km->ReEncryptMany(again, 4);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(fallback[i].ok()) << fallback[i].error().message;
  }
  EXPECT_EQ(vault_.Calls(), (std::vector<std::string>{"POST transit/rewrap/dyad-gateway-k",
                                                      "POST transit/decrypt/dyad-gateway-k",
                                                      "POST transit/encrypt/dyad-gateway-k"}));
  vault_.Reset();
  (void)km->ReEncryptMany(again, 4);
  EXPECT_EQ(vault_.Count("POST transit/rewrap"), 0u);  // not asked again
}

// OpenBao refuses a body of more than 1000 JSON strings: a large batch goes
// as several calls of at most 250 items.
TEST_F(TransitTest, LargeBatchesAreSplitUnderOpenBaosLimit) {
  auto km = Open();
  std::vector<std::string> names, wrapped;
  for (int i = 0; i < 600; ++i) {
    names.push_back("n" + std::to_string(i));
    wrapped.push_back(km->GenerateDataKey(names.back())->wrapped);
  }
  ASSERT_TRUE(km->Rotate().ok());
  std::vector<ReEncryptItem> items;
  for (int i = 0; i < 600; ++i) items.push_back({1, wrapped[i], names[i], names[i]});
  vault_.Reset();
  auto out = km->ReEncryptMany(items, 3);
  for (int i = 0; i < 600; ++i) ASSERT_TRUE(out[i].ok()) << i << ": " << out[i].error().message;
  auto sizes = vault_.BatchSizes();
  std::sort(sizes.begin(), sizes.end());
  EXPECT_EQ(sizes, (std::vector<size_t>{100, 250, 250}));
  EXPECT_EQ(vault_.Count("POST transit/rewrap"), 3u);
  std::vector<DecryptItem> checks;
  for (int i = 0; i < 600; ++i) checks.push_back({2, out[i]->wrapped, names[i]});
  auto deks = km->DecryptMany(checks, 1);
  for (int i = 0; i < 600; ++i) ASSERT_TRUE(deks[i].ok()) << i;
  EXPECT_EQ(vault_.Count("POST transit/decrypt"), 3u);
}

TEST_F(TransitTest, HostileBatchAnswers) {
  auto km = Open();
  std::string a = km->GenerateDataKey("a")->wrapped, b = km->GenerateDataKey("b")->wrapped;
  std::vector<ReEncryptItem> items = {{1, a, "a", "a"}, {1, b, "b", "b"}};
  auto answer = [&](std::string body) {
    vault_.Hook([body](const std::string&, const std::string& path, const std::string&) -> std::optional<HttpReply> {
      if (path.find("rewrap") != std::string::npos) return HttpReply{200, {}, body};
      return std::nullopt;
    });
    return km->ReEncryptMany(items, 1);
  };
  auto short_batch = answer(R"({"data":{"batch_results":[{"ciphertext":"vault:v1:x"}]}})");
  EXPECT_EQ(short_batch[0].code(), ErrorCode::kUnavailable);
  EXPECT_EQ(short_batch[1].code(), ErrorCode::kUnavailable);
  auto mixed = answer(R"({"data":{"batch_results":[{"ciphertext":"vault:v9:x"},{"ciphertext":5}]}})");
  EXPECT_EQ(mixed[0].code(), ErrorCode::kDataLoss);  // above Vault's latest
  EXPECT_EQ(mixed[1].code(), ErrorCode::kUnavailable);
  auto wrong = answer(R"({"data":{"batch_results":"no"}})");
  EXPECT_EQ(wrong[0].code(), ErrorCode::kUnavailable);
  auto item_error = answer(R"({"data":{"batch_results":[{"error":"cipher: message authentication failed"},)"
                           R"({"ciphertext":"vault:v1:fine"}]}})");
  EXPECT_EQ(item_error[0].code(), ErrorCode::kDataLoss);
  ASSERT_TRUE(item_error[1].ok());
  EXPECT_EQ(item_error[1]->wrapped, "vault:v1:fine");
}

// Sealer::RewrapMany over Transit: one rewrap for the envelopes to move,
// those already on the primary skipped, each verified.
TEST_F(TransitTest, SealerRewrapManyBatches) {
  auto km = Open();
  Sealer sealer(*km, random_);
  std::vector<std::string> names, texts;
  for (int i = 0; i < 4; ++i) {
    names.push_back("dyad/providers/p" + std::to_string(i));
    texts.push_back(*sealer.Seal(names.back(), 1, SecretBytes("{\"apiKey\":\"k" + std::to_string(i) + "\"}")));
  }
  ASSERT_TRUE(km->Rotate().ok());
  std::string current = *sealer.Seal("dyad/providers/new", 1, SecretBytes("{}"));
  std::vector<Sealer::RewrapItem> items;
  for (int i = 0; i < 4; ++i) items.push_back({names[i], texts[i]});
  items.push_back({"dyad/providers/new", current});
  items.push_back({"dyad/providers/p0", texts[1]});  // moved under another name: fails to verify
  items.push_back({"dyad/providers/x", "not an envelope"});
  vault_.Reset();
  auto out = sealer.RewrapMany(items, 2, false, 2);
  auto calls = vault_.Calls();
  ASSERT_EQ(out.size(), items.size());
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(out[i].ok()) << out[i].error().message;
    auto opened = sealer.Open(names[i], *out[i]);
    ASSERT_TRUE(opened.ok());
    EXPECT_EQ(opened->key_version, 2u);
  }
  EXPECT_EQ(out[4].code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(out[5].code(), ErrorCode::kDataLoss);
  EXPECT_FALSE(out[6].ok());
  // One rewrap, one decrypt checking them all: no call per envelope.
  EXPECT_EQ(calls, (std::vector<std::string>{"POST transit/rewrap/dyad-gateway-k",
                                             "POST transit/decrypt/dyad-gateway-k"}));
}

TEST_F(TransitTest, DecryptManyIsOneBatch) {
  auto km = Open();
  std::string a = km->GenerateDataKey("a")->wrapped, b = km->GenerateDataKey("b")->wrapped;
  ASSERT_TRUE(km->Rotate().ok());
  std::string c = km->GenerateDataKey("c")->wrapped;
  vault_.Reset();
  auto out = km->DecryptMany({{1, a, "a"}, {1, b, "a"}, {2, c, "c"}, {2, a, "a"}, {1, "vault:v1:AAAA", "x"}}, 2);
  ASSERT_EQ(out.size(), 5u);
  ASSERT_TRUE(out[0].ok());
  EXPECT_EQ(out[0]->view(), std::string(32, '\x07'));
  EXPECT_EQ(out[1].code(), ErrorCode::kDataLoss);  // b's key under a's name
  ASSERT_TRUE(out[2].ok());
  EXPECT_EQ(out[3].code(), ErrorCode::kDataLoss);  // version mismatch: not sent
  EXPECT_EQ(out[4].code(), ErrorCode::kDataLoss);  // Vault's own refusal
  EXPECT_EQ(vault_.Calls(), (std::vector<std::string>{"POST transit/decrypt/dyad-gateway-k"}));
}

}  // namespace
}  // namespace dyad
