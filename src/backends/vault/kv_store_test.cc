#include "backends/vault/kv_store.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/mutex.h"
#include "core/time_format.h"
#include "secrets/credentials.h"
#include "secrets/envelope.h"
#include "testing/fakes.h"

namespace dyad {
namespace {

using nlohmann::json;

constexpr char kBase[] = "http://vault.test:8200/v1/";

// Enough of KV v2 under the mount "secret": versions, cas, soft delete,
// delete/ and destroy/ of versions, metadata (read, custom, delete, LIST),
// 403 for chosen path prefixes, and a hook that answers a call in its place
// (hostile answers). Records every call.
class FakeKv final : public HttpTransport {
 public:
  struct Version {
    json data;
    bool deleted = false, destroyed = false;
  };
  struct Secret {
    uint64_t current = 0;
    std::map<uint64_t, Version> versions;
    json custom = json::object();
  };

  Result<HttpReply> Send(const HttpCall& call) override {
    MutexLock lock(&mu_);
    calls.push_back(call.method + " " + call.url.substr(sizeof(kBase) - 1));
    if (hook) {
      if (auto r = hook(call)) return *r;
    }
    std::string path = call.url.substr(sizeof(kBase) - 1);
    const bool list = path.ends_with("?list=true");
    if (list) path.resize(path.size() - 10);
    for (const auto& d : denied) {
      if (path.starts_with(d)) return Reply(403, R"({"errors":["1 error occurred:\n\t* permission denied\n\n"]})");
    }
    auto take = [&](const char* kind) -> std::optional<std::string> {
      std::string p = std::string("secret/") + kind + "/";
      if (!path.starts_with(p)) return std::nullopt;
      return path.substr(p.size());
    };
    json body = call.body.empty() ? json() : json::parse(call.body);
    if (auto name = take("data")) return Data(call.method, *name, body);
    if (auto name = take("delete")) {
      for (uint64_t v : body["versions"]) {
        if (secrets.count(*name) && secrets[*name].versions.count(v)) secrets[*name].versions[v].deleted = true;
      }
      return Reply(204, "");
    }
    if (auto name = take("destroy")) {
      for (uint64_t v : body["versions"]) {
        if (secrets.count(*name) && secrets[*name].versions.count(v)) {
          secrets[*name].versions[v].destroyed = true;
          secrets[*name].versions[v].data = nullptr;
        }
      }
      return Reply(204, "");
    }
    if (auto name = take("metadata")) return Metadata(call.method, *name, list, body);
    return Reply(404, R"({"errors":[]})");
  }

  std::vector<std::string> calls;  // "METHOD path", in order
  std::map<std::string, Secret> secrets;
  std::vector<std::string> denied;  // path prefixes answered 403
  std::function<std::optional<HttpReply>(const HttpCall&)> hook;

 private:
  static HttpReply Reply(int status, std::string body) { return HttpReply{status, {}, std::move(body)}; }
  static json Meta(uint64_t n, const Version& v) {
    return {{"version", n},
            {"created_time", "2026-11-30T10:00:0" + std::to_string(n % 10) + ".123456789Z"},
            {"deletion_time", v.deleted ? "2026-11-30T11:00:00Z" : ""},
            {"destroyed", v.destroyed}};
  }

  HttpReply Data(const std::string& method, const std::string& name, const json& body) {
    auto it = secrets.find(name);
    if (method == "GET") {
      if (it == secrets.end() || it->second.current == 0) return Reply(404, R"({"errors":[]})");
      const Version& v = it->second.versions[it->second.current];
      json data = {{"data", v.data}, {"metadata", Meta(it->second.current, v)}};
      if (v.deleted || v.destroyed) {
        data["data"] = nullptr;
        return Reply(404, json{{"data", data}}.dump());
      }
      return Reply(200, json{{"data", data}}.dump());
    }
    if (method == "DELETE") {
      if (it != secrets.end() && it->second.current) it->second.versions[it->second.current].deleted = true;
      return Reply(204, "");
    }
    Secret& s = secrets[name];
    if (body.contains("options") && body["options"].contains("cas") && body["options"]["cas"] != s.current) {
      return Reply(400, R"({"errors":["check-and-set parameter did not match the current version"]})");
    }
    s.current++;
    s.versions[s.current] = Version{body["data"]};
    return Reply(200, json{{"data", Meta(s.current, s.versions[s.current])}}.dump());
  }

  HttpReply Metadata(const std::string& method, const std::string& name, bool list, const json& body) {
    if (list) {
      std::set<std::string> keys;
      for (const auto& [n, s] : secrets) {
        if (!n.starts_with(name)) continue;
        std::string rest = n.substr(name.size());
        keys.insert(rest.find('/') == std::string::npos ? rest : rest.substr(0, rest.find('/') + 1));
      }
      if (keys.empty()) return Reply(404, R"({"errors":[]})");
      return Reply(200, json{{"data", {{"keys", keys}}}}.dump());
    }
    auto it = secrets.find(name);
    if (method == "DELETE") {
      if (it != secrets.end()) secrets.erase(it);
      return Reply(204, "");
    }
    if (method == "POST") {
      secrets[name].custom = body["custom_metadata"];
      return Reply(204, "");
    }
    if (it == secrets.end()) return Reply(404, R"({"errors":[]})");
    json versions = json::object();
    for (const auto& [n, v] : it->second.versions) versions[std::to_string(n)] = Meta(n, v);
    return Reply(200, json{{"data", {{"current_version", it->second.current}, {"versions", versions}}}}.dump());
  }

