// One client of bench/aws_bench.py: N cache-miss reads of one secret through
// the gateway's own AWS path (SecretsManagerStore::Get: SigV4 signing, JSON,
// the pooled libcurl transport), printing each round trip in microseconds.
// Usage: dyad_aws_get_bench ENDPOINT SECRET_NAME COUNT (credentials and
// region from the environment, as the service takes them).
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "backends/aws/aws_json_client.h"
#include "backends/aws/secrets_manager_store.h"
#include "core/environment.h"
#include "core/random.h"
#include "transport/curl_transport.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s ENDPOINT SECRET_NAME COUNT\n", argv[0]);
    return 2;
  }
  using namespace dyad;
  spdlog::set_level(spdlog::level::off);  // stdout carries only the samples
  SystemClock clock;
  EnvMap env = ReadProcessEnvironment();
  auto http = NewCurlTransport();
  auto creds = NewAwsCredentialChain({env, env["AWS_REGION"], ""}, *http, clock);
  auto client = AwsJsonClient::Create({"secretsmanager", "secretsmanager", argv[1], env["AWS_REGION"], {}}, *creds,
                                      NewCurlTransport(), clock, DefaultRandom());
  if (!client.ok()) {
    std::fprintf(stderr, "%s\n", client.error().message.c_str());
    return 1;
  }
  auto store = NewSecretsManagerStore({}, std::move(client).value());
  const std::string name = argv[2];
  const int count = std::atoi(argv[3]);
  for (int i = 0; i < count; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    auto v = store->Get(name);
    auto us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    if (!v.ok()) {
      std::fprintf(stderr, "%s\n", v.error().message.c_str());
      return 1;
    }
    std::printf("%.1f\n", us);
  }
  return 0;
}
