// The ProviderRepository contract, on every registry engine (SQLite always,
// PostgreSQL when DYAD_TEST_PG_URL is set: testing/registry_engines.h).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>
#include <vector>

#include "registry/migrations.h"
#include "testing/registry_engines.h"

namespace dyad {
namespace {

class ProviderRepositoryContract : public testing::RegistryContractTest {};

Provider Make(const std::string& id, const std::string& slug) {
  Provider p;
  p.id = id;
  p.slug = slug;
  p.name = "Name " + slug;
  p.type = "proxy";
  p.credential_fields = {"api_key", "org"};
  p.credentials_version = 2;
  p.created_at = p.updated_at = "2026-01-01T00:00:00.000Z";
  return p;
}

TEST_P(ProviderRepositoryContract, CrudAndPersistenceAcrossReopen) {
  {
    auto inst = NewInstance();
    ASSERT_TRUE(inst.ok()) << inst.error().message;
    ProviderRepository& repo = *inst->providers;
    ASSERT_TRUE(repo.Insert(Make("1", "a")).ok());
    ASSERT_TRUE(repo.Insert(Make("2", "b")).ok());
    EXPECT_EQ(repo.Insert(Make("3", "a")).code(), ErrorCode::kAlreadyExists);
    EXPECT_EQ(repo.Insert(Make("1", "c")).code(), ErrorCode::kAlreadyExists);  // the id, too
    Provider p = *repo.Get("2");
    Provider stale = p;
    p.description = "changed";
    ASSERT_TRUE(repo.Update(p).ok());
    stale.name = "lost";  // read before that update: fenced by the revision (issue 9 item 3)
    EXPECT_EQ(repo.Update(stale).code(), ErrorCode::kConflict);
    p = *repo.Get("2");
    EXPECT_EQ(p.description, "changed");
    EXPECT_EQ(p.name, Make("2", "b").name);
    EXPECT_EQ(p.revision, 1);
    p.slug = "a";
    EXPECT_EQ(repo.Update(p).code(), ErrorCode::kAlreadyExists);
    EXPECT_EQ(repo.Get("nope").code(), ErrorCode::kNotFound);
    EXPECT_EQ(repo.Delete("nope").code(), ErrorCode::kNotFound);
    Provider gone = Make("nope", "nope");
    EXPECT_EQ(repo.Update(gone).code(), ErrorCode::kNotFound);
  }
  auto inst = NewInstance();
  ASSERT_TRUE(inst.ok()) << inst.error().message;
  EXPECT_EQ(inst->schema_version, static_cast<int>(Migrations().size()));
  ProviderRepository& repo = *inst->providers;
  auto page = repo.List(0, 10);
  ASSERT_TRUE(page.ok()) << page.error().message;
  ASSERT_EQ(page->total, 2);
  ASSERT_EQ(page->items.size(), 2u);
  EXPECT_EQ(page->items[1].description, "changed");
  EXPECT_EQ(page->items[0].credential_fields, (std::vector<std::string>{"api_key", "org"}));
  EXPECT_EQ(repo.List(1, 10)->items.size(), 1u);
  ASSERT_TRUE(repo.Delete("1").ok());
  EXPECT_EQ(repo.List(0, 10)->total, 1);
  EXPECT_TRUE(repo.Ping().ok());
}

TEST_P(ProviderRepositoryContract, EveryColumnRoundTrips) {
  auto inst = NewInstance();
  ASSERT_TRUE(inst.ok()) << inst.error().message;
  Provider p = Make("id-1", "slug-1");
  p.description = "it's \"quoted\" and \\ back";
  p.enabled = false;
  p.models_json = R"(["gpt-4o","o3"])";
  p.adapter_config_json = R"({"base_url":"https://example.test/v1"})";
  p.credential_fields = {};
  p.credentials_version = 9000000000;  // beyond 32 bits
  p.updated_at = "2026-02-02T00:00:00.000Z";
  ASSERT_TRUE(inst->providers->Insert(p).ok());
  auto got = inst->providers->Get("id-1");
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->slug, p.slug);
  EXPECT_EQ(got->name, p.name);
  EXPECT_EQ(got->type, p.type);
  EXPECT_EQ(got->description, p.description);
  EXPECT_FALSE(got->enabled);
  EXPECT_EQ(got->models_json, p.models_json);
  EXPECT_EQ(got->adapter_config_json, p.adapter_config_json);
  EXPECT_TRUE(got->credential_fields.empty());
  EXPECT_EQ(got->credentials_version, p.credentials_version);
  EXPECT_EQ(got->created_at, p.created_at);
  EXPECT_EQ(got->updated_at, p.updated_at);
  EXPECT_EQ(got->revision, 0);
}

TEST_P(ProviderRepositoryContract, ListIsCreationOrderAcrossPages) {
  auto inst = NewInstance();
  ASSERT_TRUE(inst.ok()) << inst.error().message;
  // Ids and slugs that sort the other way round: the order is creation's, not the key's.
  for (int i = 0; i < 7; ++i) {
    ASSERT_TRUE(inst->providers->Insert(Make(std::to_string(9 - i), "s" + std::to_string(9 - i))).ok());
  }
  std::vector<std::string> ids;
  ASSERT_TRUE(ForEachProvider(*inst->providers, [&](const Provider& p) {
                ids.push_back(p.id);
                return true;
              }, 3).ok());
  EXPECT_EQ(ids, (std::vector<std::string>{"9", "8", "7", "6", "5", "4", "3"}));
  auto empty = inst->providers->List(7, 3);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->items.empty());
  EXPECT_EQ(empty->total, 7);
}

