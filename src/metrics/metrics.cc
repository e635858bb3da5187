#include "metrics/metrics.h"

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <prometheus/gauge.h>

#include <array>
#include <atomic>
#include <cctype>
#include <limits>
#include <unordered_map>

#include <spdlog/spdlog.h>

#include "core/encoding.h"
#include "core/mutex.h"
#include "metrics/sharded_histogram.h"

namespace dyad {
namespace pm = prometheus;

namespace {

// A family of one unlabelled series (a counter or a gauge) with `value`,
// for the collectables below that read their values at scrape time.
template <pm::MetricType kType>
pm::MetricFamily OneSeries(std::string name, std::string help, double value) {
  static_assert(kType == pm::MetricType::Counter || kType == pm::MetricType::Gauge);
  pm::MetricFamily f{std::move(name), std::move(help), kType, {}};
  pm::ClientMetric m;
  if constexpr (kType == pm::MetricType::Counter) m.counter.value = value;
  else m.gauge.value = value;
  f.metric.push_back(m);
  return f;
}
constexpr auto CounterFamily = OneSeries<pm::MetricType::Counter>;
constexpr auto GaugeFamily = OneSeries<pm::MetricType::Gauge>;

class CacheCollectable final : public pm::Collectable {
 public:
  void Set(std::function<CacheStats()> source) {
    MutexLock lock(&mu_);
    source_ = std::move(source);
  }
  std::vector<pm::MetricFamily> Collect() const override {
    MutexLock lock(&mu_);
    if (!source_) return {};
    CacheStats s = source_();
    std::vector<pm::MetricFamily> out;
    out.push_back(CounterFamily("dyad_cache_hits_total", "Credential reads answered from the cache", double(s.hits)));
    out.push_back(CounterFamily("dyad_cache_misses_total", "Credential reads that missed the cache", double(s.misses)));
    out.push_back(CounterFamily("dyad_cache_stale_serves_total", "Reads served stale after a failed load", double(s.stale)));
    out.push_back(CounterFamily("dyad_cache_evictions_total", "Entries evicted by the size bound", double(s.evictions)));
    out.push_back(GaugeFamily("dyad_cache_entries", "Entries in the credential cache", double(s.size)));
    return out;
  }

 private:
  mutable Mutex mu_;
  std::function<CacheStats()> source_ DYAD_GUARDED_BY(mu_);
};

constexpr std::array<const char*, kReadSources> kReadSourceNames = {"cache", "store", "stale", "fallback",
                                                                   "environment"};

// dyad_credential_read_seconds{source}: one ShardedHistogram per source.
class ReadCollectable final : public pm::Collectable {
 public:
  ReadCollectable() {
    for (auto& h : by_source_) h = std::make_unique<ShardedHistogram>(ShardedHistogram::OneTwoFive(1e-7, 10));
  }
  void Observe(ReadSource source, Clock::Duration elapsed, uint64_t weight) {
    by_source_[static_cast<size_t>(source)]->Observe(elapsed.count(), weight);
  }
  std::vector<pm::MetricFamily> Collect() const override {
    pm::MetricFamily f{"dyad_credential_read_seconds",
                       "End-to-end credential read latency by source (cache, store, stale, fallback, environment)",
                       pm::MetricType::Histogram, {}};
    for (size_t i = 0; i < kReadSources; ++i) {
      ShardedHistogram::Snapshot s = by_source_[i]->Read();
      pm::ClientMetric m;
      m.label.push_back({"source", kReadSourceNames[i]});
      m.histogram.sample_count = s.count;
      m.histogram.sample_sum = s.sum_seconds;
      for (size_t b = 0; b < s.bounds.size(); ++b) m.histogram.bucket.push_back({s.cumulative[b], s.bounds[b]});
      m.histogram.bucket.push_back({s.count, std::numeric_limits<double>::infinity()});
      f.metric.push_back(std::move(m));
    }
    return {f};
  }

