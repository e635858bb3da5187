// Re-encryption throughput over N credentials (default 100,000) with the
// local keyring (the environment backend, as `serve` opens it) on a registry
// database, and the credential-read latency (uncached: store read + envelope
// open) on one reader thread with and without a rotation running, measured in
// one run; then a second rotation with no reader.
//   build/dyad_rotation_bench [--json] [--database-url URL] [N]
// --json: the human lines go to stderr and one JSON object to stdout
// (bench/run.py and bench/cluster_bench.py read it).
// --database-url: GATEWAY_DATABASE_URL (an empty postgresql://… database, say);
// default a new SQLite file in a temporary directory.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "backends/environment/factory.h"
#include "backends/registry.h"
#include "core/config.h"
#include "registry/database.h"
#include "service/key_rotation_service.h"
#include "testing/fakes.h"

using namespace dyad;
using Clk = std::chrono::steady_clock;

namespace {

struct Latency {
  double p50_us = 0, p99_us = 0;
  size_t reads = 0;
};

// Reads random credentials until `stop`; returns the latency distribution.
Latency ReadLoop(SecretsService& reader, const std::vector<std::string>& ids, std::atomic<bool>& stop) {
  std::vector<double> us;
  size_t i = 7919;
  while (!stop) {
    auto t0 = Clk::now();
    auto r = reader.Get(ids[(i = i * 48271 % 2147483647) % ids.size()], Caller{});
    us.push_back(std::chrono::duration<double, std::micro>(Clk::now() - t0).count());
    if (!r.ok()) std::fprintf(stderr, "read failed: %s\n", r.error().message.c_str());
  }
  std::sort(us.begin(), us.end());
  Latency l;
  l.reads = us.size();
  if (!us.empty()) {
    l.p50_us = us[us.size() / 2];
    l.p99_us = us[us.size() * 99 / 100];
  }
  return l;
}

int Fail(const char* what, const Error& e) {
  std::fprintf(stderr, "%s: %s\n", what, e.message.c_str());
  return 1;
}

// Creates the credentials of `ids` on `threads` threads (a remote database's
// round trips would otherwise make seeding the longest part of the run).
bool Seed(SecretsService& secrets, const std::vector<std::string>& ids, int threads) {
  std::atomic<bool> ok{true};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (size_t i = t; i < ids.size() && ok; i += threads) {
        CredentialFields f;
        f.emplace("api_key", SecretBytes("sk-" + std::to_string(i) + std::string(40, 'x')));
        auto held = secrets.locks().Hold(ids[i]);
        if (!held.ok()) {
          Fail("seed: lock", held.error());
          ok = false;
          break;
        }
        if (auto made = secrets.Create(ids[i], 1, f, Caller{}, **held); !made.ok()) {
          Fail("seed", made.error());
          ok = false;
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  std::string url;
  int n = 100000;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--json") == 0) {
      json = true;
    } else if (std::strcmp(argv[i], "--database-url") == 0 && i + 1 < argc) {
      url = argv[++i];
    } else if ((n = std::atoi(argv[i])) <= 0) {
      std::fprintf(stderr, "usage: %s [--json] [--database-url URL] [N]; N must be a positive count, got '%s'\n",
                   argv[0], argv[i]);
      return 2;
    }
  }
  FILE* out = json ? stderr : stdout;
  testing::TempDir dir;
  if (url.empty()) url = "sqlite://" + dir.File("bench.db");
  SystemClock clock;
  auto db = OpenDatabase(url);
  if (!db.ok()) return Fail("open the database", db.error());
  // The environment backend as `serve` opens it on this database: local
  // keyring (key versions in the registry), secrets in the registry.
  EnvMap env;
  env["SECRETS_PROVIDER"] = "environment";
  env["ENCRYPTION_KEY"] = std::string(64, 'b');
  env["GATEWAY_ADMIN_API_KEY"] = "bench-token-not-used";
  env["GATEWAY_DATA_DIR"] = dir.File("data");
  env["GATEWAY_DATABASE_URL"] = url;
  BackendRegistry registry;
  if (Status s = RegisterEnvironmentBackend(registry); !s.ok()) return Fail("register", s.error());
  auto config = LoadConfig(env, false, [&](const Config& c) { return registry.Check(c); });
  if (!config.ok()) return Fail("config", config.error());
  auto backend = registry.Open(BackendContext{*config, *db, clock, DefaultRandom()});
  if (!backend.ok()) return Fail("open the environment backend", backend.error());
  auto repo = (*db)->NewProviderRepository();
  testing::MemoryAudit audit;
  Metrics metrics;
  SecretsOptions uncached;
  uncached.cache_enabled = false;
  auto secrets_owner = SecretsService::Create(uncached, *backend->store, *backend->keys, *repo, audit, metrics, clock,
                                              DefaultRandom(), {}).value();
  SecretsService& secrets = *secrets_owner;
  std::fprintf(out, "registry: %s (%s)\n", std::string((*db)->engine()).c_str(), (*db)->display_name().c_str());

  std::vector<std::string> ids;
  for (int i = 0; i < n; ++i) ids.push_back(NewUuid(DefaultRandom()));
  auto t0 = Clk::now();
  if (!Seed(secrets, ids, 4)) return 1;
  std::fprintf(out, "seeded %d credentials in %.1f s\n", n, std::chrono::duration<double>(Clk::now() - t0).count());

  // Baseline: reads with no rotation, for 2 seconds.
  std::atomic<bool> stop{false};
  Latency idle;
  std::thread r1([&] { idle = ReadLoop(secrets, ids, stop); });
  std::this_thread::sleep_for(std::chrono::seconds(2));
  stop = true;
  r1.join();

  // The rotation, with the same reader running throughout.
  KeyRotationService rotation({500}, (*db)->NewRotationRepository(clock), secrets, audit, clock);
  stop = false;
  Latency during;
  std::thread r2([&] { during = ReadLoop(secrets, ids, stop); });
  t0 = Clk::now();
  auto run = rotation.Run(false, "manual", Caller{});
  double secs = std::chrono::duration<double>(Clk::now() - t0).count();
  const double with_reader_per_s = run.ok() ? run->reencrypted / secs : 0;
  stop = true;
  r2.join();
  if (!run.ok() || run->status != "completed") return 1;
  std::fprintf(out, "rotation: %lld re-encrypted in %.2f s = %.0f credentials/s (with one reader running)\n",
              static_cast<long long>(run->reencrypted), secs, run->reencrypted / secs);
  std::fprintf(out, "read latency without rotation: p50 %.1f us, p99 %.1f us (%zu reads)\n", idle.p50_us, idle.p99_us, idle.reads);
  std::fprintf(out, "read latency during rotation:  p50 %.1f us, p99 %.1f us (%zu reads)\n", during.p50_us, during.p99_us,
              during.reads);
  std::fprintf(out, "p99 ratio during/without: %.2f\n", during.p99_us / idle.p99_us);

  t0 = Clk::now();
  run = rotation.Run(false, "manual", Caller{});
  secs = std::chrono::duration<double>(Clk::now() - t0).count();
  if (!run.ok() || run->status != "completed") return 1;
  std::fprintf(out, "rotation alone: %lld re-encrypted in %.2f s = %.0f credentials/s\n",
               static_cast<long long>(run->reencrypted), secs, run->reencrypted / secs);
  if (json) {
    std::printf(
        "{\"engine\": \"%s\", \"credentials\": %d, \"with_reader_per_s\": %.1f, \"alone_per_s\": %.1f, "
        "\"idle_p50_us\": %.2f, "
        "\"idle_p99_us\": %.2f, \"during_p50_us\": %.2f, \"during_p99_us\": %.2f}\n",
        std::string((*db)->engine()).c_str(), n, with_reader_per_s, run->reencrypted / secs, idle.p50_us,
        idle.p99_us, during.p50_us, during.p99_us);
  }
  return 0;
}
