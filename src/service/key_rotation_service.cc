#include "service/key_rotation_service.h"

#include <algorithm>
#include <set>

#include <spdlog/spdlog.h>

#include "core/parallel.h"
#include "core/time_format.h"
#include "core/worker.h"
#include "secrets/envelope.h"

namespace dyad {
namespace {

// Runs `beat` every `interval` on a thread of its own until destroyed, so a
// slow batch on the run's thread cannot starve the lock's heartbeat. Start
// answers kUnavailable when that thread cannot be started.
class Ticker {
 public:
  static Result<std::unique_ptr<Ticker>> Start(Clock::Duration interval, std::function<void()> beat,
                                               const ThreadStarter& starter) {
    std::unique_ptr<Ticker> ticker(new Ticker());
    DYAD_ASSIGN_OR_RETURN(ticker->thread_, StartThread(starter, [t = ticker.get(), interval, beat = std::move(beat)] {
                            t->Loop(interval, beat);
                          }));
    return ticker;
  }
  ~Ticker() {
    {
      MutexLock lock(&mu_);
      stop_ = true;
    }
    cv_.SignalAll();
    if (thread_.joinable()) thread_.join();
  }

 private:
  Ticker() = default;
  void Loop(Clock::Duration interval, const std::function<void()>& beat) DYAD_LOCKS_EXCLUDED(mu_) {
    mu_.Lock();
    while (!StopWithin(interval)) {
      mu_.Unlock();
      beat();
      mu_.Lock();
    }
    mu_.Unlock();
  }
  // std::condition_variable::wait_for(lock, interval, [] { return stop_; }).
  bool StopWithin(Clock::Duration interval) DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const auto deadline = std::chrono::steady_clock::now() + interval;
    while (!stop_) {
      const auto left = deadline - std::chrono::steady_clock::now();
      if (left <= left.zero() || !cv_.WaitFor(&mu_, left)) return stop_;
    }
    return true;
  }

