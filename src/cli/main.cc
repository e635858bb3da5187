// dyad-gateway: `serve`, `secrets …`, `audit verify`, `token hash`, `backup`, `restore`, `migrate`.
//
// Every command starts under umask 077 and removes the secret variables from
// its environment once the configuration is read. Only `serve --dev`
// generates anything: a configuration error in any command is reported and
// exits 2.
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <chrono>
#include <cstdio>
#include <functional>
#include <optional>
#include <iostream>

#include "app/app.h"
#include "app/audit_setup.h"
#include "app/logging.h"
#include "app/migration_setup.h"
#include "audit/audit_log.h"
#include "cli/import_env_command.h"
#include "core/config.h"
#include "core/encoding.h"
#include "core/time_format.h"
#include "registry/sqlite_backup.h"
#include "server/http_server.h"
#include "registry/database.h"
#include "service/backend_migration.h"
#include "service/env_import.h"
#include "service/provider_service.h"
#include "service/key_rotation_service.h"
#include "service/rotation_scheduler.h"
#include "service/secrets_service.h"
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace {

using namespace dyad;

// A process exec'd with fd 0, 1 or 2 closed hands that number to its next
// open (the database, the audit log, a socket), and a log line written to
// "stderr" then lands in that file. Before anything is opened, /dev/null
// takes each closed one (open() returns the lowest free fd: in order, it is
// that one). False when /dev/null cannot be opened, nothing said: there may
// be no stderr to say it on.
bool OccupyClosedStandardFds() {
  for (int fd = STDIN_FILENO; fd <= STDERR_FILENO; ++fd) {
    if (::fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    const int null = ::open("/dev/null", O_RDWR);
    if (null != fd) {
      if (null >= 0) ::close(null);
      return false;
    }
  }
  return true;
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "dyad-gateway: %s\n", message.c_str());
  return 2;
}

// A command that was configured and invoked right but could not be done
// (a backend that does not answer, a lock held, a refusal): exit 1, where
// Fail()'s 2 is for configuration and usage errors only.
int Refuse(const std::string& message) {
  Fail(message);
  return 1;
}

// Fail() for a configuration error (kInvalidArgument), Refuse() otherwise.
int FailOrRefuse(const Error& error, const std::string& message) {
  return error.code == ErrorCode::kInvalidArgument ? Fail(message) : Refuse(message);
}

// The environment and `env_file`, read by `load`; then no plain copy of a
// secret variable stays in the process.
Result<Config> LoadWith(const std::string& env_file, const std::function<Result<Config>(const EnvMap&)>& load) {
  EnvMap env = ReadProcessEnvironment();
  Status merged = env_file.empty() ? OkStatus() : MergeDotenvFile(env_file, env);
  auto config = merged.ok() ? load(env) : Result<Config>(merged.error());
  for (auto& [name, value] : env) {
    if (IsSecretVariable(name)) Cleanse(value);
  }
  ClearSecretVariables();  // parsed (or refused): no plain copy stays in the process
  return config;
}

// A command other than `serve` needs no admin token: it serves nothing.
Result<Config> LoadFrom(const std::string& env_file, bool dev, ConfigUse use = ConfigUse::kCommand) {
  // The backend's own settings too, before anything is opened or created.
  auto check_backend = [](const Config& c) { return BuiltinBackends().Check(c); };
  return LoadWith(env_file, [&](const EnvMap& env) { return LoadConfig(env, dev, check_backend, use); });
}

int Serve(bool dev, const std::string& env_file) {
  // Until the server catches it (HttpServer::Listen), a SIGHUP sent to reload
  // TLS must not kill a gateway that is still starting. No child processes
  // inherit the ignored disposition: serve runs none.
  std::signal(SIGHUP, SIG_IGN);
  // A log reader that went away (stderr a pipe or socket) must not end the
  // gateway: its write fails instead (EPIPE) and the line is dropped.
  std::signal(SIGPIPE, SIG_IGN);
  auto config = LoadFrom(env_file, dev, ConfigUse::kServe);
  if (!config.ok()) return Fail("configuration error: " + config.error().message);
  ConfigureLogging(config->log_level, config->log_format);
  Status s = EnsureDataDir(config->data_dir);
  if (s.ok() && dev) s = PrepareDevSecrets(*config, /*generate=*/true);
  if (!s.ok()) return Fail(s.error().message);
  SystemClock clock;
  auto app = App::Create(*config, clock, true);
  if (!app.ok()) return Fail("cannot start: " + app.error().message);
  HttpServerOptions opts;
  opts.host = config->host;
  opts.port = config->port;
  opts.threads = config->threads;
  opts.max_body_bytes = config->max_body_bytes;
  opts.header_timeout = std::chrono::seconds(config->header_timeout_seconds);
  opts.idle_timeout = std::chrono::seconds(config->idle_timeout_seconds);
  opts.max_connections = static_cast<size_t>(config->max_connections);
  opts.blocking_threads = config->blocking_threads;
  opts.upstream_threads = (*app)->v1_threads();
  opts.evented_upstream = (*app)->v1_evented();
  opts.tls = config->tls;
  opts.on_shutdown = [&app] { (*app)->BeginShutdown(); };
  opts.refuses_head = [&app](const HttpRequest& head) { return (*app)->RefusesHead(head); };
  HttpServer server(opts, [&app](const HttpRequest& r) { return (*app)->Handle(r); },
                    [&app](HttpRequest& r) { return (*app)->PoolFor(r, &r.caller); });
  s = server.Listen();
  if (!s.ok()) return Fail(s.error().message);
  spdlog::warn("dyad-gateway listening on {}://{}:{} (provider {}, {} threads{}{})", opts.tls.enabled() ? "https" : "http",
               config->host, server.port(), config->secrets_provider, opts.threads,
               opts.tls.client_ca_file.empty() ? "" : ", client certificates required", dev ? ", dev mode" : "");
  std::printf("listening on %s:%u\n", config->host.c_str(), static_cast<unsigned>(server.port()));
  std::fflush(stdout);
  server.Run();
  spdlog::warn("dyad-gateway stopped");
  return 0;
}

// CLI options shared by the `secrets` commands.
struct CliOptions {
  std::string env_file;
  bool dev = false;  // use the key `serve --dev` generated in the data dir (never generates one)
};

// Builds the service (no HTTP) for a CLI command on the configured database.
// A configuration error is returned as it is: the CLI never falls back to
// dev mode, and never generates a key.
Result<std::unique_ptr<App>> OpenApp(const CliOptions& cli, const SystemClock& clock) {
  auto config = LoadFrom(cli.env_file, cli.dev);
  if (!config.ok()) return MakeError(config.code(), "configuration error: " + config.error().message);
  spdlog::set_level(spdlog::level::warn);
  DYAD_RETURN_IF_ERROR(EnsureDataDir(config->data_dir, /*create=*/false));
  if (config->dev) DYAD_RETURN_IF_ERROR(PrepareDevSecrets(*config, /*generate=*/false));
  return App::Create(*config, clock, false);
}

// "90s", "30m", "2h", "7d" (or a sum: "1h30m"); nullopt for anything else.
std::optional<std::chrono::seconds> ParseDuration(std::string_view text) {
  if (text.empty()) return std::nullopt;
  int64_t total = 0;
  while (!text.empty()) {
    size_t digits = 0;
    int64_t n = 0;
    while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) {
      if (n > 100000000) return std::nullopt;
      n = n * 10 + (text[digits++] - '0');
    }
    if (digits == 0 || digits == text.size()) return std::nullopt;
    int64_t unit = text[digits] == 's' ? 1 : text[digits] == 'm' ? 60 : text[digits] == 'h' ? 3600
                 : text[digits] == 'd' ? 86400 : 0;
    if (unit == 0) return std::nullopt;
    total += n * unit;
    text.remove_prefix(digits + 1);
  }
  return std::chrono::seconds(total);
}

