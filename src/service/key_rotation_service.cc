#include "service/key_rotation_service.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "core/parallel.h"
#include "core/time_format.h"
#include "secrets/envelope.h"

namespace dyad {
namespace {

constexpr int64_t kStaleLockSeconds = 120;
constexpr char kRunColumns[] =
    "id, trigger, status, force, started_at, COALESCE(finished_at,''), from_version, to_version, total, done, "
    "reencrypted, skipped, failed, cursor, error, duration_ms";

std::string HostName() {
  char buf[256] = {};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

std::string MakeOwner() { return HostName() + ":" + std::to_string(getpid()) + ":" + NewUuid(DefaultRandom()); }

// A lock is held while its owner process lives (same host) or, for another
// host, while its heartbeat is fresh.
bool OwnerAlive(const std::string& owner, int64_t heartbeat, int64_t now) {
  auto first = owner.find(':');
  auto second = owner.find(':', first + 1);
  if (first == std::string::npos || second == std::string::npos) return now - heartbeat < kStaleLockSeconds;
  if (owner.substr(0, first) != HostName()) return now - heartbeat < kStaleLockSeconds;
  pid_t pid = static_cast<pid_t>(std::stol(owner.substr(first + 1, second - first - 1)));
  return kill(pid, 0) == 0 || errno == EPERM;
}

RotationRun ReadRun(const Statement& st) {
  RotationRun r;
  r.id = st.Text(0);
  r.trigger = st.Text(1);
  r.status = st.Text(2);
  r.force = st.Int(3) != 0;
  r.started_at = st.Text(4);
  r.finished_at = st.Text(5);
  r.from_version = static_cast<uint32_t>(st.Int(6));
  r.to_version = static_cast<uint32_t>(st.Int(7));
  r.total = st.Int(8);
  r.done = st.Int(9);
  r.reencrypted = st.Int(10);
  r.skipped = st.Int(11);
  r.failed = st.Int(12);
  r.cursor = st.Text(13);
  r.error = st.Text(14);
  r.duration_ms = st.Int(15);
  return r;
}

// How many stored blobs use each key version; unreadable blobs count as 0.
Result<std::map<uint32_t, int64_t>> CountKeyVersions(SecretStore& store, const std::string& prefix) {
  DYAD_ASSIGN_OR_RETURN(std::vector<std::string> names, store.List(prefix));
  std::map<uint32_t, int64_t> counts;
  constexpr size_t kChunk = 1000;
  for (size_t i = 0; i < names.size(); i += kChunk) {
    std::vector<std::string> chunk(names.begin() + static_cast<std::ptrdiff_t>(i),
                                   names.begin() + static_cast<std::ptrdiff_t>(std::min(names.size(), i + kChunk)));
    DYAD_ASSIGN_OR_RETURN(auto blobs, store.GetMany(chunk));
    for (auto& blob : blobs) {
      if (!blob.ok()) {
        if (blob.code() == ErrorCode::kNotFound) continue;
        return blob.error();
      }
      auto env = ParseEnvelope(*blob);
      ++counts[env.ok() ? env->key_version : 0];
    }
  }
  return counts;
}

Error Conflict(const std::string& run_id) {
  return MakeError(ErrorCode::kConflict, "a key rotation is already running: " + run_id);
}

}  // namespace

KeyRotationService::KeyRotationService(Options options, std::shared_ptr<SqliteDb> db, SecretsService& secrets,
                                       AuditSink& audit, const Clock& clock)
    : options_(std::move(options)), db_(std::move(db)), secrets_(secrets), audit_(audit), clock_(clock),
      owner_(MakeOwner()) {}

KeyRotationService::~KeyRotationService() {
  stopping_ = true;
  if (worker_.joinable()) worker_.join();
}

Result<RotationRun> KeyRotationService::Begin(bool force, const std::string& trigger, const RotationRun* resume_from) {
  std::lock_guard lock(mu_);
  if (current_) return Conflict(current_->id);
  DYAD_ASSIGN_OR_RETURN(KeyState keys, secrets_.keys().Describe());
  RotationRun run;
  run.id = NewUuid(DefaultRandom());
  run.trigger = trigger;
  run.status = "running";
  run.force = force;
  run.started_at = FormatIso8601(clock_.WallNow());
  run.from_version = keys.primary_version;
  if (resume_from) {
    run.force = resume_from->force;
    run.from_version = resume_from->from_version;
    run.to_version = resume_from->to_version;
    run.cursor = resume_from->cursor;
  }
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(clock_.WallNow().time_since_epoch()).count();
  Status s = db_->Transaction([&](SqliteConnection& c) -> Status {
    DYAD_ASSIGN_OR_RETURN(Statement q, c.Prepare("SELECT run_id, owner, heartbeat_at FROM rotation_lock WHERE id=1"));
    DYAD_ASSIGN_OR_RETURN(bool held, q.Step());
    if (held) {
      std::string holder = q.Text(0);
      if (OwnerAlive(q.Text(1), q.Int(2), now)) return Conflict(holder);
      DYAD_RETURN_IF_ERROR(c.Exec("DELETE FROM rotation_lock WHERE id=1"));
    }
    // Any run its owner left "running" is over: say so in its history entry.
    DYAD_ASSIGN_OR_RETURN(Statement mark, c.Prepare(
        "UPDATE rotation_runs SET status='interrupted', finished_at=?, error=? WHERE status='running'"));
    DYAD_RETURN_IF_ERROR(mark.Bind(1, run.started_at)
                             .Bind(2, "the process stopped during re-encryption; " +
                                          std::string(resume_from ? "resumed as run " : "superseded by run ") + run.id)
                             .Run());
    DYAD_ASSIGN_OR_RETURN(Statement ins, c.Prepare("INSERT INTO rotation_lock(id, run_id, owner, heartbeat_at) VALUES(1,?,?,?)"));
    DYAD_RETURN_IF_ERROR(ins.Bind(1, run.id).Bind(2, owner_).Bind(3, now).Run());
    DYAD_ASSIGN_OR_RETURN(Statement row, c.Prepare(
        "INSERT INTO rotation_runs(id, trigger, status, force, started_at, from_version, to_version, cursor) "
        "VALUES(?,?,?,?,?,?,?,?)"));
    return row.Bind(1, run.id).Bind(2, run.trigger).Bind(3, run.status).Bind(4, static_cast<int64_t>(run.force))
        .Bind(5, run.started_at).Bind(6, static_cast<int64_t>(run.from_version))
        .Bind(7, static_cast<int64_t>(run.to_version)).Bind(8, run.cursor).Run();
  });
  if (!s.ok()) return s.error();
  current_ = run;
  return run;
}

Status KeyRotationService::SaveProgress(const RotationRun& run, bool final) {
  {
    std::lock_guard lock(mu_);
    if (current_ && current_->id == run.id) current_ = run;
  }
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(clock_.WallNow().time_since_epoch()).count();
  return db_->Transaction([&](SqliteConnection& c) -> Status {
    DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(
        "UPDATE rotation_runs SET status=?, finished_at=?, to_version=?, total=?, done=?, reencrypted=?, skipped=?, "
        "failed=?, cursor=?, error=?, duration_ms=? WHERE id=?"));
    st.Bind(1, run.status);
    if (final) st.Bind(2, run.finished_at);
    else st.BindNull(2);
    DYAD_RETURN_IF_ERROR(st.Bind(3, static_cast<int64_t>(run.to_version)).Bind(4, run.total).Bind(5, run.done)
                             .Bind(6, run.reencrypted).Bind(7, run.skipped).Bind(8, run.failed).Bind(9, run.cursor)
                             .Bind(10, run.error).Bind(11, run.duration_ms).Bind(12, run.id).Run());
    DYAD_ASSIGN_OR_RETURN(Statement hb, c.Prepare("UPDATE rotation_lock SET heartbeat_at=? WHERE run_id=?"));
    return hb.Bind(1, now).Bind(2, run.id).Run();
  });
}

void KeyRotationService::ReleaseLock(const std::string& run_id) {
  (void)db_->With<bool>([&](SqliteConnection& c) -> Result<bool> {
    DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare("DELETE FROM rotation_lock WHERE run_id=?"));
    DYAD_RETURN_IF_ERROR(st.Bind(1, run_id).Run());
    return true;
  });
  std::lock_guard lock(mu_);
  current_.reset();
  idle_cv_.notify_all();
}