 private:
  std::array<std::unique_ptr<ShardedHistogram>, kReadSources> by_source_;
};

// The primary key version and its wear, asked of the key manager's registry
// when scraped.
class KeyCollectable final : public pm::Collectable {
 public:
  void Set(std::function<Result<KeyState>()> source, uint64_t max_encryptions) {
    MutexLock lock(&mu_);
    source_ = std::move(source);
    max_encryptions_ = max_encryptions;
  }
  std::vector<pm::MetricFamily> Collect() const override {
    MutexLock lock(&mu_);
    if (!source_) return {};
    auto state = source_();
    if (!state.ok()) return {};
    uint64_t encryptions = 0;
    for (const auto& v : state->versions) {
      if (v.version == state->primary_version) encryptions = v.encryptions;
    }
    return {GaugeFamily("dyad_key_primary_version", "The key manager's primary key version",
                        double(state->primary_version)),
            GaugeFamily("dyad_key_primary_encryptions",
                        "Encryptions made under the primary key version (an upper bound; key wear)",
                        double(encryptions)),
            GaugeFamily("dyad_key_max_encryptions",
                        "Encryptions under one key version that trigger a rotation (KEY_ROTATION_MAX_ENCRYPTIONS)",
                        double(max_encryptions_))};
  }

 private:
  mutable Mutex mu_;
  std::function<Result<KeyState>()> source_ DYAD_GUARDED_BY(mu_);
  uint64_t max_encryptions_ DYAD_GUARDED_BY(mu_) = 0;
};

const pm::Histogram::BucketBoundaries& LatencyBuckets() {
  static const pm::Histogram::BucketBoundaries b = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                    0.01,   0.025,   0.05,   0.1,   0.25,   0.5, 1, 2.5, 5};
  return b;
}

const pm::Histogram::BucketBoundaries& HttpBuckets() {
  static const pm::Histogram::BucketBoundaries b = ShardedHistogram::OneTwoFive(1e-5, 10);
  return b;
}

const pm::Histogram::BucketBoundaries& RotationBuckets() {
  static const pm::Histogram::BucketBoundaries b = {0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 21600};
  return b;
}

// One series of dyad_http_request_duration_seconds, resolved by its first
// request and kept: later requests load a pointer, no label lookup.
struct HttpSeries {
  std::string method;
  std::string route;
  std::atomic<pm::Histogram*> series{nullptr};
};

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

}  // namespace

ReadSource ReadSourceOf(std::string_view source) {
  for (size_t i = 0; i < kReadSources; ++i) {
    if (source == kReadSourceNames[i]) return static_cast<ReadSource>(i);
  }
  return ReadSource::kStore;
}

struct Metrics::Impl {
  std::shared_ptr<pm::Registry> registry = std::make_shared<pm::Registry>();
  std::shared_ptr<CacheCollectable> cache = std::make_shared<CacheCollectable>();
  ReadCollectable reads;
  KeyCollectable key;
  pm::Family<pm::Counter>& store_calls = pm::BuildCounter().Name("dyad_store_calls_total")
      .Help("Secret store calls by operation and outcome").Register(*registry);
  pm::Family<pm::Histogram>& store_latency = pm::BuildHistogram().Name("dyad_store_latency_seconds")
      .Help("Secret store call latency by operation").Register(*registry);
  pm::Family<pm::Counter>& km_calls = pm::BuildCounter().Name("dyad_keymanager_calls_total")
      .Help("Key manager calls by operation and outcome").Register(*registry);
  pm::Family<pm::Histogram>& km_latency = pm::BuildHistogram().Name("dyad_keymanager_latency_seconds")
      .Help("Key manager call latency by operation").Register(*registry);
  pm::Family<pm::Counter>& fallback = pm::BuildCounter().Name("dyad_fallback_reads_total")
      .Help("Credential reads answered by the DYAD_PROVIDER_* fallback").Register(*registry);
  pm::Family<pm::Counter>& tampered = pm::BuildCounter().Name("dyad_secrets_tampered_total")
      .Help("Stored secrets refused as tampered, by reason (rollback, integrity)").Register(*registry);
  pm::Family<pm::Counter>& http = pm::BuildCounter().Name("dyad_http_requests_total")
      .Help("HTTP requests by status class").Register(*registry);
  pm::Family<pm::Counter>& cloud_calls = pm::BuildCounter().Name("dyad_cloud_calls_total")
      .Help("Cloud service calls (all attempts of one) by endpoint, operation and outcome").Register(*registry);
  pm::Family<pm::Counter>& cloud_retries = pm::BuildCounter().Name("dyad_cloud_retries_total")
      .Help("Cloud service requests sent again, by endpoint and operation").Register(*registry);
  pm::Family<pm::Counter>& cloud_throttles = pm::BuildCounter().Name("dyad_cloud_throttles_total")
      .Help("Cloud service answers refusing for rate (429, throttling errors), by endpoint and operation")
      .Register(*registry);