std::string FormatDuration(std::chrono::seconds d) {
  int64_t s = d.count();
  if (s % 3600 == 0 && s) return std::to_string(s / 3600) + "h";
  if (s % 60 == 0 && s) return std::to_string(s / 60) + "m";
  return std::to_string(s) + "s";
}

int SecretsGc(const CliOptions& cli, const std::string& older_than, bool dry_run) {
  auto grace = ParseDuration(older_than);
  if (!grace) return Fail("--older-than: '" + older_than + "' is not a duration; use e.g. 90s, 30m, 2h");
  SystemClock clock;
  auto app = OpenApp(cli, clock);
  if (!app.ok()) return Fail(app.error().message);
  auto report = (*app)->secrets().CollectOrphans(*grace, dry_run, Caller{"cli", ""});
  if (!report.ok()) return Fail(report.error().message);
  if (report->grace > *grace) {
    std::fprintf(stderr, "dyad-gateway: grace raised from %s to %s: a create in progress writes its secret up to "
                 "that long before its registry row\n", FormatDuration(*grace).c_str(),
                 FormatDuration(report->grace).c_str());
  }
  for (const auto& item : report->items) std::printf("%s  %s\n", item.name.c_str(), item.outcome.c_str());
  std::printf("%zu orphaned secret(s) (no provider row): %lld deleted, %lld kept, %lld failed; grace %s%s\n",
              report->items.size(), static_cast<long long>(report->deleted), static_cast<long long>(report->kept),
              static_cast<long long>(report->failed), FormatDuration(report->grace).c_str(),
              dry_run ? "; dry run, nothing deleted" : "");
  return report->failed == 0 ? 0 : 1;
}