  Mutex mu_;
};

struct Kv {
  explicit Kv(size_t parallelism = 4) {
    auto t = std::make_unique<FakeKv>();
    fake = t.get();
    VaultClientOptions o;
    o.address = "http://vault.test:8200";
    o.retry.max_attempts = 1;
    client = std::move(VaultClient::Create(o, nullptr, std::move(t), clock, random)).value();
    KvStoreOptions ko;
    ko.parallelism = parallelism;
    store = NewVaultKvStore(ko, *client);
  }
  std::string Name(const std::string& id) const { return store->SecretName(id); }
  // What a hostile answer to the next data/ read looks like.
  void AnswerReadsWith(int status, std::string body) {
    fake->hook = [status, body](const HttpCall& call) -> std::optional<HttpReply> {
      if (call.method != "GET" || call.url.find("/secret/data/") == std::string::npos) return std::nullopt;
      return HttpReply{status, {}, body};
    };
  }
  FakeClock clock;
  testing::ConstantRandom random{7};
  FakeKv* fake;
  std::unique_ptr<VaultClient> client;
  std::unique_ptr<SecretStore> store;
};

const std::string kA = "dyad-gateway/providers/a";

// Applies every call to the fake, then loses the answer of the next POST to
// data/ while `lose` is set (a reset after Vault applied the write): the
// client's retry then meets our own version.
class LoseAnswer final : public HttpTransport {
 public:
  explicit LoseAnswer(FakeKv& to) : to_(to) {}
  Result<HttpReply> Send(const HttpCall& call) override {
    auto r = to_.Send(call);
    if (lose && call.method == "POST" && call.url.find("/secret/data/") != std::string::npos) {
      lose = false;
      return HttpReply{503, {}, R"({"errors":["upstream timed out"]})"};
    }
    return r;
  }
  bool lose = false;

 private:
  FakeKv& to_;
};

struct RetryingKv {
  RetryingKv() {
    VaultClientOptions o;
    o.address = "http://vault.test:8200";
    o.retry.max_attempts = 3;
    auto t = std::make_unique<LoseAnswer>(fake);
    lost = t.get();
    client = std::move(VaultClient::Create(o, nullptr, std::move(t), clock, random)).value();
    store = NewVaultKvStore(KvStoreOptions{}, *client);
  }
  int Posts() const {
    return static_cast<int>(std::count_if(fake.calls.begin(), fake.calls.end(),
                                           [](const std::string& c) { return c.starts_with("POST secret/data/"); }));
  }
  FakeClock clock;
  testing::ConstantRandom random{7};
  FakeKv fake;
  LoseAnswer* lost;
  std::unique_ptr<VaultClient> client;
  std::unique_ptr<SecretStore> store;
};

TEST(VaultKvStore, NamesAreThePrefixsProvidersAndProbes) {
  Kv kv;
  EXPECT_EQ(kv.store->Name(), "vault");
  EXPECT_EQ(kv.Name("openai"), kA.substr(0, kA.size() - 1) + "openai");
  EXPECT_EQ(kv.store->ProviderIdOf(kv.Name("x-1")), "x-1");
  EXPECT_EQ(kv.store->ProbeName("health"), "dyad-gateway/probe/health");
  EXPECT_EQ(kv.store->ProviderIdOf("dyad-gateway/probe/health"), std::nullopt);
  EXPECT_TRUE(kv.store->HasConditionalWrites());
}

TEST(VaultKvStore, CreateWritesTheObjectAsKvDataWithCasZeroAndGetReadsItBack) {
  Kv kv;
  auto made = kv.store->Create(kA, R"({"api_key":"sk-1","org":"o"})");
  ASSERT_TRUE(made.ok()) << made.error().message;
  EXPECT_EQ(*made, "1");
  EXPECT_EQ(kv.fake->secrets[kA].versions[1].data, json({{"api_key", "sk-1"}, {"org", "o"}}));
  EXPECT_EQ(kv.fake->calls[0], "POST secret/data/" + kA);
  EXPECT_EQ(kv.fake->secrets[kA].custom,
            json({{"provider_id", "a"}, {"managed_by", "dyad-gateway"}}));
  auto got = kv.store->Get(kA);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->value, R"({"api_key":"sk-1","org":"o"})");
  EXPECT_EQ(got->version, "1");
  auto fields = CredentialsFromJson(got->value);
  ASSERT_TRUE(fields.ok()) << fields.error().message;
}

// Vault answers the keys sorted; the envelope parser takes any order, and
// cv reaches the custom metadata.
TEST(VaultKvStore, AnEnvelopeComesBackParseableWithItsCredentialsVersionInCustomMetadata) {
  Kv kv;
  Envelope e;
  e.kms = "vault-transit";
  e.key_id = "dyad-gateway-k";
  e.key_version = 3;
  e.credentials_version = 7;
  e.wrapped_dek = "vault:v3:abc";
  e.nonce = std::string(12, '\x01');
  e.ciphertext = std::string(40, '\x02');
  e.context_bound = true;
  ASSERT_TRUE(kv.store->Create(kA, SerializeEnvelope(e)).ok());
  EXPECT_EQ(kv.fake->secrets[kA].custom["credentials_version"], "7");
  // A re-encryption (same cv) writes no metadata again; a new cv does.
  ASSERT_TRUE(kv.store->Replace(kA, SerializeEnvelope(e), "1").ok());
  EXPECT_EQ(std::count(kv.fake->calls.begin(), kv.fake->calls.end(), "POST secret/metadata/" + kA), 1);
  e.credentials_version = 8;
  ASSERT_TRUE(kv.store->Replace(kA, SerializeEnvelope(e), "2").ok());
  EXPECT_EQ(kv.fake->secrets[kA].custom["credentials_version"], "8");
  auto got = kv.store->Get(kA);
  ASSERT_TRUE(got.ok());
  EXPECT_NE(got->value, SerializeEnvelope(e));  // re-serialised, keys sorted
  auto back = ParseEnvelope(got->value);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->key_version, 3u);
  EXPECT_EQ(back->credentials_version, 8);
  EXPECT_EQ(back->wrapped_dek, e.wrapped_dek);
  EXPECT_EQ(back->ciphertext, e.ciphertext);
  EXPECT_TRUE(back->context_bound);
}