Status KeyRotationService::Execute(RotationRun& run, const Caller& caller, const RotationProgress& progress) {
  const auto t0 = clock_.Now();
  SecretStore& store = secrets_.store();
  KeyManager& keys = secrets_.keys();
  auto finish = [&](Status s) {
    run.duration_ms = std::chrono::duration_cast<std::chrono::milliseconds>(clock_.Now() - t0).count();
    run.finished_at = FormatIso8601(clock_.WallNow());
    if (!s.ok()) {
      run.status = "failed";
      run.error = s.error().message;
    }
    Status saved = SaveProgress(run, true);
    ReleaseLock(run.id);
    AuditEvent e;
    e.actor = caller.actor;
    e.request_id = caller.request_id;
    e.action = "key.rotate";
    e.resource = run.id;
    e.outcome = run.status == "completed" ? "success" : "failure";
    e.detail = run.trigger + " v" + std::to_string(run.from_version) + "->v" + std::to_string(run.to_version) + ": " +
               std::to_string(run.reencrypted) + " re-encrypted, " + std::to_string(run.skipped) + " skipped, " +
               std::to_string(run.failed) + " failed" + (run.error.empty() ? "" : "; " + run.error);
    e.duration_ms = std::chrono::duration<double, std::milli>(clock_.Now() - t0).count();  // not rounded to 0
    audit_.Record(e);
    if (progress) progress(run);
    return s.ok() ? saved : s;
  };

  if (run.to_version == 0) {  // rotate the KMS key, unless a resumed run already did
    auto state = keys.Describe();
    if (!state.ok()) return finish(state.error());
    if (state->primary_version > run.from_version) {
      run.to_version = state->primary_version;
    } else {
      auto v = keys.Rotate();
      if (!v.ok()) return finish(v.error());
      run.to_version = *v;
    }
    if (Status s = SaveProgress(run, false); !s.ok()) return finish(s);
  }
  auto names = store.List(SecretsPrefix());
  if (!names.ok()) return finish(names.error());
  std::sort(names->begin(), names->end());
  run.total = static_cast<int64_t>(names->size());
  size_t i = static_cast<size_t>(std::upper_bound(names->begin(), names->end(), run.cursor) - names->begin());
  if (run.cursor.empty()) i = 0;
  run.done = static_cast<int64_t>(i);
  std::string first_error;
  while (i < names->size()) {
    size_t end = std::min(names->size(), i + options_.batch_size);
    std::vector<std::string> batch(names->begin() + static_cast<std::ptrdiff_t>(i),
                                   names->begin() + static_cast<std::ptrdiff_t>(end));
    auto blobs = store.GetMany(batch);
    if (!blobs.ok()) return finish(blobs.error());
    // Rewrap, then write the batch only where the stored value is still the
    // one rewrapped: a credential written meanwhile (sealed under the new
    // primary, under its provider's write lock) is never overwritten.
    std::vector<Result<std::string>> rewrapped(batch.size(), Result<std::string>(std::string()));
    ParallelFor(batch.size(), options_.parallelism, [&](size_t k) {
      const auto& blob = (*blobs)[k];
      rewrapped[k] = blob.ok() ? secrets_.sealer().Rewrap(batch[k], *blob, run.to_version, run.force)
                               : Result<std::string>(blob.error());
    });
    std::vector<SecretStore::Swap> swaps;
    for (size_t k = 0; k < batch.size(); ++k) {
      const std::string& name = batch[k];
      auto& blob = (*blobs)[k];
      if (!blob.ok() && blob.code() == ErrorCode::kNotFound) {  // deleted meanwhile
        ++run.skipped;
        continue;
      }
      Result<std::string>& next = rewrapped[k];
      if (!next.ok() && next.code() == ErrorCode::kAlreadyExists) {
        ++run.skipped;
        continue;
      }
      if (!next.ok()) {
        ++run.failed;
        if (first_error.empty()) first_error = name + ": " + next.error().message;
        continue;
      }
      swaps.push_back({name, std::move(blob).value(), std::move(next).value()});
    }
    i = end;
    auto replaced = store.ReplaceIfUnchanged(swaps);
    if (!replaced.ok()) {
      run.failed += static_cast<int64_t>(swaps.size());
      if (first_error.empty()) first_error = replaced.error().message;
    } else {
      for (bool r : *replaced) r ? ++run.reencrypted : ++run.skipped;
    }
    run.done = static_cast<int64_t>(i);
    run.cursor = (*names)[i - 1];
    if (Status s = SaveProgress(run, false); !s.ok()) return finish(s);
    if (progress) progress(run);
    if (stopping_ && i < names->size()) {  // shutting down: the next start resumes from here
      ReleaseLock(run.id);
      return OkStatus();
    }
  }
  if (run.failed > 0) {
    run.status = "failed";
    run.error = std::to_string(run.failed) + " secret(s) could not be re-encrypted; first: " + first_error;
    return finish(OkStatus());
  }
  // Retire the older versions that no stored blob refers to (counted again
  // here: a resumed run trusts its cursor, this check trusts nothing).
  auto in_use = CountKeyVersions(store, SecretsPrefix());
  if (!in_use.ok()) return finish(in_use.error());
  auto state = keys.Describe();
  if (!state.ok()) return finish(state.error());
  for (const auto& v : state->versions) {
    if (v.version < run.to_version && v.state == "active" && !in_use->count(v.version)) {
      if (Status s = keys.Retire(v.version); !s.ok()) return finish(s);
    }
  }
  run.status = "completed";
  return finish(OkStatus());
}

