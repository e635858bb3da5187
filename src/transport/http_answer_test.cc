// AnswerReader fed as a slow server sends: a byte at a time, the answer must
// come out as from one read (the transport tests read whole answers).
#include "transport/http_answer.h"

#include <gtest/gtest.h>

#include <string>

namespace dyad {
namespace {

struct Fed {
  HttpReply reply;
  bool done = false;
  bool keep_alive = false;
  std::string error;
};

Fed FeedBytewise(const std::string& answer, size_t max_body = 1 << 20) {
  Fed f;
  AnswerReader reader;
  reader.Start(&f.reply, max_body, false);
  std::string pending;
  for (char c : answer) {
    pending.push_back(c);
    pending.erase(0, reader.Feed(pending.data(), pending.size()));
    if (reader.done() || reader.failed()) break;
  }
  if (!reader.done() && !reader.failed()) reader.FeedEof();
  f.done = reader.done();
  f.keep_alive = reader.keep_alive();
  f.error = reader.error();
  return f;
}

TEST(http_answer_unit, AnAnswerFedAByteAtATimeIsWhole) {
  const Fed f = FeedBytewise(
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-Amzn-RequestId: r-1\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n");
  ASSERT_TRUE(f.done) << f.error;
  EXPECT_EQ(f.reply.status, 200);
  EXPECT_EQ(f.reply.body, "hello, world");
  EXPECT_EQ(f.reply.Header("x-amzn-requestid"), "r-1");
  EXPECT_EQ(f.reply.Header("x-trailer"), "");
  EXPECT_TRUE(f.keep_alive);
}

TEST(http_answer_unit, ReadToCloseEndsAtTheEndOfTheStreamAndIsNotKept) {
  const Fed f = FeedBytewise("HTTP/1.1 200 OK\r\n\r\nuntil the end");
  ASSERT_TRUE(f.done) << f.error;
  EXPECT_EQ(f.reply.body, "until the end");
  EXPECT_FALSE(f.keep_alive);
}

TEST(http_answer_unit, ABodyPastTheLimitFailsAsTooBig) {
  AnswerReader reader;
  HttpReply reply;
  reader.Start(&reply, 4, false);
  const std::string answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n";
  reader.Feed(answer.data(), answer.size());
  EXPECT_TRUE(reader.failed());
  EXPECT_TRUE(reader.too_big());
  EXPECT_LE(reply.body.size(), 4u);
}

TEST(http_answer_unit, AnEndBeforeTheHeaderIsCompleteFails) {
  const Fed f = FeedBytewise("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n");
  EXPECT_FALSE(f.done);
  EXPECT_FALSE(f.error.empty());
}

// Nothing, or nothing after an interim answer, then the end: no answer.
TEST(http_answer_unit, AnEndWithNoFinalAnswerFails) {
  for (const std::string answer : {"", "HTTP/1.1 100 Continue\r\n\r\n"}) {
    const Fed f = FeedBytewise(answer);
    EXPECT_FALSE(f.done) << answer;
    EXPECT_FALSE(f.error.empty()) << answer;
  }
}

// Past the 64 KiB reserved up front, a chunked or read-to-close body grows
// (moved by hand, the old buffer wiped) and comes out whole.
TEST(http_answer_unit, BodiesWithoutALengthGrowPastTheReserveWhole) {
  const std::string body(150 * 1024, 'b');
  std::string chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (size_t at = 0; at < body.size(); at += 10000) {
    const std::string part = body.substr(at, 10000);
    char size[16];
    snprintf(size, sizeof size, "%zx\r\n", part.size());
    chunked += size + part + "\r\n";
  }
  chunked += "0\r\n\r\n";
  for (const std::string& answer : {chunked, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body}) {
    AnswerReader reader;
    HttpReply reply;
    reader.Start(&reply, 1 << 20, false);
    size_t used = 0;
    while (used < answer.size() && !reader.done() && !reader.failed()) {
      const size_t n = std::min<size_t>(4096, answer.size() - used);
      const size_t k = reader.Feed(answer.data() + used, n);
      used += k;
      if (k == 0) break;
    }
    if (!reader.done() && !reader.failed()) reader.FeedEof();
    ASSERT_TRUE(reader.done()) << reader.error();
    EXPECT_EQ(reply.body.size(), body.size());
    EXPECT_TRUE(reply.body == body);
  }
}

}  // namespace
}  // namespace dyad
