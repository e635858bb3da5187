// The SecretStore and KeyManager contracts (secret_store.h, key_manager.h),
// one parameterised suite run against every backend: the environment
// backend and the test-only memory backend here; AWS against moto and Vault
// against OpenBao from the black-box suite (tests/blackbox/test_contract.py
// runs this binary with DYAD_CONTRACT_AWS=1 and the AWS variables of its
// moto, or DYAD_CONTRACT_VAULT=1 and the VAULT_* variables of its OpenBao),
// Azure against the Key Vault double (test_azure_contract.py,
// DYAD_CONTRACT_AZURE=1); the environment backend's store on PostgreSQL when
// DYAD_TEST_PG_URL is set. Every target opens through a BackendRegistry, as App
// does. A backend joins by adding a ContractTarget below.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "app/backend.h"
#include "backends/environment/pg_secret_store.h"
#include "core/config.h"
#include "core/encoding.h"
#include "core/random.h"
#include "registry/sqlite_provider_repository.h"
#include "service/provider_locks.h"
#include "testing/fakes.h"
#include "testing/memory_backend.h"
#include "testing/pg_test_database.h"

namespace dyad {
namespace {

// One backend under test, with what its writers need where the store has
// no conditional write: the registry database's leases.
struct Opened {
  std::shared_ptr<testing::PgTestDatabase> pg;  // where the store is on PostgreSQL; dropped last
  std::shared_ptr<SqliteDb> db;
  std::unique_ptr<ProviderLeases> leases;
  Backend backend;
  // Another key of the same backend (a second master, a second KMS key);
  // nullptr where the target has none. Declared after what it uses.
  Backend other;
  std::unique_ptr<KeyManager> other_keys;
};

struct ContractTarget {
  std::string name;
  std::function<Result<Opened>(const testing::TempDir&, const Clock&)> open;
};

void PrintTo(const ContractTarget& t, std::ostream* os) { *os << t.name; }

// Opens SECRETS_PROVIDER=`env[SECRETS_PROVIDER]` through `registry`, as App
// does, and, for the wrong-key case, the same backend with `other` applied
// to its variables (another master, another KMS key) on its own database.
Result<Opened> OpenThrough(const BackendRegistry& registry, EnvMap env, const EnvMap& other,
                           const testing::TempDir& dir, const Clock& clock) {
  env["GATEWAY_ADMIN_API_KEY"] = "contract-suite-token-not-used";  // LoadConfig wants one; nothing serves
  env["GATEWAY_DATA_DIR"] = dir.File("data");
  Opened o;
  DYAD_ASSIGN_OR_RETURN(o.db, SqliteDb::Open(dir.File("contract.db")));
  o.leases = NewSqliteProviderLeases(o.db, clock);
  DYAD_ASSIGN_OR_RETURN(Config config, LoadConfig(env, false, [&](const Config& c) { return registry.Check(c); }));
  DYAD_ASSIGN_OR_RETURN(o.backend, registry.Open(BackendContext{config, SqliteDatabase(o.db), clock, DefaultRandom()}));
  if (!other.empty()) {
    for (const auto& [k, v] : other) env[k] = v;
    DYAD_ASSIGN_OR_RETURN(Config other_config, LoadConfig(env, false));
    DYAD_ASSIGN_OR_RETURN(auto other_db, SqliteDb::Open(dir.File("other.db")));
    DYAD_ASSIGN_OR_RETURN(o.other, registry.Open(BackendContext{other_config, SqliteDatabase(other_db), clock, DefaultRandom()}));
    o.other_keys = std::move(o.other.keys);
  }
  return o;
}

const BackendRegistry& TestRegistry() {  // the built-in backends and the test-only one
  static const BackendRegistry* registry = [] {
    auto* r = new BackendRegistry();
    if (!RegisterBuiltinBackends(*r).ok() || !testing::RegisterMemoryBackend(*r).ok()) std::abort();
    return r;
  }();
  return *registry;
}

EnvMap Local(const std::string& provider) {
  return {{"SECRETS_PROVIDER", provider}, {"ENCRYPTION_KEY", std::string(64, 'a')}};
}

// AWS, Vault and Azure are configured by the environment the black-box suite
// passes (AWS_* of its moto; VAULT_ADDR, VAULT_TOKEN and ENCRYPTION_KEY_ID, a
// Transit key, of its OpenBao; AZURE_* of the Key Vault double);
// DYAD_CONTRACT_OTHER_KEY_ID names a second KMS, Transit or Key Vault key for
// the wrong-key case.
Result<Opened> OpenCloud(const std::string& provider, const testing::TempDir& dir, const Clock& clock) {
  EnvMap env = ReadProcessEnvironment();
  env["SECRETS_PROVIDER"] = provider;
  env["SECRETS_PREFIX"] = "contract-" + NewUuid(DefaultRandom()).substr(0, 8);
  EnvMap other;
  if (auto it = env.find("DYAD_CONTRACT_OTHER_KEY_ID"); it != env.end()) other["ENCRYPTION_KEY_ID"] = it->second;
  return OpenThrough(TestRegistry(), env, other, dir, clock);
}

// The environment backend with its store on PostgreSQL (a database of its
// own); its keyring stays the factory's, on SQLite, until BackendContext
// carries an engine-neutral Database.
Result<Opened> OpenEnvironmentOnPostgresql(const testing::TempDir& dir, const Clock& clock) {
  DYAD_ASSIGN_OR_RETURN(Opened o, OpenThrough(TestRegistry(), Local("environment"),
                                              {{"ENCRYPTION_KEY", std::string(64, 'b')}}, dir, clock));
  o.pg = std::make_shared<testing::PgTestDatabase>();
  DYAD_RETURN_IF_ERROR(o.pg->status());
  DYAD_ASSIGN_OR_RETURN(std::shared_ptr<PgDb> db, o.pg->Open());
  o.backend.store = NewPgSecretStore(db, clock, "dyad-gateway");
  return o;
}

std::vector<ContractTarget> Targets() {
  return {
      {"environment",
       [](const testing::TempDir& d, const Clock& c) {
         return OpenThrough(TestRegistry(), Local("environment"), {{"ENCRYPTION_KEY", std::string(64, 'b')}}, d, c);
       }},
      {"environment_postgresql", OpenEnvironmentOnPostgresql},
      {"memory",
       [](const testing::TempDir& d, const Clock& c) {
         return OpenThrough(TestRegistry(), Local("memory"), {{"ENCRYPTION_KEY_ID", "another"}}, d, c);
       }},
      {"aws", [](const testing::TempDir& d, const Clock& c) { return OpenCloud("aws", d, c); }},
      {"vault", [](const testing::TempDir& d, const Clock& c) { return OpenCloud("vault", d, c); }},
      {"azure", [](const testing::TempDir& d, const Clock& c) { return OpenCloud("azure", d, c); }},
  };
}

class StoreContract : public ::testing::TestWithParam<ContractTarget> {
 protected:
  void SetUp() override {
    if (GetParam().name == "environment_postgresql") DYAD_SKIP_WITHOUT_TEST_PG();
    if (GetParam().name == "aws" && !ReadProcessEnvironment().count("DYAD_CONTRACT_AWS")) {
      GTEST_SKIP() << "AWS runs from the black-box suite (tests/blackbox/test_contract.py)";
    }
    if (GetParam().name == "vault" && !ReadProcessEnvironment().count("DYAD_CONTRACT_VAULT")) {
      GTEST_SKIP() << "Vault runs from the black-box suite against OpenBao (tests/blackbox/test_contract.py)";
    }
    if (GetParam().name == "azure" && !ReadProcessEnvironment().count("DYAD_CONTRACT_AZURE")) {
      GTEST_SKIP() << "Azure runs from the black-box suite against the Key Vault double "
                      "(tests/blackbox/test_azure_contract.py)";
    }
    auto opened = GetParam().open(dir_, clock_);
    ASSERT_TRUE(opened.ok()) << opened.error().message;
    o_ = std::move(opened).value();
    locks_ = std::make_unique<ProviderLocks>(o_.leases.get(), clock_, DefaultRandom());
  }
  void TearDown() override {
    if (!o_.backend.store) return;
    for (const auto& name : created_) (void)store().DeleteNow(name);
  }
  SecretStore& store() { return *o_.backend.store; }
  KeyManager& keys() { return *o_.backend.keys; }
  // A fresh provider secret name, deleted at the end.
  std::string Fresh() {
    std::string name = store().SecretName(NewUuid(DefaultRandom()));
    created_.push_back(name);
    return name;
  }

