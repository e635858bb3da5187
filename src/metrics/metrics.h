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
// dyad_cloud_throttles_total.
//
// Credential reads are timed end to end by source (dyad_credential_read_seconds,
// 1-2-5 buckets from 100 ns to 10 s) in ShardedHistograms: a cache hit adds to
// its thread's own stripe, never to a shared line, and only 1 in kHitSample
// hits is timed (SampleHit). HTTP requests are timed by
// the router's pattern (never the raw path: no ids in labels). Key rotations:
// duration by outcome, the last success's time, the secrets re-encrypted,
// skipped and failed; the primary key version and its wear (encryptions under
// it, and the limit that triggers a rotation) are read from the key manager's
// registry at scrape time. Cache warming counts its loads. Thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "backends/key_manager.h"
#include "cloud/call_observer.h"
#include "core/clock.h"
#include "secrets/credential_cache.h"

namespace dyad {

// Where a credential read was answered from (CredentialRead::source).
enum class ReadSource : uint8_t { kCache, kStore, kStale, kFallback, kEnvironment };
inline constexpr size_t kReadSources = 5;
// "cache", "store", … → the enum; kStore for anything else.
ReadSource ReadSourceOf(std::string_view source);

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
  // The end-to-end time of one credential read (`weight`: how many reads it
  // stands for); cheap for kCache (see above).
  void ObserveRead(ReadSource source, Clock::Duration elapsed, uint64_t weight = 1);
  // Cache hits are timed 1 in kHitSample per thread (a thread's first hit
  // among them), each sample observed with weight kHitSample: a hit then
  // pays for a thread-local count, and one in kHitSample for a clock read
  // and the observation. Counts and sums estimate all hits (the exact hit
  // count is dyad_cache_hits_total).
  static constexpr uint64_t kHitSample = 16;
  static bool SampleHit() {
    thread_local uint32_t hits = 0;
    return hits++ % kHitSample == 0;
  }
  // `route`: the router's pattern ("" when none matched); `method` only
  // when a route matched (a client's method is not a bounded set). A route
  // given to SetHttpRoutes, and "no route", find their series without a
  // label lookup or the family's lock (after the first request, which
  // creates the series: /metrics shows a route once it has been asked for);
  // prometheus-cpp's Histogram::Observe still locks that series' own mutex.
  void ObserveHttpLatency(std::string_view method, std::string_view route, double seconds);
  // The router's routes, (method, pattern): call once, before serving (not
  // thread-safe against ObserveHttpLatency). A route not given here is
  // still timed, at the cost of a label lookup per request.
  void SetHttpRoutes(const std::vector<std::pair<std::string, std::string>>& routes);
  // For tests: how many times ObserveHttpLatency looked a series up by its
  // labels (prometheus-cpp's Family::Add, under its lock).
  uint64_t HttpSeriesLookups() const;
  // One rotation run ended: `outcome` is "completed" or "failed";
  // `completed_at` (Unix seconds) only when it completed.
  void ObserveRotation(std::string_view outcome, double seconds, std::optional<double> completed_at);
  void CountRotationSecrets(int64_t reencrypted, int64_t skipped, int64_t failed);
  // The key manager's state, asked at scrape time (the registry's, no KMS
  // call); `max_encryptions`: the wear limit (KEY_ROTATION_MAX_ENCRYPTIONS).
  void SetKeyState(std::function<Result<KeyState>()> source, uint64_t max_encryptions);
  // outcome: ok | absent (no credentials) | error
  void CountWarmLoad(std::string_view outcome);
  void SetWarming(bool warming);
  // The change feed (registry/change_feed.h): a change from another
  // instance applied (kind: credentials | deleted | key_epoch | everything),
  // and its listener's connection made again after a loss.
  void CountChangeApplied(std::string_view kind);
  void CountChangeFeedReconnect();

  // One /v1 request (DESIGN.md §12) that reached a provider: `provider`
  // its slug, `model` one of the provider's listed models (else "other":
  // a client's string is not a bounded label set), `status` what the
  // client was answered. dyad_v1_requests_total{provider,model,status};
  // dyad_v1_upstream_seconds{provider} (the request sent to the answer's
  // head; when one came); dyad_v1_overhead_seconds (the gateway's own work
  // before the upstream call: routing, the credential read, the headers);
  // dyad_v1_streamed_bytes_total{provider} (body bytes passed on).
  // Its series are found by their labels once per thread and (provider,
  // model, status), then kept: a request pays no label lookup.
  void ObserveV1(std::string_view provider, std::string_view model, int status,
                 std::optional<double> upstream_seconds, double overhead_seconds, uint64_t streamed_bytes);
  // For tests: how many times ObserveV1 looked its series up by labels.
  uint64_t V1SeriesLookups() const;

  void OnCall(std::string_view endpoint, std::string_view op, std::optional<ErrorCode> error) override;
  void OnRetry(std::string_view endpoint, std::string_view op) override;
  void OnThrottle(std::string_view endpoint, std::string_view op) override;
  // Not a metric: one debug log line per attempt (endpoint, operation,
  // attempt, HTTP status or error, duration); never a body or header.
  void OnAttempt(std::string_view endpoint, std::string_view op, int attempt, int http_status,
                 std::optional<ErrorCode> error, Clock::Duration elapsed) override;

  std::string Render() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dyad