  pm::Family<pm::Histogram>& http_latency = pm::BuildHistogram().Name("dyad_http_request_duration_seconds")
      .Help("HTTP request latency by method and route pattern (route=\"unmatched\": no route)").Register(*registry);
  pm::Family<pm::Histogram>& rotation_duration = pm::BuildHistogram().Name("dyad_key_rotation_duration_seconds")
      .Help("Key rotation run duration by outcome (completed, failed)").Register(*registry);
  pm::Family<pm::Counter>& rotations = pm::BuildCounter().Name("dyad_key_rotations_total")
      .Help("Key rotation runs ended, by outcome (completed, failed)").Register(*registry);
  pm::Family<pm::Gauge>& rotation_last = pm::BuildGauge().Name("dyad_key_rotation_last_success_timestamp_seconds")
      .Help("When the last key rotation completed (Unix seconds; 0: none since start)").Register(*registry);
  pm::Family<pm::Counter>& rotation_secrets = pm::BuildCounter().Name("dyad_key_rotation_secrets_total")
      .Help("Secrets visited by key rotations, by outcome (reencrypted, skipped, failed)").Register(*registry);
  pm::Family<pm::Counter>& warm_loads = pm::BuildCounter().Name("dyad_cache_warm_loads_total")
      .Help("Credentials loaded by cache warming, by outcome (ok, absent, error)").Register(*registry);
  pm::Family<pm::Gauge>& warming = pm::BuildGauge().Name("dyad_cache_warming")
      .Help("1 while the cache is being warmed").Register(*registry);
  pm::Family<pm::Counter>& changes_applied = pm::BuildCounter().Name("dyad_registry_changes_applied_total")
      .Help("Changes made by other instances applied from the change feed, by kind "
            "(credentials, deleted, key_epoch, everything)").Register(*registry);
  pm::Family<pm::Counter>& feed_reconnects = pm::BuildCounter().Name("dyad_registry_change_feed_reconnects_total")
      .Help("Change feed listener connections made again after a loss (each applies 'everything')")
      .Register(*registry);
  pm::Family<pm::Counter>& v1_requests = pm::BuildCounter().Name("dyad_v1_requests_total")
      .Help("/v1 requests routed to a provider, by provider slug, model and status answered").Register(*registry);
  pm::Family<pm::Histogram>& v1_upstream = pm::BuildHistogram().Name("dyad_v1_upstream_seconds")
      .Help("/v1 upstream latency: the request sent to the answer's head, by provider").Register(*registry);
  pm::Family<pm::Histogram>& v1_overhead = pm::BuildHistogram().Name("dyad_v1_overhead_seconds")
      .Help("/v1 gateway overhead before the upstream call (routing, credential read, headers)").Register(*registry);
  pm::Family<pm::Counter>& v1_bytes = pm::BuildCounter().Name("dyad_v1_streamed_bytes_total")
      .Help("/v1 answer body bytes passed on to clients, by provider").Register(*registry);
  pm::Histogram& v1_overhead_all = v1_overhead.Add({}, pm::Histogram::BucketBoundaries{
      1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 5e-2, 0.1, 1});