  testing::TempDir dir_;
  SystemClock clock_;
  Opened o_;
  std::unique_ptr<ProviderLocks> locks_;
  std::vector<std::string> created_;
};

TEST_P(StoreContract, NamesMapToProviderIdsAndBack) {
  const std::string id = NewUuid(DefaultRandom());
  EXPECT_EQ(store().ProviderIdOf(store().SecretName(id)), id);
  EXPECT_EQ(store().ProviderIdOf(store().ProbeName("health-check")), std::nullopt);
  EXPECT_EQ(store().ProviderIdOf("elsewhere/providers/" + id), std::nullopt);
}

TEST_P(StoreContract, UnknownNamesAreNotFound) {
  const std::string name = store().SecretName(NewUuid(DefaultRandom()));
  EXPECT_EQ(store().Get(name).code(), ErrorCode::kNotFound);
  EXPECT_EQ(store().Replace(name, "v", "1").code(),
            store().HasConditionalWrites() ? ErrorCode::kNotFound : ErrorCode::kUnimplemented);
  EXPECT_EQ(store().Overwrite(name, "v").code(), ErrorCode::kNotFound);
  EXPECT_EQ(store().Get(name).code(), ErrorCode::kNotFound);
  auto many = store().GetMany({name});
  ASSERT_TRUE(many.ok()) << many.error().message;
  EXPECT_EQ((*many)[0].code(), ErrorCode::kNotFound);
}

TEST_P(StoreContract, CreateTwiceIsAlreadyExistsAndKeepsTheFirst) {
  const std::string name = Fresh();
  auto first = store().Create(name, "first");
  ASSERT_TRUE(first.ok()) << first.error().message;
  EXPECT_EQ(store().Create(name, "second").code(), ErrorCode::kAlreadyExists);
  auto got = store().Get(name);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->value, "first");
  EXPECT_EQ(got->version, *first);
}

TEST_P(StoreContract, ReplaceIsFencedByTheVersionRead) {
  const std::string name = Fresh();
  auto v1 = store().Create(name, "one");
  ASSERT_TRUE(v1.ok()) << v1.error().message;
  if (!store().HasConditionalWrites()) {  // never an unconditional write by Replace
    EXPECT_EQ(store().Replace(name, "two", *v1).code(), ErrorCode::kUnimplemented);
    EXPECT_EQ(store().Get(name)->value, "one");
  }
  auto v2 = store().HasConditionalWrites() ? store().Replace(name, "two", *v1) : store().Overwrite(name, "two");
  ASSERT_TRUE(v2.ok()) << v2.error().message;
  EXPECT_NE(*v2, *v1);
  auto got = store().Get(name);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->value, "two");
  EXPECT_EQ(got->version, *v2);
  if (!store().HasConditionalWrites()) return;  // the lease fences these writers (ConcurrentWriters)
  auto stale = store().Replace(name, "stale", *v1);
  EXPECT_EQ(stale.code(), ErrorCode::kConflict) << (stale.ok() ? "replaced" : stale.error().message);
  EXPECT_EQ(store().Get(name)->value, "two");
  auto many = store().ReplaceMany({{name, *v1, "stale again"}, {name, *v2, "three"}});
  ASSERT_TRUE(many.ok()) << many.error().message;
  EXPECT_EQ(*many, (std::vector<bool>{false, true}));
  EXPECT_EQ(store().Get(name)->value, "three");
}

