// The /v1 path (DESIGN.md §12), OpenAI-compatible, registered on a Router:
// GET /v1/models, GET /v1/models/{model} (an id with one '/' as two segments),
// POST /v1/chat/completions, /v1/completions, /v1/embeddings.
// The router has already authenticated a client token (role client); these
// handlers pass the request to ProxyService with the token's allow-lists and
// turn its answer into the response: streamed through HttpRequest::writer,
// or whole; errors in OpenAI's shape (server/envelope.h). They run on the
// server's /v1 pool (App::PoolFor: HandlerPool::kUpstream, apart from
// /admin's). With a ConcurrencyLimit, a call past its caps (in all, or for
// the caller's identity) is answered 429 at once, in OpenAI's shape with
// Retry-After, so /v1 never holds every thread of its pool.
#pragma once

#include "server/router.h"
#include "service/concurrency_limit.h"
#include "service/proxy_service.h"

namespace dyad {

// `limit` may be null (no cap); it must outlive the router.
void RegisterV1Routes(Router& router, ProxyService& proxy, ConcurrencyLimit* limit = nullptr);

// The 429 of a refused acquire.
HttpResponse V1BusyResponse(const ConcurrencyLimits& limits, ConcurrencyLimit::Refusal why);

// An Error of the proxy as the OpenAI-shaped response a client gets.
HttpResponse V1ErrorResponse(const Error& error);

}  // namespace dyad
