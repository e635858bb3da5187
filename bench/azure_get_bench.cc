// One client of bench/azure_bench.py: N cache-miss credential reads through
// the gateway's own Azure path (the "azure" backend as the service opens it:
// AzureSecretStore::Get, then the Sealer's open — a Key Vault unwrapKey of
// the data key and AES-GCM), printing each read's time in microseconds.
// Usage: dyad_azure_get_bench SECRET_NAME (seal | COUNT)
// with the backend's settings in the environment (AZURE_KEY_VAULT_URL,
// AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET, ENCRYPTION_KEY_ID,
// …); `seal` stores one sealed credential under SECRET_NAME first. Before the
// timed reads one read is made untimed: it pays the 401 challenge, the Entra
// token and the TLS handshake, which a running gateway has long paid.
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "backends/azure/factory.h"
#include "backends/registry.h"
#include "core/config.h"
#include "core/environment.h"
#include "core/random.h"
#include "secrets/sealer.h"

namespace {

int Fail(const dyad::Error& e) {
  std::fprintf(stderr, "%s\n", e.message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s SECRET_NAME (seal | COUNT)\n", argv[0]);
    return 2;
  }
  using namespace dyad;
  spdlog::set_level(spdlog::level::off);  // stdout carries only the samples
  const std::string name = argv[1];
  auto dir = std::filesystem::temp_directory_path() / ("dyad-azure-bench-" + NewUuid(DefaultRandom()));
  std::filesystem::create_directories(dir);
  EnvMap env = ReadProcessEnvironment();
  env["SECRETS_PROVIDER"] = "azure";
  env["SECRETS_ENCRYPTION_MODE"] = "envelope";
  env["GATEWAY_ADMIN_API_KEY"] = "bench-token-not-used";
  env["GATEWAY_DATA_DIR"] = dir.string();
  BackendRegistry registry;
  if (Status s = RegisterAzureBackend(registry); !s.ok()) return Fail(s.error());
  auto config = LoadConfig(env, false, [&](const Config& c) { return registry.Check(c); });
  if (!config.ok()) return Fail(config.error());
  auto db = SqliteDb::Open((dir / "bench.db").string());
  if (!db.ok()) return Fail(db.error());
  SystemClock clock;
  auto backend = registry.Open(BackendContext{*config, SqliteDatabase(*db), clock, DefaultRandom()});
  if (!backend.ok()) return Fail(backend.error());
  Sealer sealer(*backend->keys, DefaultRandom());
  auto read = [&]() -> Result<OpenedSecret> {
    auto stored = backend->store->Get(name);
    if (!stored.ok()) return stored.error();
    return sealer.Open(name, stored->value);
  };
  int status = 0;
  if (std::string(argv[2]) == "seal") {
    // About the size of a provider's credentials.
    auto sealed = sealer.Seal(name, 1, SecretBytes(R"({"api_key":")" + std::string(120, 'k') + R"("})"));
    Status put = sealed.ok() ? backend->store->Put(name, *sealed) : Status(sealed.error());
    if (!put.ok()) status = Fail(put.error());
  } else if (auto warm = read(); !warm.ok()) {
    status = Fail(warm.error());
  } else {
    const int count = std::atoi(argv[2]);
    for (int i = 0; i < count && status == 0; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      auto opened = read();
      auto us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
      if (!opened.ok()) status = Fail(opened.error());
      else std::printf("%.1f\n", us);
    }
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  return status;
}
