// Change feed latency on PostgreSQL (issue 14: every instance learns a
// credential write or key epoch change within 100 ms, p99): feed A
// publishes N changes one after another; feed B (a pool and a LISTEN
// connection of its own, as another instance has) delivers them to a
// subscriber. Each latency is from the start of A's Publish() (its INSERT
// and NOTIFY, one round trip) to B's callback; the next change is published
// once the previous one arrived, so the figure has no queueing in it. Also
// the same over SQLite (two SqliteDb on one file, the listener polling every
// `poll`), for comparison.
//   DYAD_TEST_PG_URL=postgresql://… build/dyad_change_feed_bench [--json] [N]
// Creates (and drops) a database of its own on that server.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <unistd.h>
#include <vector>

#include "core/mutex.h"
#include "registry/change_feed.h"
#include "registry/pg_db.h"
#include "registry/sqlite_db.h"
#include "testing/fakes.h"

using namespace dyad;
using Clk = std::chrono::steady_clock;

namespace {

struct Figures {
  double p50_ms = 0, p99_ms = 0, max_ms = 0;
  int lost = 0;
};

// Publishes `n` changes on `a`, each after the previous one reached `b`.
Figures Measure(ChangeFeed& a, ChangeFeed& b, int n) {
  Mutex mu;
  CondVar cv;
  int64_t seen = -1;  // guarded by mu
  b.Subscribe([&](const Change& c) {
    if (c.kind != Change::Kind::kCredentials) return;
    MutexLock lock(&mu);
    seen = std::max<int64_t>(seen, std::atoll(c.subject.c_str()));
    cv.SignalAll();
  });
  if (!b.Start().ok()) std::fprintf(stderr, "listener did not start\n");
  std::vector<double> ms;
  Figures f;
  for (int i = 0; i < n; ++i) {
    const auto t0 = Clk::now();
    Status s = a.Publish({Change::Kind::kCredentials, std::to_string(i)});
    if (!s.ok()) {
      std::fprintf(stderr, "publish failed: %s\n", s.error().message.c_str());
      ++f.lost;
      continue;
    }
    MutexLock lock(&mu);
    const auto deadline = t0 + std::chrono::seconds(10);
    while (seen < i && Clk::now() < deadline) cv.WaitFor(&mu, deadline - Clk::now());
    if (seen < i) {
      ++f.lost;
      continue;
    }
    ms.push_back(std::chrono::duration<double, std::milli>(Clk::now() - t0).count());
  }
  b.Stop();
  std::sort(ms.begin(), ms.end());
  if (!ms.empty()) {
    f.p50_ms = ms[ms.size() / 2];
    f.p99_ms = ms[std::min(ms.size() - 1, ms.size() * 99 / 100)];
    f.max_ms = ms.back();
  }
  return f;
}

Status AdminExec(PgDb& admin, const std::string& sql) {
  auto r = admin.With<bool>([&](PgConnection& c) -> Result<bool> {
    DYAD_RETURN_IF_ERROR(c.Exec(sql));
    return true;
  });
  return r.ok() ? OkStatus() : Status(r.error());
}

}  // namespace

int main(int argc, char** argv) {
  const bool json = argc > 1 && std::strcmp(argv[1], "--json") == 0;
  if (json) --argc, ++argv;
  const int n = argc > 1 ? std::atoi(argv[1]) : 1000;
  const char* url = std::getenv("DYAD_TEST_PG_URL");
  if (n <= 0 || !url || !*url) {
    std::fprintf(stderr, "usage: DYAD_TEST_PG_URL=postgresql://… %s [--json] [N > 0]\n", argv[0]);
    return 2;
  }
  SystemClock clock;

  PgDb::Options admin_options;
  admin_options.migrate = false;
  admin_options.max_connections = 1;
  auto admin = PgDb::Open(url, admin_options);
  if (!admin.ok()) {
    std::fprintf(stderr, "%s\n", admin.error().message.c_str());
    return 1;
  }
  const std::string name = "dyad_feed_bench_" + std::to_string(::getpid());
  if (Status s = AdminExec(**admin, "CREATE DATABASE " + name); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.error().message.c_str());
    return 1;
  }
  Figures pg;
  {
    PgDb::Options o;
    o.database = name;
    auto db_a = PgDb::Open(url, o), db_b = PgDb::Open(url, o);
    if (!db_a.ok() || !db_b.ok()) {
      std::fprintf(stderr, "cannot open the bench database\n");
      return 1;
    }
    auto a = NewPgChangeFeed(*db_a, clock), b = NewPgChangeFeed(*db_b, clock);
    if (!a.ok() || !b.ok()) {
      std::fprintf(stderr, "cannot make the feeds\n");
      return 1;
    }
    pg = Measure(**a, **b, n);
  }
  (void)AdminExec(**admin, "DROP DATABASE IF EXISTS " + name + " WITH (FORCE)");

  Figures lite;
  {
    testing::TempDir dir;
    auto db_a = SqliteDb::Open(dir.File("r.db")), db_b = SqliteDb::Open(dir.File("r.db"));
    ChangeFeedOptions o;
    o.poll = std::chrono::milliseconds(20);
    auto a = NewSqliteChangeFeed(*db_a, clock), b = NewSqliteChangeFeed(*db_b, clock, o);
    if (a.ok() && b.ok()) lite = Measure(**a, **b, std::min(n, 200));
  }

  std::FILE* out = json ? stderr : stdout;
  std::fprintf(out, "PostgreSQL LISTEN/NOTIFY, publish -> other instance's callback, %d changes: p50 %.2f ms, "
               "p99 %.2f ms, max %.2f ms, lost %d\n", n, pg.p50_ms, pg.p99_ms, pg.max_ms, pg.lost);
  std::fprintf(out, "SQLite poll every 20 ms, %d changes: p50 %.2f ms, p99 %.2f ms, max %.2f ms, lost %d\n",
               std::min(n, 200), lite.p50_ms, lite.p99_ms, lite.max_ms, lite.lost);
  if (json) {
    std::printf("{\"changes\": %d, \"pg_p50_ms\": %.3f, \"pg_p99_ms\": %.3f, \"pg_max_ms\": %.3f, \"pg_lost\": %d, "
                "\"sqlite_p50_ms\": %.3f, \"sqlite_p99_ms\": %.3f, \"sqlite_lost\": %d}\n",
                n, pg.p50_ms, pg.p99_ms, pg.max_ms, pg.lost, lite.p50_ms, lite.p99_ms, lite.lost);
  }
  return pg.lost == 0 && pg.p99_ms <= 100 ? 0 : 1;
}
