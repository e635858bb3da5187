#include "service/cache_warmer.h"

#include <spdlog/spdlog.h>

#include <atomic>

#include "core/parallel.h"

namespace dyad {

CacheWarmer::CacheWarmer(Options options, SecretsService& secrets, ProviderRepository& providers, Metrics& metrics)
    : options_(options), secrets_(secrets), providers_(providers), metrics_(metrics) {}

CacheWarmer::~CacheWarmer() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  cv_.SignalAll();
  if (thread_.joinable()) thread_.join();
}

void CacheWarmer::Start() {
  {
    MutexLock lock(&mu_);
    if (stopping_) return;
    if (!thread_.joinable()) {
      auto started = StartThread(options_.start_thread, [this] { Loop(); });
      if (!started.ok()) {
        if (!start_failed_) {
          spdlog::warn("cache warming: cannot start a thread (nothing warmed; tried again at the next clear-cache): {}",
                       started.error().message);
        }
        start_failed_ = true;
        return;
      }
      thread_ = std::move(started).value();
      start_failed_ = false;
    }
    due_ = true;
    metrics_.SetWarming(true);
  }
  cv_.SignalAll();
}

bool CacheWarmer::Ready() const {
  if (!options_.blocks_ready) return true;
  MutexLock lock(&mu_);
  return !due_ && !running_;
}

CacheWarmer::Progress CacheWarmer::progress() const {
  MutexLock lock(&mu_);
  Progress p = progress_;
  p.warming = due_ || running_;
  return p;
}

void CacheWarmer::WaitIdle() {
  MutexLock lock(&mu_);
  while ((due_ || running_) && !stopping_) cv_.Wait(&mu_);
}

void CacheWarmer::Loop() {
  mu_.Lock();
  while (true) {
    while (!due_ && !stopping_) cv_.Wait(&mu_);
    if (stopping_) break;
    due_ = false;
    running_ = true;
    progress_ = Progress{};
    mu_.Unlock();
    Pass();
    mu_.Lock();
    running_ = false;
    if (!due_) metrics_.SetWarming(false);
    cv_.SignalAll();
  }
  running_ = false;
  due_ = false;
  cv_.SignalAll();
  mu_.Unlock();
}

void CacheWarmer::Pass() {
  std::vector<std::string> ids;
  Status listed = ForEachProvider(providers_, [&](const Provider& p) {
    if (p.enabled && ids.size() < options_.max_entries) ids.push_back(p.id);
    return ids.size() < options_.max_entries;
  });
  if (!listed.ok()) {
    spdlog::warn("cache warming: cannot list the providers: {}", listed.error().message);
    metrics_.CountWarmLoad("error");
  }
  {
    MutexLock lock(&mu_);
    progress_.total = ids.size();
  }
  std::atomic<size_t> loaded{0}, failed{0}, absent{0};
  ParallelFor(ids.size(), options_.concurrency, [&](size_t i) {
    {
      MutexLock lock(&mu_);
      if (stopping_) return;
    }
    Status s = secrets_.Warm(ids[i]);
    if (s.ok()) {
      ++loaded;
      metrics_.CountWarmLoad("ok");
    } else if (s.code() == ErrorCode::kNotFound) {
      ++absent;
      metrics_.CountWarmLoad("absent");
    } else {
      ++failed;
      metrics_.CountWarmLoad("error");
      spdlog::warn("cache warming: provider {}: {}: {}", ids[i], ErrorCodeName(s.code()), s.error().message);
    }
    MutexLock lock(&mu_);
    progress_.loaded = loaded;
    progress_.failed = failed;
    progress_.absent = absent;
  });
  spdlog::info("cache warming: {} of {} provider(s) loaded, {} without credentials, {} failed", loaded.load(),
               ids.size(), absent.load(), failed.load());
}

}  // namespace dyad
