// Tests of UpstreamTarget parsing and its cache: what a URL's target holds
// (and never holds), a URL parsed once, URLs on one origin kept apart, a
// changed URL never served the old target, refusals never kept, the bound,
// and callers on several threads.
#include "transport/upstream_target.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

namespace dyad {
namespace {

TEST(ParseUpstreamTarget, OriginLowerCasedWithItsPortAndThePathShownWithoutQueryOrUserInformation) {
  auto t = ParseUpstreamTarget("HTTPS://API.Example.COM/v1/chat/completions?key=sk-in-query");
  ASSERT_TRUE(t.ok()) << t.error().message;
  EXPECT_EQ(t->origin, "https://api.example.com:443");
  EXPECT_EQ(t->shown, "https://api.example.com:443/v1/chat/completions");
  EXPECT_EQ(t->host, "API.Example.COM");
  auto plain = ParseUpstreamTarget("http://127.0.0.1:8080/v1");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->origin, "http://127.0.0.1:8080");
  auto v6 = ParseUpstreamTarget("http://[::1]:9/x");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->origin, "http://[::1]:9");
  EXPECT_EQ(v6->host, "::1");  // as the proxy check resolves it
}

TEST(ParseUpstreamTarget, WhatIsNotCalledIsRefusedWithoutQuotingIt) {
  for (const std::string url : {"ftp://127.0.0.1/x", "file:///etc/passwd", "http://user:pw@127.0.0.1/",
                                "http://:pw@127.0.0.1/", "not a url", "", "https://"}) {
    auto t = ParseUpstreamTarget(url);
    ASSERT_FALSE(t.ok()) << url << " " << (t.ok() ? t->shown : "");
    EXPECT_EQ(t.error().code, ErrorCode::kInvalidArgument) << url;
    EXPECT_EQ(t.error().message.find("pw"), std::string::npos) << t.error().message;
  }
}

TEST(UpstreamTargetCache, AUrlSeenBeforeIsNotParsedAgain) {
  UpstreamTargetCache cache;
  auto a = cache.Get("http://127.0.0.1:1/v1/chat/completions");
  auto b = cache.Get("http://127.0.0.1:1/v1/chat/completions");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->get(), b->get());  // the same kept target
  EXPECT_EQ(cache.size(), 1u);
}

TEST(UpstreamTargetCache, TwoBaseUrlsOnOneOriginShareTheOriginNotTheEntry) {
  UpstreamTargetCache cache;
  auto a = cache.Get("https://gw.example:8443/openai/v1/chat/completions");
  auto b = cache.Get("https://gw.example:8443/anthropic/v1/chat/completions");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->get(), b->get());
  EXPECT_EQ((*a)->origin, (*b)->origin);  // one connection pool
  EXPECT_EQ((*a)->shown, "https://gw.example:8443/openai/v1/chat/completions");
  EXPECT_EQ((*b)->shown, "https://gw.example:8443/anthropic/v1/chat/completions");
  EXPECT_EQ(cache.size(), 2u);
}

TEST(UpstreamTargetCache, AChangedBaseUrlIsNeverServedTheOldTarget) {
  UpstreamTargetCache cache;
  auto before = cache.Get("https://old.example/v1/embeddings");
  ASSERT_TRUE(before.ok());
  // The provider's baseUrl now names another host, then another port of it.
  auto after = cache.Get("https://new.example/v1/embeddings");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ((*after)->origin, "https://new.example:443");
  EXPECT_EQ((*after)->host, "new.example");
  auto port = cache.Get("https://new.example:444/v1/embeddings");
  ASSERT_TRUE(port.ok());
  EXPECT_EQ((*port)->origin, "https://new.example:444");
  // A URL that differs only in case is parsed on its own (same origin).
  auto upper = cache.Get("https://NEW.example/v1/embeddings");
  ASSERT_TRUE(upper.ok());
  EXPECT_EQ((*upper)->origin, "https://new.example:443");
}

TEST(UpstreamTargetCache, RefusedUrlsAreNotKeptAndStayRefused) {
  UpstreamTargetCache cache;
  for (int i = 0; i < 2; ++i) {
    auto t = cache.Get("http://user:pw@127.0.0.1/");
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.error().code, ErrorCode::kInvalidArgument);
  }
  EXPECT_FALSE(cache.Get("gopher://127.0.0.1/").ok());
  EXPECT_EQ(cache.size(), 0u);
}

TEST(UpstreamTargetCache, BoundedInSizeAndStillRightAfterStartingOver) {
  UpstreamTargetCache cache(4);
  for (int i = 0; i < 50; ++i) {
    const std::string url = "http://127.0.0.1:" + std::to_string(1000 + i) + "/v1?n=" + std::to_string(i);
    auto t = cache.Get(url);
    ASSERT_TRUE(t.ok());
    EXPECT_EQ((*t)->origin, "http://127.0.0.1:" + std::to_string(1000 + i));
    EXPECT_LE(cache.size(), 4u);
  }
  // A target handed out before the cache started over stays valid.
  auto kept = cache.Get("http://127.0.0.1:7/a");
  ASSERT_TRUE(kept.ok());
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(cache.Get("http://127.0.0.1:8/" + std::to_string(i)).ok());
  EXPECT_EQ((*kept)->shown, "http://127.0.0.1:7/a");
}

TEST(UpstreamTargetCache, AClientsEverNewQueriesShareOneEntryAndAreNotKept) {
  UpstreamTargetCache cache(4);
  for (int i = 0; i < 50; ++i) {
    auto t = cache.Get("http://127.0.0.1:9/v1/chat/completions?client-" + std::to_string(i) + "=x");
    ASSERT_TRUE(t.ok());
    EXPECT_EQ((*t)->shown, "http://127.0.0.1:9/v1/chat/completions");
  }
  EXPECT_EQ(cache.size(), 1u);
}

TEST(UpstreamTargetCache, EightThreadsAtOnceEachGetTheirOwnUrlsTarget) {
  UpstreamTargetCache cache(8);  // small: threads also meet the starting over
  std::vector<std::thread> threads;
  std::vector<int> wrong(8, 0);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; ++i) {
        const int port = 2000 + t * 10 + i % 3;
        auto got = cache.Get("http://127.0.0.1:" + std::to_string(port) + "/p" + std::to_string(t));
        if (!got.ok() || (*got)->shown != "http://127.0.0.1:" + std::to_string(port) + "/p" + std::to_string(t)) {
          ++wrong[t];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 8; ++t) EXPECT_EQ(wrong[t], 0) << "thread " << t;
  EXPECT_LE(cache.size(), 8u);
}

}  // namespace
}  // namespace dyad