void KeyRotationService::Launch(RotationRun run, const Caller& caller) {
  if (worker_.joinable()) worker_.join();  // the previous run has released the lock
  worker_ = std::thread([this, run, caller]() mutable { (void)Execute(run, caller, nullptr); });
}

Result<std::string> KeyRotationService::Start(bool force, const std::string& trigger, const Caller& caller) {
  DYAD_ASSIGN_OR_RETURN(RotationRun run, Begin(force, trigger, nullptr));
  std::string id = run.id;
  Launch(std::move(run), caller);
  return id;
}

Result<RotationRun> KeyRotationService::Run(bool force, const std::string& trigger, const Caller& caller,
                                            const RotationProgress& progress) {
  DYAD_ASSIGN_OR_RETURN(RotationRun run, Begin(force, trigger, nullptr));
  Status s = Execute(run, caller, progress);
  if (!s.ok() && run.status != "failed") return s.error();
  return run;
}

Result<std::optional<std::string>> KeyRotationService::ResumeInterrupted(const Caller& caller) {
  auto left = db_->With<std::optional<RotationRun>>([&](SqliteConnection& c) -> Result<std::optional<RotationRun>> {
    DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(std::string("SELECT ") + kRunColumns +
                                                   " FROM rotation_runs WHERE status='running' ORDER BY rowid DESC LIMIT 1"));
    DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) return std::optional<RotationRun>();
    return std::optional<RotationRun>(ReadRun(st));
  });
  if (!left.ok()) return left.error();
  if (!*left) return std::optional<std::string>();
  auto run = Begin((*left)->force, "resumed", &**left);
  if (!run.ok()) {
    if (run.code() == ErrorCode::kConflict) return std::optional<std::string>();  // its owner is still at it
    return run.error();
  }
  std::string id = run->id;
  Launch(std::move(run).value(), caller);
  return std::optional<std::string>(id);
}