// The seam's values are any text: what is not a JSON object is kept whole
// in one wrapper key, and so is an object that looks like the wrapper.
TEST(VaultKvStore, ValuesThatAreNotObjectsRoundTripExactly) {
  Kv kv;
  const std::vector<std::string> values = {"first", "", "[1,2]", "\"s\"", " {\"a\":1} x", "\x01 tab\t\n",
                                           R"({"dyad_gateway_text":"x"})", R"({ "a" : 1 })"};
  for (size_t i = 0; i < values.size(); ++i) {
    const std::string name = kv.Name("v" + std::to_string(i));
    ASSERT_TRUE(kv.store->Create(name, values[i]).ok()) << i;
    auto got = kv.store->Get(name);
    ASSERT_TRUE(got.ok()) << got.error().message;
    // An object comes back as Vault serialises it (compact, sorted).
    EXPECT_EQ(got->value, i == 7 ? R"({"a":1})" : values[i]) << i;
  }
  EXPECT_EQ(kv.fake->secrets[kv.Name("v0")].versions[1].data, json({{"dyad_gateway_text", "first"}}));
}

TEST(VaultKvStore, OversizedNonUtf8AndBadNamesAreRefusedBeforeSendingWithoutEchoingTheValue) {
  Kv kv;
  auto big = kv.store->Create(kA, std::string((1 << 20) + 1, 'y'));
  EXPECT_EQ(big.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(big.error().message.find("bytes"), std::string::npos);
  EXPECT_EQ(big.error().message.find("yyyy"), std::string::npos);
  auto binary = kv.store->Create(kA, "sk-secret\xff\xfe");
  EXPECT_EQ(binary.code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(binary.error().message.find("sk-secret"), std::string::npos);
  for (const std::string name : {"dyad-gateway/providers/../../x", "dyad-gateway//providers/a",
                                 "dyad-gateway/providers/", "dyad-gateway/providers/a b", "/a", "a/./b", ""}) {
    EXPECT_EQ(kv.store->Get(name).code(), ErrorCode::kInvalidArgument) << name;
    EXPECT_EQ(kv.store->Create(name, "{}").code(), ErrorCode::kInvalidArgument) << name;
    EXPECT_EQ(kv.store->Delete(name).code(), ErrorCode::kInvalidArgument) << name;
  }
  EXPECT_TRUE(kv.fake->calls.empty());
  EXPECT_TRUE(kv.store->Create(kA, std::string(1 << 20, 'y')).ok());  // the limit itself
}

TEST(VaultKvStore, CreateOfALiveNameIsAlreadyExistsAndKeepsTheFirst) {
  Kv kv;
  ASSERT_TRUE(kv.store->Create(kA, R"({"k":"first"})").ok());
  EXPECT_EQ(kv.store->Create(kA, R"({"k":"second"})").code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(kv.store->Get(kA)->value, R"({"k":"first"})");
  EXPECT_EQ(kv.fake->secrets[kA].current, 1u);
}

// A soft-deleted (or destroyed) latest version does not hold the name: the
// create writes over it with cas=<that version>, so the version goes on.
TEST(VaultKvStore, CreateOverADeletedOrDestroyedVersionWritesWithItsCas) {
  Kv kv;
  ASSERT_TRUE(kv.store->Create(kA, "one").ok());
  ASSERT_TRUE(kv.store->Replace(kA, "two", "1").ok());
  ASSERT_TRUE(kv.store->Delete(kA).ok());
  EXPECT_EQ(kv.store->Get(kA).code(), ErrorCode::kNotFound);
  kv.fake->calls.clear();
  auto again = kv.store->Create(kA, "three");  // over the tombstone, version 3
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(*again, "4");
  EXPECT_EQ(kv.store->Replace(kA, "stale", "2").code(), ErrorCode::kConflict);
  // KV's own soft delete (hvac, the CLI) and destroy: no tombstone
  kv.fake->secrets[kA].versions[4].deleted = true;
  auto fifth = kv.store->Create(kA, "five");
  ASSERT_TRUE(fifth.ok()) << fifth.error().message;
  EXPECT_EQ(*fifth, "5");
  kv.fake->secrets[kA].versions[5].destroyed = true;
  auto sixth = kv.store->Create(kA, "six");
  ASSERT_TRUE(sixth.ok()) << sixth.error().message;
  EXPECT_EQ(*sixth, "6");
}

// Another creator wins between our read of the deleted version and our write.
TEST(VaultKvStore, CreateLosingTheRaceOverADeletedVersionIsAlreadyExists) {
  Kv kv;
  ASSERT_TRUE(kv.store->Create(kA, "one").ok());
  ASSERT_TRUE(kv.store->Delete(kA).ok());
  int reads = 0;
  kv.fake->hook = [&](const HttpCall& call) -> std::optional<HttpReply> {
    if (call.method == "GET" && call.url.ends_with("/data/" + kA) && ++reads == 1) {
      // the other creator's write lands right after this read
      kv.fake->secrets[kA].current = 2;
      kv.fake->secrets[kA].versions[2] = FakeKv::Version{json{{"dyad_gateway_text", "theirs"}}};
      return HttpReply{404, {}, R"({"data":{"data":null,"metadata":{"version":1,"deletion_time":"t"}}})"};
    }
    return std::nullopt;
  };
  EXPECT_EQ(kv.store->Create(kA, "mine").code(), ErrorCode::kAlreadyExists);
  kv.fake->hook = nullptr;
  EXPECT_EQ(kv.store->Get(kA)->value, "theirs");
}

TEST(VaultKvStore, ReplaceIsACasWriteConflictOnAStaleVersionNotFoundOnAGoneName) {
  Kv kv;
  EXPECT_EQ(kv.store->Replace(kA, "v", "1").code(), ErrorCode::kNotFound);
  EXPECT_TRUE(kv.fake->secrets.count(kA) == 0 || kv.fake->secrets[kA].current == 0);
  ASSERT_TRUE(kv.store->Create(kA, "one").ok());
  auto two = kv.store->Replace(kA, "two", "1");
  ASSERT_TRUE(two.ok()) << two.error().message;
  EXPECT_EQ(*two, "2");
  auto stale = kv.store->Replace(kA, "stale", "1");
  EXPECT_EQ(stale.code(), ErrorCode::kConflict);
  EXPECT_NE(stale.error().message.find("version 2"), std::string::npos) << stale.error().message;
  EXPECT_EQ(kv.store->Get(kA)->value, "two");
  ASSERT_TRUE(kv.store->Delete(kA).ok());
  EXPECT_EQ(kv.store->Replace(kA, "x", "1").code(), ErrorCode::kNotFound);
  for (const std::string bad : {"0", "-1", "abc", "1.0", "", "99999999999999999999999"}) {
    EXPECT_EQ(kv.store->Replace(kA, "x", bad).code(), ErrorCode::kInvalidArgument) << bad;
  }
}

TEST(VaultKvStore, OverwriteWritesOverTheVersionReadAndNeedsALiveOne) {
  Kv kv;
  EXPECT_EQ(kv.store->Overwrite(kA, "x").code(), ErrorCode::kNotFound);
  ASSERT_TRUE(kv.store->Create(kA, "one").ok());
  auto two = kv.store->Overwrite(kA, "two");
  ASSERT_TRUE(two.ok()) << two.error().message;
  EXPECT_EQ(*two, "2");
  ASSERT_TRUE(kv.store->Delete(kA).ok());
  EXPECT_EQ(kv.store->Overwrite(kA, "x").code(), ErrorCode::kNotFound);
}

// Another writer between the read and the write: read again and write.
TEST(VaultKvStore, OverwriteAndPutRetryAConflict) {
  Kv kv;
  ASSERT_TRUE(kv.store->Create(kA, "one").ok());
  int writes = 0;
  kv.fake->hook = [&](const HttpCall& call) -> std::optional<HttpReply> {
    if (call.method == "POST" && call.url.ends_with("/data/" + kA) && ++writes == 1) {
      kv.fake->secrets[kA].current = 2;
      kv.fake->secrets[kA].versions[2] = FakeKv::Version{json{{"dyad_gateway_text", "theirs"}}};
      return HttpReply{400, {}, R"({"errors":["check-and-set parameter did not match the current version"]})"};
    }
    return std::nullopt;
  };
  auto over = kv.store->Overwrite(kA, "mine");
  ASSERT_TRUE(over.ok()) << over.error().message;
  EXPECT_EQ(*over, "3");
  writes = 0;
  EXPECT_TRUE(kv.store->Put(kA, "put").ok());
  EXPECT_EQ(kv.store->Get(kA)->value, "put");
  kv.fake->hook = nullptr;
  const std::string b = kv.Name("b");
  EXPECT_TRUE(kv.store->Put(b, "new").ok());  // cas=0 create
  EXPECT_EQ(kv.store->Get(b)->version, "1");
  ASSERT_TRUE(kv.store->Delete(b).ok());
  EXPECT_TRUE(kv.store->Put(b, "again").ok());  // over the tombstone
  EXPECT_EQ(kv.store->Get(b)->version, "3");
}

TEST(VaultKvStore, OverwriteGivesUpAfterAFewConflicts) {
  Kv kv;
  ASSERT_TRUE(kv.store->Create(kA, "one").ok());
  kv.fake->hook = [&](const HttpCall& call) -> std::optional<HttpReply> {
    if (call.method != "POST") return std::nullopt;
    return HttpReply{400, {}, R"({"errors":["check-and-set parameter did not match the current version"]})"};
  };
  EXPECT_EQ(kv.store->Overwrite(kA, "mine").code(), ErrorCode::kConflict);
  EXPECT_EQ(kv.fake->calls.size(), 2u + 6u);  // the create's two, then three reads and writes
}

// A delete writes a tombstone over the version read and soft-deletes both:
// a token read before the delete conflicts and reads as deleted, so it
// never writes the secret back (KV's cas alone compares with a deleted
// latest version as with a live one).
TEST(VaultKvStore, DeleteBuriesTheVersionSoATokenReadBeforeNeverWritesItBack) {
  Kv kv;
  EXPECT_TRUE(kv.store->Delete(kA).ok());
  ASSERT_TRUE(kv.store->Create(kA, "one").ok());
  auto read = kv.store->Get(kA);
  ASSERT_TRUE(read.ok());
  EXPECT_TRUE(kv.store->Delete(kA).ok());
  const auto& s = kv.fake->secrets[kA];
  EXPECT_EQ(s.current, 2u);
  EXPECT_EQ(s.versions.at(2).data, json({{"dyad_gateway_deleted", true}}));
  EXPECT_TRUE(s.versions.at(2).deleted);
  EXPECT_TRUE(s.versions.at(1).deleted);
  EXPECT_EQ(s.versions.at(1).data, json({{"dyad_gateway_text", "one"}}));  // recoverable
  EXPECT_EQ(kv.store->Get(kA).code(), ErrorCode::kNotFound);
  EXPECT_EQ(kv.store->GetMany({kA})->at(0).code(), ErrorCode::kNotFound);
  EXPECT_EQ(kv.store->Replace(kA, "written back", read->version).code(), ErrorCode::kNotFound);
  EXPECT_EQ(kv.store->ReplaceMany({{kA, read->version, "written back"}}).value(), std::vector<bool>{false});
  EXPECT_EQ(kv.store->Overwrite(kA, "written back").code(), ErrorCode::kNotFound);
  EXPECT_EQ(kv.fake->secrets[kA].current, 2u);
  // A tombstone that was not soft-deleted reads as deleted all the same,
  // and a value that looks like one is kept wrapped.
  kv.fake->secrets[kA].versions[2].deleted = false;
  EXPECT_EQ(kv.store->Get(kA).code(), ErrorCode::kNotFound);
  const std::string b = kv.Name("b");
  ASSERT_TRUE(kv.store->Create(b, R"({"dyad_gateway_deleted":true})").ok());
  EXPECT_EQ(kv.store->Get(b)->value, R"({"dyad_gateway_deleted":true})");
}

// A provider's secret: buried, then the version it held destroyed (no
// metadata delete: versions go on, no ABA); a probe goes with its metadata.
TEST(VaultKvStore, DeleteNowDestroysAProvidersDataAndRemovesAProbeWhole) {
  Kv kv;
  ASSERT_TRUE(kv.store->Create(kA, "one").ok());
  ASSERT_TRUE(kv.store->DeleteNow(kA).ok());
  EXPECT_TRUE(kv.fake->secrets[kA].versions[1].destroyed);
  EXPECT_TRUE(kv.fake->secrets[kA].versions[1].data.is_null());
  auto again = kv.store->Create(kA, "again");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, "3");
  EXPECT_EQ(kv.store->Replace(kA, "stale", "1").code(), ErrorCode::kConflict);
  const std::string probe = kv.store->ProbeName("p1");
  ASSERT_TRUE(kv.store->Create(probe, "x").ok());
  ASSERT_TRUE(kv.store->DeleteNow(probe).ok());
  EXPECT_EQ(kv.fake->secrets.count(probe), 0u);
  EXPECT_TRUE(kv.store->DeleteNow(kv.Name("never")).ok());
}

// Under the seed's policy (data/ only): delete is the tombstone alone (no
// DELETE of the latest version), the refusals asked once, and never a
// failed write for custom metadata.
TEST(VaultKvStore, UnderTheSeedsPolicyOptionalPathsAreAskedOnceAndNeverFailAWrite) {
  Kv kv;
  kv.fake->denied = {"secret/metadata/", "secret/delete/", "secret/destroy/"};
  ASSERT_TRUE(kv.store->Create(kA, "one").ok());
  ASSERT_TRUE(kv.store->Replace(kA, "two", "1").ok());
  const std::string b = kv.Name("b");
  ASSERT_TRUE(kv.store->Create(b, "b").ok());
  ASSERT_TRUE(kv.store->DeleteNow(kA).ok());
  ASSERT_TRUE(kv.store->DeleteNow(b).ok());
  const std::string probe = kv.store->ProbeName("p");
  ASSERT_TRUE(kv.store->Create(probe, "p").ok());
  ASSERT_TRUE(kv.store->DeleteNow(probe).ok());
  ASSERT_TRUE(kv.store->DeleteNow(kv.store->ProbeName("q")).ok());
  int metadata_writes = 0, destroys = 0, metadata_deletes = 0, version_deletes = 0;
  for (const auto& c : kv.fake->calls) {
    metadata_writes += c.starts_with("POST secret/metadata/");
    destroys += c.starts_with("POST secret/destroy/");
    metadata_deletes += c.starts_with("DELETE secret/metadata/");
    version_deletes += c.starts_with("POST secret/delete/");
  }
  EXPECT_EQ(metadata_writes, 1);
  EXPECT_EQ(destroys, 1);
  EXPECT_EQ(metadata_deletes, 1);
  EXPECT_EQ(version_deletes, 1);
  EXPECT_EQ(kv.store->Get(kA).code(), ErrorCode::kNotFound);
  EXPECT_FALSE(kv.fake->secrets[kA].versions[3].deleted);  // the tombstone stands, read as deleted
  EXPECT_EQ(kv.fake->secrets[kA].versions[3].data, json({{"dyad_gateway_deleted", true}}));
  EXPECT_FALSE(kv.fake->secrets[kA].versions[2].deleted);  // in KV's history
  for (const auto& c : kv.fake->calls) EXPECT_FALSE(c.starts_with("DELETE secret/data/")) << c;
  EXPECT_EQ(kv.store->Get(probe).code(), ErrorCode::kNotFound);
  EXPECT_EQ(kv.store->Replace(kA, "back", "2").code(), ErrorCode::kNotFound);
  EXPECT_EQ(*kv.store->Create(kA, "again"), "4");
}

TEST(VaultKvStore, DeleteIfVersionDeletesOnlyTheVersionRead) {
  Kv kv;
  ASSERT_TRUE(kv.store->Create(kA, "one").ok());
  ASSERT_TRUE(kv.store->Replace(kA, "two", "1").ok());
  auto stale = kv.store->DeleteIfVersion(kA, "1");
  EXPECT_EQ(stale.code(), ErrorCode::kConflict);
  EXPECT_NE(stale.error().message.find("version 2"), std::string::npos) << stale.error().message;
  EXPECT_EQ(kv.store->Get(kA)->value, "two");
  EXPECT_TRUE(kv.store->DeleteIfVersion(kA, "2").ok());
  EXPECT_EQ(kv.store->Get(kA).code(), ErrorCode::kNotFound);
  EXPECT_TRUE(kv.fake->secrets[kA].versions[2].deleted);  // delete/ of the version and its tombstone
  EXPECT_TRUE(kv.fake->secrets[kA].versions[3].deleted);
  EXPECT_TRUE(kv.store->DeleteIfVersion(kv.Name("never"), "1").ok());
  EXPECT_EQ(kv.store->DeleteIfVersion(kA, "x").code(), ErrorCode::kInvalidArgument);
}

// The tombstone's cas is the condition: no delete/ permission needed.
TEST(VaultKvStore, DeleteIfVersionWorksUnderTheSeedsPolicy) {
  Kv kv;
  kv.fake->denied = {"secret/delete/", "secret/metadata/"};
  ASSERT_TRUE(kv.store->Create(kA, "one").ok());
  ASSERT_TRUE(kv.store->Replace(kA, "two", "1").ok());
  EXPECT_EQ(kv.store->DeleteIfVersion(kA, "1").code(), ErrorCode::kConflict);
  EXPECT_EQ(kv.store->Get(kA)->value, "two");
  EXPECT_TRUE(kv.store->DeleteIfVersion(kA, "2").ok());
  EXPECT_EQ(kv.store->Get(kA).code(), ErrorCode::kNotFound);
  EXPECT_TRUE(kv.store->DeleteIfVersion(kA, "2").ok());  // already gone
}

TEST(VaultKvStore, ListGivesLiveProviderSecretsDatedByTheirLatestVersion) {
  Kv kv;
  for (const char* id : {"a", "b", "c"}) ASSERT_TRUE(kv.store->Create(kv.Name(id), "x").ok());
  ASSERT_TRUE(kv.store->Replace(kv.Name("a"), "y", "1").ok());
  ASSERT_TRUE(kv.store->Delete(kv.Name("b")).ok());
  ASSERT_TRUE(kv.store->Create(kv.store->ProbeName("p"), "x").ok());
  kv.fake->secrets["dyad-gateway/providers/sub/d"].current = 1;  // a folder: not ours
  kv.fake->secrets["dyad-gateway/providers/sub/d"].versions[1] = FakeKv::Version{json::object()};
  auto listed = kv.store->List();
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].name, kv.Name("a"));
  ASSERT_TRUE((*listed)[0].changed_at);
  EXPECT_EQ(FormatIso8601(*(*listed)[0].changed_at), "2026-11-30T10:00:02.000Z");
  EXPECT_EQ((*listed)[1].name, kv.Name("c"));
  EXPECT_EQ(kv.fake->calls[kv.fake->calls.size() - 4], "GET secret/metadata/dyad-gateway/providers/?list=true");
}

