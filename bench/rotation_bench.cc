// Re-encryption throughput over N credentials (default 100,000) with the
// local keyring and SQLite, and the credential-read latency (uncached: store
// read + envelope open) on one reader thread with and without a rotation
// running, measured in one run; then a second rotation with no reader.
//   build/dyad_rotation_bench [--json] [N]
// --json: the human lines go to stderr and one JSON object to stdout
// (bench/run.py reads it).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "backends/environment/local_keyring.h"
#include "backends/environment/sqlite_secret_store.h"
#include "registry/sqlite_provider_repository.h"
#include "service/key_rotation_service.h"
#include "registry/sqlite_key_version_repository.h"
#include "registry/sqlite_rotation_repository.h"
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

}  // namespace

int main(int argc, char** argv) {
  const bool json = argc > 1 && std::strcmp(argv[1], "--json") == 0;
  if (json) --argc, ++argv;
  const int n = argc > 1 ? std::atoi(argv[1]) : 100000;
  if (n <= 0) {
    std::fprintf(stderr, "N must be a positive count of credentials, got '%s'\n", argv[1]);
    return 2;
  }
  FILE* out = json ? stderr : stdout;
  testing::TempDir dir;
  SystemClock clock;
  auto db = SqliteDb::Open(dir.File("bench.db")).value();
  auto repo = NewSqliteProviderRepository(db);
  auto keys = std::move(NewLocalKeyring({"bench", SecretBytes(std::string(32, 'm')), {}},
                                        NewSqliteKeyVersionRepository(db), DefaultRandom(), clock)).value();
  auto store = NewSqliteSecretStore(db, clock, "dyad-gateway");
  testing::MemoryAudit audit;
  Metrics metrics;
  SecretsOptions uncached;
  uncached.cache_enabled = false;
  SecretsService secrets(uncached, *store, *keys, *repo, audit, metrics, clock, DefaultRandom(), {});

  std::vector<std::string> ids;
  auto t0 = Clk::now();
  for (int i = 0; i < n; ++i) {
    ids.push_back(NewUuid(DefaultRandom()));
    CredentialFields f;
    f.emplace("api_key", SecretBytes("sk-" + std::to_string(i) + std::string(40, 'x')));
    auto held = secrets.locks().Hold(ids.back());
    if (!held.ok() || !secrets.Create(ids.back(), 1, f, Caller{}, **held).ok()) return 1;
  }
  std::fprintf(out, "seeded %d credentials in %.1f s\n", n, std::chrono::duration<double>(Clk::now() - t0).count());

  // Baseline: reads with no rotation, for 2 seconds.
  std::atomic<bool> stop{false};
  Latency idle;
  std::thread r1([&] { idle = ReadLoop(secrets, ids, stop); });
  std::this_thread::sleep_for(std::chrono::seconds(2));
  stop = true;
  r1.join();

  // The rotation, with the same reader running throughout.
  KeyRotationService rotation({500}, NewSqliteRotationRepository(db, clock), secrets, audit, clock);
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
        "{\"credentials\": %d, \"with_reader_per_s\": %.1f, \"alone_per_s\": %.1f, \"idle_p50_us\": %.2f, "
        "\"idle_p99_us\": %.2f, \"during_p50_us\": %.2f, \"during_p99_us\": %.2f}\n",
        n, with_reader_per_s, run->reencrypted / secs, idle.p50_us, idle.p99_us, during.p50_us, during.p99_us);
  }
  return 0;
}
