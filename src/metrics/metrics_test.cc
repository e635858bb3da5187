#include "metrics/metrics.h"

#include <gtest/gtest.h>

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
       }) {
    EXPECT_NE(text.find(line), std::string::npos) << line << "\n" << text;
  }
}

}  // namespace
}  // namespace dyad