  std::array<pm::Counter*, 6> http_by_class{};
  // By route pattern, then method; filled once by SetHttpRoutes.
  std::unordered_map<std::string, std::vector<std::unique_ptr<HttpSeries>>, StringHash, std::equal_to<>> http_routes;
  HttpSeries http_unmatched{"other", "unmatched"};
  std::atomic<uint64_t> http_lookups{0};
  pm::Counter* rotation_secrets_by[3] = {};
  // ObserveV1's series, looked up by labels once per thread and key
  // (V1SeriesFor): the family's Add builds a label map and takes the
  // family's lock, which every /v1 request would otherwise pay.
  const uint64_t instance = NextInstance();
  std::atomic<uint64_t> v1_lookups{0};


  Impl() {
    for (int c = 1; c <= 5; ++c) http_by_class[c] = &http.Add({{"code", std::to_string(c) + "xx"}});
    for (const char* reason : {"rollback", "integrity"}) tampered.Add({{"reason", reason}});  // shown at 0
    // Shown at 0 from the start, so that rates and alerts have a series.
    for (const char* outcome : {"completed", "failed"}) {
      rotations.Add({{"outcome", outcome}});
      rotation_duration.Add({{"outcome", outcome}}, RotationBuckets());  // the dashboard's panel has a series
    }
    rotation_last.Add({});
    const char* secret_outcomes[] = {"reencrypted", "skipped", "failed"};
    for (int i = 0; i < 3; ++i) rotation_secrets_by[i] = &rotation_secrets.Add({{"outcome", secret_outcomes[i]}});
    for (const char* outcome : {"ok", "absent", "error"}) warm_loads.Add({{"outcome", outcome}});
    for (const char* kind : {"credentials", "deleted", "key_epoch", "everything"}) changes_applied.Add({{"kind", kind}});
    feed_reconnects.Add({});
    warming.Add({});
    fallback.Add({});
    for (const char* op : {"get", "put", "create", "delete"}) {
      for (const char* outcome : {"ok", "error"}) store_calls.Add({{"op", op}, {"outcome", outcome}});
    }
  }

  pm::Histogram& LookUpHttp(std::string method, std::string route) {
    http_lookups.fetch_add(1, std::memory_order_relaxed);
    return http_latency.Add({{"method", std::move(method)}, {"route", std::move(route)}}, HttpBuckets());
  }
  pm::Histogram& Resolve(HttpSeries& s) {
    pm::Histogram* h = s.series.load(std::memory_order_acquire);
    if (h == nullptr) {  // a race here looks up twice and stores the same series
      h = &LookUpHttp(s.method, s.route);
      s.series.store(h, std::memory_order_release);
    }
    return *h;
  }
  pm::Histogram& HttpHistogram(std::string_view method, std::string_view route) {
    if (route.empty()) return Resolve(http_unmatched);
    if (auto it = http_routes.find(route); it != http_routes.end()) {
      for (auto& s : it->second) {
        if (s->method == method) return Resolve(*s);
      }
    }
    return LookUpHttp(std::string(method), std::string(route));
  }

  static uint64_t NextInstance() {
    static std::atomic<uint64_t> next{1};
    return next.fetch_add(1, std::memory_order_relaxed);
  }

