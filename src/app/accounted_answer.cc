#include "app/accounted_answer.h"

namespace dyad {

HttpResponse AccountedAnswer::Finish(const Status& sent) {
  try {
    HttpResponse resp = inner_->Finish(sent);
    if (!resp.deferred) answered_ = resp.status;
    return resp;
  } catch (...) {
    answered_ = 500;
    throw;
  }
}

void AccountedAnswer::Answered() {
  if (!answered_) return;
  const int status = *answered_;
  answered_.reset();
  account_(record_, status);
}

HttpResponse AccountedAnswer::RunOnPool(const HttpRequest& request) {
  std::optional<HttpResponse> resp;
  try {
    resp.emplace(inner_->RunOnPool(request));
  } catch (...) {
    account_(record_, 500);
    throw;
  }
  if (!resp->deferred) account_(record_, resp->status);
  return std::move(*resp);
}

}  // namespace dyad