// Two instances updating one row from the revision they both read: exactly
// one write lands, the others get kConflict, and no update is lost silently.
TEST_P(ProviderRepositoryContract, ConcurrentUpdatesFromOneRevisionLandOnce) {
  auto a = NewInstance();
  auto b = NewInstance();
  ASSERT_TRUE(a.ok()) << a.error().message;
  ASSERT_TRUE(b.ok()) << b.error().message;
  ASSERT_TRUE(a->providers->Insert(Make("p", "p")).ok());
  ProviderRepository* repos[2] = {a->providers.get(), b->providers.get()};
  const Provider read = *repos[0]->Get("p");
  constexpr int kThreads = 6;
  std::atomic<int> ready{0};
  std::vector<Status> results(kThreads);  // one element per thread (not vector<bool>: its bits share words)
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Provider mine = read;
      mine.description = "writer " + std::to_string(t);
      ready.fetch_add(1);
      while (ready.load() < kThreads) std::this_thread::yield();
      results[t] = repos[t % 2]->Update(mine);
    });
  }
  for (auto& t : threads) t.join();
  int winners = 0;
  std::string winner;
  for (int t = 0; t < kThreads; ++t) {
    if (results[t].ok()) {
      ++winners;
      winner = "writer " + std::to_string(t);
    } else {
      EXPECT_EQ(results[t].code(), ErrorCode::kConflict) << "writer " << t << ": " << results[t].error().message;
    }
  }
  ASSERT_EQ(winners, 1);
  Provider now = *repos[1]->Get("p");
  EXPECT_EQ(now.description, winner);
  EXPECT_EQ(now.revision, read.revision + 1);
}

