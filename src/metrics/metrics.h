// Metrics: the service's Prometheus metrics, rendered as text for /metrics.
//
// Store and key-manager calls are counted and timed per operation and
// outcome; fallback reads are counted, and so are stored secrets refused as
// tampered (by reason: "rollback" for a credentials version older than the
// registry's, "integrity" for an envelope that fails authentication). Cache counters are read at scrape
// time from the cache's own per-shard counters, so the hit path pays for no
// shared atomic. Thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "secrets/credential_cache.h"

namespace dyad {

class Metrics {
 public:
  Metrics();
  ~Metrics();

  void ObserveStore(std::string_view op, double seconds, bool ok);
  void ObserveKeyManager(std::string_view op, double seconds, bool ok);
  void CountFallbackRead();
  void CountTampered(std::string_view reason);
  void CountHttpRequest(int status);
  void SetCacheStats(std::function<CacheStats()> source);

  std::string Render() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dyad