void PrintRun(const RotationRun& r) {
  std::printf("%s  %-9s %-11s v%u -> v%u  re-encrypted %lld, skipped %lld, failed %lld  %s  %lld ms%s%s\n",
              r.id.c_str(), r.trigger.c_str(), r.status.c_str(), r.from_version, r.to_version,
              static_cast<long long>(r.reencrypted), static_cast<long long>(r.skipped),
              static_cast<long long>(r.failed), r.started_at.c_str(), static_cast<long long>(r.duration_ms),
              r.error.empty() ? "" : "  error: ", r.error.c_str());
}

int SecretsRotate(const CliOptions& cli, bool force, bool dry_run) {
  SystemClock clock;
  auto app = OpenApp(cli, clock);
  if (!app.ok()) return Fail(app.error().message);
  KeyRotationService& rotation = (*app)->rotation();
  if (dry_run) {
    auto report = rotation.DryRun();
    if (!report.ok()) return Fail(report.error().message);
    std::printf("primary key version: %u\n", report->primary_version);
    for (const auto& [v, n] : report->secrets_per_version) std::printf("  key version %u: %lld secret(s)\n", v, static_cast<long long>(n));
    if (report->unreadable) std::printf("  unreadable: %lld\n", static_cast<long long>(report->unreadable));
    std::printf("a rotation would make key version %u and re-encrypt %lld secret(s); nothing was written\n",
                report->primary_version + 1, static_cast<long long>(report->would_reencrypt));
    return 0;
  }
  const bool tty = isatty(STDOUT_FILENO);
  auto progress = [tty](const RotationRun& r) {
    int64_t left = r.total - r.done;
    if (tty) {
      int width = 30, filled = r.total ? static_cast<int>(width * r.done / r.total) : width;
      std::printf("\r[%s%s] %lld/%lld  to visit %lld, re-encrypted %lld, skipped %lld, failed %lld",
                  std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                  static_cast<long long>(r.done), static_cast<long long>(r.total), static_cast<long long>(left),
                  static_cast<long long>(r.reencrypted), static_cast<long long>(r.skipped),
                  static_cast<long long>(r.failed));
    } else {
      std::printf("progress %lld/%lld to_visit=%lld reencrypted=%lld skipped=%lld failed=%lld\n",
                  static_cast<long long>(r.done), static_cast<long long>(r.total), static_cast<long long>(left),
                  static_cast<long long>(r.reencrypted), static_cast<long long>(r.skipped),
                  static_cast<long long>(r.failed));
    }
    std::fflush(stdout);
  };
  Caller caller{"cli", ""};
  // A run left "running" (its process gone, or a resume paused) is resumed
  // first, never superseded (Run does it: a second rotation over it would
  // re-encrypt everything twice). `secrets rotate` promises a key version
  // made now: once that run has completed, the rotation asked for follows;
  // a resume that did not complete is reported, and nothing more is run.
  auto run = rotation.Run(force, "manual", caller, progress);
  if (run.ok() && run->trigger == "resumed" && run->status == "completed") {
    if (tty) std::printf("\n");
    std::printf("completed an interrupted rotation first:\n");
    PrintRun(*run);
    run = rotation.Run(force, "manual", caller, progress);
  }
  if (tty) std::printf("\n");
  if (!run.ok()) return Fail(run.error().message);
  PrintRun(*run);
  return run->status == "completed" ? 0 : 1;
}