  Mutex mu_;
  CondVar cv_;
  bool stop_ DYAD_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// Calls `visit(name, blob, key version)` for every stored blob; an
// unreadable blob has version 0. `listed`: see StoredSecretNames.
Status ScanKeyVersions(SecretsService& secrets,
                       const std::function<void(const std::string&, StoredSecret&, uint32_t)>& visit,
                       bool* listed = nullptr) {
  DYAD_ASSIGN_OR_RETURN(std::vector<std::string> names, secrets.StoredSecretNames(listed));
  constexpr size_t kChunk = 1000;
  for (size_t i = 0; i < names.size(); i += kChunk) {
    std::vector<std::string> chunk(names.begin() + static_cast<std::ptrdiff_t>(i),
                                   names.begin() + static_cast<std::ptrdiff_t>(std::min(names.size(), i + kChunk)));
    DYAD_ASSIGN_OR_RETURN(auto blobs, secrets.store().GetMany(chunk));
    for (size_t k = 0; k < blobs.size(); ++k) {
      auto& blob = blobs[k];
      if (!blob.ok()) {
        if (blob.code() == ErrorCode::kNotFound) continue;
        return blob.error();
      }
      auto env = ParseEnvelope(blob->value);
      visit(chunk[k], *blob, env.ok() ? env->key_version : 0);
    }
  }
  return OkStatus();
}

// How many stored blobs use each key version; unreadable blobs count as 0.
Result<std::map<uint32_t, int64_t>> CountKeyVersions(SecretsService& secrets, bool* listed = nullptr) {
  std::map<uint32_t, int64_t> counts;
  DYAD_RETURN_IF_ERROR(ScanKeyVersions(
      secrets, [&](const std::string&, StoredSecret&, uint32_t version) { ++counts[version]; }, listed));
  return counts;
}

uint32_t KeyVersionOf(const std::string& blob) {
  auto env = ParseEnvelope(blob);
  return env.ok() ? env->key_version : 0;
}

constexpr Clock::Duration kMaxResumeBackoff = std::chrono::hours(1);  // Options::resume_backoff

Error Conflict(const std::string& run_id) {
  return MakeError(ErrorCode::kConflict, "a key rotation is already running: " + run_id);
}

}  // namespace

KeyRotationService::KeyRotationService(Options options, std::shared_ptr<RotationRepository> runs,
                                       SecretsService& secrets, AuditSink& audit, const Clock& clock)
    : options_(std::move(options)), runs_(std::move(runs)), secrets_(secrets), audit_(audit), clock_(clock),
      owner_("lease-" + NewUuid(DefaultRandom())) {}

KeyRotationService::~KeyRotationService() {
  stopping_ = true;
  MutexLock lock(&worker_mu_);
  worker_.reset();  // waits for the run in flight
}

Result<RotationRun> KeyRotationService::Begin(bool force, const std::string& trigger, const RotationRun* resume_from,
                                              const StartConditions& start_if) {
  MutexLock lock(&mu_);
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
  // The run resumed is over: its history entry says so (a fresh run
  // supersedes none).
  const std::string interrupted = "the process stopped during re-encryption; resumed as run " + run.id;
  // A fresh run passes an empty `if_running`: a run left "running" meanwhile
  // is answered as a holder (kConflict naming it), never superseded.
  DYAD_ASSIGN_OR_RETURN(std::optional<std::string> holder,
                        runs_->Begin(run, owner_, options_.lock_takeover, interrupted, start_if,
                                     resume_from ? resume_from->id : std::string()));
  if (holder) return Conflict(*holder);
  current_ = run;
  return run;
}

Result<RotationRun> KeyRotationService::BeginOrResume(bool force, const std::string& trigger,
                                                      const StartConditions& start_if) {
  DYAD_ASSIGN_OR_RETURN(std::optional<RotationRun> left, runs_->LatestRunning());
  if (left) {
    auto resumed = Begin(left->force, kResumedTrigger, &*left);
    // kConflict: its owner is still at it. kFailedPrecondition: it ended
    // since it was read, and a fresh run may begin.
    if (resumed.ok() || resumed.code() != ErrorCode::kFailedPrecondition) return resumed;
  }
  return Begin(force, trigger, nullptr, start_if);
}

Status KeyRotationService::SaveProgress(const RotationRun& run, bool final) {
  {
    MutexLock lock(&mu_);
    if (current_ && current_->id == run.id) current_ = run;
  }
  return runs_->SaveProgress(run, owner_, final);
}

bool KeyRotationService::Beat(const std::string& run_id) {
  auto beat = runs_->Heartbeat(run_id, owner_);
  return !beat.ok() || *beat;  // a failed beat is retried; only a lock gone to another owner is lost
}

void KeyRotationService::ReleaseLock(const std::string& run_id) {
  (void)runs_->Release(run_id, owner_);
  ForgetRun();
}

void KeyRotationService::BackOffResumes(bool paused) {
  MutexLock lock(&mu_);
  if (!paused) {
    resume_backoff_ = Clock::Duration::zero();
    return;
  }
  resume_backoff_ = resume_backoff_ == Clock::Duration::zero() ? options_.resume_backoff
                                                               : std::min(2 * resume_backoff_, kMaxResumeBackoff);
  resume_after_ = clock_.Now() + resume_backoff_;
}

Status KeyRotationService::ResumeAllowed() {
  MutexLock lock(&mu_);
  const Clock::Instant now = clock_.Now();
  if (resume_backoff_ == Clock::Duration::zero() || now >= resume_after_) return OkStatus();
  const auto wait = std::chrono::duration_cast<std::chrono::seconds>(resume_after_ - now).count();
  // Names no run: the run left now may be another instance's (a resume it
  // paused since), never paused here.
  return MakeError(ErrorCode::kUnavailable, "resumes are backing off after one this process paused: the next in " +
                                                std::to_string(wait) + " s at the earliest");
}

bool KeyRotationService::BackingOffResumes() { return !ResumeAllowed().ok(); }

Status KeyRotationService::ResumeAllowedUnlessHeld(bool& held) {
  Status allowed = ResumeAllowed();
  if (allowed.ok()) return allowed;
  // The back-off spaces this process's own attempts at a run nobody is at:
  // a run whose lock is held (its owner beating it, maybe another instance
  // resuming it well) is waited for, as without a back-off, and not warned
  // about at every tick.
  DYAD_ASSIGN_OR_RETURN(std::optional<std::string> holder, runs_->LockHolder(options_.lock_takeover));
  if (!holder) return allowed;
  held = true;
  return OkStatus();
}

void KeyRotationService::ForgetRun() {
  MutexLock lock(&mu_);
  current_.reset();
  idle_cv_.SignalAll();
}

Status KeyRotationService::Execute(RotationRun& run, const Caller& caller, const RotationProgress& progress) {
  const auto t0 = clock_.Now();
  KeyManager& keys = secrets_.keys();
  // Set once another instance holds the lock (a beat or a save found it
  // gone): from then on this run writes nothing to the registry or the KMS.
  std::atomic<bool> lock_lost{false};
  std::unique_ptr<Ticker> heartbeat;  // started below, once `finish` can end the run without it
  auto save = [&](bool final) {
    Status s = SaveProgress(run, final);
    if (!s.ok() && s.code() == ErrorCode::kConflict) lock_lost = true;  // RotationLockLost
    return s;
  };
  // Renews the lease right before a write that must not follow a takeover:
  // the write is then safe for `lock_takeover` (rotation_repository.h).
  auto fence = [&]() -> Status {
    if (lock_lost) return RotationLockLost(run.id);
    auto held = runs_->Heartbeat(run.id, owner_);
    if (!held.ok()) return held.error();
    if (!*held) {
      lock_lost = true;
      return RotationLockLost(run.id);
    }
    return OkStatus();
  };
  // Batch k+1 is read and rewrapped on `worker` while batch k is written
  // (Read writes nothing); the cursor moves past a batch only once its write
  // has returned. A store without conditional writes reads nothing ahead (it
  // reads each secret under its lock in Write): no worker for it, and none
  // when no thread can be started — each batch is then read in its turn.
  // Nothing is read ahead once a stop is asked for or the lock is lost, and
  // every return waits for the read in flight first (`settle`): once the run
  // is over (WaitIdle returns) no thread of it uses the SecretsService or the
  // KMS, and the batch read ahead is left unwritten for the next start.
  std::optional<ReadBatch> ahead;  // the worker's job writes it; read after Wait
  bool pending = false;            // a read-ahead was posted and not yet taken
  std::unique_ptr<Worker> worker;  // after `ahead`: destroyed first, its job done; started below
  auto settle = [&] {
    if (pending) worker->Wait();
    pending = false;
  };
  auto record = [&] {  // the run's audit event, as it stands
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
    return e.duration_ms;
  };
  auto finish = [&](Status s) {
    settle();
    run.duration_ms = std::chrono::duration_cast<std::chrono::milliseconds>(clock_.Now() - t0).count();
    run.finished_at = FormatIso8601(clock_.WallNow());
    if (!s.ok()) {
      run.status = "failed";
      run.error = s.error().message;
    }
    // Lost before the final save, or found lost by it (a beat that finds it
    // gone after a successful final save changes nothing: the run is saved).
    bool lost = lock_lost;
    Status saved = OkStatus();
    if (!lost) {
      saved = save(true);
      lost = !saved.ok() && saved.code() == ErrorCode::kConflict;
    }
    if (lost) {
      // The new owner has the run (resumed under its own id) and the lock:
      // stop as "lock lost" and write nothing more (no save, no release).
      run.status = "failed";
      run.error = RotationLockLost(run.id).message;
      if (s.ok()) s = RotationLockLost(run.id);
      spdlog::warn("key rotation: run {} stopped: {}", run.id, run.error);
      ForgetRun();
    } else {
      ReleaseLock(run.id);
    }
    const double duration_ms = record();
    if (options_.metrics) {
      const bool completed = run.status == "completed";
      options_.metrics->ObserveRotation(
          completed ? "completed" : "failed", duration_ms / 1000,
          completed ? std::optional<double>(std::chrono::duration<double>(clock_.WallNow().time_since_epoch()).count())
                    : std::nullopt);
    }
    if (progress) progress(run);
    return s.ok() ? saved : s;
  };

  // Ends this attempt the way `stop` (below) does — the lock released, the
  // run left "running" at its cursor — for one that must not be lost: its
  // error is saved in its history entry, logged and audited, and the next
  // attempt (the scheduler's next tick, the next start) resumes it.
  auto pause = [&](const Error& why) -> Status {
    settle();
    run.error = why.message + "; left running for the next attempt to resume";
    spdlog::warn("key rotation: run {} paused: {}", run.id, run.error);
    (void)save(false);  // lost meanwhile: the new owner has it (ReleaseLock then frees nothing)
    record();           // before the release: once WaitIdle returns, it is reported
    BackOffResumes(true);
    ReleaseLock(run.id);
    return why;
  };

  // No heartbeat, no run: without it the lock would go stale mid-run and
  // another instance take it over. Nothing is rotated yet; the lock is
  // released. A fresh run ends as failed; a resumed one (after a crash or a
  // takeover) keeps its rotated key version and cursor: failed, it would be
  // lost, and the next run would rotate the key again and re-encrypt everything.
  auto ticker = Ticker::Start(options_.heartbeat_interval, [this, &lock_lost, id = run.id] {
    if (!Beat(id)) lock_lost = true;
  }, options_.start_thread);
  if (!ticker.ok()) {
    Error why = MakeError(ticker.code(),
                          "cannot start a thread for the rotation lock's heartbeat: " + ticker.error().message);
    return run.trigger == kResumedTrigger ? pause(why) : finish(why);
  }
  heartbeat = std::move(ticker).value();
  BackOffResumes(false);

  // Shutting down: the next start resumes from the cursor saved last.
  auto stop = [&] {
    settle();
    ReleaseLock(run.id);
    return OkStatus();
  };
  // Asked before the run began (a Launch that raced the destructor): no KMS
  // call; the run is left "running" at what it has, as at any other stop.
  if (stopping_) return stop();

  if (run.to_version == 0) {  // rotate the KMS key, unless a resumed run already did
    auto state = keys.Describe();
    if (!state.ok()) return finish(state.error());
    if (state->primary_version > run.from_version) {
      run.to_version = state->primary_version;
    } else {
      auto v = keys.Rotate();
      if (!v.ok()) return finish(v.error());
      run.to_version = *v;
      secrets_.PublishKeyEpoch();  // the other instances seal under it at once
    }
    if (Status s = save(false); !s.ok()) return finish(s);
  }
  auto names = secrets_.StoredSecretNames();  // sorted
  if (!names.ok()) return finish(names.error());
  run.total = static_cast<int64_t>(names->size());
  size_t i = static_cast<size_t>(std::upper_bound(names->begin(), names->end(), run.cursor) - names->begin());
  if (run.cursor.empty()) i = 0;
  run.done = static_cast<int64_t>(i);
  std::string first_error;
  if (i < names->size() && secrets_.store().HasConditionalWrites()) {
    auto started = options_.start_worker ? options_.start_worker() : Worker::Start();
    if (started.ok()) {
      worker = std::move(started).value();
    } else {
      spdlog::warn("key rotation: run {}: reading each batch in its turn: {}", run.id, started.error().message);
    }
  }
  auto batch_at = [&](size_t from) {
    const size_t to = std::min(names->size(), from + options_.batch_size);
    return std::vector<std::string>(names->begin() + static_cast<std::ptrdiff_t>(from),
                                    names->begin() + static_cast<std::ptrdiff_t>(to));
  };
  auto read_ahead = [&](size_t from) {
    if (!worker || stopping_ || lock_lost) return;
    pending = true;
    worker->Post([this, &ahead, batch = batch_at(from), to_version = run.to_version, force = run.force]() mutable {
      ahead = Read(std::move(batch), to_version, force, nullptr);
    });
  };
  auto take = [&](size_t from) {
    if (!pending) return Read(batch_at(from), run.to_version, run.force, nullptr);
    settle();
    return std::move(*ahead);
  };
  if (i < names->size()) read_ahead(i);
  while (i < names->size()) {
    const auto batch_t0 = clock_.Now();
    ReadBatch read = take(i);
    if (stopping_) return stop();  // asked meanwhile: the batch read ahead is the next start's
    if (lock_lost) return finish(RotationLockLost(run.id));  // a beat found it gone: write nothing more
    i += read.names.size();
    if (i < names->size()) read_ahead(i);
    const size_t batch_size = read.names.size();
    const std::string first = read.names.front(), last = read.names.back();
    Reencrypted r = Write(std::move(read), run.to_version, run.force, nullptr);
    if (options_.metrics) options_.metrics->CountRotationSecrets(r.reencrypted, r.skipped, r.failed);
    if (spdlog::should_log(spdlog::level::debug)) {
      spdlog::debug("key rotation batch: run={} to_version={} secrets={} first={} last={} reencrypted={} skipped={} "
                    "failed={} duration_ms={:.3f}",
                    run.id, run.to_version, batch_size, first, last, r.reencrypted, r.skipped,
                    r.failed, std::chrono::duration<double, std::milli>(clock_.Now() - batch_t0).count());
    }
    run.reencrypted += r.reencrypted;
    run.skipped += r.skipped;
    run.failed += r.failed;
    if (first_error.empty()) first_error = r.first_error;
    run.done = static_cast<int64_t>(i);
    run.cursor = (*names)[i - 1];
    if (lock_lost) return finish(RotationLockLost(run.id));
    if (Status s = save(false); !s.ok()) return finish(s);
    if (progress) progress(run);
    if (stopping_ && i < names->size()) return stop();
  }
  if (run.failed > 0) {
    run.status = "failed";
    run.error = std::to_string(run.failed) + " secret(s) could not be re-encrypted; first: " + first_error;
    return finish(OkStatus());
  }
  if (Status s = RetireOlderVersions(run, fence); !s.ok()) return finish(s);
  run.status = "completed";
  return finish(OkStatus());
}

// Rewrap, then write each secret only where the stored version is still
// the one rewrapped: a credential written meanwhile (sealed under the new
// primary, under its provider's lock) is never overwritten. A store with
// conditional writes does it in one batch (one read per secret, its
// version token fencing the write); in one without, each secret is read,
// rewrapped and written under its provider's lock and lease.
KeyRotationService::Reencrypted KeyRotationService::Reencrypt(const std::vector<std::string>& names,
                                                              uint32_t to_version, bool force,
                                                              const std::function<bool(uint32_t)>& wants) {
  return Write(Read(names, to_version, force, wants), to_version, force, wants);
}

KeyRotationService::ReadBatch KeyRotationService::Read(std::vector<std::string> names, uint32_t to_version,
                                                       bool force, const std::function<bool(uint32_t)>& wants) {
  SecretStore& store = secrets_.store();
  Sealer& sealer = secrets_.sealer();
  ReadBatch out;
  out.names = std::move(names);
  out.conditional = store.HasConditionalWrites();
  if (!out.conditional) return out;
  const std::vector<std::string>& batch = out.names;
  auto fail = [&out](const std::string& name, const Error& e) {
    ++out.counted.failed;
    if (out.counted.first_error.empty()) out.counted.first_error = name + ": " + e.message;
  };
  auto blobs = store.GetMany(batch);
  if (!blobs.ok()) {
    for (const auto& name : batch) fail(name, blobs.error());
    return out;
  }
  // One RewrapMany for the chunk: a KMS with a batch call (Transit's
  // rewrap) moves all their data keys at once.
  std::vector<Result<std::string>> rewrapped(batch.size(), Result<std::string>(std::string()));
  std::vector<Sealer::RewrapItem> items;
  std::vector<size_t> at;
  for (size_t k = 0; k < batch.size(); ++k) {
    const auto& blob = (*blobs)[k];
    if (!blob.ok()) {
      rewrapped[k] = blob.error();
    } else if (wants && !wants(KeyVersionOf(blob->value))) {
      rewrapped[k] = MakeError(ErrorCode::kAlreadyExists, "");
    } else {
      items.push_back({batch[k], blob->value});
      at.push_back(k);
    }
  }
  auto moved = sealer.RewrapMany(items, to_version, force, options_.parallelism);
  for (size_t j = 0; j < at.size(); ++j) rewrapped[at[j]] = std::move(moved[j]);
  for (size_t k = 0; k < batch.size(); ++k) {
    auto& blob = (*blobs)[k];
    Result<std::string>& next = rewrapped[k];
    if (!blob.ok() && blob.code() == ErrorCode::kNotFound) {  // deleted meanwhile
      ++out.counted.skipped;
    } else if (!next.ok() && next.code() == ErrorCode::kAlreadyExists) {
      ++out.counted.skipped;
    } else if (!next.ok()) {
      fail(batch[k], next.error());
    } else {
      out.swaps.push_back({batch[k], std::move(blob->version), std::move(next).value()});
    }
  }
  return out;
}

KeyRotationService::Reencrypted KeyRotationService::Write(ReadBatch batch, uint32_t to_version, bool force,
                                                          const std::function<bool(uint32_t)>& wants) {
  Reencrypted out = std::move(batch.counted);
  auto fail = [&out](const std::string& name, const Error& e) {
    ++out.failed;
    if (out.first_error.empty()) out.first_error = name + ": " + e.message;
  };
  if (batch.conditional) {
    auto replaced = secrets_.store().ReplaceMany(batch.swaps);
    if (replaced.ok()) {
      for (bool r : *replaced) r ? ++out.reencrypted : ++out.skipped;
      return out;
    }
    if (replaced.code() != ErrorCode::kUnimplemented) {
      for (const auto& swap : batch.swaps) fail(swap.name, replaced.error());
      return out;
    }
    // The store has just found it cannot write conditionally: again, each
    // under its lock (those already written now skip as rewrapped).
    out = Reencrypted{};
  }
  const std::vector<std::string>& names = batch.names;
  std::vector<Result<bool>> done(names.size(), Result<bool>(false));
  ParallelFor(names.size(), options_.parallelism, [&](size_t k) { done[k] = ReencryptHeld(names[k], to_version, force, wants); });
  for (size_t k = 0; k < names.size(); ++k) {
    if (!done[k].ok()) fail(names[k], done[k].error());
    else *done[k] ? ++out.reencrypted : ++out.skipped;
  }
  return out;
}

// One secret under its provider's lock: true when rewritten, false when
// there was nothing to do (deleted, already rewrapped, not wanted).
Result<bool> KeyRotationService::ReencryptHeld(const std::string& name, uint32_t to_version, bool force,
                                               const std::function<bool(uint32_t)>& wants) {
  SecretStore& store = secrets_.store();
  std::optional<std::string> id = store.ProviderIdOf(name);
  if (!id) return MakeError(ErrorCode::kInternal, "not the name of a provider secret");
  DYAD_ASSIGN_OR_RETURN(auto held, secrets_.locks().Hold(*id));
  auto blob = store.Get(name);
  if (!blob.ok()) {
    if (blob.code() == ErrorCode::kNotFound) return false;
    return blob.error();
  }
  if (wants && !wants(KeyVersionOf(blob->value))) return false;
  auto next = secrets_.sealer().Rewrap(name, blob->value, to_version, force);
  if (!next.ok()) {
    if (next.code() == ErrorCode::kAlreadyExists) return false;
    return next.error();
  }
  // One read per secret: the version read above, under this hold, fences the write.
  auto replaced = secrets_.ReplaceHeld(name, *next, blob->version, *held, /*read_under_held=*/true);
  if (!replaced.ok()) {
    if (replaced.code() == ErrorCode::kConflict || replaced.code() == ErrorCode::kNotFound) return false;
    return replaced.error();
  }
  return true;
}

// Retirement in two steps, write-then-check on both sides: the older
// versions are marked 'retiring' (they still decrypt, nothing seals under
// them any more), and a writer re-checks its version after its store write
// and seals again if it is no longer active. After a grace longer than the
// interval in which every instance learns the primary, the blobs still on
// those versions (written by a writer whose check came before the mark) are
// rewrapped, and a version is retired only when a recount finds none on it.
//
// Every step that writes (each BeginRetire, each rewrap pass, each Retire)
// runs between two fences: `fence` renews the lease right before it, so the
// step starts with the whole `lock_takeover` ahead of it, and checks it again
// right after, so that once a step ran into a takeover (a slow KMS call, a
// stalled heartbeat) not one more step follows: an owner whose lease was
// taken over (the new owner resumes and retires itself) writes nothing more.
// A step that outlived the takeover time is logged: its write may have landed
// after the new owner's first.
Status KeyRotationService::RetireOlderVersions(RotationRun& run, const std::function<Status()>& fence) {
  KeyManager& keys = secrets_.keys();
  auto step = [&](const std::string& what, const std::function<Status()>& write) -> Status {
    DYAD_RETURN_IF_ERROR(fence());
    const auto fenced = clock_.Now();
    Status written = write();
    const auto took = clock_.Now() - fenced;
    if (took >= options_.lock_takeover) {
      spdlog::warn("key rotation: run {}: {} took {} ms, longer than the lock takeover ({} ms)", run.id, what,
                   std::chrono::duration_cast<std::chrono::milliseconds>(took).count(),
                   std::chrono::duration_cast<std::chrono::milliseconds>(options_.lock_takeover).count());
    }
    DYAD_RETURN_IF_ERROR(fence());  // taken over meanwhile: stop here, whatever the step answered
    return written;
  };
  DYAD_RETURN_IF_ERROR(fence());
  DYAD_ASSIGN_OR_RETURN(KeyState state, keys.Describe());
  std::set<uint32_t> older;
  bool marked = false;
  Status begun = OkStatus();
  for (const auto& v : state.versions) {
    if (v.version >= run.to_version || v.state == "retired") continue;
    if (v.state == "active") {
      // Marked once the write returns, even if the fence after it fails:
      // the other instances must still hear of it.
      begun = step("marking key version " + std::to_string(v.version) + " retiring", [&] {
        Status s = keys.BeginRetire(v.version);
        marked = marked || s.ok();
        return s;
      });
      if (!begun.ok()) break;
    }
    older.insert(v.version);
  }
  if (!begun.ok()) {
    if (marked) secrets_.PublishKeyEpoch();  // the versions marked before it
    return begun;
  }
  if (older.empty()) return OkStatus();
  secrets_.PublishKeyEpoch();  // nothing new seals under a 'retiring' version, in any instance
  clock_.SleepFor(options_.retire_grace);
  constexpr int kPasses = 3;
  // A pass that finds no blob on the older versions is the recount: nothing
  // was rewritten after its scan, so a second scan of every blob would find
  // what it found.
  bool listed = false, recounted = false;
  for (int pass = 0; pass < kPasses; ++pass) {
    std::vector<std::string> names;
    DYAD_RETURN_IF_ERROR(ScanKeyVersions(secrets_, [&](const std::string& name, StoredSecret&, uint32_t version) {
      if (older.count(version)) names.push_back(name);
    }, &listed));
    if (names.empty()) {
      recounted = true;
      break;
    }
    DYAD_RETURN_IF_ERROR(step("rewrapping " + std::to_string(names.size()) + " secret(s) left on older versions", [&] {
      Reencrypted r = Reencrypt(names, run.to_version, false, [&](uint32_t v) { return older.count(v) > 0; });
      run.reencrypted += r.reencrypted;  // one that fails keeps its version retiring (the recount below)
      return OkStatus();
    }));
  }
  // A recount from the registry alone (the store refused its list) cannot
  // see another instance's secrets: the version is retired in the gateway
  // only, never in the KMS for every client of the key.
  std::map<uint32_t, int64_t> in_use;
  if (!recounted) {
    DYAD_ASSIGN_OR_RETURN(in_use, CountKeyVersions(secrets_, &listed));
  }
  std::string kept;
  for (uint32_t v : older) {
    if (in_use.count(v)) {
      kept += (kept.empty() ? "" : ", ") + std::to_string(v) + " (" + std::to_string(in_use[v]) + " secrets)";
      continue;
    }
    Status retired = step("retiring key version " + std::to_string(v),
                          [&] { return listed ? keys.RetireEverywhere(v) : keys.Retire(v); });
    if (!retired.ok()) {
      secrets_.PublishKeyEpoch();  // the versions retired before it
      return retired;
    }
  }
  secrets_.PublishKeyEpoch();
  if (!kept.empty()) run.error = "key versions still in use, left retiring for the next run: " + kept;
  return OkStatus();
}

Status KeyRotationService::StartRunThread() {
  MutexLock lock(&worker_mu_);
  if (worker_) return OkStatus();
  auto started = Worker::Start(options_.start_thread);
  if (!started.ok()) {
    return MakeError(started.code(), "cannot start a key rotation: " + started.error().message);
  }
  worker_ = std::move(started).value();
  return OkStatus();
}

void KeyRotationService::Launch(RotationRun run, const Caller& caller) {
  MutexLock lock(&worker_mu_);
  // After the previous run's end (it has released the lock: Begin succeeded).
  worker_->Post([this, run, caller]() mutable { (void)Execute(run, caller, nullptr); });
}

Result<RotationRun> KeyRotationService::Start(bool force, const std::string& trigger, const Caller& caller,
                                              const StartConditions& start_if) {
  DYAD_RETURN_IF_ERROR(StartRunThread());  // before the lock: a thread refused claims nothing
  DYAD_ASSIGN_OR_RETURN(RotationRun run, BeginOrResume(force, trigger, start_if));
  RotationRun begun = run;
  Launch(std::move(run), caller);
  return begun;
}

Result<RotationRun> KeyRotationService::Run(bool force, const std::string& trigger, const Caller& caller,
                                            const RotationProgress& progress) {
  DYAD_ASSIGN_OR_RETURN(RotationRun run, BeginOrResume(force, trigger, {}));
  Status s = Execute(run, caller, progress);
  if (!s.ok() && run.status != "failed") return s.error();
  return run;
}

Result<std::optional<std::string>> KeyRotationService::ResumeInterrupted(const Caller& caller, bool* waiting) {
  if (waiting) *waiting = false;
  auto left = runs_->LatestRunning();
  if (!left.ok()) return left.error();
  if (!*left) return std::optional<std::string>();
  bool held = false;
  DYAD_RETURN_IF_ERROR(ResumeAllowedUnlessHeld(held));
  if (held) {
    if (waiting) *waiting = true;
    return std::optional<std::string>();
  }
  DYAD_RETURN_IF_ERROR(StartRunThread());
  auto run = Begin((*left)->force, kResumedTrigger, &**left);
  if (!run.ok()) {
    if (run.code() == ErrorCode::kConflict) {  // its owner is still at it, or its lock not yet stale
      if (waiting) *waiting = true;
      return std::optional<std::string>();
    }
    if (run.code() == ErrorCode::kFailedPrecondition) return std::optional<std::string>();  // it ended meanwhile
    return run.error();
  }
  std::string id = run->id;
  Launch(std::move(run).value(), caller);
  return std::optional<std::string>(id);
}

void KeyRotationService::WaitIdle() {
  MutexLock lock(&mu_);
  while (current_) idle_cv_.Wait(&mu_);
}

Result<std::vector<RotationRun>> KeyRotationService::History(int limit) { return runs_->History(limit); }

Result<RotationSuccesses> KeyRotationService::Successes() { return runs_->Successes(); }

std::optional<RotationRun> KeyRotationService::Current() {
  {
    MutexLock lock(&mu_);
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
  DYAD_ASSIGN_OR_RETURN(report.secrets_per_version, CountKeyVersions(secrets_));
  if (auto bad = report.secrets_per_version.find(0); bad != report.secrets_per_version.end()) {
    report.unreadable = bad->second;
    report.secrets_per_version.erase(bad);
  }
  // A run first makes a new primary: every readable blob is then older.
  for (const auto& [version, count] : report.secrets_per_version) report.would_reencrypt += count;
  return report;
}

}  // namespace dyad