TEST(VaultKvStore, ListWithoutMetadataReadFallsBackToDataReadsUndated) {
  Kv kv;
  for (const char* id : {"a", "b"}) ASSERT_TRUE(kv.store->Create(kv.Name(id), "x").ok());
  ASSERT_TRUE(kv.store->Delete(kv.Name("b")).ok());
  kv.fake->hook = [](const HttpCall& call) -> std::optional<HttpReply> {
    if (call.method == "GET" && call.url.find("/metadata/") != std::string::npos && !call.url.ends_with("list=true")) {
      return HttpReply{403, {}, R"({"errors":["permission denied"]})"};
    }
    return std::nullopt;
  };
  auto listed = kv.store->List();
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].name, kv.Name("a"));
  EXPECT_FALSE((*listed)[0].changed_at);
}

// A key deleted between the LIST and its metadata read is left out; a
// server failing meanwhile fails the List (no partial answer to gc).
TEST(VaultKvStore, ListLeavesOutKeysGoneMeanwhileAndFailsOnAnUnavailableRead) {
  Kv kv(1);
  for (const char* id : {"a", "b", "c"}) ASSERT_TRUE(kv.store->Create(kv.Name(id), "x").ok());
  kv.fake->hook = [](const HttpCall& call) -> std::optional<HttpReply> {
    if (call.url.ends_with("/metadata/dyad-gateway/providers/b")) return HttpReply{404, {}, R"({"errors":[]})"};
    if (call.url.ends_with("/metadata/dyad-gateway/providers/c")) {
      return HttpReply{200, {}, R"({"data":{"current_version":"1","versions":[]}})"};  // ill-typed: listed, undated
    }
    return std::nullopt;
  };
  auto listed = kv.store->List();
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0].name, kv.Name("a"));
  EXPECT_TRUE((*listed)[0].changed_at);
  EXPECT_EQ((*listed)[1].name, kv.Name("c"));
  EXPECT_FALSE((*listed)[1].changed_at);
  kv.fake->hook = [](const HttpCall& call) -> std::optional<HttpReply> {
    if (!call.url.ends_with("/metadata/dyad-gateway/providers/b")) return std::nullopt;
    return HttpReply{503, {}, R"({"errors":["Vault is sealed"]})"};
  };
  EXPECT_EQ(kv.store->List().code(), ErrorCode::kUnavailable);
}