int SecretsRotationStatus(const CliOptions& cli) {
  SystemClock clock;
  auto app = OpenApp(cli, clock);
  if (!app.ok()) return Fail(app.error().message);
  auto enabled = (*app)->scheduler().Enabled();
  auto next = (*app)->scheduler().NextRun();
  std::printf("scheduled rotation: %s  schedule: %s  next run: %s\n", enabled.ok() && *enabled ? "enabled" : "disabled",
              (*app)->scheduler().Describe().c_str(),
              next && enabled.ok() && *enabled ? FormatIso8601(*next).c_str() : "-");
  if (auto current = (*app)->rotation().Current()) {
    std::printf("in progress: %s %lld/%lld\n", current->id.c_str(), static_cast<long long>(current->done),
                static_cast<long long>(current->total));
  }
  auto history = (*app)->rotation().History(20);
  if (!history.ok()) return Fail(history.error().message);
  for (const auto& r : *history) PrintRun(r);
  return 0;
}

int SecretsVerify(const CliOptions& cli) {
  SystemClock clock;
  auto app = OpenApp(cli, clock);
  if (!app.ok()) return Fail(app.error().message);
  auto report = (*app)->secrets().VerifyAll();
  if (!report.ok()) return Fail(report.error().message);
  std::printf("%lld secret(s): %lld open, %lld failed%s%s\n", static_cast<long long>(report->total),
              static_cast<long long>(report->ok), static_cast<long long>(report->failed),
              report->first_error.empty() ? "" : "; first: ", report->first_error.c_str());
  return report->failed == 0 ? 0 : 1;
}

int MigrateImportEnv(const CliOptions& cli, bool dry_run) {
  SystemClock clock;
  auto app = OpenApp(cli, clock);
  if (!app.ok()) return Fail(app.error().message);
  return RunImportEnv((*app)->providers(), (*app)->secrets(), dry_run);
}