  // One (provider, model, status)'s series; the per-provider ones made on
  // first use, so that a series shows only once it has a value (as before).
  struct V1Series {
    pm::Counter* requests = nullptr;
    pm::Histogram* upstream = nullptr;
    pm::Counter* bytes = nullptr;
  };
  // This thread's cache of them: a map per thread (for the Metrics it was
  // filled for; another instance, in tests, starts it again), bounded since
  // a model outside the provider's list is already "other".
  V1Series& V1SeriesFor(std::string_view provider, std::string_view model, int status) {
    struct Cache {
      uint64_t owner = 0;
      std::string key;
      std::unordered_map<std::string, V1Series, StringHash, std::equal_to<>> series;
    };
    thread_local Cache cache;
    if (cache.owner != instance || cache.series.size() >= 4096) {
      cache.series.clear();
      cache.owner = instance;
    }
    // Lengths first: no two label sets spell the same key.
    cache.key.assign(std::to_string(provider.size())).push_back(':');
    cache.key.append(provider).append(std::to_string(model.size())).push_back(':');
    cache.key.append(model).append(std::to_string(status));
    auto it = cache.series.find(std::string_view(cache.key));
    if (it == cache.series.end()) {
      v1_lookups.fetch_add(1, std::memory_order_relaxed);
      V1Series s;
      s.requests = &v1_requests.Add(
          {{"provider", std::string(provider)}, {"model", std::string(model)}, {"status", std::to_string(status)}});
      it = cache.series.emplace(cache.key, s).first;
    }
    return it->second;
  }

  void Observe(pm::Family<pm::Counter>& calls, pm::Family<pm::Histogram>& latency, std::string_view op,
               double seconds, bool ok) {
    calls.Add({{"op", std::string(op)}, {"outcome", ok ? "ok" : "error"}}).Increment();
    latency.Add({{"op", std::string(op)}}, LatencyBuckets()).Observe(seconds);
  }
};

Metrics::Metrics() : impl_(std::make_unique<Impl>()) {}
Metrics::~Metrics() = default;

void Metrics::ObserveStore(std::string_view op, double seconds, bool ok) {
  impl_->Observe(impl_->store_calls, impl_->store_latency, op, seconds, ok);
}
void Metrics::ObserveKeyManager(std::string_view op, double seconds, bool ok) {
  impl_->Observe(impl_->km_calls, impl_->km_latency, op, seconds, ok);
}
void Metrics::CountFallbackRead() { impl_->fallback.Add({}).Increment(); }
void Metrics::CountTampered(std::string_view reason) { impl_->tampered.Add({{"reason", std::string(reason)}}).Increment(); }
void Metrics::CountHttpRequest(int status) {
  int c = status / 100;
  impl_->http_by_class[(c >= 1 && c <= 5) ? c : 5]->Increment();
}
void Metrics::SetCacheStats(std::function<CacheStats()> source) { impl_->cache->Set(std::move(source)); }
void Metrics::ObserveRead(ReadSource source, Clock::Duration elapsed, uint64_t weight) {
  impl_->reads.Observe(source, elapsed, weight);
}
void Metrics::ObserveHttpLatency(std::string_view method, std::string_view route, double seconds) {
  impl_->HttpHistogram(method, route).Observe(seconds);
}
void Metrics::SetHttpRoutes(const std::vector<std::pair<std::string, std::string>>& routes) {
  for (const auto& [method, pattern] : routes) {
    auto& by_method = impl_->http_routes[pattern];
    bool known = false;
    for (const auto& s : by_method) known = known || s->method == method;
    if (known) continue;
    by_method.push_back(std::make_unique<HttpSeries>());
    by_method.back()->method = method;
    by_method.back()->route = pattern;
  }
}
uint64_t Metrics::HttpSeriesLookups() const { return impl_->http_lookups.load(std::memory_order_relaxed); }
uint64_t Metrics::V1SeriesLookups() const { return impl_->v1_lookups.load(std::memory_order_relaxed); }
void Metrics::ObserveRotation(std::string_view outcome, double seconds, std::optional<double> completed_at) {
  impl_->rotations.Add({{"outcome", std::string(outcome)}}).Increment();
  impl_->rotation_duration.Add({{"outcome", std::string(outcome)}}, RotationBuckets()).Observe(seconds);
  if (completed_at) impl_->rotation_last.Add({}).Set(*completed_at);
}
void Metrics::CountRotationSecrets(int64_t reencrypted, int64_t skipped, int64_t failed) {
  impl_->rotation_secrets_by[0]->Increment(double(reencrypted));
  impl_->rotation_secrets_by[1]->Increment(double(skipped));
  impl_->rotation_secrets_by[2]->Increment(double(failed));
}
void Metrics::SetKeyState(std::function<Result<KeyState>()> source, uint64_t max_encryptions) {
  impl_->key.Set(std::move(source), max_encryptions);
}
void Metrics::CountWarmLoad(std::string_view outcome) {
  impl_->warm_loads.Add({{"outcome", std::string(outcome)}}).Increment();
}
void Metrics::ObserveV1(std::string_view provider, std::string_view model, int status,
                        std::optional<double> upstream_seconds, double overhead_seconds, uint64_t streamed_bytes) {
  Impl::V1Series& s = impl_->V1SeriesFor(provider, model, status);
  s.requests->Increment();
  if (upstream_seconds) {
    if (!s.upstream) s.upstream = &impl_->v1_upstream.Add({{"provider", std::string(provider)}}, HttpBuckets());
    s.upstream->Observe(*upstream_seconds);
  }
  impl_->v1_overhead_all.Observe(overhead_seconds);
  if (streamed_bytes) {
    if (!s.bytes) s.bytes = &impl_->v1_bytes.Add({{"provider", std::string(provider)}});
    s.bytes->Increment(static_cast<double>(streamed_bytes));
  }
}