TEST(VaultKvStore, ListEmptyIsEmptyAndARefusalNamesListOnThePath) {
  Kv kv;
  auto none = kv.store->List();
  ASSERT_TRUE(none.ok()) << none.error().message;
  EXPECT_TRUE(none->empty());
  kv.fake->denied = {"secret/metadata/"};
  auto refused = kv.store->List();
  EXPECT_EQ(refused.code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(refused.error().message.find("'list' on 'secret/metadata/dyad-gateway/providers/'"), std::string::npos)
      << refused.error().message;
  EXPECT_NE(refused.error().message.find("secrets gc"), std::string::npos);
  kv.fake->denied.clear();
  kv.fake->hook = [](const HttpCall&) -> std::optional<HttpReply> {
    return HttpReply{200, {}, R"({"data":{"keys":"a"}})"};
  };
  EXPECT_EQ(kv.store->List().code(), ErrorCode::kUnavailable);
}

TEST(VaultKvStore, HostileReadAnswersAreErrorsThatNeverEchoTheBody) {
  const std::vector<std::pair<int, std::string>> hostile = {
      {200, R"({"data":{"data":"sk-leak","metadata":{"version":1}}})"},
      {200, R"({"data":{"data":{"k":"sk-leak"},"metadata":{"version":"1"}}})"},
      {200, R"({"data":{"data":{"k":"sk-leak"}}})"},
      {200, R"({"data":{"data":{"k":"sk-leak"},"metadata":{"version":-1}}})"},
      {200, R"({"data":{"data":{"k":"sk-leak"},"metadata":{"version":0}}})"},
      {200, R"({"data":"sk-leak"})"},
      {200, R"(["sk-leak"])"},
      {200, "sk-leak not json"},
      {200, "{\"data\":{\"data\":{\"k\":\"" + std::string(3 << 20, 'z') + "\"}}}"},
  };
  for (const auto& [status, body] : hostile) {
    Kv kv;
    kv.AnswerReadsWith(status, body);
    auto got = kv.store->Get(kA);
    ASSERT_FALSE(got.ok()) << body.substr(0, 80);
    EXPECT_EQ(got.code(), ErrorCode::kUnavailable) << body.substr(0, 80);
    EXPECT_EQ(got.error().message.find("sk-leak"), std::string::npos) << got.error().message;
    EXPECT_LT(got.error().message.size(), 400u);
  }
}

// Deep nesting reaches no recursion: an answer is refused, a value kept as text.
TEST(VaultKvStore, DeeplyNestedAnswersAreRefusedAndDeepValuesKeptAsText) {
  const size_t depth = 200000;
  Kv kv;
  kv.AnswerReadsWith(200, R"({"data":{"metadata":{"version":1},"data":{"k":)" + std::string(depth, '[') +
                              std::string(depth, ']') + "}}}");
  auto got = kv.store->Get(kA);
  EXPECT_EQ(got.code(), ErrorCode::kUnavailable);
  kv.fake->hook = nullptr;
  const std::string deep = std::string(depth, '[') + std::string(depth, ']');
  const std::string deep_object = R"({"k":)" + std::string(40, '[') + std::string(40, ']') + "}";
  for (const std::string& value : {deep, deep_object}) {
    const std::string name = kv.Name(std::to_string(value.size()));
    ASSERT_TRUE(kv.store->Create(name, value).ok());
    EXPECT_EQ(kv.fake->secrets[name].versions[1].data.size(), 1u);
    EXPECT_TRUE(kv.fake->secrets[name].versions[1].data.contains("dyad_gateway_text"));
    EXPECT_EQ(kv.store->Get(name)->value, value);
  }
}

TEST(VaultKvStore, ReadAnswersOfDeletedShapesAreNotFound) {
  for (const std::string body : {R"({"data":{"data":null,"metadata":{"version":2,"deletion_time":"t"}}})",
                                 R"({"data":{"metadata":{"version":2,"destroyed":true}}})",
                                 R"({"data":{"data":{"k":"v"},"metadata":{"version":2,"deletion_time":"t"}}})"}) {
    Kv kv;
    kv.AnswerReadsWith(200, body);
    EXPECT_EQ(kv.store->Get(kA).code(), ErrorCode::kNotFound) << body;
  }
  Kv kv;  // a 404 with a version that is not a number: no version to write over
  kv.AnswerReadsWith(404, R"({"data":{"data":null,"metadata":{"version":"2","deletion_time":"t"}}})");
  EXPECT_EQ(kv.store->Get(kA).code(), ErrorCode::kNotFound);
}

// The store learns the version a create writes over from the 404 of a read.
TEST(VaultKvStore, ANotFoundReadNamesTheDeletedOrDestroyedVersionOnly) {
  auto note = [](std::string body) { return DecodeVaultReply("kv.read", HttpReply{404, {}, std::move(body)}); };
  auto deleted = note(R"({"data":{"data":null,"metadata":{"version":3,"deletion_time":"2026-01-01T00:00:00Z"}}})");
  EXPECT_EQ(deleted.error.code, ErrorCode::kNotFound);
  EXPECT_EQ(deleted.error.message, "kv.read: HTTP 404: version 3 is deleted");
  EXPECT_EQ(note(R"({"data":{"metadata":{"version":12,"deletion_time":"","destroyed":true}}})").error.message,
            "kv.read: HTTP 404: version 12 is destroyed");
  for (const std::string body : {R"({"errors":[]})", R"({"data":{"metadata":{"version":3,"deletion_time":""}}})",
                                 R"({"data":{"metadata":{"version":"3","deletion_time":"t"}}})",
                                 R"({"data":{"metadata":{"version":-3,"deletion_time":"t"}}})",
                                 R"({"data":{"metadata":[3]}})", R"({"data":"x"})", "not json", ""}) {
    EXPECT_EQ(note(body).error.message, "kv.read: HTTP 404") << body;
  }
  EXPECT_EQ(note(R"({"errors":["no handler for route"]})").error.message, "kv.read: HTTP 404: no handler for route");
}

// A write Vault applied whose answer was lost: the client's retry conflicts
// with our own version, which the store recognises by reading it back.
TEST(VaultKvStore, AWriteAppliedThoughItsAnswerWasLostIsASuccessWithItsVersion) {
  RetryingKv kv;
  kv.lost->lose = true;
  auto made = kv.store->Create(kA, R"({"api_key":"sk-1"})");
  ASSERT_TRUE(made.ok()) << made.error().message;
  EXPECT_EQ(*made, "1");
  EXPECT_EQ(kv.Posts(), 2);
  kv.lost->lose = true;
  auto replaced = kv.store->Replace(kA, R"({"api_key":"sk-2"})", "1");
  ASSERT_TRUE(replaced.ok()) << replaced.error().message;
  EXPECT_EQ(*replaced, "2");
  kv.lost->lose = true;
  auto over = kv.store->Overwrite(kA, "sk-3");
  ASSERT_TRUE(over.ok()) << over.error().message;
  EXPECT_EQ(*over, "3");
  kv.lost->lose = true;
  ASSERT_TRUE(kv.store->Put(kA, "sk-4").ok());
  EXPECT_EQ(kv.fake.secrets[kA].current, 4u);  // each written once
  EXPECT_EQ(kv.store->Get(kA)->value, "sk-4");
  // Over a deleted version: the first version after it.
  ASSERT_TRUE(kv.store->Delete(kA).ok());
  kv.lost->lose = true;
  auto again = kv.store->Create(kA, "sk-5");
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(*again, "6");
  EXPECT_EQ(kv.fake.secrets[kA].current, 6u);
}

// Only exactly our value at exactly cas+1 is ours. (The same plain value
// written twice over the same version cannot be told from a retry: it is
// the idempotent success; sealed values never repeat, their nonce differs.)
TEST(VaultKvStore, AConflictWithAnotherWritersVersionIsNotTakenForOurs) {
  RetryingKv kv;
  ASSERT_TRUE(kv.store->Create(kA, "same").ok());
  EXPECT_EQ(kv.store->Create(kA, "not same").code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(kv.store->Create(kA, "same").value(), "1");  // as a retry of the first
  ASSERT_TRUE(kv.store->Replace(kA, "other", "1").ok());
  ASSERT_TRUE(kv.store->Replace(kA, "same", "2").ok());
  EXPECT_EQ(kv.store->Create(kA, "same").code(), ErrorCode::kAlreadyExists);  // at 3, not 1
  EXPECT_EQ(kv.store->Replace(kA, "same", "1").code(), ErrorCode::kConflict);  // at 3, not 2
  EXPECT_EQ(kv.store->Replace(kA, "not same", "2").code(), ErrorCode::kConflict);
  EXPECT_EQ(kv.store->Replace(kA, "same", "2").value(), "3");  // as a retry
  EXPECT_EQ(kv.fake.secrets[kA].current, 3u);
  // Equal documents up to key order are the same document.
  const std::string b = kv.store->SecretName("b");
  ASSERT_TRUE(kv.store->Create(b, R"({"x":1,"y":2})").ok());
  ASSERT_TRUE(kv.store->Replace(b, R"({"y":3,"x":1})", "1").ok());
  EXPECT_EQ(kv.store->Replace(b, R"({"x":1,"y":3})", "1").value(), "2");
  EXPECT_EQ(kv.store->Replace(b, R"({"x":1,"y":4})", "1").code(), ErrorCode::kConflict);
  EXPECT_EQ(kv.fake.secrets[b].current, 2u);
}

// DeleteNow whose tombstone's answer was lost still destroys the version
// it removed, and soft-deletes it with the tombstone.
TEST(VaultKvStore, DeleteNowWhoseTombstoneAnswerWasLostStillDestroysTheVersionItHeld) {
  RetryingKv kv;
  ASSERT_TRUE(kv.store->Create(kA, "one").ok());
  kv.lost->lose = true;
  ASSERT_TRUE(kv.store->DeleteNow(kA).ok());
  const auto& s = kv.fake.secrets[kA];
  EXPECT_EQ(s.current, 2u);
  EXPECT_TRUE(s.versions.at(1).destroyed);
  EXPECT_TRUE(s.versions.at(1).data.is_null());
  EXPECT_TRUE(s.versions.at(2).deleted);
  EXPECT_EQ(kv.store->Get(kA).code(), ErrorCode::kNotFound);
}

// Without delete/, no unversioned DELETE data/: it would soft-delete
// whatever is latest, a version another instance wrote over the tombstone.
TEST(VaultKvStore, WithoutDeleteVersionsTheTombstoneStandsAndANewerVersionIsKept) {
  Kv kv;
  ASSERT_TRUE(kv.store->Create(kA, R"({"api_key":"old"})").ok());
  kv.fake->denied = {"secret/delete/"};
  FakeKv* f = kv.fake;
  bool once = true;
  kv.fake->hook = [&once, f](const HttpCall& call) -> std::optional<HttpReply> {
    if (once && call.method == "POST" && call.url.find("/secret/delete/") != std::string::npos) {
      once = false;  // another instance creates over our tombstone just now
      auto& s = f->secrets[kA];
      s.current++;
      s.versions[s.current] = FakeKv::Version{json{{"api_key", "new-by-B"}}};
    }
    return std::nullopt;
  };
  ASSERT_TRUE(kv.store->Delete(kA).ok());
  ASSERT_TRUE(kv.store->Delete(kv.Name("b")).ok());
  kv.fake->hook = nullptr;
  auto got = kv.store->Get(kA);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->value, R"({"api_key":"new-by-B"})");
  for (const auto& c : kv.fake->calls) EXPECT_FALSE(c.starts_with("DELETE secret/data/")) << c;
  // A standing tombstone is left out of List though metadata/ calls it live.
  const std::string c = kv.Name("c");
  ASSERT_TRUE(kv.store->Create(c, "x").ok());
  ASSERT_TRUE(kv.store->Delete(c).ok());
  EXPECT_FALSE(kv.fake->secrets[c].versions[2].deleted);
  auto listed = kv.store->List();
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ(listed->at(0).name, kA);
}

TEST(VaultKvStore, AWriteAnswerWithoutAVersionIsAnError) {
  Kv kv;
  kv.fake->hook = [](const HttpCall& call) -> std::optional<HttpReply> {
    if (call.method == "POST") return HttpReply{200, {}, R"({"data":{"version":"1"}})"};
    return std::nullopt;
  };
  auto made = kv.store->Create(kA, "x");
  EXPECT_EQ(made.code(), ErrorCode::kInternal);
}

TEST(VaultKvStore, UnavailableAndDeniedPassThrough) {
  Kv kv;
  kv.AnswerReadsWith(503, R"({"errors":["Vault is sealed"]})");
  auto sealed = kv.store->Get(kA);
  EXPECT_EQ(sealed.code(), ErrorCode::kUnavailable);
  EXPECT_NE(sealed.error().message.find("Vault is sealed"), std::string::npos);
  kv.fake->hook = nullptr;
  kv.fake->denied = {"secret/data/"};
  auto denied = kv.store->Create(kA, "x");
  EXPECT_EQ(denied.code(), ErrorCode::kPermissionDenied);
  EXPECT_NE(denied.error().message.find("'create' on 'secret/data/" + kA + "'"), std::string::npos)
      << denied.error().message;
}

TEST(VaultKvStore, ManyFanOutAndSayWhichWereReplaced) {
  Kv kv(4);
  std::vector<std::string> names;
  for (int i = 0; i < 20; ++i) {
    names.push_back(kv.Name("p" + std::to_string(i)));
    ASSERT_TRUE(kv.store->Create(names.back(), "v" + std::to_string(i)).ok());
  }
  names.push_back(kv.Name("missing"));
  auto many = kv.store->GetMany(names);
  ASSERT_TRUE(many.ok());
  for (int i = 0; i < 20; ++i) EXPECT_EQ((*many)[i]->value, "v" + std::to_string(i));
  EXPECT_EQ((*many)[20].code(), ErrorCode::kNotFound);
  std::vector<SecretStore::Swap> swaps;
  for (int i = 0; i < 20; ++i) swaps.push_back({names[i], i % 2 ? "1" : "9", "w"});
  swaps.push_back({names[20], "1", "w"});
  auto replaced = kv.store->ReplaceMany(swaps);
  ASSERT_TRUE(replaced.ok()) << replaced.error().message;
  for (int i = 0; i < 20; ++i) EXPECT_EQ((*replaced)[i], i % 2 == 1) << i;
  EXPECT_FALSE((*replaced)[20]);
  kv.fake->denied = {"secret/data/"};
  EXPECT_EQ(kv.store->ReplaceMany(swaps).code(), ErrorCode::kPermissionDenied);
}

}  // namespace
}  // namespace dyad