// Reading back a write whose answer was lost: its statement may still run
// on the connection that was cut. GetSettled waits for it to end (commit or
// roll back) and reads what it left; Get would read the row from before.
// SQLite's writes end with their call: there GetSettled is Get.
TEST_P(ProviderRepositoryContract, GetSettledWaitsForAWriteStillRunningElsewhere) {
  if (GetParam() != "postgresql") GTEST_SKIP() << "row locks are PostgreSQL's";
  auto inst = NewInstanceSettlingWithin(std::chrono::seconds(60));
  ASSERT_TRUE(inst.ok()) << inst.error().message;
  ProviderRepository& repo = *inst->providers;
  ASSERT_TRUE(repo.Insert(Make("p", "p")).ok());
  auto conn = inst->postgresql->ConnectDedicated();
  ASSERT_TRUE(conn.ok()) << conn.error().message;
  PgConnection& cut = **conn;  // the connection whose write's answer was "lost"
  for (const char* end : {"COMMIT", "ROLLBACK"}) {
    SCOPED_TRACE(end);
    const Provider before = *repo.Get("p");
    ASSERT_TRUE(cut.Exec("BEGIN").ok());
    ASSERT_TRUE(cut.Exec("UPDATE providers SET description = 'in flight', revision = revision + 1 "
                         "WHERE id = 'p'").ok());
    EXPECT_EQ(repo.Get("p")->revision, before.revision);  // a plain read does not wait
    Result<Provider> settled = MakeError(ErrorCode::kInternal, "not read");
    std::thread reader([&] { settled = repo.GetSettled("p"); });
    const bool waited = BackendsWaitOnLocks(*inst, 1);
    EXPECT_TRUE(cut.Exec(end).ok());
    reader.join();
    EXPECT_TRUE(waited) << "GetSettled never waited for the write in flight";
    ASSERT_TRUE(settled.ok()) << settled.error().message;
    const bool committed = std::string(end) == "COMMIT";
    EXPECT_EQ(settled->revision, before.revision + (committed ? 1 : 0));
    EXPECT_EQ(settled->description, committed ? "in flight" : before.description);
  }
  EXPECT_EQ(repo.GetSettled("nobody").code(), ErrorCode::kNotFound);
}

// A write that does not end within the wait: kUnavailable, which the
// read-back retries, not an answer about the row.
TEST_P(ProviderRepositoryContract, GetSettledGivesUpOnAWriteThatDoesNotEnd) {
  if (GetParam() != "postgresql") GTEST_SKIP() << "row locks are PostgreSQL's";
  auto inst = NewInstanceSettlingWithin(std::chrono::milliseconds(300));
  ASSERT_TRUE(inst.ok()) << inst.error().message;
  ASSERT_TRUE(inst->providers->Insert(Make("p", "p")).ok());
  auto conn = inst->postgresql->ConnectDedicated();
  ASSERT_TRUE(conn.ok()) << conn.error().message;
  ASSERT_TRUE((*conn)->Exec("BEGIN").ok());
  ASSERT_TRUE((*conn)->Exec("UPDATE providers SET revision = revision + 1 WHERE id = 'p'").ok());
  // On a thread: a wait that never gave up would otherwise hang the test
  // (the ROLLBACK that frees it comes after it).
  std::promise<Result<Provider>> read;
  std::future<Result<Provider>> got = read.get_future();
  std::thread reader([&] { read.set_value(inst->providers->GetSettled("p")); });
  const bool gave_up = got.wait_for(std::chrono::seconds(30)) == std::future_status::ready;
  EXPECT_TRUE((*conn)->Exec("ROLLBACK").ok());
  reader.join();
  ASSERT_TRUE(gave_up) << "GetSettled still waited after 30 s";
  Result<Provider> settled = got.get();
  ASSERT_FALSE(settled.ok());
  EXPECT_EQ(settled.code(), ErrorCode::kUnavailable) << settled.error().message;
}

// The same row inserted on another connection, left uncommitted: an
// insert whose answer was lost, its statement still running.
void InsertInFlight(PgConnection& cut, const std::string& id, const std::string& slug) {
  ASSERT_TRUE(cut.Exec("BEGIN").ok());
  ASSERT_TRUE(cut.Exec("INSERT INTO providers(id, slug, name, type, description, enabled, models, adapter_config, "
                       "credential_fields, credentials_version, created_at, updated_at, revision) "
                       "VALUES('" + id + "', '" + slug + "', 'in flight', 'proxy', '', true, '[]', '{}', 'api_key', 1, "
                       "'2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', 1)").ok());
}

