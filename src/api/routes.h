// The HTTP API of DESIGN.md §8, registered on a Router. Handlers turn a
// request into a response through the services; they do no I/O of their own.
// Handlers that may wait on a backend are registered as kMayBlock (the
// default), so the server runs them off its I/O threads; health, readiness,
// metrics and registry reads are kInline.
#pragma once

#include <string>

#include "metrics/metrics.h"
#include "registry/provider_repository.h"
#include "server/router.h"
#include "service/cache_warmer.h"
#include "service/key_rotation_service.h"
#include "service/provider_service.h"
#include "service/rotation_scheduler.h"
#include "service/secrets_service.h"

namespace dyad {

struct ApiContext {
  ProviderService& providers;
  SecretsService& secrets;
  ProviderRepository& repo;
  Metrics& metrics;
  KeyRotationService& rotation;
  RotationScheduler& scheduler;
  AuditSink& audit;
  size_t max_body_bytes = 0;  // GATEWAY_MAX_BODY_BYTES: what a merged PATCH may grow to
  // SECRETS_CACHE_WARM: warms again after clear-cache, and /readyz waits
  // for it (CacheWarmer::Ready). Null: no warming.
  CacheWarmer* warmer = nullptr;
};

void RegisterRoutes(Router& router, ApiContext api);

}  // namespace dyad
