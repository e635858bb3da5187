// RecordingSink: an UpstreamSink for the /v1 upstream clients' tests
// (transport/upstream_client_test.cc, server/evented_upstream_test.cc): it
// keeps every head, body piece, flush and failure it is told, in order;
// and the request and the answer those tests exchange (Post, Answer).
// Not thread-safe: the calls it records come from one thread at a time.
// Test code only (gtest).
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "transport/upstream_client.h"

namespace dyad {

// Records what the client hands on; `on_body` may stop the call.
struct RecordingSink : UpstreamSink {
  int heads = 0;
  UpstreamHead head;
  std::vector<std::string> pieces;
  bool accept_head = true;
  std::function<bool(std::string_view)> on_body;
  std::function<void()> on_flush;
  std::vector<std::string> flushes;  // the body so far at each OnFlush
  std::vector<UpstreamFailure> failures;  // what OnFailure was told

  bool OnHead(const UpstreamHead& h) override {
    ++heads;
    head = h;
    return accept_head;
  }
  bool OnBody(std::string_view piece) override {
    EXPECT_EQ(heads, 1) << "a body piece before the head";
    EXPECT_FALSE(piece.empty());
    pieces.emplace_back(piece);
    return on_body ? on_body(piece) : true;
  }
  bool OnFlush(bool last) override {
    flushes.push_back(body() + (last ? "<last>" : ""));
    if (on_flush) on_flush();
    return true;
  }
  void OnFailure(UpstreamFailure kind) override { failures.push_back(kind); }
  std::string body() const {
    std::string all;
    for (const auto& p : pieces) all += p;
    return all;
  }
  std::string Header(const std::string& name) const {
    for (const auto& [k, v] : head.headers) {
      if (k == name) return v;
    }
    return "<none>";
  }
};

// A /v1 call as the proxy makes it: a JSON body, the credential's Authorization.
inline UpstreamRequest Post(const std::string& url, std::string_view body = "{\"model\":\"m\"}") {
  UpstreamRequest r;
  r.url = url;
  r.body = body;
  r.headers = {{"Authorization", "Bearer sk-upstream-secret"}, {"Content-Type", "application/json"}};
  return r;
}

// A 200 of `body` with its Content-Length; `extra`: header lines ("Name: v\r\n").
inline std::string Answer(const std::string& body, const std::string& extra = "") {
  return "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + extra + "\r\n" + body;
}

}  // namespace dyad
