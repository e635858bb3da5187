// The environment backend's SecretStore on every registry engine (SQLite
// always, PostgreSQL when DYAD_TEST_PG_URL is set: testing/registry_engines.h):
// what a second gateway instance on the same database does to it. The
// single-store contract (backends/contract_test.cc) runs on both engines too.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "testing/at_once.h"
#include "testing/two_instance_stores.h"

namespace dyad {
namespace {

using testing::AtOnce;

class SecretStoreOnEngines : public testing::TwoInstanceStores {
 protected:
  // A later creation time: a name created again gets a new first revision.
  void Tick() { clock().Advance(std::chrono::microseconds(1)); }
};

TEST_P(SecretStoreOnEngines, OfWritersOnTwoInstancesHoldingOneVersionOneWins) {
  constexpr int kWriters = 8;
  for (int round = 0; round < 10; ++round) {
    const std::string name = Name("p" + std::to_string(round));
    auto v1 = store(0).Create(name, "v1");
    ASSERT_TRUE(v1.ok()) << v1.error().message;
    std::vector<Result<std::string>> got(kWriters, std::string());
    AtOnce(kWriters, [&](int i) { got[i] = store(i).Replace(name, "by-" + std::to_string(i), *v1); });
    int winner = -1;
    for (int i = 0; i < kWriters; ++i) {
      if (got[i].ok()) {
        EXPECT_EQ(winner, -1) << "two writers from one version both replaced";
        winner = i;
      } else {
        EXPECT_EQ(got[i].code(), ErrorCode::kConflict) << got[i].error().message;
      }
    }
    ASSERT_NE(winner, -1);
    auto now = store(1).Get(name);
    ASSERT_TRUE(now.ok()) << now.error().message;
    EXPECT_EQ(now->value, "by-" + std::to_string(winner));
    EXPECT_EQ(now->version, *got[winner]);
  }
}

TEST_P(SecretStoreOnEngines, ACreateRaceStoresOneValue) {
  constexpr int kMakers = 8;
  const std::string name = Name("raced");
  std::vector<Result<std::string>> got(kMakers, std::string());
  AtOnce(kMakers, [&](int i) { got[i] = store(i).Create(name, "by-" + std::to_string(i)); });
  int winner = -1;
  for (int i = 0; i < kMakers; ++i) {
    if (got[i].ok()) {
      EXPECT_EQ(winner, -1) << "two creates of one name both succeeded";
      winner = i;
    } else {
      EXPECT_EQ(got[i].code(), ErrorCode::kAlreadyExists) << got[i].error().message;
    }
  }
  ASSERT_NE(winner, -1);
  EXPECT_EQ(store(1).Get(name)->value, "by-" + std::to_string(winner));
}

// A rotation's conditional delete racing a credential write from one read:
// exactly one happens, and the other gets what it would get after it.
TEST_P(SecretStoreOnEngines, AConditionalDeleteAndAReplaceFromOneVersionDoNotBothHappen) {
  for (int round = 0; round < 10; ++round) {
    const std::string name = Name("d" + std::to_string(round));
    auto v1 = store(0).Create(name, "v1");
    ASSERT_TRUE(v1.ok()) << v1.error().message;
    Status deleted = OkStatus();
    Result<std::string> replaced = std::string();
    AtOnce(2, [&](int i) {
      if (i == 0) deleted = store(0).DeleteIfVersion(name, *v1);
      else replaced = store(1).Replace(name, "v2", *v1);
    });
    ASSERT_NE(deleted.ok(), replaced.ok()) << "round " << round;
    if (deleted.ok()) {
      EXPECT_EQ(replaced.code(), ErrorCode::kNotFound) << replaced.error().message;
      EXPECT_EQ(store(1).Get(name).code(), ErrorCode::kNotFound);
    } else {
      EXPECT_EQ(deleted.code(), ErrorCode::kConflict) << deleted.error().message;
      EXPECT_EQ(store(0).Get(name)->value, "v2");
    }
  }
}

// Two re-encryption batches over the same secrets in opposite orders, on
// two instances, while single writers also replace some: no deadlock, no
// error, and every secret replaced by exactly one of the writers holding
// the version read.
TEST_P(SecretStoreOnEngines, CrossedBatchesOnTwoInstancesReplaceEachSecretOnce) {
  constexpr int kSecrets = 60;
  for (int round = 0; round < 5; ++round) {
    std::vector<SecretStore::Swap> forward, backward;
    std::vector<std::string> names;
    for (int s = 0; s < kSecrets; ++s) {
      const std::string name = Name("r" + std::to_string(round) + "-" + std::to_string(s));
      auto v = store(0).Create(name, "old");
      ASSERT_TRUE(v.ok()) << v.error().message;
      names.push_back(name);
      forward.push_back(SecretStore::Swap{name, *v, "batch-0"});
      backward.insert(backward.begin(), SecretStore::Swap{name, *v, "batch-1"});
    }
    Result<std::vector<bool>> batch[2] = {std::vector<bool>(), std::vector<bool>()};
    std::vector<Result<std::string>> single(kSecrets / 6, std::string());
    AtOnce(2 + static_cast<int>(single.size()), [&](int i) {
      if (i < 2) {
        batch[i] = store(i).ReplaceMany(i == 0 ? forward : backward);
      } else {
        const int s = (i - 2) * 6;
        single[i - 2] = store(i).Replace(names[s], "single", forward[s].version);
      }
    });
    ASSERT_TRUE(batch[0].ok()) << batch[0].error().message;
    ASSERT_TRUE(batch[1].ok()) << batch[1].error().message;
    ASSERT_EQ(batch[0]->size(), static_cast<size_t>(kSecrets));
    auto now = store(1).GetMany(names);
    ASSERT_TRUE(now.ok()) << now.error().message;
    for (int s = 0; s < kSecrets; ++s) {
      const bool by0 = (*batch[0])[s], by1 = (*batch[1])[kSecrets - 1 - s];
      const bool by_single = s % 6 == 0 && s / 6 < static_cast<int>(single.size()) && single[s / 6].ok();
      EXPECT_EQ(by0 + by1 + by_single, 1) << names[s];
      ASSERT_TRUE((*now)[s].ok());
      EXPECT_EQ((*now)[s]->value, by0 ? "batch-0" : by1 ? "batch-1" : "single") << names[s];
      EXPECT_NE((*now)[s]->version, forward[s].version);
    }
  }
}

TEST_P(SecretStoreOnEngines, ABatchDecidesItsItemsInOrder) {
  const std::string a = Name("a"), b = Name("b");
  auto va = store(0).Create(a, "a1");
  auto vb = store(0).Create(b, "b1");
  ASSERT_TRUE(va.ok() && vb.ok());
  // The second item's version is no longer stored once the first wrote; a
  // missing name and a token of no store are not replaced either.
  auto many = store(1).ReplaceMany({{a, *va, "a2"}, {a, *va, "a2-again"}, {b, "not-a-version", "b2"},
                                    {Name("missing"), *va, "x"}, {b, *vb, "b2"}});
  ASSERT_TRUE(many.ok()) << many.error().message;
  EXPECT_EQ(*many, (std::vector<bool>{true, false, false, false, true}));
  auto now = store(0).GetMany({a, b, Name("missing"), a});
  ASSERT_TRUE(now.ok()) << now.error().message;
  ASSERT_EQ(now->size(), 4u);
  EXPECT_EQ((*now)[0]->value, "a2");
  EXPECT_EQ((*now)[1]->value, "b2");
  EXPECT_EQ((*now)[2].code(), ErrorCode::kNotFound);
  EXPECT_EQ((*now)[3]->value, "a2");
  // Each replaced version moved on: the old tokens fence nothing new.
  EXPECT_EQ(store(0).Replace(a, "stale", *va).code(), ErrorCode::kConflict);
  auto again = store(0).Replace(a, "a3", (*now)[0]->version);
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(store(1).Get(a)->version, *again);
  auto empty = store(0).ReplaceMany({});
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

// A batch whose names are all different (a re-encryption batch: one
// statement on PostgreSQL): of secrets written meanwhile through the other
// instance, deleted, deleted and created again, or named with a token of no
// store, none is replaced; the rest are, each version moved on once.
TEST_P(SecretStoreOnEngines, ABatchOfDistinctNamesWritesOnlyTheVersionsStillStored) {
  std::vector<std::string> names;
  std::vector<SecretStore::Swap> swaps;
  for (int i = 0; i < 12; ++i) {
    names.push_back(Name("d" + std::to_string(i)));
    auto v = store(0).Create(names.back(), "old-" + std::to_string(i));
    ASSERT_TRUE(v.ok()) << v.error().message;
    swaps.push_back(SecretStore::Swap{names.back(), *v, "new-" + std::to_string(i)});
  }
  std::reverse(swaps.begin(), swaps.end());  // not in name order: the answer follows the caller's
  // names[0] written meanwhile, names[1] deleted, names[2] deleted and created again.
  ASSERT_TRUE(store(1).Replace(names[0], "theirs", swaps[11].version).ok());
  ASSERT_TRUE(store(1).Delete(names[1]).ok());
  ASSERT_TRUE(store(1).Delete(names[2]).ok());
  Tick();
  ASSERT_TRUE(store(1).Create(names[2], "again").ok());
  swaps[8].version = "not-a-version";  // names[3]
  swaps.push_back(SecretStore::Swap{Name("never-created"), swaps[4].version, "x"});
  auto many = store(0).ReplaceMany(swaps);
  ASSERT_TRUE(many.ok()) << many.error().message;
  ASSERT_EQ(many->size(), swaps.size());
  for (size_t k = 0; k < swaps.size(); ++k) {
    const bool expected = k < 8;  // names[11] … names[4]
    EXPECT_EQ((*many)[k], expected) << swaps[k].name;
  }
  auto now = store(1).GetMany(names);
  ASSERT_TRUE(now.ok()) << now.error().message;
  EXPECT_EQ((*now)[0]->value, "theirs");
  EXPECT_EQ((*now)[1].code(), ErrorCode::kNotFound);
  EXPECT_EQ((*now)[2]->value, "again");
  EXPECT_EQ((*now)[3]->value, "old-3");
  for (int i = 4; i < 12; ++i) {
    EXPECT_EQ((*now)[i]->value, "new-" + std::to_string(i)) << names[i];
    // One write moved the version on: the token read before it fences nothing, the new one does.
    EXPECT_EQ(store(1).Replace(names[i], "stale", swaps[11 - i].version).code(), ErrorCode::kConflict);
    EXPECT_TRUE(store(1).Replace(names[i], "fresh", (*now)[i]->version).ok()) << names[i];
  }
  EXPECT_EQ(store(0).Get(Name("never-created")).code(), ErrorCode::kNotFound);
}

TEST_P(SecretStoreOnEngines, PutAndOverwriteMoveTheVersionAndTheListedTime) {
  const std::string name = Name("p");
  ASSERT_TRUE(store(0).Put(name, "one").ok());
  auto first = store(1).Get(name);
  ASSERT_TRUE(first.ok()) << first.error().message;
  clock().Advance(std::chrono::hours(1));
  ASSERT_TRUE(store(1).Put(name, "two").ok());
  auto second = store(0).Get(name);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->value, "two");
  EXPECT_NE(second->version, first->version);
  EXPECT_EQ(store(0).Replace(name, "stale", first->version).code(), ErrorCode::kConflict);
  clock().Advance(std::chrono::hours(1));
  auto third = store(0).Overwrite(name, "three");
  ASSERT_TRUE(third.ok()) << third.error().message;
  EXPECT_NE(*third, second->version);
  EXPECT_EQ(store(1).Get(name)->version, *third);
  auto listed = store(1).List();
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].changed_at, clock().WallNow());
}

