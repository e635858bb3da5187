// The AuditKeyRepository and AuditHeadStore contracts, on every registry
// engine (SQLite always, PostgreSQL when DYAD_TEST_PG_URL is set:
// testing/registry_engines.h). "Two instances" are two pools on one
// database, sharing nothing but it.
#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <thread>
#include <vector>

#include "audit/audit_log.h"
#include "registry/migrations.h"
#include "testing/at_once.h"
#include "testing/legacy_audit_log.h"
#include "testing/registry_engines.h"

namespace dyad {
namespace {

using testing::AtOnce;
using testing::SecretGetEvent;

AuditKeyRecord Key(uint32_t version, const std::string& wrapped, const std::string& kind = "local",
                   const std::string& key_id = "k") {
  return AuditKeyRecord{kind, key_id, version, wrapped, "2026-01-01T00:00:00.000Z"};
}

class AuditRepositoryContract : public testing::RegistryContractTest {
 protected:
  void SetUp() override {
    RegistryContractTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    for (auto& inst : inst_) {
      auto made = NewInstance();
      ASSERT_TRUE(made.ok()) << made.error().message;
      inst = std::move(made).value();
    }
  }
  AuditKeyRepository& keys(int i) { return *inst_[i % 2].audit_keys; }
  AuditHeadStore& heads(int i) { return *inst_[i % 2].audit_heads; }

  testing::RegistryInstance inst_[2];
};

TEST_P(AuditRepositoryContract, FirstStoredKeyWinsAndMovesOnlyFromWhatWasRead) {
  EXPECT_FALSE(keys(0).Get({"local", "k"})->has_value());
  EXPECT_TRUE(keys(0).List()->empty());
  Result<std::optional<AuditKeyRecord>> got[2] = {std::optional<AuditKeyRecord>(), std::optional<AuditKeyRecord>()};
  // Wrapped keys are bytes: a NUL and high bytes are kept.
  AtOnce(2, [&](int i) { got[i] = keys(i).InsertFirst(Key(1, std::string("wrapped-\0\xff", 10) + std::to_string(i))); });
  ASSERT_TRUE(got[0].ok()) << got[0].error().message;
  ASSERT_TRUE(got[1].ok()) << got[1].error().message;
  ASSERT_TRUE(got[0]->has_value() && got[1]->has_value());
  EXPECT_EQ((*got[0])->wrapped, (*got[1])->wrapped);  // both use the one stored
  auto stored = keys(1).Get({"local", "k"})->value();
  EXPECT_EQ(stored.wrapped, (*got[0])->wrapped);
  EXPECT_EQ(stored.wrapped.size(), 11u);
  EXPECT_EQ(stored.kind, "local");
  EXPECT_EQ(stored.key_version, 1u);
  EXPECT_EQ(stored.created_at, "2026-01-01T00:00:00.000Z");

  // Compare-and-set: only from the wrapping read.
  EXPECT_FALSE(*keys(0).ReplaceWrapping(Key(1, "not-it"), 2, "w2"));
  std::string cut = stored.wrapped.substr(0, stored.wrapped.find('\0'));  // what a text column would have kept
  EXPECT_FALSE(*keys(0).ReplaceWrapping(Key(1, cut), 2, "w2"));
  EXPECT_TRUE(*keys(0).ReplaceWrapping(stored, 2, "w2"));
  EXPECT_FALSE(*keys(1).ReplaceWrapping(stored, 3, "w3"));  // moved meanwhile: theirs stands
  EXPECT_EQ(keys(1).Get({"local", "k"})->value().key_version, 2u);
  EXPECT_EQ(keys(1).Get({"local", "k"})->value().wrapped, "w2");
}

TEST_P(AuditRepositoryContract, FirstMakersOfManyKeyManagersMakeOneKey) {
  // Instances starting at once, each with its own KeyManager: one key, and
  // only the winner's KeyManager holds it.
  constexpr int kMakers = 8;
  std::vector<Result<std::optional<AuditKeyRecord>>> got(kMakers, std::optional<AuditKeyRecord>());
  AtOnce(kMakers, [&](int i) { got[i] = keys(i).InsertFirst(Key(1, "w" + std::to_string(i), "kind" + std::to_string(i))); });
  int winner = -1;
  for (int i = 0; i < kMakers; ++i) {
    ASSERT_TRUE(got[i].ok()) << got[i].error().message;
    if (!got[i]->has_value()) continue;
    EXPECT_EQ(winner, -1) << "two first makers both hold a key";
    winner = i;
    EXPECT_EQ((*got[i])->wrapped, "w" + std::to_string(i));
  }
  ASSERT_NE(winner, -1);
  auto all = keys(1).List();
  ASSERT_TRUE(all.ok()) << all.error().message;
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].kind, "kind" + std::to_string(winner));
  // A maker after that stores nothing, not even for its own KeyManager.
  auto late = keys(0).InsertFirst(Key(1, "late", "late-kind"));
  ASSERT_TRUE(late.ok()) << late.error().message;
  EXPECT_FALSE(late->has_value());
  EXPECT_EQ(keys(0).List()->size(), 1u);
}

