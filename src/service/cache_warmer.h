// CacheWarmer: loads the enabled providers' credentials into the cache
// (SECRETS_CACHE_WARM) at start and again after every clear-cache, so that
// the first read of each is a hit.
//
// A pass runs on a thread of its own: the providers in registry order, up
// to `max_entries` (the cache's size: warming never evicts what it loaded),
// `concurrency` loads at a time. A load that fails is logged (provider id and
// error code) and counted in dyad_cache_warm_loads_total{outcome="error"},
// never fatal; a provider with no credentials counts as "absent". Start()
// during a pass makes the pass run once more when it ends (the cache it
// filled was cleared meanwhile). Ready() is false from Start() until the
// pass ends when `blocks_ready` (SECRETS_CACHE_WARM_BLOCKS_READY): /readyz
// then holds traffic back until the cache is warm. The destructor stops a
// pass after its running loads. When the system refuses the pass's thread
// (started by the first Start()), that Start() warms nothing and leaves
// nothing due (Ready() is not held back by a pass that will never run): it
// is logged once at warn, and the next Start() (the next clear-cache) tries
// again. Thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <thread>

#include "core/mutex.h"
#include "core/thread.h"
#include "metrics/metrics.h"
#include "registry/provider_repository.h"
#include "service/secrets_service.h"

namespace dyad {

class CacheWarmer {
 public:
  struct Options {
    size_t max_entries = 100;
    size_t concurrency = 4;
    bool blocks_ready = false;
    // Starts the pass's thread (StartThread when unset; core/thread.h).
    ThreadStarter start_thread = nullptr;
  };
  struct Progress {
    bool warming = false;  // a pass is due or running
    size_t loaded = 0, failed = 0, absent = 0, total = 0;  // of the last (or current) pass
  };

  CacheWarmer(Options options, SecretsService& secrets, ProviderRepository& providers, Metrics& metrics);
  ~CacheWarmer();

  void Start() DYAD_LOCKS_EXCLUDED(mu_);
  bool Ready() const DYAD_LOCKS_EXCLUDED(mu_);
  Progress progress() const DYAD_LOCKS_EXCLUDED(mu_);
  // Waits until no pass is due or running (tests, and the CLI).
  void WaitIdle() DYAD_LOCKS_EXCLUDED(mu_);

 private:
  void Loop() DYAD_LOCKS_EXCLUDED(mu_);
  void Pass() DYAD_LOCKS_EXCLUDED(mu_);

  const Options options_;
  SecretsService& secrets_;
  ProviderRepository& providers_;
  Metrics& metrics_;

  mutable Mutex mu_;
  CondVar cv_;
  bool due_ DYAD_GUARDED_BY(mu_) = false;
  bool running_ DYAD_GUARDED_BY(mu_) = false;
  bool stopping_ DYAD_GUARDED_BY(mu_) = false;
  Progress progress_ DYAD_GUARDED_BY(mu_);
  bool start_failed_ DYAD_GUARDED_BY(mu_) = false;  // the last Start() could not start the thread: logged
  std::thread thread_;  // started by the first Start(), under mu_
};

}  // namespace dyad
