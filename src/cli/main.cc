// dyad-gateway: `serve`, `audit verify`, `token hash`.
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "app/app.h"
#include "audit/audit_log.h"
#include "core/config.h"
#include "core/encoding.h"
#include "server/http_server.h"

namespace {

using namespace dyad;

int Fail(const std::string& message) {
  std::fprintf(stderr, "dyad-gateway: %s\n", message.c_str());
  return 2;
}

Result<Config> LoadFrom(const std::string& env_file, bool dev) {
  EnvMap env = ReadProcessEnvironment();
  if (!env_file.empty()) DYAD_RETURN_IF_ERROR(MergeDotenvFile(env_file, env));
  return LoadConfig(env, dev);
}

int Serve(bool dev, const std::string& env_file) {
  auto config = LoadFrom(env_file, dev);
  if (!config.ok()) return Fail("configuration error: " + config.error().message);
  spdlog::set_default_logger(spdlog::stderr_logger_mt("dyad"));
  spdlog::set_level(spdlog::level::from_str(config->log_level));
  Status s = dev ? PrepareDevSecrets(*config) : EnsureDataDir(config->data_dir);
  if (!s.ok()) return Fail(s.error().message);
  SystemClock clock;
  auto app = App::Create(*config, clock);
  if (!app.ok()) return Fail("cannot start: " + app.error().message);
  HttpServerOptions opts;
  opts.host = config->host;
  opts.port = config->port;
  opts.threads = config->threads;
  opts.max_body_bytes = config->max_body_bytes;
  opts.header_timeout = std::chrono::seconds(config->header_timeout_seconds);
  opts.idle_timeout = std::chrono::seconds(config->idle_timeout_seconds);
  HttpServer server(opts, [&app](const HttpRequest& r) { return (*app)->Handle(r); });
  s = server.Listen();
  if (!s.ok()) return Fail(s.error().message);
  spdlog::warn("dyad-gateway listening on http://{}:{} (provider {}, {} threads{})", config->host, server.port(),
               config->secrets_provider, opts.threads, dev ? ", dev mode" : "");
  std::printf("listening on %s:%u\n", config->host.c_str(), static_cast<unsigned>(server.port()));
  std::fflush(stdout);
  server.Run();
  spdlog::warn("dyad-gateway stopped");
  return 0;
}

int AuditVerify(const std::string& path_arg, const std::string& env_file) {
  std::string path = path_arg;
  if (path.empty()) {
    auto config = LoadFrom(env_file, true);
    if (!config.ok()) return Fail("configuration error: " + config.error().message);
    path = config->audit_log_path;
  }
  auto report = VerifyAuditLog(path);
  if (!report.ok()) return Fail(report.error().message);
  if (report->first_bad_line) {
    std::fprintf(stderr, "%s: line %zu: %s\n", path.c_str(), report->first_bad_line, report->problem.c_str());
    return 1;
  }
  std::printf("%s: %zu lines, chain intact\n", path.c_str(), report->lines);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App cli{"dyad-gateway: the Dyad CLI Gateway's secrets-manager integration"};
  cli.set_version_flag("--version", std::string("dyad-gateway ") + DYAD_VERSION);
  cli.require_subcommand(1);

  bool dev = false;
  std::string env_file;
  auto* serve = cli.add_subcommand("serve", "Serve the admin HTTP API");
  serve->add_flag("--dev", dev, "Embedded default: generate a dev ENCRYPTION_KEY and admin token in the data dir");
  serve->add_option("--env-file", env_file, "Read variables from a dotenv file (the environment wins)");

  auto* audit = cli.add_subcommand("audit", "Audit log tools");
  audit->require_subcommand(1);
  std::string audit_path;
  auto* verify = audit->add_subcommand("verify", "Check the audit log's hash chain");
  verify->add_option("path", audit_path, "Audit log (default: AUDIT_LOG_PATH)");
  verify->add_option("--env-file", env_file, "Read variables from a dotenv file");

  auto* token = cli.add_subcommand("token", "Admin token tools");
  token->require_subcommand(1);
  auto* hash = token->add_subcommand("hash", "Print the SHA-256 of a token read from stdin, for GATEWAY_ADMIN_TOKENS_FILE");

  CLI11_PARSE(cli, argc, argv);
  if (*serve) return Serve(dev, env_file);
  if (*verify) return AuditVerify(audit_path, env_file);
  if (*hash) {
    std::string t;
    std::getline(std::cin, t);
    std::printf("%s\n", HexEncode(Sha256(t)).c_str());
    return 0;
  }
  return 0;
}