TEST_P(StoreContract, UnicodeAndBinaryLookingValuesRoundTrip) {
  const std::vector<std::string> values = {
      "{\"api_key\":\"sk-ключ-🔑-密钥\"}", "\x01\x02\x7f tab\t newline\n quote\" backslash\\ ",
      "AAECAwQFBgcICQoLDA0ODw==", std::string(100, '\xff') + "\xc3\x28", "%00%2F../..\\u0000"};
  for (const auto& v : values) {
    const std::string name = Fresh();
    auto made = store().Create(name, v);
    if (!made.ok() && !IsValidUtf8(v) && made.code() == ErrorCode::kInvalidArgument) continue;  // a text store: refused, not mangled
    ASSERT_TRUE(made.ok()) << made.error().message;
    auto got = store().Get(name);
    ASSERT_TRUE(got.ok()) << got.error().message;
    EXPECT_EQ(got->value, v);
  }
}

TEST_P(StoreContract, ValuesUpTo64KiBRoundTripAndLargerAreRefusedOrKeptWhole) {
  const std::string name = Fresh();
  // Azure Key Vault stores at most 25 KiB a secret.
  const std::string limit(GetParam().name == "azure" ? 25 * 1024 : 65536, 'x');
  ASSERT_TRUE(store().Create(name, limit).ok());
  EXPECT_EQ(store().Get(name)->value, limit);
  const std::string big = Fresh();
  const std::string huge(2 << 20, 'y');
  auto made = store().Create(big, huge);
  if (made.ok()) {
    EXPECT_EQ(store().Get(big)->value.size(), huge.size());
  } else {
    EXPECT_EQ(made.code(), ErrorCode::kInvalidArgument) << made.error().message;
    EXPECT_NE(made.error().message.find("bytes"), std::string::npos) << made.error().message;
    EXPECT_EQ(store().Get(big).code(), ErrorCode::kNotFound);
  }
}