TEST_P(SecretStoreOnEngines, ATokenFromBeforeADeleteOnAnotherInstanceFencesNothing) {
  const std::string name = Name("aba");
  auto first = store(0).Create(name, "first");
  ASSERT_TRUE(first.ok()) << first.error().message;
  ASSERT_TRUE(store(1).DeleteNow(name).ok());
  EXPECT_EQ(store(0).DeleteIfVersion(name, *first).code(), ErrorCode::kConflict);
  Tick();
  auto second = store(1).Create(name, "second");
  ASSERT_TRUE(second.ok()) << second.error().message;
  EXPECT_NE(*first, *second);
  EXPECT_EQ(store(0).Replace(name, "stale", *first).code(), ErrorCode::kConflict);
  EXPECT_EQ(store(0).DeleteIfVersion(name, *first).code(), ErrorCode::kConflict);
  EXPECT_EQ(store(0).Get(name)->value, "second");
  EXPECT_EQ(store(0).DeleteIfVersion(name, "garbage").code(), ErrorCode::kConflict);
  ASSERT_TRUE(store(0).DeleteIfVersion(name, *second).ok());
  EXPECT_EQ(store(1).Delete(name).code(), ErrorCode::kNotFound);
}

// SECRETS_PREFIX may hold '_' (a LIKE wildcard): List() takes only its own
// prefix's provider secrets, in byte order.
TEST_P(SecretStoreOnEngines, ListTakesItsOwnPrefixLiterallyInByteOrder) {
  auto mine = inst_[0].secret_store("team_a");
  auto other = inst_[1].secret_store("teamXa");
  auto percent = inst_[1].secret_store("team%");
  for (const std::string id : {"b", "B", "\xc3\xa9", "a", "a-1"}) ASSERT_TRUE(mine->Create(mine->SecretName(id), "v").ok());
  ASSERT_TRUE(other->Create(other->SecretName("x"), "v").ok());
  ASSERT_TRUE(percent->Create(percent->SecretName("y"), "v").ok());
  ASSERT_TRUE(mine->Create(mine->ProbeName("health"), "v").ok());
  auto listed = mine->List();
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  std::vector<std::string> ids;
  for (const auto& l : *listed) ids.push_back(mine->ProviderIdOf(l.name).value_or("<not mine: " + l.name + ">"));
  EXPECT_EQ(ids, (std::vector<std::string>{"B", "a", "a-1", "b", "\xc3\xa9"}));
  auto theirs = percent->List();
  ASSERT_TRUE(theirs.ok());
  ASSERT_EQ(theirs->size(), 1u);
  EXPECT_EQ((*theirs)[0].name, percent->SecretName("y"));
}