// `migrate --to-env-file`: BackendMigration from the configured backend to
// TARGET.env's (app/migration_setup.h); 2 for a configuration error of
// either side, 1 when the run could not be done (a lock held, a backend that
// does not answer, a refusal) or was not clean.
int Migrate(const CliOptions& cli, const std::string& target_file, const MigrationOptions& options) {
  auto source = LoadFrom(cli.env_file, cli.dev);
  if (!source.ok()) return Fail("configuration error (source): " + source.error().message);
  auto target = LoadTargetConfig(target_file, *source);
  if (!target.ok()) return Fail("configuration error (target): " + target.error().message);
  spdlog::set_level(spdlog::level::warn);
  if (Status s = EnsureDataDir(source->data_dir, /*create=*/false); !s.ok()) return Fail(s.error().message);
  const bool postgresql = source->database_path.empty();
  if (postgresql && options.dry_run) {
    // The dry run opens the target on a private copy of the registry (its
    // key versions written there only): SQLite copies the file into memory;
    // a PostgreSQL registry has no such copy.
    return Fail("migrate --dry-run: needs a private copy of the registry, which only an SQLite registry gives; "
                "GATEWAY_DATABASE_URL is a PostgreSQL database (" + DatabaseDisplayName(source->database_url) +
                "): run the dry run on a copy of it (CREATE DATABASE … TEMPLATE …), or migrate without --dry-run");
  }
  auto lock = postgresql ? MigrationLock::AcquireOnPostgresql(source->database_url)
                         : MigrationLock::Acquire(source->data_dir, /*create=*/!options.dry_run);
  if (!lock.ok()) return FailOrRefuse(lock.error(), lock.error().message);
  if (source->dev) {
    if (Status s = PrepareDevSecrets(*source, /*generate=*/false); !s.ok()) return Fail(s.error().message);
  }
  SystemClock clock;
  auto app = App::Create(*source, clock, false);
  if (!app.ok()) return FailOrRefuse(app.error(), "cannot open the source: " + app.error().message);
  // Opening a backend may write its key's versions into the registry (a
  // keyring's first version, a KMS key's known versions): a dry run opens
  // the target on a private in-memory copy, so that it writes nothing.
  std::shared_ptr<Database> target_db = (*app)->database();
  if (options.dry_run) {
    auto copy = SqliteDb::OpenMemoryCopy(source->database_path);
    if (!copy.ok()) return Refuse("cannot copy the registry for the dry run: " + copy.error().message);
    target_db = SqliteDatabase(std::move(copy).value(), source->database_path + " (an in-memory copy)");
  }
  auto backend = BuiltinBackends().Open(BackendContext{target->config, target_db, clock, DefaultRandom()});
  if (!backend.ok()) {
    return FailOrRefuse(backend.error(), "cannot open the target (" + target_file + "): " + backend.error().message);
  }
  auto audit_keys = (*app)->database()->NewAuditKeyRepository();
  if (!options.dry_run) {
    // Copies and deletions are audited under the source's key manager, which
    // keeps its wrapping of the audit key after a clean run; not when it has
    // none (a finished --delete-source run dropped it): they would be lost.
    auto key = LoadAuditKey(*audit_keys, (*app)->secrets().keys(), clock, false);
    if (!key.ok() && key.code() != ErrorCode::kNotFound) {
      return Refuse("the audit log cannot be written under the source's configuration (" + key.error().message +
                    "), so the " + (options.delete_source ? "deletions" : "copies") + " would go unaudited");
    }
  }
  auto records = (*app)->database()->NewMigrationProgressRepository(clock);
  MigrationTarget to{*backend->store, *backend->keys,
                     target->config.encryption_mode == "provider" ? SealMode::kProvider : SealMode::kEnvelope,
                     DefaultRandom(), target->route};
  if (!options.dry_run) {
    // Whether the target's key manager can take the audit key, before
    // anything is copied: one that cannot (the source's key id naming another
    // key in another region or on another server, say) stops the run while
    // the source is whole. It takes it after a clean run.
    if (Status s = CheckAuditKeyWrapping(*audit_keys, (*app)->secrets().keys(), *backend->keys); !s.ok()) {
      return Refuse("the target's key manager (" + backend->keys->Kind() + " '" + backend->keys->KeyId() +
                    "') cannot take the audit key, so nothing was copied: " + s.error().message);
    }
  }
  BackendMigration migration((*app)->secrets(), (*app)->registry(), *records, to);
  const bool tty = isatty(STDERR_FILENO);
  auto progress = [tty](std::string_view pass, size_t done, size_t total) {
    std::fprintf(stderr, tty ? "\r%.*s %zu/%zu" : "%.*s %zu/%zu\n", static_cast<int>(pass.size()), pass.data(), done,
                 total);
    if (tty && done == total) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  };
  auto report = migration.Run(options, progress, Caller{"cli-migrate", ""});
  if (!report.ok()) {
    return FailOrRefuse(report.error(), std::string(report.code() == ErrorCode::kInvalidArgument
                                                        ? "configuration error: " : "") + report.error().message);
  }
  std::printf("migration %s%s\n", report->migration.c_str(), options.dry_run ? " (dry run: nothing written)" : "");
  for (const auto& item : report->items) {
    std::printf("%-14s %s%s%s\n", item.outcome.c_str(), item.provider_id.c_str(), item.detail.empty() ? "" : "  ",
                item.detail.c_str());
  }
  std::printf("%s %lld, skipped %lld, failed %lld", options.dry_run ? "would copy" : "copied",
              static_cast<long long>(report->copied), static_cast<long long>(report->skipped),
              static_cast<long long>(report->failed));
  if (report->without_credentials) {
    std::printf(", no credentials %lld", static_cast<long long>(report->without_credentials));
  }
  std::printf("\n");
  if (report->verified) {
    for (const auto& item : report->verify_failures) {
      std::printf("verify failed  %s  %s\n", item.provider_id.c_str(), item.detail.c_str());
    }
    std::printf("verified %lld, verify failed %lld\n", static_cast<long long>(report->verify_ok),
                static_cast<long long>(report->verify_failed));
  }
  if (!report->stopped.empty()) std::printf("%s\n", report->stopped.c_str());
  for (const auto& item : report->late) {
    std::printf("%-14s %s  %s\n", item.outcome.c_str(), item.provider_id.c_str(), item.detail.c_str());
  }
  if (!report->late.empty()) {
    std::printf("not copied %zu: created during the run; run migrate again\n", report->late.size());
  }
  if (!report->fingerprints_kept.empty()) {
    std::printf("migration_progress: the fingerprints could not be cleared (%s); the next clean run clears them\n",
                report->fingerprints_kept.c_str());
  }
  if (options.delete_source) {
    for (const auto& item : report->delete_failures) {
      std::printf("delete failed  %s  %s\n", item.provider_id.c_str(), item.detail.c_str());
    }
    if (!report->delete_refused.empty()) std::printf("%s\n", report->delete_refused.c_str());
    else if (!options.dry_run) std::printf("source secrets deleted: %lld\n", static_cast<long long>(report->source_deleted));
  }
  if (report->Clean() && !options.dry_run) {
    // The audit chain goes on under the target's key manager too: the
    // target's `serve` opens the same audit key, and so does the source's
    // until a run deletes the source (then its wrapping goes with it).
    auto& source_keys = (*app)->secrets().keys();
    if (Status s = AddAuditKeyWrapping(*audit_keys, source_keys, *backend->keys); !s.ok()) {
      std::printf("audit key: %s\n", s.error().message.c_str());
      return 1;
    }
    if (options.delete_source) {
      auto dropped = DropAuditKeyWrapping(*audit_keys, source_keys, *backend->keys);
      if (!dropped.ok()) {
        std::printf("audit key: cannot drop the source's wrapping: %s\n", dropped.error().message.c_str());
        return 1;
      }
      if (*dropped) std::printf("audit key: the source's wrapping dropped (the source is deleted)\n");
    }
    std::printf("\nswitch to this configuration (from %s), then restart `dyad-gateway serve` and run "
                "`dyad-gateway secrets verify`:\n", target_file.c_str());
    for (const auto& line : target->switch_lines) std::printf("  %s\n", line.c_str());
  }
  return report->Clean() ? 0 : 1;
}

