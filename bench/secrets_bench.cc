// Secrets-core micro-benchmarks (issue 3): cache hits on 1 and 2 threads
// beside a plain std::unordered_map + std::mutex — each thread on its own
// half of the keys (BM_CacheHit), and every thread on one hot key
// (BM_CacheHotKey, issue 15: one provider takes most of a gateway's traffic) —, envelope seal/open of a
// 256-byte credential beside raw OpenSSL AES-256-GCM, and a single-flight
// miss; and the /v1 body's `model` found (FindModel, a validating Boost.JSON
// pass) beside a bare nlohmann SAX pass over the same body, what FindModel
// cost before (a small body and a 16 KiB conversation).
// Run: build/dyad_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
// Issue 10's target reads BM_EnvelopeSeal256 and BM_EnvelopeOpen256 against
// BM_RawAesGcmSeal256/threads:1 of the same run (each <= 4x); filter '256'.
#include <benchmark/benchmark.h>

#include <mutex>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "backends/environment/local_keyring.h"
#include "metrics/metrics.h"
#include "secrets/aes_gcm.h"
#include "secrets/credential_cache.h"
#include "secrets/sealer.h"
#include "service/proxy_service.h"
#include "registry/sqlite_key_version_repository.h"
#include "testing/fakes.h"

namespace dyad {
namespace {

constexpr int kKeys = 100;  // SECRETS_CACHE_MAX_SIZE's default

std::vector<std::string> Keys() {
  std::vector<std::string> keys;
  for (int i = 0; i < kKeys; ++i) keys.push_back("2f1c7e4a-8d3b-4c55-9e61-" + std::to_string(100000000000 + i));
  return keys;
}

CredentialsPtr Value() {
  auto c = std::make_shared<Credentials>();
  c->fields.emplace("api_key", SecretBytes(std::string(51, 'k')));
  return c;
}

SystemClock g_clock;

CredentialCache& SharedCache() {
  static CredentialCache* cache = [] {
    CacheOptions o;
    o.max_entries = kKeys;
    o.ttl = std::chrono::hours(24);
    auto* c = new CredentialCache(o, g_clock, nullptr);
    for (const auto& k : Keys()) (void)c->Get(k, [](const std::string&) { return Result<CredentialsPtr>(Value()); });
    return c;
  }();
  return *cache;
}

void BM_CacheHit(benchmark::State& state) {
  CredentialCache& cache = SharedCache();
  auto keys = Keys();
  const CredentialCache::Loader loader = [](const std::string&) { return Result<CredentialsPtr>(Value()); };
  // Each thread sweeps its own half of the keys: two gateway threads asking
  // for one provider's key at the same instant is the rare case.
  const size_t half = kKeys / 2, base = static_cast<size_t>(state.thread_index() % 2) * half;
  size_t i = 0;
  for (auto _ : state) {
    auto r = cache.Get(keys[base + i++ % half], loader);
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_CacheHit)->Threads(1)->Threads(2)->UseRealTime();

// Every thread reads the same key: the gateway's common case.
void BM_CacheHotKey(benchmark::State& state) {
  CredentialCache& cache = SharedCache();
  const std::string key = Keys()[7];
  const CredentialCache::Loader loader = [](const std::string&) { return Result<CredentialsPtr>(Value()); };
  for (auto _ : state) {
    auto r = cache.Get(key, loader);
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_CacheHotKey)->Threads(1)->Threads(2)->UseRealTime();

// A hit as SecretsService::Get() pays for it: the clock read it already
// made before the cache (BM_ServiceHitUntimed), and with issue 13's sampled
// observation into dyad_credential_read_seconds{source="cache"}
// (BM_ServiceHitTimed: 1 in Metrics::kHitSample hits reads the clock again
// and adds to this thread's stripe). The difference is the metric's cost.
template <bool kTimed>
void BM_ServiceHit(benchmark::State& state) {
  static Metrics* metrics = new Metrics();
  CredentialCache& cache = SharedCache();
  auto keys = Keys();
  const CredentialCache::Loader loader = [](const std::string&) { return Result<CredentialsPtr>(Value()); };
  const size_t half = kKeys / 2, base = static_cast<size_t>(state.thread_index() % 2) * half;
  size_t i = 0;
  const Clock& clock = g_clock;  // as the service holds it: through the interface
  for (auto _ : state) {
    auto t0 = clock.Now();
    auto r = cache.Get(keys[base + i++ % half], loader);
    if (kTimed && Metrics::SampleHit()) metrics->ObserveRead(ReadSource::kCache, clock.Now() - t0, Metrics::kHitSample);
    benchmark::DoNotOptimize(t0);
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ServiceHit<false>)->Name("BM_ServiceHitUntimed")->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_ServiceHit<true>)->Name("BM_ServiceHitTimed")->Threads(1)->Threads(2)->UseRealTime();

// The comparison: one std::mutex around one std::unordered_map.
struct PlainMap {
  std::mutex mu;
  std::unordered_map<std::string, CredentialsPtr> map;
};
PlainMap& SharedMap() {
  static PlainMap* m = [] {
    auto* p = new PlainMap;
    for (const auto& k : Keys()) p->map[k] = Value();
    return p;
  }();
  return *m;
}

void BM_MutexMapHit(benchmark::State& state) {
  PlainMap& m = SharedMap();
  auto keys = Keys();
  size_t i = static_cast<size_t>(state.thread_index()) * 37;
  for (auto _ : state) {
    CredentialsPtr v;
    {
      std::lock_guard lock(m.mu);
      v = m.map.find(keys[i++ % kKeys])->second;
    }
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_MutexMapHit)->Threads(1)->Threads(2)->UseRealTime();

void BM_MutexMapHotKey(benchmark::State& state) {
  PlainMap& m = SharedMap();
  const std::string key = Keys()[7];
  for (auto _ : state) {
    CredentialsPtr v;
    {
      std::lock_guard lock(m.mu);
      v = m.map.find(key)->second;
    }
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_MutexMapHotKey)->Threads(1)->Threads(2)->UseRealTime();

struct SealFixture {
  testing::TempDir dir;
  std::shared_ptr<SqliteDb> db = SqliteDb::Open(dir.File("b.db")).value();
  std::unique_ptr<KeyManager> keys =
      std::move(NewLocalKeyring({"bench", SecretBytes(std::string(32, 'm')), {}},
                                NewSqliteKeyVersionRepository(db), DefaultRandom(), g_clock)).value();
  Sealer sealer{*keys, DefaultRandom()};
  SecretBytes payload{std::string(256, 'p')};
};

void BM_EnvelopeSeal256(benchmark::State& state) {
  SealFixture f;
  for (auto _ : state) {
    auto s = f.sealer.Seal("dyad-gateway/providers/2f1c7e4a", 1, f.payload);
    benchmark::DoNotOptimize(s);
  }
}
BENCHMARK(BM_EnvelopeSeal256);

void BM_EnvelopeOpen256(benchmark::State& state) {
  SealFixture f;
  std::string text = f.sealer.Seal("dyad-gateway/providers/2f1c7e4a", 1, f.payload).value();
  for (auto _ : state) {
    auto o = f.sealer.Open("dyad-gateway/providers/2f1c7e4a", text);
    benchmark::DoNotOptimize(o);
  }
}
BENCHMARK(BM_EnvelopeOpen256);

void BM_RawAesGcmSeal256(benchmark::State& state) {
  SecretBytes key(std::string(32, 'k'));
  std::string nonce(12, 'n'), msg(256, 'p');
  for (auto _ : state) {
    auto s = AesGcmSeal(key, nonce, "aad", msg);
    benchmark::DoNotOptimize(s);
  }
}
BENCHMARK(BM_RawAesGcmSeal256)->Threads(1)->Threads(2)->UseRealTime();

// A miss: one load through single-flight bookkeeping, then an invalidation.
void BM_SingleFlightMiss(benchmark::State& state) {
  CacheOptions o;
  o.max_entries = kKeys;
  CredentialCache cache(o, g_clock, nullptr);
  CredentialsPtr v = Value();
  const CredentialCache::Loader loader = [&](const std::string&) { return Result<CredentialsPtr>(v); };
  const std::string key = "2f1c7e4a-8d3b-4c55-9e61-100000000000";
  for (auto _ : state) {
    auto r = cache.Get(key, loader);
    benchmark::DoNotOptimize(r);
    cache.Invalidate(key);
  }
}
BENCHMARK(BM_SingleFlightMiss);

// A chat body: `messages` of `turns` user and assistant turns of ~400 bytes.
std::string ChatBody(int turns) {
  nlohmann::json body = {{"model", "gpt-4o"}, {"temperature", 0.2}, {"stream", false}};
  for (int i = 0; i < turns; ++i) {
    body["messages"].push_back({{"role", i % 2 ? "assistant" : "user"},
                                {"content", "Turn " + std::to_string(i) + ": " + std::string(380, 'w') + " \"q\" é"}});
  }
  return body.dump();
}

void BM_FindModel(benchmark::State& state) {
  const std::string body = ChatBody(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    auto f = FindModel(body);
    benchmark::DoNotOptimize(f);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(body.size()));
}
BENCHMARK(BM_FindModel)->Arg(1)->Arg(40);

void BM_NlohmannSaxPass(benchmark::State& state) {
  const std::string body = ChatBody(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    nlohmann::detail::json_sax_acceptor<nlohmann::json> accept_all;
    bool ok = nlohmann::json::sax_parse(body, &accept_all);
    benchmark::DoNotOptimize(ok);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(body.size()));
}
BENCHMARK(BM_NlohmannSaxPass)->Arg(1)->Arg(40);

}  // namespace
}  // namespace dyad

BENCHMARK_MAIN();
