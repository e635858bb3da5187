#include "backends/environment/local_keyring.h"

#include <gtest/gtest.h>

#include "testing/fakes.h"

namespace dyad {
namespace {

using namespace std::chrono_literals;

// Two keyrings on one database stand for two processes: each has its own
// memory, the database is all they share.
class TwoKeyrings : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = *SqliteDb::Open(dir_.File("k.db"));
    a_ = Open();
    b_ = Open();
  }
  std::unique_ptr<KeyManager> Open() {
    auto k = NewLocalKeyring({"k", SecretBytes(std::string(32, 'm')), {}}, db_, DefaultRandom(), clock_);
    EXPECT_TRUE(k.ok()) << k.error().message;
    return std::move(k).value();
  }

  testing::TempDir dir_;
  FakeClock clock_;
  std::shared_ptr<SqliteDb> db_;
  std::unique_ptr<KeyManager> a_, b_;
};

TEST_F(TwoKeyrings, AWriterLearnsAPrimaryMadeElsewhereWithinASecond) {
  ASSERT_EQ(b_->GenerateDataKey()->version, 1u);
  ASSERT_EQ(*a_->Rotate(), 2u);
  clock_.Advance(1s);  // no restart, no decrypt of a v2 blob: only time passes
  auto dk = b_->GenerateDataKey();
  ASSERT_TRUE(dk.ok());
  EXPECT_EQ(dk->version, 2u);
  EXPECT_EQ(b_->Describe()->primary_version, 2u);
  auto back = a_->Decrypt(dk->version, dk->wrapped);
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(*back == dk->plaintext);
}

TEST_F(TwoKeyrings, RetiringStillDecryptsAndItsStateIsReadFromTheDatabase) {
  auto old = b_->GenerateDataKey();
  ASSERT_TRUE(old.ok());
  ASSERT_TRUE(a_->Rotate().ok());
  ASSERT_TRUE(a_->BeginRetire(1).ok());
  // B asks right away (no time passes): the answer comes from the database.
  EXPECT_EQ(*b_->CurrentState(1), "retiring");
  EXPECT_EQ(*b_->CurrentState(2), "active");
  EXPECT_EQ(b_->GenerateDataKey()->version, 2u);  // asking taught B the primary too
  auto opened = b_->Decrypt(1, old->wrapped);     // retiring: still decrypts
  ASSERT_TRUE(opened.ok());
  EXPECT_TRUE(*opened == old->plaintext);
  EXPECT_EQ(a_->BeginRetire(2).code(), ErrorCode::kFailedPrecondition);  // never the primary
  ASSERT_TRUE(a_->Retire(1).ok());
  EXPECT_EQ(*b_->CurrentState(1), "retired");
  EXPECT_EQ(b_->Decrypt(1, old->wrapped).code(), ErrorCode::kFailedPrecondition);
}

}  // namespace
}  // namespace dyad