// Inserting again after a lost answer: InsertSettled waits for the first
// insert on the id's unique index and then either finds it committed
// (kAlreadyExists: the row is the first insert's) or writes the row itself
// (it rolled back). SQLite's writes end with their call: there it is Insert.
TEST_P(ProviderRepositoryContract, InsertSettledWaitsForAnInsertStillRunningElsewhere) {
  if (GetParam() != "postgresql") GTEST_SKIP() << "index waits are PostgreSQL's";
  auto inst = NewInstanceSettlingWithin(std::chrono::seconds(60));
  ASSERT_TRUE(inst.ok()) << inst.error().message;
  ProviderRepository& repo = *inst->providers;
  auto conn = inst->postgresql->ConnectDedicated();
  ASSERT_TRUE(conn.ok()) << conn.error().message;
  PgConnection& cut = **conn;
  for (const std::string end : {"COMMIT", "ROLLBACK"}) {
    SCOPED_TRACE(end);
    const std::string id = "q-" + end;
    InsertInFlight(cut, id, "slug-" + end);
    EXPECT_EQ(repo.Get(id).code(), ErrorCode::kNotFound);  // a read does not see it
    Status again = MakeError(ErrorCode::kInternal, "not inserted");
    std::thread inserter([&] { again = repo.InsertSettled(Make(id, "slug-" + end)); });
    const bool waited = BackendsWaitOnLocks(*inst, 1);
    EXPECT_TRUE(cut.Exec(end).ok());
    inserter.join();
    EXPECT_TRUE(waited) << "InsertSettled never waited for the insert in flight";
    auto row = repo.Get(id);
    ASSERT_TRUE(row.ok()) << row.error().message;
    if (end == "COMMIT") {
      EXPECT_EQ(again.code(), ErrorCode::kAlreadyExists);
      EXPECT_EQ(row->name, "in flight");
    } else {
      EXPECT_TRUE(again.ok()) << again.error().message;
      EXPECT_EQ(row->name, "Name slug-" + end);
    }
  }
}

// A first insert that does not end within the wait: kUnavailable (the
// outcome stays unknown), not a wait as long as the cut connection lives.
TEST_P(ProviderRepositoryContract, InsertSettledGivesUpOnAnInsertThatDoesNotEnd) {
  if (GetParam() != "postgresql") GTEST_SKIP() << "index waits are PostgreSQL's";
  auto inst = NewInstanceSettlingWithin(std::chrono::milliseconds(300));
  ASSERT_TRUE(inst.ok()) << inst.error().message;
  auto conn = inst->postgresql->ConnectDedicated();
  ASSERT_TRUE(conn.ok()) << conn.error().message;
  InsertInFlight(**conn, "q", "q");
  // On a thread: a wait that never gave up would otherwise hang the test.
  std::promise<Status> inserted;
  std::future<Status> got = inserted.get_future();
  std::thread inserter([&] { inserted.set_value(inst->providers->InsertSettled(Make("q", "q"))); });
  const bool gave_up = got.wait_for(std::chrono::seconds(30)) == std::future_status::ready;
  EXPECT_TRUE((*conn)->Exec("ROLLBACK").ok());
  inserter.join();
  ASSERT_TRUE(gave_up) << "InsertSettled still waited after 30 s";
  Status again = got.get();
  EXPECT_EQ(again.code(), ErrorCode::kUnavailable) << (again.ok() ? "inserted" : again.error().message);
  EXPECT_EQ(inst->providers->Get("q").code(), ErrorCode::kNotFound);
}

DYAD_INSTANTIATE_ON_REGISTRY_ENGINES(ProviderRepositoryContract);

}  // namespace
}  // namespace dyad