TEST_P(StoreContract, ListFindsEveryProviderSecretPastOnePage) {
  constexpr int kSecrets = 120;  // AWS lists 100 a page
  std::set<std::string> made;
  for (int i = 0; i < kSecrets; ++i) {
    const std::string name = Fresh();
    ASSERT_TRUE(store().Create(name, "v").ok());
    made.insert(name);
  }
  const std::string probe = store().ProbeName("contract-" + NewUuid(DefaultRandom()).substr(0, 8));
  created_.push_back(probe);
  ASSERT_TRUE(store().Create(probe, "not a provider's").ok());
  auto listed = store().List();
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  std::set<std::string> seen;
  for (const auto& l : *listed) {
    EXPECT_TRUE(store().ProviderIdOf(l.name)) << l.name;
    seen.insert(l.name);
  }
  for (const auto& name : made) EXPECT_TRUE(seen.count(name)) << name;
  EXPECT_FALSE(seen.count(probe));
}

TEST_P(StoreContract, DeletedIsNotFoundAndDeleteNowFreesTheName) {
  const std::string name = Fresh();
  ASSERT_TRUE(store().Create(name, "v").ok());
  ASSERT_TRUE(store().DeleteNow(name).ok());
  EXPECT_EQ(store().Get(name).code(), ErrorCode::kNotFound);
  auto again = store().Create(name, "again");
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(store().Get(name)->value, "again");
}

// A token read before a delete never fences a write of the secret created
// again under the same name (no ABA).
TEST_P(StoreContract, ATokenFromBeforeADeleteDoesNotMatchTheNameCreatedAgain) {
  if (!store().HasConditionalWrites()) GTEST_SKIP() << "the lease fences this store's writers";
  const std::string name = Fresh();
  auto first = store().Create(name, "first");
  ASSERT_TRUE(first.ok()) << first.error().message;
  ASSERT_TRUE(store().DeleteNow(name).ok());
  auto second = store().Create(name, "second");
  ASSERT_TRUE(second.ok()) << second.error().message;
  EXPECT_NE(*first, *second);
  EXPECT_EQ(store().Replace(name, "stale", *first).code(), ErrorCode::kConflict);
  EXPECT_EQ(store().Get(name)->value, "second");
}

// A token read before a Delete never writes the deleted secret back (a
// re-encryption that read it before its provider was deleted).
TEST_P(StoreContract, ATokenFromBeforeADeleteDoesNotWriteTheSecretBack) {
  if (!store().HasConditionalWrites()) GTEST_SKIP() << "the lease fences this store's writers";
  const std::string name = Fresh();
  auto first = store().Create(name, "first");
  ASSERT_TRUE(first.ok()) << first.error().message;
  ASSERT_TRUE(store().Delete(name).ok());
  auto back = store().Replace(name, "written back", *first);
  // AWS refuses PutSecretValue on a secret scheduled for deletion
  // (InvalidRequestException); moto writes it.
  if (GetParam().name == "aws" && back.ok()) return;
  ASSERT_FALSE(back.ok()) << "a deleted secret was written back";
  EXPECT_TRUE(back.code() == ErrorCode::kNotFound || back.code() == ErrorCode::kConflict) << back.error().message;
  auto many = store().ReplaceMany({{name, *first, "written back"}});
  ASSERT_TRUE(many.ok()) << many.error().message;
  EXPECT_EQ(*many, std::vector<bool>{false});
  EXPECT_EQ(store().Get(name).code(), ErrorCode::kNotFound);
}