// `backup` and `restore` copy an SQLite file; a PostgreSQL registry is the
// server's to back up.
std::string NotSqlite(const Config& config, const std::string& tool) {
  return "GATEWAY_DATABASE_URL is a PostgreSQL database (" + DatabaseDisplayName(config.database_url) +
         "): backup and restore work on an SQLite registry only; use PostgreSQL's own tools (" + tool + ")";
}

// Only the storage settings: a backup job needs no key and no token.
int Backup(const std::string& env_file, const std::string& out) {
  auto config = LoadWith(env_file, LoadStorageConfig);
  if (!config.ok()) return Fail("configuration error: " + config.error().message);
  if (config->database_path.empty()) return Fail("backup: " + NotSqlite(*config, "pg_dump"));
  auto info = BackupDatabase(config->database_path, out);
  if (!info.ok()) return Fail("backup: " + info.error().message);
  std::printf("backup of %s written to %s (%lld bytes, schema version %d)\n", config->database_path.c_str(), out.c_str(),
              static_cast<long long>(info->bytes), info->schema_version);
  std::printf("it holds the sealed credentials and keyring but not the key that opens them: keep ENCRYPTION_KEY "
              "(or the KMS key) apart from it, and the backup as private as the data dir\n");
  return 0;
}

int Restore(const std::string& env_file, const std::string& file) {
  auto config = LoadWith(env_file, LoadStorageConfig);
  if (!config.ok()) return Fail("configuration error: " + config.error().message);
  if (config->database_path.empty()) return Fail("restore: " + NotSqlite(*config, "pg_restore or psql"));
  Status s = RequireEmptyDataDir(config->data_dir);
  if (s.ok()) s = EnsureDataDir(config->data_dir);
  if (!s.ok()) return Fail("restore: " + s.error().message);
  auto info = RestoreDatabase(file, config->database_path);
  if (!info.ok()) return Fail("restore: " + info.error().message);
  std::printf("restored %s into %s (schema version %d); start the gateway with the same ENCRYPTION_KEY (or KMS key) "
              "and check with `dyad-gateway secrets verify`\n", file.c_str(), config->database_path.c_str(),
              info->schema_version);
  return 0;
}

