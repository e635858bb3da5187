// AnswerReader fed as a slow server sends: a byte at a time, the answer must
// come out as from one read (the transport tests read whole answers).
#include "transport/http_answer.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

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

// Streaming: the head once, then each decoded piece as it is fed; nothing held.
struct Listened final : AnswerListener {
  HttpHeaders headers;
  int heads = 0;
  int status = 0;
  size_t fields_at_head = 0;
  std::vector<std::string> pieces;
  std::vector<std::string> flushes;  // "<pieces so far>:<last>" at each OnAnswerFlush
  bool stop_at_head = false;
  bool stop_at_flush = false;
  size_t stop_after_pieces = 1000;
  bool OnAnswerHead(int s) override {
    ++heads;
    status = s;
    fields_at_head = headers.size();
    return !stop_at_head;
  }
  bool OnAnswerBody(std::string_view piece) override {
    EXPECT_EQ(heads, 1);
    EXPECT_FALSE(piece.empty());
    pieces.emplace_back(piece);
    return pieces.size() < stop_after_pieces;
  }
  bool OnAnswerFlush(bool last) override {
    flushes.push_back(std::to_string(pieces.size()) + (last ? ":last" : ""));
    return !stop_at_flush;
  }
  std::string body() const {
    std::string all;
    for (const auto& p : pieces) all += p;
    return all;
  }
};

// Fed a byte at a time: each byte of a chunk's data is a piece of its own
// (handed on as it came), the framing and trailers never are.
TEST(http_answer_unit, AStreamedAnswerFedAByteAtATimeComesOutAsItIsFed) {
  AnswerReader reader;
  Listened l;
  reader.StartStreaming(&l.headers, &l, false);
  const std::string answer =
      "HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
      "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n";
  std::string pending;
  size_t pieces_when_half_fed = 0;
  for (size_t i = 0; i < answer.size(); ++i) {
    pending.push_back(answer[i]);
    pending.erase(0, reader.Feed(pending.data(), pending.size()));
    if (i + 1 == answer.find(", world")) pieces_when_half_fed = l.pieces.size();
  }
  ASSERT_TRUE(reader.done()) << reader.error();
  EXPECT_TRUE(reader.keep_alive());
  EXPECT_EQ(l.heads, 1);
  EXPECT_EQ(l.status, 200);
  EXPECT_EQ(l.fields_at_head, 2u);  // the final head's fields, complete, none of the 100's
  EXPECT_EQ(l.headers.size(), 2u);  // the trailer is not one
  EXPECT_EQ(l.headers[0].first, "content-type");
  EXPECT_EQ(l.body(), "hello, world");
  EXPECT_EQ(pieces_when_half_fed, 5u);  // "hello" came out before the rest was fed
  EXPECT_EQ(l.pieces.size(), 12u);
}

TEST(http_answer_unit, AStreamedAnswerReadToCloseOrOfALengthIsWhole) {
  for (const std::string& answer : {std::string("HTTP/1.1 200 OK\r\n\r\nuntil the end"),
                                   std::string("HTTP/1.0 200 OK\r\nContent-Length: 13\r\n\r\nuntil the end")}) {
    AnswerReader reader;
    Listened l;
    reader.StartStreaming(&l.headers, &l, false);
    EXPECT_EQ(reader.Feed(answer.data(), answer.size()), answer.size());
    reader.FeedEof();
    ASSERT_TRUE(reader.done()) << reader.error();
    EXPECT_FALSE(reader.keep_alive()) << answer;
    EXPECT_EQ(l.body(), "until the end");
  }
}

// A close before the answer's end fails it as cut by the close (a lost
// connection); a malformed answer fails it otherwise.
TEST(http_answer_unit, ACloseBeforeTheEndIsACutNotAMalformedAnswer) {
  for (const std::string& cut : {std::string("HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nuntil"),
                                std::string("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nun"),
                                std::string("HTTP/1.1 200 OK\r\nContent-Ty")}) {
    AnswerReader reader;
    Listened l;
    reader.StartStreaming(&l.headers, &l, false);
    reader.Feed(cut.data(), cut.size());
    ASSERT_FALSE(reader.failed()) << cut;
    reader.FeedEof();
    EXPECT_TRUE(reader.failed()) << cut;
    EXPECT_TRUE(reader.cut_by_close()) << cut;
  }
  AnswerReader reader;
  Listened l;
  reader.StartStreaming(&l.headers, &l, false);
  const std::string bad = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
  reader.Feed(bad.data(), bad.size());
  reader.FeedEof();
  EXPECT_TRUE(reader.failed());
  EXPECT_FALSE(reader.cut_by_close());
  reader.StartStreaming(&l.headers, &l, false);  // a new answer starts clean
  EXPECT_FALSE(reader.failed());
  EXPECT_FALSE(reader.cut_by_close());
}