TEST_P(AuditRepositoryContract, TwoInstancesAddingOneWrappingStoreOneRow) {
  ASSERT_TRUE(keys(0).InsertFirst(Key(1, "source")).ok());
  Result<AuditKeyRecord> got[2] = {AuditKeyRecord{}, AuditKeyRecord{}};
  AtOnce(2, [&](int i) { got[i] = keys(i).InsertIfAbsent(Key(4, "target-" + std::to_string(i), "aws-kms", "t")); });
  ASSERT_TRUE(got[0].ok()) << got[0].error().message;
  ASSERT_TRUE(got[1].ok()) << got[1].error().message;
  EXPECT_EQ(got[0]->wrapped, got[1]->wrapped);
  EXPECT_EQ(got[0]->key_version, 4u);
  auto all = keys(1).List();
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].kind, "aws-kms");  // by kind, in byte order
  EXPECT_EQ((*all)[0].wrapped, got[0]->wrapped);
  EXPECT_EQ((*all)[1].kind, "local");
  EXPECT_EQ((*all)[1].wrapped, "source");  // the source's kept
}

TEST_P(AuditRepositoryContract, ARewrapTouchesOnlyItsKeyManagersRow) {
  ASSERT_TRUE(keys(0).InsertFirst(Key(1, "same")).ok());
  ASSERT_TRUE(keys(0).InsertIfAbsent(Key(1, "same", "local", "other")).ok());  // same version and bytes, other key id
  EXPECT_TRUE(*keys(0).ReplaceWrapping(Key(1, "same"), 2, "moved"));
  EXPECT_EQ(keys(0).Get({"local", "k"})->value().wrapped, "moved");
  EXPECT_EQ(keys(0).Get({"local", "other"})->value().wrapped, "same");
  EXPECT_EQ(keys(0).Get({"local", "other"})->value().key_version, 1u);
}

TEST_P(AuditRepositoryContract, OfConcurrentRewrapsFromOneReadOneWins) {
  ASSERT_TRUE(keys(0).InsertFirst(Key(1, "v1")).ok());
  const AuditKeyRecord read = keys(0).Get({"local", "k"})->value();
  constexpr int kRewrappers = 8;
  std::vector<Result<bool>> got(kRewrappers, false);
  AtOnce(kRewrappers, [&](int i) { got[i] = keys(i).ReplaceWrapping(read, 2, "v2-by-" + std::to_string(i)); });
  int won = -1;
  for (int i = 0; i < kRewrappers; ++i) {
    ASSERT_TRUE(got[i].ok()) << got[i].error().message;
    if (*got[i]) {
      EXPECT_EQ(won, -1) << "two rewraps from one read both replaced";
      won = i;
    }
  }
  ASSERT_NE(won, -1);
  EXPECT_EQ(keys(1).Get({"local", "k"})->value().wrapped, "v2-by-" + std::to_string(won));
}

TEST_P(AuditRepositoryContract, TheLastWrappingIsNeverRemoved) {
  ASSERT_TRUE(keys(0).InsertFirst(Key(1, "source")).ok());
  EXPECT_FALSE(*keys(0).RemoveBeside({"local", "k"}, {"aws-kms", "t"}));  // no target wrapping yet
  EXPECT_FALSE(*keys(0).RemoveBeside({"local", "k"}, {"local", "k"}));
  ASSERT_TRUE(keys(0).InsertIfAbsent(Key(1, "target", "aws-kms", "t")).ok());
  EXPECT_TRUE(*keys(0).RemoveBeside({"local", "k"}, {"aws-kms", "t"}));
  EXPECT_FALSE(keys(0).Get({"local", "k"})->has_value());
  EXPECT_FALSE(*keys(0).RemoveBeside({"aws-kms", "t"}, {"local", "k"}));
  EXPECT_EQ(keys(0).List()->size(), 1u);
}

