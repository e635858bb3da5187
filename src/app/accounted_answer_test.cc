#include "app/accounted_answer.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <vector>

namespace dyad {
namespace {

// The inner answer: Finish and RunOnPool answer `status`, defer again, or throw.
class Inner final : public DeferredAnswer {
 public:
  enum class Then { kAnswer, kDefer, kThrow };
  Then then = Then::kAnswer;
  int status = 200;

  const UpstreamRequest* upstream() const override { return nullptr; }
  UpstreamSink& sink() override { throw std::logic_error("no exchange here"); }
  HttpResponse Finish(const Status&) override { return Answer(); }
  HttpResponse RunOnPool(const HttpRequest&) override { return Answer(); }

 private:
  HttpResponse Answer() {
    if (then == Then::kThrow) throw std::runtime_error("a bug");
    HttpResponse r;
    r.status = status;
    if (then == Then::kDefer) r.deferred = std::make_shared<Inner>();
    return r;
  }
};

struct Accounted {
  std::shared_ptr<Inner> inner = std::make_shared<Inner>();
  std::vector<int> lines;  // the statuses accounted, in order
  AccountedAnswer answer{inner, AccessRecord{"POST", "/v1/chat/completions", "rid-1", "127.0.0.1", "app", "/v1/x", {}},
                         [this](const AccessRecord& r, int status) {
                           EXPECT_EQ(r.request_id, "rid-1");
                           lines.push_back(status);
                         }};
};

TEST(AccountedAnswer, FinishIsAccountedOnceAtAnswered) {
  Accounted a;
  a.inner->status = 201;
  EXPECT_EQ(a.answer.Finish(OkStatus()).status, 201);
  EXPECT_TRUE(a.lines.empty());  // not before the answer went out
  a.answer.Answered();
  a.answer.Answered();
  EXPECT_EQ(a.lines, std::vector<int>{201});
}

TEST(AccountedAnswer, AnAnswerSentToThePoolIsAccountedThere) {
  Accounted a;
  a.inner->then = Inner::Then::kDefer;
  EXPECT_TRUE(a.answer.Finish(OkStatus()).deferred);
  a.answer.Answered();  // the server does not call it then; harmless if it did
  EXPECT_TRUE(a.lines.empty());
  a.inner->then = Inner::Then::kAnswer;
  a.inner->status = 502;
  EXPECT_EQ(a.answer.RunOnPool(HttpRequest{}).status, 502);
  EXPECT_EQ(a.lines, std::vector<int>{502});
}

// A handler bug: the server answers 500 (Guarded); the access line says so
// (it was missing: helper-168's list of lows).
TEST(AccountedAnswer, AThrowIsAccountedAsTheFiveHundredTheServerSends) {
  Accounted a;
  a.inner->then = Inner::Then::kThrow;
  EXPECT_THROW(a.answer.Finish(OkStatus()), std::runtime_error);
  a.answer.Answered();
  EXPECT_THROW(a.answer.RunOnPool(HttpRequest{}), std::runtime_error);
  EXPECT_EQ(a.lines, (std::vector<int>{500, 500}));
}

}  // namespace
}  // namespace dyad