TEST(http_answer_unit, AListenerThatReturnsFalseStopsTheAnswer) {
  const std::string answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n";
  for (bool at_head : {true, false}) {
    AnswerReader reader;
    Listened l;
    l.stop_at_head = at_head;
    l.stop_after_pieces = 1;
    reader.StartStreaming(&l.headers, &l, false);
    reader.Feed(answer.data(), answer.size());
    EXPECT_TRUE(reader.failed());
    EXPECT_TRUE(reader.cancelled());
    EXPECT_FALSE(reader.done());
    EXPECT_EQ(l.body(), at_head ? "" : "one");
    EXPECT_EQ(reader.Feed(answer.data(), answer.size()), 0u);  // nothing more once stopped
  }
}

// One flush per Feed() that made the listener hear something or ended the
// answer (its holder sends once per read), none for a Feed() of framing
// alone; `last` at the end.
TEST(http_answer_unit, TheListenerIsFlushedAfterEachFeedThatGaveItSomething) {
  AnswerReader reader;
  Listened l;
  reader.StartStreaming(&l.headers, &l, false);
  std::string pending;
  for (const std::string fed : {"HTTP/1.1 100 Continue\r\n\r\n", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                                "3\r\none\r\n3\r\ntwo\r\n", "5\r\n", "thr", "ee\r\n", "0\r\n\r\n"}) {
    pending += fed;  // what a read brought, after what the last Feed() left
    pending.erase(0, reader.Feed(pending.data(), pending.size()));
  }
  ASSERT_TRUE(reader.done()) << reader.error();
  // The 100 and the chunk size alone: nothing heard, no flush.
  EXPECT_EQ(l.flushes, (std::vector<std::string>{"0", "2", "3", "4", "4:last"}));
  EXPECT_EQ(l.body(), "onetwothree");

  // A whole answer in one Feed(): one flush, the last.
  AnswerReader whole;
  Listened w;
  whole.StartStreaming(&w.headers, &w, false);
  const std::string answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n";
  EXPECT_EQ(whole.Feed(answer.data(), answer.size()), answer.size());
  EXPECT_EQ(w.flushes, (std::vector<std::string>{"2:last"}));
}

TEST(http_answer_unit, AFlushRefusedStopsAnAnswerNotYetComplete) {
  const std::string part = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n";
  AnswerReader reader;
  Listened l;
  l.stop_at_flush = true;
  reader.StartStreaming(&l.headers, &l, false);
  reader.Feed(part.data(), part.size());
  EXPECT_TRUE(reader.failed());
  EXPECT_TRUE(reader.cancelled());
  EXPECT_FALSE(reader.done());

  // Refused after the end: the answer was read whole (its connection may be kept).
  const std::string whole = part + "0\r\n\r\n";
  AnswerReader complete;
  Listened c;
  c.stop_at_flush = true;
  complete.StartStreaming(&c.headers, &c, false);
  EXPECT_EQ(complete.Feed(whole.data(), whole.size()), whole.size());
  EXPECT_TRUE(complete.done());
  EXPECT_FALSE(complete.failed());
  EXPECT_TRUE(complete.keep_alive());
}