// Two instances each dropping the other's wrapping beside its own (a
// migrate and its reverse at once): one wrapping always stays.
TEST_P(AuditRepositoryContract, CrossedRemovalsOnTwoInstancesKeepOneWrapping) {
  for (int round = 0; round < 10; ++round) {
    const std::string a = "a" + std::to_string(round), b = "b" + std::to_string(round);
    if (round == 0) {
      ASSERT_TRUE(keys(0).InsertFirst(Key(1, "wa", a, "k")).ok());
    } else {
      ASSERT_TRUE(keys(0).InsertIfAbsent(Key(1, "wa", a, "k")).ok());
      auto before = keys(0).List();
      ASSERT_TRUE(before.ok()) << before.error().message;
      for (const auto& r : *before) {
        if (r.kind != a) {
          ASSERT_TRUE(*keys(0).RemoveBeside(r.holder(), {a, "k"}));
        }
      }
    }
    ASSERT_TRUE(keys(0).InsertIfAbsent(Key(1, "wb", b, "k")).ok());
    Result<bool> got[2] = {false, false};
    AtOnce(2, [&](int i) {
      got[i] = i == 0 ? keys(0).RemoveBeside({a, "k"}, {b, "k"}) : keys(1).RemoveBeside({b, "k"}, {a, "k"});
    });
    ASSERT_TRUE(got[0].ok()) << got[0].error().message;
    ASSERT_TRUE(got[1].ok()) << got[1].error().message;
    EXPECT_NE(*got[0], *got[1]) << "exactly one of the crossed removals drops a wrapping";
    auto all = keys(1).List();
    ASSERT_TRUE(all.ok());
    ASSERT_EQ(all->size(), 1u) << "round " << round;
  }
}

TEST_P(AuditRepositoryContract, HostileHolderNamesAreKeptOrRefusedNeverCut) {
  // A kind or key id is the KeyManager's (an ARN, a Vault path): quotes,
  // backslashes, wildcards and non-ASCII are kept byte for byte.
  const std::string odd = "arn:aws:kms:eu-west-1:1:key/'\"\\%_\xc3\xa9";
  ASSERT_TRUE(keys(0).InsertFirst(Key(1, "w", "aws-kms", odd)).ok());
  EXPECT_TRUE(keys(1).Get({"aws-kms", odd})->has_value());
  EXPECT_FALSE(keys(1).Get({"aws-kms", "arn:aws:kms:eu-west-1:1:key/'\"\\%_"})->has_value());
  // A NUL inside a key id: refused (PostgreSQL text) or kept whole (SQLite),
  // never matched as the part before it.
  const std::string with_nul("alias/k\0tail", 12);
  auto added = keys(0).InsertIfAbsent(Key(1, "n", "local", with_nul));
  if (added.ok()) {
    EXPECT_EQ(added->key_id, with_nul);
  } else {
    EXPECT_EQ(added.code(), ErrorCode::kInvalidArgument) << added.error().message;
    EXPECT_NE(added.error().message.find("NUL"), std::string::npos) << added.error().message;
  }
  EXPECT_FALSE(keys(1).Get({"local", "alias/k"})->has_value());
}

