#include "metrics/metrics.h"

#include <gtest/gtest.h>

#include <thread>

namespace dyad {
namespace {

TEST(Metrics, CountsCloudCallsRetriesAndThrottlesPerEndpointAndOperation) {
  Metrics metrics;
  CloudCallObserver& observer = metrics;
  observer.OnCall("kms.eu-west-1.amazonaws.com", "Decrypt", std::nullopt);
  observer.OnCall("kms.eu-west-1.amazonaws.com", "Decrypt", std::nullopt);
  observer.OnCall("kms.eu-west-1.amazonaws.com", "Decrypt", ErrorCode::kUnavailable);
  observer.OnRetry("kms.eu-west-1.amazonaws.com", "Decrypt");
  observer.OnThrottle("secretsmanager.eu-west-1.amazonaws.com", "GetSecretValue");
  std::string text = metrics.Render();
  for (const char* line : {
           R"(dyad_cloud_calls_total{endpoint="kms.eu-west-1.amazonaws.com",op="Decrypt",outcome="ok"} 2)",
           R"(dyad_cloud_calls_total{endpoint="kms.eu-west-1.amazonaws.com",op="Decrypt",outcome="unavailable"} 1)",
           R"(dyad_cloud_retries_total{endpoint="kms.eu-west-1.amazonaws.com",op="Decrypt"} 1)",
           R"(dyad_cloud_throttles_total{endpoint="secretsmanager.eu-west-1.amazonaws.com",op="GetSecretValue"} 1)",
           // At 0 beside a call, so that rates and alerts have a series before the first retry.
           R"(dyad_cloud_throttles_total{endpoint="kms.eu-west-1.amazonaws.com",op="Decrypt"} 0)",
       }) {
    EXPECT_NE(text.find(line), std::string::npos) << line << "\n" << text;
  }
}

}  // namespace
}  // namespace dyad

