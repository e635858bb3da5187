// The environment backend's SecretStore on PostgreSQL, while a batch waits
// on a row lock (issue 14): a re-encryption batch of distinct names is one
// statement that locks its rows in name order and then writes each only if
// its revision is still the one the caller read. These tests hold a row in
// another transaction until the batch is seen waiting on it (pg_locks, no
// sleeping for time), and cross batches in opposite orders. SQLite
// serialises writers (no row locks), so they are skipped there.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "testing/at_once.h"
#include "testing/two_instance_stores.h"

namespace dyad {
namespace {

using testing::AtOnce;

class SecretStoreOnEnginesLockWaits : public testing::TwoInstanceStores {
 protected:
  void SetUp() override {
    if (GetParam() != "postgresql") GTEST_SKIP() << "row locks are PostgreSQL's";
    TwoInstanceStores::SetUp();
  }

  // Polls (bounded) until a backend is blocked by `holder_pid`'s locks.
  bool SomeoneWaitsOn(int64_t holder_pid) {
    return Polled(inst_[1], "SELECT count(*) FROM pg_stat_activity WHERE " + std::to_string(holder_pid) +
                  " = ANY(pg_blocking_pids(pid))", 1);
  }
  // Polls (bounded) until `count` backends on this database wait on a lock.
  bool BackendsWaitOnLocks(int count) { return RegistryContractTest::BackendsWaitOnLocks(inst_[1], count); }

  // The secret store of a new instance whose settled reads wait up to
  // `wait` (testing/registry_engines.h, NewInstanceSettlingWithin).
  std::unique_ptr<SecretStore> StoreSettlingWithin(std::chrono::milliseconds wait) {
    auto made = NewInstanceSettlingWithin(wait);
    EXPECT_TRUE(made.ok()) << made.error().message;
    if (!made.ok()) return nullptr;
    extra_ = std::move(made).value();
    return extra_.secret_store("dyad-gateway");
  }

  // GetSettled of `name` (on an instance that would wait a minute) while
  // `cut`'s transaction is open; once the read is seen waiting, `cut` ends
  // it with `end` (COMMIT or ROLLBACK). What the read got; a failure if it
  // never waited.
  Result<StoredSecret> SettledReadWhileOpen(PgConnection& cut, const std::string& name, const std::string& end) {
    std::unique_ptr<SecretStore> patient = StoreSettlingWithin(std::chrono::seconds(60));
    if (!patient) return MakeError(ErrorCode::kInternal, "no instance");
    Result<StoredSecret> settled = MakeError(ErrorCode::kInternal, "not read");
    std::thread reader([&] { settled = patient->GetSettled(name); });
    const bool waited = BackendsWaitOnLocks(1);
    EXPECT_TRUE(cut.Exec(end).ok());
    reader.join();
    EXPECT_TRUE(waited) << "GetSettled never waited for the write in flight";
    return settled;
  }

