#include "app/audit_setup.h"

#include <gtest/gtest.h>

#include "backends/environment/local_keyring.h"
#include "core/random.h"
#include "registry/sqlite_audit_repository.h"
#include "registry/sqlite_key_version_repository.h"
#include "testing/fakes.h"
#include "testing/memory_backend.h"

namespace dyad {
namespace {

class AuditKeyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = *SqliteDb::Open(dir_.File("k.db"));
    audit_keys_ = NewSqliteAuditKeyRepository(db_);
    keys_ = GuardAuditKey(std::move(NewLocalKeyring({"k", SecretBytes(std::string(32, 'm')), {}},
                                                    NewSqliteKeyVersionRepository(db_), DefaultRandom(), clock_))
                              .value(),
                          audit_keys_);
  }
  testing::TempDir dir_;
  FakeClock clock_;
  std::shared_ptr<SqliteDb> db_;
  std::shared_ptr<AuditKeyRepository> audit_keys_;
  std::unique_ptr<KeyManager> keys_;
};

TEST_F(AuditKeyTest, MadeOnceAndOpenedAgain) {
  EXPECT_EQ(LoadAuditKey(*audit_keys_, *keys_, clock_, false).code(), ErrorCode::kNotFound);  // verify never makes one
  auto made = LoadAuditKey(*audit_keys_, *keys_, clock_, true);
  ASSERT_TRUE(made.ok()) << made.error().message;
  EXPECT_EQ(made->size(), 32u);
  auto again = LoadAuditKey(*audit_keys_, *keys_, clock_, false);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(*made == *again);
}

TEST_F(AuditKeyTest, MigrationAddsTheTargetsWrappingAndTheSourceKeepsItsOwn) {
  auto made = LoadAuditKey(*audit_keys_, *keys_, clock_, true);
  ASSERT_TRUE(made.ok());
  auto target = std::move(testing::NewMemoryKeyManager("other", DefaultRandom())).value();
  EXPECT_FALSE(LoadAuditKey(*audit_keys_, *target, clock_, false).ok());
  ASSERT_TRUE(AddAuditKeyWrapping(*audit_keys_, *keys_, *target).ok());
  auto moved = LoadAuditKey(*audit_keys_, *target, clock_, false);
  ASSERT_TRUE(moved.ok()) << moved.error().message;
  EXPECT_TRUE(*made == *moved);  // the chain goes on under the same key
  // The source still opens it: its `serve` goes on writing the one chain.
  auto source = LoadAuditKey(*audit_keys_, *keys_, clock_, true);
  ASSERT_TRUE(source.ok()) << source.error().message;
  EXPECT_TRUE(*made == *source);
  EXPECT_TRUE(AddAuditKeyWrapping(*audit_keys_, *keys_, *target).ok());  // resumed: already there
  EXPECT_EQ(audit_keys_->List()->size(), 2u);
  // A second migration from the same source, to another target.
  auto third = std::move(testing::NewMemoryKeyManager("third", DefaultRandom())).value();
  ASSERT_TRUE(AddAuditKeyWrapping(*audit_keys_, *keys_, *third).ok());
  EXPECT_TRUE(*LoadAuditKey(*audit_keys_, *third, clock_, false) == *made);
  auto all = audit_keys_->List();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].kind, "local");
  EXPECT_EQ((*all)[1].key_id, "other");
  EXPECT_EQ((*all)[2].key_id, "third");
  EXPECT_EQ((*all)[2].created_at, (*all)[0].created_at);  // when the key was made, not the wrapping
}