void KeyRotationService::WaitIdle() {
  std::unique_lock lock(mu_);
  idle_cv_.wait(lock, [this] { return !current_; });
}

Result<std::vector<RotationRun>> KeyRotationService::History(int limit) {
  return db_->With<std::vector<RotationRun>>([&](SqliteConnection& c) -> Result<std::vector<RotationRun>> {
    DYAD_ASSIGN_OR_RETURN(Statement st, c.Prepare(std::string("SELECT ") + kRunColumns +
                                                   " FROM rotation_runs ORDER BY rowid DESC LIMIT ?"));
    st.Bind(1, static_cast<int64_t>(limit));
    std::vector<RotationRun> runs;
    while (true) {
      DYAD_ASSIGN_OR_RETURN(bool row, st.Step());
      if (!row) return runs;
      runs.push_back(ReadRun(st));
    }
  });
}

std::optional<RotationRun> KeyRotationService::Current() {
  {
    std::lock_guard lock(mu_);
    if (current_) return current_;
  }
  auto history = History(1);  // another process may be running one
  if (history.ok() && !history->empty() && history->front().status == "running") return history->front();
  return std::nullopt;
}

Result<DryRunReport> KeyRotationService::DryRun() {
  DryRunReport report;
  DYAD_ASSIGN_OR_RETURN(KeyState keys, secrets_.keys().Describe());
  report.primary_version = keys.primary_version;
  DYAD_ASSIGN_OR_RETURN(report.secrets_per_version, CountKeyVersions(secrets_.store(), SecretsPrefix()));
  if (auto bad = report.secrets_per_version.find(0); bad != report.secrets_per_version.end()) {
    report.unreadable = bad->second;
    report.secrets_per_version.erase(bad);
  }
  // A run first makes a new primary: every readable blob is then older.
  for (const auto& [version, count] : report.secrets_per_version) report.would_reencrypt += count;
  return report;
}

}  // namespace dyad
