#include "metrics/metrics.h"

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <array>
#include <cctype>

#include "core/mutex.h"

namespace dyad {
namespace pm = prometheus;

namespace {

pm::MetricFamily CounterFamily(std::string name, std::string help, double value) {
  pm::MetricFamily f{std::move(name), std::move(help), pm::MetricType::Counter, {}};
  pm::ClientMetric m;
  m.counter.value = value;
  f.metric.push_back(m);
  return f;
}

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
    pm::MetricFamily size{"dyad_cache_entries", "Entries in the credential cache", pm::MetricType::Gauge, {}};
    pm::ClientMetric m;
    m.gauge.value = double(s.size);
    size.metric.push_back(m);
    out.push_back(size);
    return out;
  }

 private:
  mutable Mutex mu_;
  std::function<CacheStats()> source_ DYAD_GUARDED_BY(mu_);
};

const pm::Histogram::BucketBoundaries& LatencyBuckets() {
  static const pm::Histogram::BucketBoundaries b = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                    0.01,   0.025,   0.05,   0.1,   0.25,   0.5, 1, 2.5, 5};
  return b;
}

}  // namespace

struct Metrics::Impl {
  std::shared_ptr<pm::Registry> registry = std::make_shared<pm::Registry>();
  std::shared_ptr<CacheCollectable> cache = std::make_shared<CacheCollectable>();
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

  std::array<pm::Counter*, 6> http_by_class{};

  Impl() {
    for (int c = 1; c <= 5; ++c) http_by_class[c] = &http.Add({{"code", std::to_string(c) + "xx"}});
    for (const char* reason : {"rollback", "integrity"}) tampered.Add({{"reason", reason}});  // shown at 0
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

void Metrics::OnCall(std::string_view endpoint, std::string_view op, std::optional<ErrorCode> error) {
  std::string outcome = "ok";
  if (error) {
    outcome = ErrorCodeName(*error);
    for (char& c : outcome) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  impl_->cloud_calls.Add({{"endpoint", std::string(endpoint)}, {"op", std::string(op)}, {"outcome", outcome}})
      .Increment();
}
void Metrics::OnRetry(std::string_view endpoint, std::string_view op) {
  impl_->cloud_retries.Add({{"endpoint", std::string(endpoint)}, {"op", std::string(op)}}).Increment();
}
void Metrics::OnThrottle(std::string_view endpoint, std::string_view op) {
  impl_->cloud_throttles.Add({{"endpoint", std::string(endpoint)}, {"op", std::string(op)}}).Increment();
}

std::string Metrics::Render() const {
  auto families = impl_->registry->Collect();
  auto cache = impl_->cache->Collect();
  families.insert(families.end(), cache.begin(), cache.end());
  return pm::TextSerializer().Serialize(families);
}

}  // namespace dyad