TEST_P(AuditRepositoryContract, HeadsNeverMoveBack) {
  const std::string log = "3f0c9d2e-0000-4000-8000-000000000001";
  EXPECT_FALSE(heads(0).Load(log)->has_value());
  ASSERT_TRUE(heads(0).Save(log, {5, "mac5", "seal5"}).ok());
  ASSERT_TRUE(heads(1).Save(log, {3, "mac3", "seal3"}).ok());
  EXPECT_EQ(heads(1).Load(log)->value().seq, 5u);
  EXPECT_EQ(heads(1).Load(log)->value().mac, "mac5");
  ASSERT_TRUE(heads(1).Save(log, {6, "mac6", "seal6"}).ok());
  EXPECT_EQ(heads(0).Load(log)->value().mac, "mac6");
  EXPECT_EQ(heads(0).Load(log)->value().seal, "seal6");
  ASSERT_TRUE(heads(0).Save(log, {6, "other6", "other-seal6"}).ok());  // not higher: kept
  EXPECT_EQ(heads(0).Load(log)->value().mac, "mac6");
  const uint64_t big = (uint64_t{1} << 62) + 7;  // seq is 64-bit
  ASSERT_TRUE(heads(0).Save(log, {big, "macbig", "sealbig"}).ok());
  EXPECT_EQ(heads(1).Load(log)->value().seq, big);
  // No head is saved without its log's id (the legacy head's key).
  EXPECT_EQ(heads(0).Save(kLegacyAuditLogId, {9, "m", "s"}).code(), ErrorCode::kInvalidArgument);
  EXPECT_FALSE(heads(0).Load(kLegacyAuditLogId)->has_value());
}

// Instances on two hosts, each appending to its own log, on one registry:
// a log's head is its own, whichever is longer.
TEST_P(AuditRepositoryContract, HeadsOfTwoLogsAreIndependent) {
  const std::string a = "log-a", b = "log-b";
  ASSERT_TRUE(heads(0).Save(a, {10, "a10", "sa10", "host-a:/var/lib/dyad/audit.log"}).ok());
  ASSERT_TRUE(heads(1).Save(b, {3, "b3", "sb3", "host-b:/var/lib/dyad/audit.log"}).ok());  // lower than a's: still b's
  EXPECT_EQ(heads(0).Load(b)->value().seq, 3u);
  EXPECT_EQ(heads(0).Load(b)->value().mac, "b3");
  ASSERT_TRUE(heads(1).Save(b, {4, "b4", "sb4", "host-b:/var/lib/dyad/audit.log"}).ok());
  EXPECT_EQ(heads(1).Load(a)->value().seq, 10u);  // b's save moved only b
  EXPECT_EQ(heads(1).Load(a)->value().seal, "sa10");
  EXPECT_EQ(heads(0).Load(b)->value().seal, "sb4");
  EXPECT_FALSE(heads(0).Load("log-c")->has_value());
  // Ids differing only in case or by a prefix are other logs.
  EXPECT_FALSE(heads(0).Load("LOG-A")->has_value());
  EXPECT_FALSE(heads(0).Load("log-")->has_value());
  // Where each was last written.
  EXPECT_EQ(heads(1).Load(b)->value().origin, "host-b:/var/lib/dyad/audit.log");
  auto at_a = heads(1).AtOrigin("host-a:/var/lib/dyad/audit.log");
  ASSERT_TRUE(at_a.ok()) << at_a.error().message;
  ASSERT_EQ(at_a->size(), 1u);
  EXPECT_EQ((*at_a)[0].first, a);
  EXPECT_EQ((*at_a)[0].second.mac, "a10");
  EXPECT_TRUE(heads(0).AtOrigin("host-c:/var/lib/dyad/audit.log")->empty());
  ASSERT_TRUE(heads(0).Save("log-a2", {1, "a2-1", "s", "host-a:/var/lib/dyad/audit.log"}).ok());
  EXPECT_EQ(heads(1).AtOrigin("host-a:/var/lib/dyad/audit.log")->size(), 2u);
}

// Appenders on two instances save heads at once (processes sharing one
// log file, each saving after its own append), while others save another
// log's: per log, the highest seq stands, with its own MAC and seal.
TEST_P(AuditRepositoryContract, ConcurrentSavesLeaveTheHighestHead) {
  constexpr int kSavers = 8, kEach = 40;
  std::atomic<int> failed{0};
  AtOnce(kSavers, [&](int i) {
    const std::string log = i % 4 == 3 ? "other" : "shared";  // two of eight save another log
    for (int n = 0; n < kEach; ++n) {
      const uint64_t seq = static_cast<uint64_t>(n * kSavers + i + 1);
      if (!heads(i).Save(log, {seq, "mac" + std::to_string(seq), "seal" + std::to_string(seq)}).ok()) ++failed;
    }
  });
  EXPECT_EQ(failed.load(), 0);
  const uint64_t top = kSavers * kEach;               // saved by i = 7: "other"
  const uint64_t shared_top = top - 1;                // by i = 6
  for (auto [log, want] : {std::pair<std::string, uint64_t>{"other", top}, {"shared", shared_top}}) {
    auto head = heads(0).Load(log);
    ASSERT_TRUE(head.ok() && head->has_value()) << log;
    EXPECT_EQ((*head)->seq, want) << log;
    EXPECT_EQ((*head)->mac, "mac" + std::to_string(want));
    EXPECT_EQ((*head)->seal, "seal" + std::to_string(want));
  }
}