TEST_F(AuditKeyTest, DeletingTheSourceDropsOnlyItsWrapping) {
  auto made = LoadAuditKey(*audit_keys_, *keys_, clock_, true);
  ASSERT_TRUE(made.ok());
  auto target = std::move(testing::NewMemoryKeyManager("other", DefaultRandom())).value();
  EXPECT_FALSE(*DropAuditKeyWrapping(*audit_keys_, *keys_, *target));  // the target holds none: the last stays
  ASSERT_TRUE(LoadAuditKey(*audit_keys_, *keys_, clock_, false).ok());
  ASSERT_TRUE(AddAuditKeyWrapping(*audit_keys_, *keys_, *target).ok());
  EXPECT_TRUE(*DropAuditKeyWrapping(*audit_keys_, *keys_, *target));
  EXPECT_FALSE(*DropAuditKeyWrapping(*audit_keys_, *keys_, *target));  // once
  EXPECT_FALSE(*DropAuditKeyWrapping(*audit_keys_, *target, *keys_));  // never the last one
  EXPECT_TRUE(*LoadAuditKey(*audit_keys_, *target, clock_, false) == *made);
  EXPECT_EQ(LoadAuditKey(*audit_keys_, *keys_, clock_, false).code(), ErrorCode::kFailedPrecondition);
  // Migrating back adds a wrapping for the source again.
  ASSERT_TRUE(AddAuditKeyWrapping(*audit_keys_, *target, *keys_).ok());
  EXPECT_TRUE(*LoadAuditKey(*audit_keys_, *keys_, clock_, false) == *made);
}

TEST_F(AuditKeyTest, AKeyManagerWithoutAWrappingIsToldWhoHoldsOneAndNeverMakesASecondKey) {
  auto target = std::move(testing::NewMemoryKeyManager("other", DefaultRandom())).value();
  auto made = LoadAuditKey(*audit_keys_, *target, clock_, true);
  ASSERT_TRUE(made.ok());
  const std::string wrapped = (*audit_keys_->List())[0].wrapped;
  for (bool create : {false, true}) {
    auto refused = LoadAuditKey(*audit_keys_, *keys_, clock_, create);
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.code(), ErrorCode::kFailedPrecondition);
    const std::string& message = refused.error().message;
    EXPECT_NE(message.find("local key 'k'"), std::string::npos) << message;     // its own
    EXPECT_NE(message.find("memory key 'other'"), std::string::npos) << message;  // who holds it
    EXPECT_NE(message.find("dyad-gateway migrate"), std::string::npos) << message;
    EXPECT_EQ(message.find(wrapped), std::string::npos);
  }
  EXPECT_EQ(audit_keys_->List()->size(), 1u);  // no second chain key
}

TEST_F(AuditKeyTest, ATargetWrappingOfAnotherKeyIsAConflict) {
  ASSERT_TRUE(LoadAuditKey(*audit_keys_, *keys_, clock_, true).ok());
  auto target = std::move(testing::NewMemoryKeyManager("other", DefaultRandom())).value();
  auto other = target->GenerateDataKey();
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(audit_keys_->InsertIfAbsent({"memory", "other", other->version, other->wrapped, "t"}).ok());
  EXPECT_EQ(AddAuditKeyWrapping(*audit_keys_, *keys_, *target).code(), ErrorCode::kConflict);
}

TEST_F(AuditKeyTest, TheCheckBeforeACopyStoresNothing) {
  ASSERT_TRUE(LoadAuditKey(*audit_keys_, *keys_, clock_, true).ok());
  auto target = std::move(testing::NewMemoryKeyManager("other", DefaultRandom())).value();
  EXPECT_TRUE(CheckAuditKeyWrapping(*audit_keys_, *keys_, *target).ok());
  EXPECT_EQ(audit_keys_->List()->size(), 1u);  // only the source's
  // A target wrapping that opens to another key fails the check too.
  auto other = target->GenerateDataKey();
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(audit_keys_->InsertIfAbsent({"memory", "other", other->version, other->wrapped, "t"}).ok());
  EXPECT_EQ(CheckAuditKeyWrapping(*audit_keys_, *keys_, *target).code(), ErrorCode::kConflict);
}