namespace dyad {
namespace {

TEST(Metrics, TimesReadsBySourceWithBucketsFrom100NanosecondsTo10Seconds) {
  Metrics metrics;
  metrics.ObserveRead(ReadSource::kCache, std::chrono::nanoseconds(80));
  metrics.ObserveRead(ReadSource::kStore, std::chrono::milliseconds(3));
  std::string text = metrics.Render();
  EXPECT_NE(text.find(R"(dyad_credential_read_seconds_bucket{source="cache",le="1e-07"} 1)"), std::string::npos) << text;
  EXPECT_NE(text.find(R"(dyad_credential_read_seconds_bucket{source="cache",le="10"} 1)"), std::string::npos) << text;
  EXPECT_NE(text.find(R"(dyad_credential_read_seconds_count{source="store"} 1)"), std::string::npos) << text;
  EXPECT_NE(text.find(R"(dyad_credential_read_seconds_bucket{source="store",le="0.002"} 0)"), std::string::npos);
  EXPECT_NE(text.find(R"(dyad_credential_read_seconds_bucket{source="store",le="0.005"} 1)"), std::string::npos);
  EXPECT_NE(text.find(R"(dyad_credential_read_seconds_count{source="fallback"} 0)"), std::string::npos);
  EXPECT_EQ(ReadSourceOf("stale"), ReadSource::kStale);
  EXPECT_EQ(ReadSourceOf("something else"), ReadSource::kStore);
}

TEST(Metrics, LabelsHttpLatencyByRoutePatternAndFoldsUnmatchedRequests) {
  Metrics metrics;
  metrics.ObserveHttpLatency("GET", "/admin/providers/{id}", 0.002);
  metrics.ObserveHttpLatency("BREW", "", 0.001);
  std::string text = metrics.Render();
  EXPECT_NE(text.find(R"(dyad_http_request_duration_seconds_count{method="GET",route="/admin/providers/{id}"} 1)"),
            std::string::npos) << text;
  EXPECT_NE(text.find(R"(dyad_http_request_duration_seconds_count{method="other",route="unmatched"} 1)"),
            std::string::npos) << text;
  EXPECT_EQ(text.find("BREW"), std::string::npos);
}

TEST(Metrics, RecordsRotationsTheirSecretsAndTheKeysWear) {
  Metrics metrics;
  EXPECT_NE(metrics.Render().find("dyad_key_rotation_last_success_timestamp_seconds 0"), std::string::npos);
  // Every rotation series is there before the first run (alerts and the dashboard's panels have one).
  EXPECT_NE(metrics.Render().find(R"(dyad_key_rotation_duration_seconds_count{outcome="completed"} 0)"),
            std::string::npos);
  metrics.ObserveRotation("completed", 12.5, 1700000000.0);
  metrics.ObserveRotation("failed", 1, std::nullopt);
  metrics.CountRotationSecrets(7, 2, 1);
  KeyState state;
  state.primary_version = 3;
  state.versions.push_back(KeyVersionInfo{});
  state.versions.back().version = 3;
  state.versions.back().encryptions = 1234;
  metrics.SetKeyState([state] { return Result<KeyState>(state); }, 4294967295ULL);
  std::string text = metrics.Render();
  for (const char* line : {
           R"(dyad_key_rotations_total{outcome="completed"} 1)",
           R"(dyad_key_rotations_total{outcome="failed"} 1)",
           R"(dyad_key_rotation_duration_seconds_count{outcome="completed"} 1)",
           "dyad_key_rotation_last_success_timestamp_seconds 1700000000",
           R"(dyad_key_rotation_secrets_total{outcome="reencrypted"} 7)",
           R"(dyad_key_rotation_secrets_total{outcome="skipped"} 2)",
           R"(dyad_key_rotation_secrets_total{outcome="failed"} 1)",
           "dyad_key_primary_version 3",
           "dyad_key_primary_encryptions 1234",
           "dyad_key_max_encryptions 4294967295",
       }) {
    EXPECT_NE(text.find(line), std::string::npos) << line << "\n" << text;
  }
}

TEST(Metrics, LeavesOutTheKeyGaugesWhenTheKeyStateCannotBeRead) {
  Metrics metrics;
  metrics.SetKeyState([] { return Result<KeyState>(MakeError(ErrorCode::kUnavailable, "down")); }, 10);
  EXPECT_EQ(metrics.Render().find("dyad_key_primary_version"), std::string::npos);
}

}  // namespace
}  // namespace dyad