// The head kept from before heads were keyed goes to the first log that
// claims it, once; a log that has its own keeps it.
TEST_P(AuditRepositoryContract, TheCarriedOverHeadIsClaimedByOneLogOnce) {
  EXPECT_FALSE(*heads(0).Claim("log-a"));  // nothing carried over
  ASSERT_TRUE(ExecSql(inst_[0], "INSERT INTO audit_head(log_id, seq, mac, seal, updated_at) "
                                "VALUES('', 7, 'legacy7', 'legacy-seal7', '2026-01-01T00:00:00.000Z')").ok());
  EXPECT_EQ(heads(1).Load(kLegacyAuditLogId)->value().seq, 7u);
  ASSERT_TRUE(heads(0).Save("has-own", {2, "own2", "own-seal2"}).ok());
  EXPECT_FALSE(*heads(0).Claim("has-own"));  // its own head stands
  EXPECT_EQ(heads(0).Load("has-own")->value().mac, "own2");
  EXPECT_EQ(heads(0).Claim("").code(), ErrorCode::kInvalidArgument);
  Result<bool> got[4] = {false, false, false, false};
  AtOnce(4, [&](int i) { got[i] = heads(i).Claim(i % 2 ? "log-b" : "log-a"); });
  int won = 0;
  for (auto& g : got) {
    ASSERT_TRUE(g.ok()) << g.error().message;
    won += *g ? 1 : 0;
  }
  EXPECT_EQ(won, 1);
  const bool a_won = heads(0).Load("log-a")->has_value();
  EXPECT_NE(a_won, heads(0).Load("log-b")->has_value());
  auto head = heads(1).Load(a_won ? "log-a" : "log-b");
  ASSERT_TRUE(head.ok() && head->has_value());
  EXPECT_EQ((*head)->seq, 7u);
  EXPECT_EQ((*head)->mac, "legacy7");
  EXPECT_EQ((*head)->seal, "legacy-seal7");
  EXPECT_FALSE(heads(0).Load(kLegacyAuditLogId)->has_value());
  EXPECT_FALSE(*heads(1).Claim("log-c"));
}

// The FileAuditLog of two instances appending to one file (the server and
// a CLI command beside it, or instances sharing a volume), each saving the
// head through its own pool: the head saved is the chain's last line, and
// the log verifies against it.
TEST_P(AuditRepositoryContract, TwoInstancesAppendingToOneLogLeaveAHeadItVerifiesAgainst) {
  testing::TempDir dir;
  const std::string path = dir.File("audit.log");
  const SecretBytes key(std::string(32, 'k'));
  std::unique_ptr<FileAuditLog> logs[2];
  for (int i = 0; i < 2; ++i) {
    AuditLogOptions o;
    o.path = path;
    o.key = SecretBytes(std::string(32, 'k'));
    o.heads = &heads(i);
    auto log = FileAuditLog::Open(std::move(o), clock());
    ASSERT_TRUE(log.ok()) << log.error().message;
    logs[i] = std::move(log).value();
  }
  constexpr int kEach = 100;
  AtOnce(2, [&](int i) {
    for (int n = 0; n < kEach; ++n) logs[i]->Record(SecretGetEvent("p" + std::to_string(i)));
  });
  auto id = ReadAuditLogId(path);
  ASSERT_TRUE(id.ok() && !id->id.empty() && !id->legacy);
  auto head = heads(1).Load(id->id);
  ASSERT_TRUE(head.ok() && head->has_value());
  EXPECT_EQ((*head)->seq, 2u * kEach);
  auto report = VerifyAuditLog(path, key, heads(0));
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_EQ(report->first_bad_line, 0u) << report->problem;
  EXPECT_EQ(report->last_seq, 2u * kEach);
  EXPECT_EQ(report->log_id, id->id);
}