TEST(http_answer_unit, AStreamedHeadOver64KiBFailsAsTooLargeBeforeTheListenerHearsIt) {
  AnswerReader reader;
  Listened l;
  reader.StartStreaming(&l.headers, &l, false);
  const std::string answer = "HTTP/1.1 200 OK\r\nX-Big: " + std::string(70 * 1024, 'a') + "\r\n\r\n";
  reader.Feed(answer.data(), answer.size());
  EXPECT_TRUE(reader.failed());
  EXPECT_TRUE(reader.head_too_large());
  EXPECT_FALSE(reader.cancelled());
  EXPECT_EQ(l.heads, 0);

  // Fed in pieces (Beast takes fields as they come): the same, for one long
  // head or for interim heads that add up past the limit.
  std::string fields;
  for (int i = 0; i < 2000; ++i) fields += "X-H" + std::to_string(i) + ": " + std::string(40, 'b') + "\r\n";
  std::string interims;
  for (int i = 0; i < 40; ++i) interims += "HTTP/1.1 103 Early Hints\r\nLink: " + std::string(2000, 'l') + "\r\n\r\n";
  for (const std::string& long_one : {"HTTP/1.1 200 OK\r\n" + fields + "\r\n", interims + "HTTP/1.1 200 OK\r\n\r\n"}) {
    AnswerReader pieces_reader;
    Listened heard;
    pieces_reader.StartStreaming(&heard.headers, &heard, false);
    std::string pending;
    for (size_t at = 0; at < long_one.size() && !pieces_reader.failed(); at += 1000) {
      pending += long_one.substr(at, 1000);
      pending.erase(0, pieces_reader.Feed(pending.data(), pending.size()));
    }
    EXPECT_TRUE(pieces_reader.head_too_large());
    EXPECT_EQ(heard.heads, 0);
  }
}

// The limit is exact and the same however the head arrives: 64 KiB of head
// (start line, fields, blank line) is read, one byte more is not.
TEST(http_answer_unit, TheHeadLimitIsExactWholeOrInPieces) {
  auto head_of = [](size_t total) {
    const std::string start = "HTTP/1.1 200 OK\r\n", end = "Content-Length: 2\r\n\r\n";
    size_t left = total - start.size() - end.size();
    std::string fields;
    while (left > 2000) {
      fields += "X-F: " + std::string(1000, 'f') + "\r\n";
      left -= 1007;
    }
    fields += "X-L: " + std::string(left - 7, 'l') + "\r\n";
    return start + fields + end;
  };
  for (size_t total : {size_t{64 * 1024}, size_t{64 * 1024 + 1}}) {
    const std::string answer = head_of(total) + "ok";
    ASSERT_EQ(answer.size(), total + 2);
    for (size_t step : {answer.size(), size_t{1}, size_t{777}}) {
      AnswerReader reader;
      HttpReply reply;
      reader.Start(&reply, 1024, false);
      std::string pending;
      for (size_t at = 0; at < answer.size() && !reader.done() && !reader.failed(); at += step) {
        pending += answer.substr(at, step);
        pending.erase(0, reader.Feed(pending.data(), pending.size()));
      }
      if (total == 64 * 1024) {
        EXPECT_TRUE(reader.done()) << step << ": " << reader.error();
        EXPECT_EQ(reply.body, "ok");
      } else {
        EXPECT_TRUE(reader.head_too_large()) << step << ": " << reader.error();
      }
    }
  }
}

// A status under 100 is no status (found by the fuzzer: the streamed body of
// "053" came without a head), nor one over 599 (RFC 9110 §15: the /v1
// proxy relayed a "999" to its client); malformed in both modes.
TEST(http_answer_unit, AStatusOutside100To599IsMalformed) {
  for (std::string status : {"053", "600", "999"}) {
    const std::string answer = "HTTP/1.1 " + status + " Odd\r\nContent-Length: 2\r\n\r\nhi";
    AnswerReader reader;
    HttpReply reply;
    reader.Start(&reply, 1024, false);
    reader.Feed(answer.data(), answer.size());
    EXPECT_TRUE(reader.failed()) << status;
    Listened l;
    reader.StartStreaming(&l.headers, &l, false);
    reader.Feed(answer.data(), answer.size());
    EXPECT_TRUE(reader.failed()) << status;
    EXPECT_EQ(l.heads, 0) << status;
    EXPECT_TRUE(l.pieces.empty()) << status;
  }
  const std::string answer = "HTTP/1.1 599 Odd\r\nContent-Length: 2\r\n\r\nhi";
  AnswerReader reader;
  HttpReply reply;
  reader.Start(&reply, 1024, false);
  reader.Feed(answer.data(), answer.size());
  EXPECT_TRUE(reader.done());
  EXPECT_EQ(reply.status, 599);
}

