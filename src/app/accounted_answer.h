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

#include "server/http_types.h"

namespace dyad {

class AccountedAnswer final : public DeferredAnswer {
 public:
  using Account = std::function<void(int status)>;

  AccountedAnswer(std::shared_ptr<DeferredAnswer> inner, Account account)
      : inner_(std::move(inner)), account_(std::move(account)) {}

  const UpstreamRequest* upstream() const override { return inner_->upstream(); }
  UpstreamSink& sink() override { return inner_->sink(); }
  // Accounted at Answered(): the access line's formatting and write are
  // not between the upstream's answer and the client.
  HttpResponse Finish(const Status& sent) override;
  void Answered() override;
  HttpResponse RunOnPool(const HttpRequest& request) override;

 private:
  std::shared_ptr<DeferredAnswer> inner_;
  Account account_;
  std::optional<int> answered_;  // Finish's status, until Answered
};

}  // namespace dyad