namespace dyad {
namespace {

void ObserveSomeRequests(Metrics& metrics, int n) {
  for (int i = 0; i < n; ++i) {
    metrics.ObserveHttpLatency("GET", "/admin/providers/{id}", 0.002);
    metrics.ObserveHttpLatency("POST", "/admin/providers/{id}", 0.003);
    metrics.ObserveHttpLatency("BREW", "", 0.001);
    metrics.ObserveHttpLatency("GET", "", 0.001);
  }
}

TEST(Metrics, FindsAKnownRoutesLatencySeriesWithoutALabelLookupPerRequest) {
  Metrics metrics;
  metrics.SetHttpRoutes({{"GET", "/admin/providers/{id}"}, {"POST", "/admin/providers/{id}"}, {"GET", "/healthz"}});
  ObserveSomeRequests(metrics, 50);
  // One lookup per series (its first request), none per request: the two
  // routes and "unmatched".
  EXPECT_EQ(metrics.HttpSeriesLookups(), 3u);
  ObserveSomeRequests(metrics, 50);
  EXPECT_EQ(metrics.HttpSeriesLookups(), 3u);
  std::string text = metrics.Render();
  EXPECT_NE(text.find(R"(dyad_http_request_duration_seconds_count{method="GET",route="/admin/providers/{id}"} 100)"),
            std::string::npos) << text;
  EXPECT_NE(text.find(R"(dyad_http_request_duration_seconds_count{method="POST",route="/admin/providers/{id}"} 100)"),
            std::string::npos) << text;
  EXPECT_NE(text.find(R"(dyad_http_request_duration_seconds_count{method="other",route="unmatched"} 200)"),
            std::string::npos) << text;
}

TEST(Metrics, RendersTheSameHttpLatencyWhetherOrNotTheRoutesWereGiven) {
  Metrics with_routes;
  with_routes.SetHttpRoutes({{"GET", "/admin/providers/{id}"}, {"POST", "/admin/providers/{id}"}, {"GET", "/healthz"}});
  Metrics without;
  // A route's series appears with its first request, as before: none yet.
  EXPECT_EQ(with_routes.Render(), without.Render());
  EXPECT_EQ(with_routes.Render().find("/healthz"), std::string::npos);
  ObserveSomeRequests(with_routes, 3);
  ObserveSomeRequests(without, 3);
  EXPECT_EQ(with_routes.Render(), without.Render());
  // A route that was not given is still timed, by a lookup per request.
  uint64_t before = with_routes.HttpSeriesLookups();
  with_routes.ObserveHttpLatency("DELETE", "/admin/providers/{id}", 0.001);
  with_routes.ObserveHttpLatency("DELETE", "/admin/providers/{id}", 0.001);
  EXPECT_EQ(with_routes.HttpSeriesLookups(), before + 2);
  EXPECT_NE(with_routes.Render().find(
                R"(dyad_http_request_duration_seconds_count{method="DELETE",route="/admin/providers/{id}"} 2)"),
            std::string::npos);
}

TEST(Metrics, CountsV1RequestsWithOneLabelLookupPerSeriesAndThread) {
  Metrics a;
  Metrics b;
  for (int i = 0; i < 10; ++i) {
    a.ObserveV1("openai", "gpt-4o", 200, 0.01, 1e-5, 100);
    a.ObserveV1("openai", "gpt-4o", 502, std::nullopt, 1e-5, 0);
    b.ObserveV1("openai", "gpt-4o", 200, 0.01, 1e-5, 0);  // the same labels, another instance
  }
  // Labels whose plain concatenation would match ("a1" "2" vs "a" "12").
  a.ObserveV1("a1", "2", 200, std::nullopt, 1e-5, 0);
  a.ObserveV1("a", "12", 200, std::nullopt, 1e-5, 0);
  std::thread([&] { a.ObserveV1("openai", "gpt-4o", 200, 0.01, 1e-5, 1); }).join();
  // One lookup per series and thread, even with two instances taking turns
  // on this thread (each refills it once per turn: at most 10 each here).
  EXPECT_LE(a.V1SeriesLookups(), 2u * 10 + 2 + 1);
  uint64_t before = a.V1SeriesLookups();
  for (int i = 0; i < 100; ++i) a.ObserveV1("openai", "gpt-4o", 200, 0.01, 1e-5, 100);
  EXPECT_EQ(a.V1SeriesLookups(), before + 1);  // refilled once after b's turn, then found
  std::string text = a.Render();
  EXPECT_NE(text.find(R"(dyad_v1_requests_total{model="gpt-4o",provider="openai",status="200"} 111)"),
            std::string::npos) << text;
  EXPECT_NE(text.find(R"(dyad_v1_requests_total{model="gpt-4o",provider="openai",status="502"} 10)"),
            std::string::npos) << text;
  EXPECT_NE(text.find(R"(dyad_v1_requests_total{model="2",provider="a1",status="200"} 1)"), std::string::npos);
  EXPECT_NE(text.find(R"(dyad_v1_requests_total{model="12",provider="a",status="200"} 1)"), std::string::npos);
  EXPECT_NE(text.find(R"(dyad_v1_streamed_bytes_total{provider="openai"} 11001)"), std::string::npos) << text;
  EXPECT_NE(text.find(R"(dyad_v1_upstream_seconds_count{provider="openai"} 111)"), std::string::npos) << text;
  // A provider that never streamed a byte shows no bytes series.
  EXPECT_EQ(text.find(R"(dyad_v1_streamed_bytes_total{provider="a")"), std::string::npos);
  EXPECT_NE(b.Render().find(R"(dyad_v1_requests_total{model="gpt-4o",provider="openai",status="200"} 10)"),
            std::string::npos);
  EXPECT_EQ(b.Render().find("dyad_v1_streamed_bytes_total{"), std::string::npos);
}

}  // namespace
}  // namespace dyad