// A HEAD answer, and 204 and 304, have no body whatever their fields say;
// a streamed body has no limit (a buffered one would).
TEST(http_answer_unit, AStreamedAnswerWithoutABodyOrWithALargeOne) {
  {
    AnswerReader reader;
    Listened l;
    reader.StartStreaming(&l.headers, &l, true);
    const std::string answer = "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n";
    EXPECT_EQ(reader.Feed(answer.data(), answer.size()), answer.size());
    EXPECT_TRUE(reader.done());
    EXPECT_TRUE(l.pieces.empty());
  }
  AnswerReader reader;
  Listened l;
  reader.StartStreaming(&l.headers, &l, false);
  const std::string big(3 * 1024 * 1024, 'b');
  const std::string answer = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(big.size()) + "\r\n\r\n" + big;
  EXPECT_EQ(reader.Feed(answer.data(), answer.size()), answer.size());
  ASSERT_TRUE(reader.done()) << reader.error();
  EXPECT_EQ(l.body().size(), big.size());
}

// A transfer coding not ending in chunked (with or without a Content-Length
// after it) leaves two readers to frame the body two ways; one before
// chunked (gzip, chunked) would reach the caller still applied, as would
// chunked twice; we ask for none: a failure, in both modes, before the
// listener hears the head. Chunked alone, in any spelling, is read.
TEST(http_answer_unit, ATransferCodingOtherThanChunkedAloneFailsTheAnswer) {
  for (const std::string fields : {"Transfer-Encoding: gzip\r\nContent-Length: 5\r\n",
                                   "Transfer-Encoding: chunked, gzip\r\nContent-Length: 5\r\n",
                                   "transfer-encoding: GZIP\r\ncontent-length: 5\r\n",
                                   "Transfer-Encoding: identity\r\nContent-Length: 5\r\n",
                                   "Transfer-Encoding: gzip\r\n", "Transfer-Encoding: \r\nContent-Length: 5\r\n",
                                   "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                                   "Content-Length: 5\r\nTransfer-Encoding: gzip\r\n",
                                   "TRANSFER-ENCODING: gzip, Chunked\r\n",
                                   "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                                   "Transfer-Encoding: chunked, chunked\r\n",
                                   "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                                   "Transfer-Encoding: chunked;q=1\r\n", "Transfer-Encoding: ,\r\n"}) {
    const std::string answer = "HTTP/1.1 200 OK\r\n" + fields + "\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    const Fed f = FeedBytewise(answer);
    EXPECT_FALSE(f.done) << fields;
    EXPECT_FALSE(f.error.empty()) << fields;
    EXPECT_EQ(f.error.find("hello"), std::string::npos);
    AnswerReader reader;
    Listened l;
    reader.StartStreaming(&l.headers, &l, false);
    reader.Feed(answer.data(), answer.size());
    EXPECT_TRUE(reader.failed()) << fields;
    EXPECT_FALSE(reader.keep_alive()) << fields;
    EXPECT_EQ(l.heads, 0) << fields;
    EXPECT_TRUE(l.pieces.empty()) << fields;
  }
  for (const std::string fields : {"TRANSFER-ENCODING: Chunked\r\n", "Transfer-Encoding:  chunked \t\r\n",
                                   "Transfer-Encoding: , chunked,\r\n"}) {
    const Fed f = FeedBytewise("HTTP/1.1 200 OK\r\n" + fields + "\r\n5\r\nhello\r\n0\r\n\r\n");
    ASSERT_TRUE(f.done) << fields << f.error;
    EXPECT_EQ(f.reply.body, "hello");
    EXPECT_TRUE(f.keep_alive);
  }
}

// We never ask for an upgrade: a 101 is not an interim head to skip (what
// follows it is another protocol), in both modes.
TEST(http_answer_unit, ASwitchingProtocolsHeadFailsTheAnswer) {
  const std::string answer =
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
  const Fed f = FeedBytewise(answer);
  EXPECT_FALSE(f.done);
  EXPECT_NE(f.error.find("101"), std::string::npos) << f.error;
  AnswerReader reader;
  Listened l;
  reader.StartStreaming(&l.headers, &l, false);
  reader.Feed(answer.data(), answer.size());
  EXPECT_TRUE(reader.failed());
  EXPECT_FALSE(reader.keep_alive());
  EXPECT_EQ(l.heads, 0);
  EXPECT_TRUE(l.pieces.empty());
}

}  // namespace
}  // namespace dyad