// A NUL cannot be stored in PostgreSQL text: there the write is refused
// with a message naming the NUL (never the value); SQLite keeps it whole.
// Never cut short: the part before the NUL is never what is stored or read.
TEST_P(SecretStoreOnEngines, NulBytesInNamesAndValuesAreKeptWholeOrRefusedNeverCut) {
  const std::string cut = Name("p1");
  const std::string nul_name = cut + std::string("\0evil", 5);
  auto made = store(0).Create(nul_name, "v");
  if (made.ok()) {
    EXPECT_EQ(store(1).Get(nul_name)->value, "v");
  } else {
    EXPECT_EQ(made.code(), ErrorCode::kInvalidArgument) << made.error().message;
    EXPECT_NE(made.error().message.find("NUL"), std::string::npos) << made.error().message;
    EXPECT_EQ(store(1).Get(nul_name).code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(store(1).Put(nul_name, "v").code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(store(1).Delete(nul_name).code(), ErrorCode::kInvalidArgument);
    auto many = store(1).GetMany({nul_name, cut});
    ASSERT_TRUE(many.ok()) << many.error().message;
    EXPECT_EQ((*many)[0].code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ((*many)[1].code(), ErrorCode::kNotFound);
  }
  EXPECT_EQ(store(1).Get(cut).code(), ErrorCode::kNotFound) << "the name was cut at its NUL";

  const std::string secret_value = std::string("sk-live-0123456789\0", 19) + "after-the-nul";
  auto v1 = store(0).Create(cut, "clean");
  ASSERT_TRUE(v1.ok()) << v1.error().message;
  auto with_nul = store(1).Create(Name("p2"), secret_value);
  auto replaced = store(1).Replace(cut, secret_value, *v1);
  if (with_nul.ok()) {
    EXPECT_EQ(store(0).Get(Name("p2"))->value, secret_value);
    ASSERT_TRUE(replaced.ok()) << replaced.error().message;
    EXPECT_EQ(store(0).Get(cut)->value, secret_value);
    return;
  }
  for (const Error& e : {with_nul.error(), replaced.error()}) {
    EXPECT_EQ(e.code, ErrorCode::kInvalidArgument) << e.message;
    EXPECT_NE(e.message.find("NUL"), std::string::npos) << e.message;
    EXPECT_EQ(e.message.find("sk-live"), std::string::npos) << "the value is in the error: " << e.message;
  }
  EXPECT_EQ(store(0).Get(Name("p2")).code(), ErrorCode::kNotFound);
  EXPECT_EQ(store(0).Overwrite(cut, secret_value).code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(store(0).Put(cut, secret_value).code(), ErrorCode::kInvalidArgument);
  // A batch with one such value writes nothing.
  auto many = store(0).ReplaceMany({{Name("p3"), *v1, "x"}, {cut, *v1, secret_value}});
  ASSERT_FALSE(many.ok()) << "a batch with a NUL value was written";
  EXPECT_EQ(many.code(), ErrorCode::kInvalidArgument);
  auto kept = store(0).Get(cut);
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(kept->value, "clean");
  EXPECT_EQ(kept->version, *v1);
}

TEST_P(SecretStoreOnEngines, VeryLongValuesRoundTripAndVeryLongNamesAreKeptOrRefused) {
  std::string big(8 << 20, 'x');  // 8 MiB, with every ASCII byte but NUL somewhere in it
  for (int i = 1; i < 128; ++i) big[static_cast<size_t>(i) * 4099] = static_cast<char>(i);
  const std::string name = Name("big");
  auto v = store(0).Create(name, big);
  ASSERT_TRUE(v.ok()) << v.error().message;
  auto got = store(1).Get(name);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_TRUE(got->value == big) << "an 8 MiB value came back " << got->value.size() << " bytes";
  auto many = store(1).ReplaceMany({{name, got->version, big + "!"}});
  ASSERT_TRUE(many.ok()) << many.error().message;
  EXPECT_TRUE(store(0).Get(name)->value == big + "!");

  const std::string long_name = Name(std::string(64 * 1024, 'n'));
  auto made = store(0).Create(long_name, "v");
  if (made.ok()) {
    EXPECT_EQ(store(1).Get(long_name)->value, "v");
  } else {
    EXPECT_EQ(made.code(), ErrorCode::kInvalidArgument) << made.error().message;
    EXPECT_NE(made.error().message.find("bytes"), std::string::npos) << made.error().message;
    EXPECT_EQ(store(1).Get(long_name).code(), ErrorCode::kNotFound);
  }
}

DYAD_INSTANTIATE_ON_REGISTRY_ENGINES(SecretStoreOnEngines);

}  // namespace
}  // namespace dyad
