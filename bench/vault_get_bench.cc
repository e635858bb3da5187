// One client of bench/vault_bench.py: N cache-miss credential reads through
// the gateway's own Vault path (the "vault" backend as the service opens it:
// VaultKvStore::Get, then the Sealer's open — a Transit decrypt of the data
// key and AES-GCM), printing each read's time in microseconds.
// Usage: dyad_vault_get_bench VAULT_ADDR SECRET_NAME TRANSIT_KEY (seal | COUNT)
// with VAULT_TOKEN in the environment; `seal` stores one sealed credential
// under SECRET_NAME first.
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "backends/registry.h"
#include "backends/vault/factory.h"
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
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s VAULT_ADDR SECRET_NAME TRANSIT_KEY (seal | COUNT)\n", argv[0]);
    return 2;
  }
  using namespace dyad;
  spdlog::set_level(spdlog::level::off);  // stdout carries only the samples
  const std::string name = argv[2];
  auto dir = std::filesystem::temp_directory_path() / ("dyad-vault-bench-" + NewUuid(DefaultRandom()));
  std::filesystem::create_directories(dir);
  EnvMap env = ReadProcessEnvironment();
  env["SECRETS_PROVIDER"] = "vault";
  env["VAULT_ADDR"] = argv[1];
  env["ENCRYPTION_KEY_ID"] = argv[3];
  env["GATEWAY_ADMIN_API_KEY"] = "bench-token-not-used";
  env["GATEWAY_DATA_DIR"] = dir.string();
  BackendRegistry registry;
  if (Status s = RegisterVaultBackend(registry); !s.ok()) return Fail(s.error());
  auto config = LoadConfig(env, false, [&](const Config& c) { return registry.Check(c); });
  if (!config.ok()) return Fail(config.error());
  auto db = SqliteDb::Open((dir / "bench.db").string());
  if (!db.ok()) return Fail(db.error());
  SystemClock clock;
  auto backend = registry.Open(BackendContext{*config, SqliteDatabase(*db), clock, DefaultRandom()});
  if (!backend.ok()) return Fail(backend.error());
  Sealer sealer(*backend->keys, DefaultRandom());
  int status = 0;
  if (std::string(argv[4]) == "seal") {
    // About the size of a provider's credentials.
    auto sealed = sealer.Seal(name, 1, SecretBytes(R"({"api_key":")" + std::string(120, 'k') + R"("})"));
    Status put = sealed.ok() ? backend->store->Put(name, *sealed) : Status(sealed.error());
    if (!put.ok()) status = Fail(put.error());
  } else {
    const int count = std::atoi(argv[4]);
    for (int i = 0; i < count && status == 0; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      auto stored = backend->store->Get(name);
      auto opened = stored.ok() ? sealer.Open(name, stored->value) : Result<OpenedSecret>(stored.error());
      auto us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
      if (!opened.ok()) status = Fail(opened.error());
      else std::printf("%.1f\n", us);
    }
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  return status;
}