// Cluster mode: instances on two hosts, each appending to its own log (the
// same AUDIT_LOG_PATH on each), on one registry. Each log verifies clean
// against its own head whichever is longer, and a log cut short is still
// seen while the other's head is higher.
TEST_P(AuditRepositoryContract, TwoLogsOnOneRegistryEachVerifyAgainstTheirOwnHead) {
  testing::TempDir host[2];
  const SecretBytes key(std::string(32, 'k'));
  std::unique_ptr<FileAuditLog> logs[2];
  for (int i = 0; i < 2; ++i) {
    AuditLogOptions o;
    o.path = host[i].File("audit.log");
    o.key = SecretBytes(std::string(32, 'k'));
    o.heads = &heads(i);
    o.origin = std::string(i == 0 ? "host-a" : "host-b") + ":/var/lib/dyad/audit.log";  // one AUDIT_LOG_PATH
    auto log = FileAuditLog::Open(std::move(o), clock());
    ASSERT_TRUE(log.ok()) << log.error().message;
    logs[i] = std::move(log).value();
  }
  AtOnce(2, [&](int i) {
    for (int n = 0; n < (i == 0 ? 30 : 12); ++n) logs[i]->Record(SecretGetEvent(std::to_string(n)));
  });
  auto ids = std::make_pair(ReadAuditLogId(host[0].File("audit.log"))->id, ReadAuditLogId(host[1].File("audit.log"))->id);
  EXPECT_NE(ids.first, ids.second);
  for (int i = 0; i < 2; ++i) {
    auto report = VerifyAuditLog(host[i].File("audit.log"), key, heads(1 - i),
                                 std::string(i == 0 ? "host-a" : "host-b") + ":/var/lib/dyad/audit.log");
    ASSERT_TRUE(report.ok()) << report.error().message;
    EXPECT_EQ(report->problem, "") << "host " << i;
    EXPECT_EQ(report->last_seq, i == 0 ? 30u : 12u);
  }
  // The longer log cut to below the shorter one's length, and the shorter one cut by one line.
  for (auto [i, keep] : {std::pair<int, int>{0, 10}, {1, 11}}) {
    const std::string path = host[i].File("audit.log");
    std::ifstream in(path);
    std::vector<std::string> lines;
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    in.close();
    std::ofstream out(path, std::ios::trunc);
    for (int n = 0; n < keep; ++n) out << lines[n] << "\n";
  }
  for (int i = 0; i < 2; ++i) {
    auto report = VerifyAuditLog(host[i].File("audit.log"), key, heads(i),
                                 std::string(i == 0 ? "host-a" : "host-b") + ":/var/lib/dyad/audit.log");
    ASSERT_TRUE(report.ok()) << report.error().message;
    EXPECT_NE(report->problem.find(i == 0 ? "the last 20 line(s) were removed" : "the last 1 line(s) were removed"),
              std::string::npos)
        << "host " << i << ": " << report->problem;
  }
}

