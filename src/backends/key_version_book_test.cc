#include "backends/key_version_book.h"

#include <gtest/gtest.h>

#include <thread>

#include "registry/sqlite_db.h"
#include "registry/sqlite_key_version_repository.h"
#include "testing/fakes.h"
#include "testing/held_key_versions.h"

namespace dyad {
namespace {

class KeyVersionBookTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = *SqliteDb::Open(dir_.File("k.db"));
    repo_ = NewSqliteKeyVersionRepository(db_);
    ASSERT_TRUE(repo_->CreateFirst("row", Record("m1")).ok());
  }
  static KeyVersionRecord Record(const std::string& material) {
    return KeyVersionRecord{0, "active", "2026-03-05T10:00:00Z", material, 0};
  }
  // Another instance adds a version to the registry.
  void AddVersion(const std::string& material) {
    ASSERT_TRUE(repo_->Advance("row", [&](const std::optional<KeyVersionRecord>&) -> Result<KeyVersionChange> {
                        KeyVersionChange change;
                        change.next = Record(material);
                        return change;
                      }).ok());
  }

  testing::TempDir dir_;
  FakeClock clock_;
  std::shared_ptr<SqliteDb> db_;
  std::shared_ptr<KeyVersionRepository> repo_;
};

TEST_F(KeyVersionBookTest, ThePrimaryIsTheHighestVersionAndLivePrimarySeesAnotherInstancesWithinHalfASecond) {
  KeyVersionBook book(repo_, "row", clock_, "KMS key k");
  ASSERT_TRUE(book.Reload().ok());
  EXPECT_EQ(book.Primary(), 1u);
  EXPECT_EQ(book.Find(1)->material, "m1");
  AddVersion("m2");
  EXPECT_EQ(*book.LivePrimary(), 1u);  // read again only after 500 ms
  clock_.Advance(std::chrono::milliseconds(499));
  EXPECT_EQ(*book.LivePrimary(), 1u);
  clock_.Advance(std::chrono::milliseconds(1));
  EXPECT_EQ(*book.LivePrimary(), 2u);
  EXPECT_EQ(book.Versions().size(), 2u);
  auto state = book.KnownState("aws-kms", "k");
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(state->kind, "aws-kms");
  EXPECT_EQ(state->primary_version, 2u);
  ASSERT_EQ(state->versions.size(), 2u);
  EXPECT_EQ(state->versions[0].created_at, "2026-03-05T10:00:00Z");
}

// Two reloads overlapping (two writers' CurrentState): the one that read
// before another instance's version 2 finishes last. The book keeps the
// later view; the primary does not go back to 1.
TEST_F(KeyVersionBookTest, AReloadThatReadFirstAndFinishesLastChangesNothing) {
  auto held = std::make_shared<testing::HeldKeyVersions>(repo_);
  KeyVersionBook book(held, "row", clock_, "KMS key k");
  ASSERT_TRUE(book.Reload().ok());
  held->HoldNextList();
  std::thread first([&] { EXPECT_TRUE(book.Reload().ok()); });  // reads version 1 only, then waits
  const bool was_held = held->WaitUntilHeld();
  if (was_held) {
    AddVersion("m2");
    EXPECT_TRUE(book.Reload().ok());
    EXPECT_EQ(book.Primary(), 2u);
  }
  held->Release();
  first.join();
  ASSERT_TRUE(was_held);
  EXPECT_EQ(book.Primary(), 2u);
  EXPECT_EQ(book.Versions().size(), 2u);
  EXPECT_EQ(*book.LivePrimary(), 2u);
}

TEST_F(KeyVersionBookTest, CheckUsableLooksAgainOnceForAnUnknownVersionAndRefusesRetiredOnes) {
  KeyVersionBook book(repo_, "row", clock_, "Key Vault key v/k", "gateway version");
  ASSERT_TRUE(book.Reload().ok());
  AddVersion("m2");  // not yet seen by this book
  int looked = 0;
  auto count = [&]() -> Status {
    ++looked;
    return OkStatus();
  };
  EXPECT_TRUE(book.CheckUsable(2, count).ok());
  EXPECT_EQ(looked, 1);
  EXPECT_TRUE(book.CheckUsable(2, count).ok());  // known now: no reload
  EXPECT_EQ(looked, 1);
  auto unknown = book.CheckUsable(9, count);
  EXPECT_EQ(unknown.code(), ErrorCode::kNotFound);
  EXPECT_EQ(unknown.error().message, "Key Vault key v/k has no gateway version 9");
  EXPECT_EQ(looked, 2);
  // What after_reload learns counts, and its error is returned.
  EXPECT_TRUE(book.CheckUsable(3, [&]() -> Status {
                    AddVersion("m3");
                    return book.Reload();
                  }).ok());
  EXPECT_EQ(book.CheckUsable(9, [] { return Status(MakeError(ErrorCode::kUnavailable, "down")); }).code(),
            ErrorCode::kUnavailable);
  ASSERT_TRUE(book.SetState(1, "retired").ok());
  auto retired = book.CheckUsable(1);
  EXPECT_EQ(retired.code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(retired.error().message, "Key Vault key v/k version 1 is retired");
  EXPECT_EQ(*book.CurrentState(1), "retired");
  EXPECT_EQ(book.CurrentState(9).code(), ErrorCode::kNotFound);
}

TEST_F(KeyVersionBookTest, NeverRetiresThePrimaryAsTheRegistryHasIt) {
  KeyVersionBook book(repo_, "row", clock_, "Transit key k");
  ASSERT_TRUE(book.Reload().ok());
  EXPECT_EQ(book.SetState(1, "retiring").code(), ErrorCode::kFailedPrecondition);
  AddVersion("m2");  // another instance's rotation: 1 is no longer the primary
  ASSERT_TRUE(book.SetState(1, "retiring").ok());
  EXPECT_EQ(*book.CurrentState(1), "retiring");
  EXPECT_EQ(book.SetState(2, "retired").code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(*book.CurrentState(2), "active");
}

TEST_F(KeyVersionBookTest, SyncIsDueAtMostOnceASecond) {
  KeyVersionBook book(repo_, "row", clock_, "KMS key k");
  EXPECT_TRUE(book.SyncDue());
  EXPECT_FALSE(book.SyncDue());
  clock_.Advance(std::chrono::milliseconds(999));
  EXPECT_FALSE(book.SyncDue());
  clock_.Advance(std::chrono::milliseconds(1));
  EXPECT_TRUE(book.SyncDue());
}

}  // namespace
}  // namespace dyad