TEST_F(AuditKeyTest, NothingToAddWhenNoKeyWasMade) {
  auto target = std::move(testing::NewMemoryKeyManager("other", DefaultRandom())).value();
  EXPECT_TRUE(AddAuditKeyWrapping(*audit_keys_, *keys_, *target).ok());
  EXPECT_TRUE(audit_keys_->List()->empty());
}

TEST_F(AuditKeyTest, ARotationMovesOnlyItsOwnWrapping) {
  auto made = LoadAuditKey(*audit_keys_, *keys_, clock_, true);
  ASSERT_TRUE(made.ok());
  auto target = std::move(testing::NewMemoryKeyManager("other", DefaultRandom())).value();
  ASSERT_TRUE(AddAuditKeyWrapping(*audit_keys_, *keys_, *target).ok());
  const AuditKeyRecord before = **audit_keys_->Get({"memory", "other"});
  ASSERT_EQ(*keys_->Rotate(), 2u);
  ASSERT_TRUE(keys_->Retire(1).ok());
  const AuditKeyRecord source = **audit_keys_->Get({"local", "k"});
  EXPECT_EQ(source.key_version, 2u);
  const AuditKeyRecord after = **audit_keys_->Get({"memory", "other"});
  EXPECT_EQ(after.key_version, before.key_version);
  EXPECT_EQ(after.wrapped, before.wrapped);
  EXPECT_TRUE(*LoadAuditKey(*audit_keys_, *keys_, clock_, false) == *made);
  EXPECT_TRUE(*LoadAuditKey(*audit_keys_, *target, clock_, false) == *made);
}

TEST_F(AuditKeyTest, SurvivesRotationAndRetirementOfItsVersion) {
  auto made = LoadAuditKey(*audit_keys_, *keys_, clock_, true);
  ASSERT_TRUE(made.ok());
  // What a key rotation does: a new primary, then the old version retired
  // because no stored secret uses it.
  ASSERT_EQ(*keys_->Rotate(), 2u);
  ASSERT_TRUE(keys_->Retire(1).ok());
  auto after = LoadAuditKey(*audit_keys_, *keys_, clock_, false);
  ASSERT_TRUE(after.ok()) << after.error().message;
  EXPECT_TRUE(*made == *after);
  ASSERT_EQ(*keys_->Rotate(), 3u);
  ASSERT_TRUE(keys_->Retire(2).ok());
  EXPECT_TRUE(*LoadAuditKey(*audit_keys_, *keys_, clock_, false) == *made);
}

TEST_F(AuditKeyTest, WriterMovesItToThePrimaryAtStart) {
  auto made = LoadAuditKey(*audit_keys_, *keys_, clock_, true);
  ASSERT_EQ(*keys_->Rotate(), 2u);
  ASSERT_TRUE(LoadAuditKey(*audit_keys_, *keys_, clock_, true).ok());
  auto version = db_->With<int64_t>([](SqliteConnection& c) -> Result<int64_t> {
    DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare("SELECT key_version FROM audit_key"));
    DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
    return row ? st.Int(0) : -1;
  });
  EXPECT_EQ(*version, 2);
  EXPECT_TRUE(*LoadAuditKey(*audit_keys_, *keys_, clock_, false) == *made);
}

TEST_F(AuditKeyTest, HeadStoreNeverMovesBack) {
  auto heads = NewSqliteAuditHeadStore(db_, clock_);
  EXPECT_FALSE(heads->Load("log")->has_value());
  ASSERT_TRUE(heads->Save("log", {5, "aa", "s5"}).ok());
  ASSERT_TRUE(heads->Save("log", {3, "bb", "s3"}).ok());  // a slower writer's older head
  auto head = heads->Load("log");
  ASSERT_TRUE(head.ok() && head->has_value());
  EXPECT_EQ((*head)->seq, 5u);
  EXPECT_EQ((*head)->mac, "aa");
  EXPECT_EQ((*head)->seal, "s5");
}

}  // namespace
}  // namespace dyad