// Eight writers append to one secret by read-modify-write, as the services
// do: under a conditional write they retry on kConflict; without one they
// hold the provider's lease. Every acknowledged append must be there.
TEST_P(StoreContract, ConcurrentWritersLoseNoAcknowledgedWrite) {
  const std::string id = NewUuid(DefaultRandom());
  const std::string name = store().SecretName(id);
  created_.push_back(name);
  ASSERT_TRUE(store().Create(name, "|").ok());
  constexpr int kWriters = 8;
  const int kEach = GetParam().name == "aws" || GetParam().name == "azure" ? 5 : 25;  // round trips add up
  std::atomic<int> failures{0};
  std::vector<std::vector<std::string>> acked(kWriters);
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      for (int i = 0; i < kEach; ++i) {
        const std::string mark = "w" + std::to_string(w) + "." + std::to_string(i) + "|";
        for (int attempt = 0; attempt < 200; ++attempt) {
          std::unique_ptr<ProviderLocks::Held> held;
          if (!store().HasConditionalWrites()) {
            auto h = locks_->Hold(id);
            if (!h.ok()) break;
            held = std::move(h).value();
          }
          auto cur = store().Get(name);
          if (!cur.ok()) break;
          std::this_thread::yield();  // let another writer in between the read and the write
          auto r = store().Replace(name, cur->value + mark, cur->version);
          if (!r.ok() && r.code() == ErrorCode::kUnimplemented && held && held->Confirm().ok()) {
            r = store().Overwrite(name, cur->value + mark);  // the lease fences it
          }
          if (r.ok()) {
            acked[w].push_back(mark);
            break;
          }
          if (r.code() != ErrorCode::kConflict && r.code() != ErrorCode::kUnimplemented) break;
        }
        if (acked[w].size() != static_cast<size_t>(i + 1)) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  auto final = store().Get(name);
  ASSERT_TRUE(final.ok()) << final.error().message;
  for (const auto& marks : acked) {
    for (const auto& mark : marks) EXPECT_NE(final->value.find("|" + mark), std::string::npos) << mark << " lost";
  }
}

TEST_P(StoreContract, KeysUnwrapWhatTheyWrappedUnderTheSameContextOnly) {
  auto dk = keys().GenerateDataKey("dyad-gateway/providers/a");
  ASSERT_TRUE(dk.ok()) << dk.error().message;
  EXPECT_EQ(dk->plaintext.size(), 32u);
  auto back = keys().Decrypt(dk->version, dk->wrapped, "dyad-gateway/providers/a");
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_TRUE(*back == dk->plaintext);
  EXPECT_EQ(keys().Decrypt(dk->version, dk->wrapped, "dyad-gateway/providers/b").code(), ErrorCode::kDataLoss);
  std::string tampered = dk->wrapped;
  tampered[tampered.size() / 2] ^= 0x01;
  EXPECT_EQ(keys().Decrypt(dk->version, tampered, "dyad-gateway/providers/a").code(), ErrorCode::kDataLoss);
}

TEST_P(StoreContract, RotationKeepsOldVersionsDecryptingAndReEncryptMovesThem) {
  auto before = keys().GenerateDataKey("ctx-1");
  ASSERT_TRUE(before.ok()) << before.error().message;
  auto next = keys().Rotate();
  ASSERT_TRUE(next.ok()) << next.error().message;
  EXPECT_GT(*next, before->version);
  auto old = keys().Decrypt(before->version, before->wrapped, "ctx-1");
  ASSERT_TRUE(old.ok()) << old.error().message;
  EXPECT_TRUE(*old == before->plaintext);
  auto moved = keys().ReEncrypt(before->version, before->wrapped, "ctx-1", "ctx-2");
  ASSERT_TRUE(moved.ok()) << moved.error().message;
  EXPECT_EQ(moved->version, *next);
  auto opened = keys().Decrypt(moved->version, moved->wrapped, "ctx-2");
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  EXPECT_TRUE(*opened == before->plaintext);
  auto fresh = keys().GenerateDataKey("ctx-3");
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(fresh->version, *next);
  EXPECT_EQ(keys().Decrypt(*next + 100, fresh->wrapped, "ctx-3").code(), ErrorCode::kNotFound);
}

TEST_P(StoreContract, AnotherKeysDataKeyIsDataLoss) {
  if (!o_.other_keys) GTEST_SKIP() << "no second key configured for " << GetParam().name;
  auto dk = o_.other_keys->GenerateDataKey("ctx");
  ASSERT_TRUE(dk.ok()) << dk.error().message;
  auto opened = keys().Decrypt(dk->version, dk->wrapped, "ctx");
  ASSERT_FALSE(opened.ok()) << "another key's data key opened";
  // Never a fallback (kUnavailable). AWS KMS answers IncorrectKeyException
  // (kDataLoss); moto answers a bare AccessDeniedException instead.
  if (GetParam().name == "aws" && opened.code() == ErrorCode::kPermissionDenied) return;
  EXPECT_EQ(opened.code(), ErrorCode::kDataLoss) << opened.error().message;
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreContract, ::testing::ValuesIn(Targets()),
                         [](const ::testing::TestParamInfo<ContractTarget>& info) { return info.param.name; });

}  // namespace
}  // namespace dyad