// A registry of schema 11 (one head row, written by the release before
// heads were keyed) migrated: the head is still the existing log's. Verify
// finds it (reading only), a cut tail is seen, and the log's next writer
// takes it as its own and goes on from it.
TEST_P(AuditRepositoryContract, TheHeadOfSchemaElevenStaysTheExistingLogs) {
  testing::TempDir dir;
  const std::string path = dir.File("audit.log");
  const SecretBytes key(std::string(32, 'k'));
  const AuditHead old = testing::WriteLegacyAuditLog(path, key, 6);
  ASSERT_TRUE(ExecSql(inst_[0], "DROP TABLE audit_head; DELETE FROM schema_migrations WHERE version >= 12; "
                                "CREATE TABLE audit_head(id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, "
                                "mac TEXT NOT NULL, seal TEXT NOT NULL, updated_at TEXT NOT NULL); "
                                "INSERT INTO audit_head VALUES(1, 6, '" + old.mac + "', '" + old.seal +
                                "', '2026-01-01T00:00:00.000Z')").ok());
  auto migrated = NewInstance();  // migrates at open
  ASSERT_TRUE(migrated.ok()) << migrated.error().message;
  EXPECT_EQ(migrated->schema_version, static_cast<int>(Migrations().size()));
  auto& store = *migrated->audit_heads;
  auto report = VerifyAuditLog(path, key, store);
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_EQ(report->problem, "");
  EXPECT_EQ(report->last_seq, 6u);
  EXPECT_EQ(store.Load(kLegacyAuditLogId)->value().mac, old.mac);  // verify wrote nothing
  {
    // The tail cut before any writer ran: the carried-over head tells.
    std::ifstream in(path);
    std::vector<std::string> lines;
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    in.close();
    std::ofstream(dir.File("cut.log")) << lines[0] << "\n" << lines[1] << "\n";
    auto cut = VerifyAuditLog(dir.File("cut.log"), key, store);
    ASSERT_TRUE(cut.ok());
    EXPECT_NE(cut->problem.find("the last 4 line(s) were removed"), std::string::npos) << cut->problem;
  }
  {
    AuditLogOptions o;
    o.path = path;
    o.key = SecretBytes(std::string(32, 'k'));
    o.heads = &heads(1);
    auto log = FileAuditLog::Open(std::move(o), clock());
    ASSERT_TRUE(log.ok());
    (*log)->Record(SecretGetEvent("after the upgrade"));
  }
  EXPECT_FALSE(store.Load(kLegacyAuditLogId)->has_value());  // claimed
  auto id = ReadAuditLogId(path);
  ASSERT_TRUE(id.ok() && id->legacy);
  EXPECT_EQ(store.Load(id->id)->value().seq, 7u);
  report = VerifyAuditLog(path, key, store);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->problem, "");
  EXPECT_EQ(report->last_seq, 7u);
  EXPECT_EQ(report->log_id, id->id);
}

// Issue 14 review: the log written before heads were keyed is replaced (a
// new chain, or emptied) in the upgrade window, before its first write could
// claim the carried-over head: verify reports that head, which no log
// claimed, instead of never comparing it.
TEST_P(AuditRepositoryContract, AnUnclaimedCarriedOverHeadBesideANewLogIsReported) {
  testing::TempDir dir;
  const std::string path = dir.File("audit.log");
  const SecretBytes key(std::string(32, 'k'));
  ASSERT_TRUE(ExecSql(inst_[0], "INSERT INTO audit_head(log_id, seq, mac, seal, updated_at) "
                                "VALUES('', 7, 'legacy7', 'legacy-seal7', '2026-01-01T00:00:00.000Z')").ok());
  {
    AuditLogOptions o;
    o.path = path;
    o.key = key;
    o.heads = &heads(0);
    auto log = FileAuditLog::Open(std::move(o), clock());
    ASSERT_TRUE(log.ok());
    (*log)->Record(SecretGetEvent("the replacement's first line"));
  }
  auto id = ReadAuditLogId(path);
  ASSERT_TRUE(id.ok() && !id->id.empty() && !id->legacy);
  EXPECT_EQ(heads(1).Load(kLegacyAuditLogId)->value().seq, 7u);  // a new chain claims nothing
  auto report = VerifyAuditLog(path, key, heads(1));
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_NE(report->problem.find("no log has claimed it"), std::string::npos) << report->problem;
  EXPECT_NE(report->problem.find("up to seq 7"), std::string::npos) << report->problem;
  EXPECT_EQ(report->first_bad_line, 1u);
  // An emptied log (no keyed line at all): the same, past its end.
  std::ofstream(path, std::ios::trunc).close();
  report = VerifyAuditLog(path, key, heads(0));
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_NE(report->problem.find("no log has claimed it"), std::string::npos) << report->problem;
  EXPECT_EQ(report->first_bad_line, 1u);  // lines + 1 of an empty file
  // Once claimed (the legacy log's writer, on another host), nothing is left to report.
  ASSERT_TRUE(heads(0).Claim("the-legacy-log").ok());
  const std::string other = dir.File("other.log");
  std::ofstream(other).close();
  report = VerifyAuditLog(other, key, heads(1));
  ASSERT_TRUE(report.ok()) << report.error().message;
  EXPECT_EQ(report->problem, "");
}

DYAD_INSTANTIATE_ON_REGISTRY_ENGINES(AuditRepositoryContract);

}  // namespace
}  // namespace dyad