void Metrics::SetWarming(bool warming) { impl_->warming.Add({}).Set(warming ? 1 : 0); }
void Metrics::CountChangeApplied(std::string_view kind) {
  impl_->changes_applied.Add({{"kind", std::string(kind)}}).Increment();
}
void Metrics::CountChangeFeedReconnect() { impl_->feed_reconnects.Add({}).Increment(); }

void Metrics::OnCall(std::string_view endpoint, std::string_view op, std::optional<ErrorCode> error) {
  std::string outcome = "ok";
  if (error) {
    outcome = AsciiLower(ErrorCodeName(*error));
  }
  impl_->cloud_calls.Add({{"endpoint", std::string(endpoint)}, {"op", std::string(op)}, {"outcome", outcome}})
      .Increment();
  // Shown at 0 beside the calls, so that retry and throttle rates have a series.
  impl_->cloud_retries.Add({{"endpoint", std::string(endpoint)}, {"op", std::string(op)}});
  impl_->cloud_throttles.Add({{"endpoint", std::string(endpoint)}, {"op", std::string(op)}});
}
void Metrics::OnRetry(std::string_view endpoint, std::string_view op) {
  impl_->cloud_retries.Add({{"endpoint", std::string(endpoint)}, {"op", std::string(op)}}).Increment();
}
void Metrics::OnThrottle(std::string_view endpoint, std::string_view op) {
  impl_->cloud_throttles.Add({{"endpoint", std::string(endpoint)}, {"op", std::string(op)}}).Increment();
}

void Metrics::OnAttempt(std::string_view endpoint, std::string_view op, int attempt, int http_status,
                        std::optional<ErrorCode> error, Clock::Duration elapsed) {
  if (!spdlog::should_log(spdlog::level::debug)) return;
  spdlog::debug("backend call: endpoint={} op={} attempt={} status={} duration_ms={:.3f}", endpoint, op, attempt,
                error ? std::string(ErrorCodeName(*error)) : std::to_string(http_status),
                std::chrono::duration<double, std::milli>(elapsed).count());
}

std::string Metrics::Render() const {
  auto families = impl_->registry->Collect();
  for (const pm::Collectable* c : std::initializer_list<const pm::Collectable*>{impl_->cache.get(), &impl_->reads,
                                                                                &impl_->key}) {
    auto more = c->Collect();
    families.insert(families.end(), more.begin(), more.end());
  }
  return pm::TextSerializer().Serialize(families);
}

}  // namespace dyad