 private:
  testing::RegistryInstance extra_;  // StoreSettlingWithin's (one at a time)
};

// What the holder of one row's lock does before letting go.
enum class Holder { kCommitsAWrite, kRollsBack, kCommitsADelete };

// A batch over five secrets, one of them (the middle one in name order, so
// rows before and after it are locked too) held by another connection that
// wrote or deleted it: the batch waits, then writes the other four and
// leaves the held one as the holder left it; after a rollback it writes all.
TEST_P(SecretStoreOnEnginesLockWaits, ABatchWaitingOnAHeldRowNeverOverwritesWhatTheHolderCommitted) {
  for (Holder holder : {Holder::kCommitsAWrite, Holder::kRollsBack, Holder::kCommitsADelete}) {
    SCOPED_TRACE(static_cast<int>(holder));
    const std::string round = std::to_string(static_cast<int>(holder));
    std::vector<std::string> names;
    std::vector<SecretStore::Swap> swaps;
    for (int i = 0; i < 5; ++i) {
      names.push_back(Name("w" + round + "-" + std::to_string(i)));
      auto v = store(0).Create(names.back(), "old-" + std::to_string(i));
      ASSERT_TRUE(v.ok()) << v.error().message;
      swaps.push_back(SecretStore::Swap{names.back(), *v, "new-" + std::to_string(i)});
    }
    std::reverse(swaps.begin(), swaps.end());  // the caller's order is not the name order
    const std::string& held = names[2];        // swaps[2]

    auto conn = inst_[1].postgresql->ConnectDedicated();
    ASSERT_TRUE(conn.ok()) << conn.error().message;
    PgConnection& other = **conn;
    auto pid = other.Query("SELECT pg_backend_pid()");
    ASSERT_TRUE(pid.ok()) << pid.error().message;
    const int64_t holder_pid = pid->Int(0, 0);
    ASSERT_TRUE(other.Exec("BEGIN").ok());
    auto wrote = holder == Holder::kCommitsADelete
                     ? other.Query("DELETE FROM secrets WHERE name = $1", {held})
                     : other.Query("UPDATE secrets SET value = 'theirs', revision = revision + 1 WHERE name = $1",
                                   {held});
    ASSERT_TRUE(wrote.ok()) << wrote.error().message;
    ASSERT_EQ(wrote->Affected(), 1);

    std::atomic<bool> returned{false};
    Result<std::vector<bool>> many = std::vector<bool>();
    std::thread batch([&] {
      many = store(0).ReplaceMany(swaps);
      returned = true;
    });
    const bool waited = SomeoneWaitsOn(holder_pid);
    EXPECT_TRUE(waited) << "the batch never waited on the held row";
    EXPECT_FALSE(returned.load()) << "the batch returned while a row of it was held";
    EXPECT_TRUE(other.Exec(holder == Holder::kRollsBack ? "ROLLBACK" : "COMMIT").ok());
    batch.join();

    ASSERT_TRUE(many.ok()) << many.error().message;
    ASSERT_EQ(many->size(), swaps.size());
    const bool held_written = holder == Holder::kRollsBack;
    EXPECT_EQ(*many, (std::vector<bool>{true, true, held_written, true, true}));
    auto now = store(1).GetMany(names);
    ASSERT_TRUE(now.ok()) << now.error().message;
    for (int i = 0; i < 5; ++i) {
      if (i != 2 || held_written) {
        ASSERT_TRUE((*now)[i].ok()) << names[i];
        EXPECT_EQ((*now)[i]->value, "new-" + std::to_string(i)) << names[i];
        EXPECT_NE((*now)[i]->version, swaps[4 - i].version) << names[i];
      } else if (holder == Holder::kCommitsAWrite) {
        ASSERT_TRUE((*now)[i].ok()) << names[i];
        EXPECT_EQ((*now)[i]->value, "theirs") << "the batch overwrote a row written while it waited";
      } else {
        EXPECT_EQ((*now)[i].code(), ErrorCode::kNotFound) << "the batch brought back a row deleted while it waited";
      }
    }
  }
}

// Two batches from one read, over the same secrets in opposite orders (each
// with secrets of its own too), on two instances, many times: never a
// deadlock or any error; each shared secret written by exactly one of them,
// its value that one's; each batch's own secrets all written.
TEST_P(SecretStoreOnEnginesLockWaits, OverlappingBatchesInOppositeOrdersEachWriteEverySharedRowOrNone) {
  constexpr int kShared = 6, kOwn = 2, kRounds = 60;
  for (int round = 0; round < kRounds; ++round) {
    const std::string r = std::to_string(round);
    std::vector<std::string> shared;
    std::vector<SecretStore::Swap> batch[2];
    for (int s = 0; s < kShared; ++s) {
      shared.push_back(Name("o" + r + "-" + std::to_string(s)));
      auto v = store(0).Create(shared.back(), "old");
      ASSERT_TRUE(v.ok()) << v.error().message;
      batch[0].push_back(SecretStore::Swap{shared.back(), *v, "by-0"});
      batch[1].insert(batch[1].begin(), SecretStore::Swap{shared.back(), *v, "by-1"});
    }
    for (int b = 0; b < 2; ++b) {
      for (int k = 0; k < kOwn; ++k) {
        const std::string own = Name("o" + r + "-own" + std::to_string(b) + "-" + std::to_string(k));
        auto v = store(b).Create(own, "old");
        ASSERT_TRUE(v.ok()) << v.error().message;
        const auto at = static_cast<std::ptrdiff_t>((k * 3) % (batch[b].size() + 1));
        batch[b].insert(batch[b].begin() + at, SecretStore::Swap{own, *v, "own"});
      }
    }
    Result<std::vector<bool>> got[2] = {std::vector<bool>(), std::vector<bool>()};
    AtOnce(2, [&](int b) { got[b] = store(b).ReplaceMany(batch[b]); });
    for (int b = 0; b < 2; ++b) {
      ASSERT_TRUE(got[b].ok()) << "round " << round << ": " << got[b].error().message;
      ASSERT_EQ(got[b]->size(), batch[b].size());
    }
    // Which batch wrote each name, by name.
    std::vector<std::string> all;
    auto wrote = [&](const std::string& name, int b) {
      for (size_t k = 0; k < batch[b].size(); ++k) {
        if (batch[b][k].name == name) return static_cast<bool>((*got[b])[k]);
      }
      return false;
    };
    for (const auto& name : shared) all.push_back(name);
    for (int b = 0; b < 2; ++b) {
      for (const auto& swap : batch[b]) {
        if (swap.value == "own") all.push_back(swap.name);
      }
    }
    auto now = store(1).GetMany(all);
    ASSERT_TRUE(now.ok()) << now.error().message;
    for (size_t n = 0; n < all.size(); ++n) {
      ASSERT_TRUE((*now)[n].ok()) << all[n];
      const bool by0 = wrote(all[n], 0), by1 = wrote(all[n], 1);
      if (n < shared.size()) {
        EXPECT_EQ(by0 + by1, 1) << "round " << round << ": " << all[n];
        EXPECT_EQ((*now)[n]->value, by0 ? "by-0" : "by-1") << "round " << round << ": " << all[n];
      } else {
        EXPECT_TRUE(by0 || by1) << "round " << round << ": " << all[n] << " (no one else wrote it)";
        EXPECT_EQ((*now)[n]->value, "own");
      }
    }
    if (HasFailure()) return;
  }
}

// Two batches in opposite orders both queued behind a third transaction
// holding their middle row: when it lets go, each batch must find the rows
// on either side of it free or wait for the other to finish. Locking in
// the callers' orders would deadlock here every time (each holds the rows
// the other needs next); locking in name order never does.
TEST_P(SecretStoreOnEnginesLockWaits, OppositeBatchesQueuedBehindAHeldRowDoNotDeadlock) {
  std::vector<std::string> names;
  std::vector<SecretStore::Swap> batch[2];
  for (int i = 0; i < 7; ++i) {
    names.push_back(Name(std::string("q") + std::to_string(i)));
    auto v = store(0).Create(names.back(), "old");
    ASSERT_TRUE(v.ok()) << v.error().message;
    batch[0].push_back(SecretStore::Swap{names.back(), *v, "by-0"});
    batch[1].insert(batch[1].begin(), SecretStore::Swap{names.back(), *v, "by-1"});
  }
  auto conn = inst_[1].postgresql->ConnectDedicated();
  ASSERT_TRUE(conn.ok()) << conn.error().message;
  PgConnection& other = **conn;
  ASSERT_TRUE(other.Exec("BEGIN").ok());
  auto held = other.Query("SELECT 1 FROM secrets WHERE name = $1 FOR UPDATE", {names[3]});
  ASSERT_TRUE(held.ok()) << held.error().message;
  ASSERT_EQ(held->size(), 1);

  Result<std::vector<bool>> got[2] = {std::vector<bool>(), std::vector<bool>()};
  std::thread batches[2];
  for (int b = 0; b < 2; ++b) batches[b] = std::thread([&, b] { got[b] = store(b).ReplaceMany(batch[b]); });
  EXPECT_TRUE(BackendsWaitOnLocks(2)) << "the two batches never both waited";
  EXPECT_TRUE(other.Exec("ROLLBACK").ok());
  for (auto& t : batches) t.join();

  for (int b = 0; b < 2; ++b) ASSERT_TRUE(got[b].ok()) << "batch " << b << ": " << got[b].error().message;
  auto now = store(1).GetMany(names);
  ASSERT_TRUE(now.ok()) << now.error().message;
  for (size_t i = 0; i < names.size(); ++i) {
    const bool by0 = (*got[0])[i], by1 = (*got[1])[names.size() - 1 - i];
    EXPECT_EQ(by0 + by1, 1) << names[i];
    ASSERT_TRUE((*now)[i].ok()) << names[i];
    EXPECT_EQ((*now)[i]->value, by0 ? "by-0" : "by-1") << names[i];
  }
}

// Reading back a write whose answer was lost: its statement may still run
// on the connection that was cut. GetSettled waits for it to end and reads
// what it left; Get reads the secret from before it.
TEST_P(SecretStoreOnEnginesLockWaits, GetSettledWaitsForAWriteStillRunningElsewhere) {
  auto conn = inst_[1].postgresql->ConnectDedicated();
  ASSERT_TRUE(conn.ok()) << conn.error().message;
  PgConnection& cut = **conn;
  const std::string name = Name("settled");
  ASSERT_TRUE(store(0).Create(name, "before").ok());
  for (const std::string end : {"COMMIT", "ROLLBACK"}) {
    SCOPED_TRACE(end);
    const StoredSecret before = *store(0).Get(name);
    ASSERT_TRUE(cut.Exec("BEGIN").ok());
    ASSERT_TRUE(cut.Query("UPDATE secrets SET value = 'in flight', revision = revision + 1 WHERE name = $1", {name})
                    .ok());
    EXPECT_EQ(store(0).Get(name)->value, before.value);  // a plain read does not wait
    Result<StoredSecret> settled = SettledReadWhileOpen(cut, name, end);
    ASSERT_TRUE(settled.ok()) << settled.error().message;
    EXPECT_EQ(settled->value, end == "COMMIT" ? "in flight" : before.value);
    EXPECT_EQ(settled->version == before.version, end == "ROLLBACK");
  }
  EXPECT_EQ(store(0).GetSettled(Name("nobody")).code(), ErrorCode::kNotFound);
}

// A create still running when its answer was lost (a provider given its
// first credentials): no read sees the row it inserts. GetSettled waits for
// it (a probe insert on the primary key) and reads it once committed, or
// finds nothing once rolled back.
TEST_P(SecretStoreOnEnginesLockWaits, GetSettledWaitsForAnInsertStillRunningElsewhere) {
  auto conn = inst_[1].postgresql->ConnectDedicated();
  ASSERT_TRUE(conn.ok()) << conn.error().message;
  PgConnection& cut = **conn;
  for (const std::string end : {"COMMIT", "ROLLBACK"}) {
    SCOPED_TRACE(end);
    const std::string name = Name("inserting-" + end);
    ASSERT_TRUE(cut.Exec("BEGIN").ok());
    ASSERT_TRUE(cut.Query("INSERT INTO secrets(name, value, updated_at, revision) VALUES($1, 'in flight', '', 7)",
                          {name})
                    .ok());
    EXPECT_EQ(store(0).Get(name).code(), ErrorCode::kNotFound);  // a plain read does not see it
    Result<StoredSecret> settled = SettledReadWhileOpen(cut, name, end);
    if (end == "COMMIT") {
      ASSERT_TRUE(settled.ok()) << settled.error().message;
      EXPECT_EQ(settled->value, "in flight");
      EXPECT_EQ(settled->version, "7");
    } else {
      EXPECT_EQ(settled.code(), ErrorCode::kNotFound);
    }
    EXPECT_EQ(store(0).Get(name).ok(), end == "COMMIT") << "the probe left a row behind, or removed one";
  }
}

// A write that does not end within the wait: kUnavailable (the read-back
// retries it), not an answer about the secret.
TEST_P(SecretStoreOnEnginesLockWaits, GetSettledGivesUpOnAWriteThatDoesNotEnd) {
  auto conn = inst_[1].postgresql->ConnectDedicated();
  ASSERT_TRUE(conn.ok()) << conn.error().message;
  const std::string name = Name("stuck");
  ASSERT_TRUE(store(0).Create(name, "before").ok());
  ASSERT_TRUE((*conn)->Exec("BEGIN").ok());
  ASSERT_TRUE((*conn)->Query("UPDATE secrets SET revision = revision + 1 WHERE name = $1", {name}).ok());
  std::unique_ptr<SecretStore> quick = StoreSettlingWithin(std::chrono::milliseconds(300));
  ASSERT_NE(quick, nullptr);
  // On a thread: a wait that never gave up would otherwise hang the test.
  std::promise<Result<StoredSecret>> read;
  std::future<Result<StoredSecret>> got = read.get_future();
  std::thread reader([&] { read.set_value(quick->GetSettled(name)); });
  const bool gave_up = got.wait_for(std::chrono::seconds(30)) == std::future_status::ready;
  EXPECT_TRUE((*conn)->Exec("ROLLBACK").ok());
  reader.join();
  ASSERT_TRUE(gave_up) << "GetSettled still waited after 30 s";
  Result<StoredSecret> settled = got.get();
  ASSERT_FALSE(settled.ok());
  EXPECT_EQ(settled.code(), ErrorCode::kUnavailable) << settled.error().message;
}

DYAD_INSTANTIATE_ON_REGISTRY_ENGINES(SecretStoreOnEnginesLockWaits);

}  // namespace
}  // namespace dyad
