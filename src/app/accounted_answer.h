// AccountedAnswer: a deferred answer (DeferredAnswer) accounted — the
// access line and the HTTP metrics — once it has gone out: at Answered()
// after Finish(), or when RunOnPool() returns (an answer that defers again
// is not accounted: the server's pool answers none). An inner answer that
// throws is accounted as a 500, the status the server answers it with
// (HttpServer's Guarded; a streamed answer already begun is cut short
// instead), and the exception goes on to the server.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/clock.h"
#include "server/http_types.h"

namespace dyad {

// The request's side of its access line, owned: the request may move
// before its answer goes out.
struct AccessRecord {
  std::string method, path, request_id, peer, identity;
  std::string_view route;  // the router's pattern (as long-lived as the router)
  Clock::Instant t0;
};

class AccountedAnswer final : public DeferredAnswer {
 public:
  // Held by the answer, so that a callback capturing only its owner takes
  // no allocation of its own.
  using Account = std::function<void(const AccessRecord& record, int status)>;

  AccountedAnswer(std::shared_ptr<DeferredAnswer> inner, AccessRecord record, Account account)
      : inner_(std::move(inner)), record_(std::move(record)), account_(std::move(account)) {}

  const UpstreamRequest* upstream() const override { return inner_->upstream(); }
  UpstreamSink& sink() override { return inner_->sink(); }
  // Accounted at Answered(): the access line's formatting and write are
  // not between the upstream's answer and the client.
  HttpResponse Finish(const Status& sent) override;
  void Answered() override;
  HttpResponse RunOnPool(const HttpRequest& request) override;

 private:
  std::shared_ptr<DeferredAnswer> inner_;
  const AccessRecord record_;
  Account account_;
  std::optional<int> answered_;  // Finish's status, until Answered
};

}  // namespace dyad
