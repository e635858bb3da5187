// Metrics: the service's Prometheus metrics, rendered as text for /metrics.
//
// Store and key-manager calls are counted and timed per operation and
// outcome; fallback reads are counted, and so are stored secrets refused as
// tampered (by reason: "rollback" for a credentials version older than the
// registry's, "integrity" for an envelope that fails authentication). Cache counters are read at scrape
// time from the cache's own per-shard counters, so the hit path pays for no
// shared atomic. Calls of cloud services are counted per endpoint and
// operation (CloudCallObserver): dyad_cloud_calls_total by outcome ("ok" or
// the error's code, e.g. "unavailable"), dyad_cloud_retries_total and
// dyad_cloud_throttles_total. Thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "cloud/call_observer.h"
#include "secrets/credential_cache.h"

namespace dyad {

class Metrics final : public CloudCallObserver {
 public:
  Metrics();
  ~Metrics() override;

  void ObserveStore(std::string_view op, double seconds, bool ok);
  void ObserveKeyManager(std::string_view op, double seconds, bool ok);
  void CountFallbackRead();
  void CountTampered(std::string_view reason);
  void CountHttpRequest(int status);
  void SetCacheStats(std::function<CacheStats()> source);

  void OnCall(std::string_view endpoint, std::string_view op, std::optional<ErrorCode> error) override;
  void OnRetry(std::string_view endpoint, std::string_view op) override;
  void OnThrottle(std::string_view endpoint, std::string_view op) override;

  std::string Render() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dyad