// Needs the configuration: the chain's key is opened through the configured
// KeyManager and its head read from the registry database.
int AuditVerify(const std::string& path_arg, const CliOptions& cli) {
  auto config = LoadFrom(cli.env_file, cli.dev);
  if (!config.ok()) return Fail("configuration error: " + config.error().message);
  spdlog::set_level(spdlog::level::warn);
  if (config->dev) {
    if (Status s = PrepareDevSecrets(*config, /*generate=*/false); !s.ok()) return Fail(s.error().message);
  }
  SystemClock clock;
  std::string path = path_arg;
  auto report = VerifyConfiguredAuditLog(*config, path, clock);
  if (!report.ok()) return Fail(report.error().message);
  if (!report->problem.empty()) {
    if (report->first_bad_line) {
      std::fprintf(stderr, "%s: line %zu: %s\n", path.c_str(), report->first_bad_line, report->problem.c_str());
    } else {
      std::fprintf(stderr, "%s: %s\n", path.c_str(), report->problem.c_str());
    }
    return 1;
  }
  std::printf("%s: %zu lines, chain intact up to seq %llu", path.c_str(), report->lines,
              static_cast<unsigned long long>(report->last_seq));
  if (report->legacy_lines) std::printf(" (the first %zu unkeyed, from before the chain was keyed)", report->legacy_lines);
  std::printf("\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (!OccupyClosedStandardFds()) return 2;  // first: nothing else may take fd 0, 1 or 2
  ::umask(077);  // the data dir, database, WAL, audit log and key files: owner only, in every mode
  CLI::App cli{"dyad-gateway: the Dyad CLI Gateway's secrets-manager integration"};
  cli.set_version_flag("--version", std::string("dyad-gateway ") + DYAD_VERSION);
  cli.require_subcommand(1);

  bool dev = false;
  std::string env_file;
  auto* serve = cli.add_subcommand("serve", "Serve the admin HTTP API");
  serve->add_flag("--dev", dev, "Embedded default: generate a dev ENCRYPTION_KEY and admin token in the data dir");
  serve->add_option("--env-file", env_file, "Read variables from a dotenv file (the environment wins)");

  CliOptions options;
  auto common = [&options](CLI::App* command) {
    command->add_option("--env-file", options.env_file, "Read variables from a dotenv file");
    command->add_flag("--dev", options.dev, "Use the ENCRYPTION_KEY `serve --dev` generated in the data dir");
  };
  auto* audit = cli.add_subcommand("audit", "Audit log tools");
  audit->require_subcommand(1);
  std::string audit_path;
  auto* verify = audit->add_subcommand("verify", "Check the audit log's hash chain");
  verify->add_option("path", audit_path, "Audit log (default: AUDIT_LOG_PATH)");
  common(verify);

  auto* token = cli.add_subcommand("token", "Admin token tools");
  token->require_subcommand(1);
  auto* hash = token->add_subcommand("hash", "Print the SHA-256 of a token read from stdin, for GATEWAY_ADMIN_TOKENS_FILE");

  auto* secrets = cli.add_subcommand("secrets", "Secrets operations on the configured database");
  secrets->require_subcommand(1);
  bool force = false, dry_run = false;
  std::string older_than = "1h";
  auto* rotate = secrets->add_subcommand("rotate", "Rotate the encryption key and re-encrypt every credential");
  rotate->add_flag("--force", force, "Re-encrypt secrets already on the newest key version too");
  rotate->add_flag("--dry-run", dry_run, "Count secrets per key version; write nothing");
  common(rotate);
  auto* status = secrets->add_subcommand("rotation-status", "Show the rotation schedule and history");
  common(status);
  auto* sverify = secrets->add_subcommand("verify", "Check that every stored credential decrypts");
  common(sverify);
  auto* gc = secrets->add_subcommand("gc", "Delete stored secrets without a provider row (orphans) older than a grace");
  gc->add_option("--older-than", older_than, "Grace, e.g. 90s, 30m, 2h (default 1h; never below a minute)");
  gc->add_flag("--dry-run", dry_run, "List the orphans and what would be deleted; delete nothing");
  common(gc);

  std::string backup_out, restore_file;
  auto* backup = cli.add_subcommand("backup", "Snapshot the registry database (online, consistent) into a new file");
  backup->add_option("--out", backup_out, "The backup file to create (never replaced)")->required();
  backup->add_option("--env-file", env_file, "Read variables from a dotenv file");
  auto* restore = cli.add_subcommand("restore", "Check a backup and install it into an empty data dir");
  restore->add_option("file", restore_file, "The backup file")->required();
  restore->add_option("--env-file", env_file, "Read variables from a dotenv file");

  std::string migrate_target;
  MigrationOptions migrate_options;
  auto* migrate = cli.add_subcommand("migrate", "Move stored credentials: between backends, or in from the environment");
  migrate->add_option("--to-env-file", migrate_target, "The target backend's configuration (a dotenv file)");
  migrate->add_flag("--dry-run", migrate_options.dry_run, "Read everything, write nothing; report what would be copied");
  migrate->add_flag("--verify", migrate_options.verify, "Open every migrated credential under the target and compare");
  migrate->add_flag("--delete-source", migrate_options.delete_source,
                    "Delete the source's secrets after a clean verify (implies --verify)");
  common(migrate);
  bool import_dry_run = false;
  auto* import_env = migrate->add_subcommand(
      "import-env", "Store the DYAD_PROVIDER_* variables of existing providers in the backend; list those that can go");
  import_env->add_flag("--dry-run", import_dry_run, "List what would be stored; write nothing");
  common(import_env);

  try {
    cli.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11's own codes (106, 109, …) are not ours: a usage error is 2;
    // --help and --version are 0.
    return cli.exit(e) == 0 ? 0 : 2;
  }
  if (*import_env) return MigrateImportEnv(options, import_dry_run);
  if (*migrate) {
    if (argc == 2) {  // `migrate` alone
      std::printf("%s", migrate->help().c_str());
      return 0;
    }
    if (migrate_target.empty()) return Fail("migrate: --to-env-file TARGET.env is required (or `migrate import-env`)");
    return Migrate(options, migrate_target, migrate_options);
  }
  if (*backup) return Backup(env_file, backup_out);
  if (*restore) return Restore(env_file, restore_file);
  if (*rotate) return SecretsRotate(options, force, dry_run);
  if (*status) return SecretsRotationStatus(options);
  if (*sverify) return SecretsVerify(options);
  if (*gc) return SecretsGc(options, older_than, dry_run);
  if (*serve) return Serve(dev, env_file);
  if (*verify) return AuditVerify(audit_path, options);
  if (*hash) {
    std::string t;
    std::getline(std::cin, t);
    if (!t.empty() && t.back() == '\r') t.pop_back();  // a file saved with CRLF: the token is the line
    // As GATEWAY_ADMIN_API_KEY: a tokens file holds only hashes, so its
    // tokens' length can be checked here alone.
    if (t.size() < 16) {
      Cleanse(t);
      return Fail("token hash: the token read from stdin is shorter than 16 characters; use a long random one, e.g. "
                  "`openssl rand -hex 24`");
    }
    std::printf("%s\n", HexEncode(Sha256(t)).c_str());
    Cleanse(t);
    return 0;
  }
  return 0;
}
