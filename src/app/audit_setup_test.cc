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

TEST_F(AuditKeyTest, MovesToAnotherKeyManagerAsTheSameKey) {
  auto made = LoadAuditKey(*audit_keys_, *keys_, clock_, true);
  ASSERT_TRUE(made.ok());
  auto target = std::move(testing::NewMemoryKeyManager("other", DefaultRandom())).value();
  EXPECT_FALSE(LoadAuditKey(*audit_keys_, *target, clock_, false).ok());
  ASSERT_TRUE(MoveAuditKeyTo(*audit_keys_, *keys_, *target).ok());
  auto moved = LoadAuditKey(*audit_keys_, *target, clock_, false);
  ASSERT_TRUE(moved.ok()) << moved.error().message;
  EXPECT_TRUE(*made == *moved);  // the chain goes on under the same key
  EXPECT_EQ((*audit_keys_->Get())->kind, "memory");
  EXPECT_EQ((*audit_keys_->Get())->key_id, "other");
  EXPECT_FALSE(LoadAuditKey(*audit_keys_, *keys_, clock_, false).ok());
  EXPECT_TRUE(MoveAuditKeyTo(*audit_keys_, *keys_, *target).ok());  // resumed: already there
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
  EXPECT_FALSE(heads->Load()->has_value());
  ASSERT_TRUE(heads->Save({5, "aa", "s5"}).ok());
  ASSERT_TRUE(heads->Save({3, "bb", "s3"}).ok());  // a slower writer's older head
  auto head = heads->Load();
  ASSERT_TRUE(head.ok() && head->has_value());
  EXPECT_EQ((*head)->seq, 5u);
  EXPECT_EQ((*head)->mac, "aa");
  EXPECT_EQ((*head)->seal, "s5");
}

}  // namespace
}  // namespace dyad
