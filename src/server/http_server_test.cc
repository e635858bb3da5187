// HttpServer's streamed answers (HttpRequest::writer) and the request
// headers that reach handlers, over a real loopback socket.
#include "server/http_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <tuple>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "core/mutex.h"
#include "testing/gate.h"
#include "testing/loopback_http_server.h"
#include "testing/recording_sink.h"
#include "testing/refusing_threads.h"

namespace dyad {
namespace {

// A blocking loopback client speaking raw HTTP/1.1.
class RawClient {
 public:
  explicit RawClient(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    timeval tv{10, 0};  // a hung server fails the test instead of hanging it
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~RawClient() { Close(); }
  bool connected() const { return connected_; }
  // Each Send goes out at once (no Nagle wait for the last one's ACK).
  void NoDelay() {
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  void Send(std::string_view s) { ASSERT_EQ(::send(fd_, s.data(), s.size(), MSG_NOSIGNAL), ssize_t(s.size())); }
  // Whether a send went through whole (false once the server reset).
  bool TrySend(std::string_view s) { return ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL) == ssize_t(s.size()); }
  // The end of what this client sends (its FIN); it still reads.
  void ShutdownWrite() { ::shutdown(fd_, SHUT_WR); }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // Everything until the server closes (or the 10 s timeout: closed() says which).
  std::string ReadToEnd() { return ReadUntil(std::string_view("\0never", 6)); }
  // The last read found the server's close (not a timeout or an error).
  bool closed() const { return closed_; }
  // The last read found the server's reset (an abortive close).
  bool reset() const { return reset_; }
  // Bytes have arrived that were not read yet (does not wait).
  bool HasUnread() const {
    char byte;
    return !buf_.empty() || ::recv(fd_, &byte, 1, MSG_DONTWAIT | MSG_PEEK) > 0;
  }
  // Reads until `until` is in what was read (kept for later), or EOF.
  std::string ReadUntil(std::string_view until) {
    size_t from = 0;  // where `until` may begin in what is new
    while (buf_.find(until, from) == std::string::npos) {
      char tmp[65536];
      ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
      closed_ = n == 0;
      reset_ = n < 0 && errno == ECONNRESET;
      if (n <= 0) break;
      from = buf_.size() < until.size() ? 0 : buf_.size() - until.size() + 1;
      buf_.append(tmp, static_cast<size_t>(n));
    }
    size_t end = buf_.find(until);
    end = end == std::string::npos ? buf_.size() : end + until.size();
    std::string out = buf_.substr(0, end);
    buf_.erase(0, end);
    return out;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  bool closed_ = false;
  bool reset_ = false;
  std::string buf_;
};

// Runs a server on a free port with `handler` (on the blocking pool when
// `blocking`, unless `classify` says otherwise), stops it at the end of the
// scope.
class Running {
 public:
  Running(RequestHandler handler, bool blocking = true, PoolClassifier classify = nullptr,
          HttpServerOptions o = Options()) {
    if (blocking && !classify) classify = [](const HttpRequest&) { return HandlerPool::kBlocking; };
    server_ = std::make_unique<HttpServer>(o, std::move(handler), std::move(classify));
    EXPECT_TRUE(server_->Listen().ok());
    thread_ = std::thread([this] { server_->Run(); });
  }
  ~Running() {
    server_->Shutdown();
    thread_.join();
  }
  uint16_t port() const { return server_->port(); }
  static HttpServerOptions Options() {
    HttpServerOptions o;
    o.port = 0;
    o.threads = 2;
    o.blocking_threads = 2;
    o.upstream_threads = 2;
    o.max_body_bytes = 1024;
    return o;
  }

 private:
  std::unique_ptr<HttpServer> server_;
  std::thread thread_;
};

// The body of a chunked message: the chunks' data concatenated, or "<bad>"
// for framing that does not parse.
std::string Dechunk(std::string_view body) {
  std::string out;
  while (true) {
    size_t eol = body.find("\r\n");
    if (eol == std::string_view::npos) return "<bad>";
    size_t n = std::stoul(std::string(body.substr(0, eol)), nullptr, 16);
    body.remove_prefix(eol + 2);
    if (n == 0) return body == "\r\n" ? out : "<bad>";
    if (body.size() < n + 2) return "<bad>";
    out.append(body.substr(0, n));
    body.remove_prefix(n + 2);
  }
}

constexpr std::string_view kGet = "GET /x HTTP/1.1\r\nHost: t\r\nX-Custom: v1\r\nX-Custom: v2\r\n\r\n";

// Streamed answers, both ways a plain connection can carry them: written by
// the producer's thread itself (stream_direct, the default) or queued to the
// session's strand (as over TLS).
class StreamedAnswer : public ::testing::TestWithParam<bool> {
 protected:
  static HttpServerOptions Options() {
    HttpServerOptions o = Running::Options();
    o.stream_direct = GetParam();
    return o;
  }
};
INSTANTIATE_TEST_SUITE_P(HttpServer, StreamedAnswer, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool>& info) { return info.param ? "Direct" : "Queued"; });

// Opens a gate as the test leaves, so that a failed assertion leaves no
// handler held (and ~Running waiting for it): declared after the server.
struct OpenAtExit {
  testing::Gate& gate;
  ~OpenAtExit() { gate.Open(); }
};

// A handler that streams its first answer with `stream` and answers every
// later request on the connection with a plain "plain".
RequestHandler StreamedThenPlain(std::function<void(ResponseWriter&)> stream) {
  return [stream = std::move(stream), calls = 0](const HttpRequest& req) mutable {
    HttpResponse r;
    if (++calls == 1) {
      stream(*req.writer);
    } else {
      r.body = "plain";
    }
    return r;
  };
}

TEST_P(StreamedAnswer, ChunkedPiecesThenKeepAlive) {
  int calls = 0;
  Running server([&](const HttpRequest& req) {
    HttpResponse r;
    if (++calls > 1) {  // the second request on the connection: a plain answer
      r.body = "plain";
      return r;
    }
    EXPECT_NE(req.writer, nullptr);
    EXPECT_TRUE(req.writer->Begin(201, "text/event-stream",
                                  {{"X-Upstream", "yes"}, {"Content-Length", "999"}, {"Connection", "close"}}));
    EXPECT_TRUE(req.writer->Write("data: one\n\n"));
    EXPECT_TRUE(req.writer->Write(""));  // nothing, not the last chunk
    EXPECT_TRUE(req.writer->Write("data: two\n\n"));
    r.status = 201;
    r.body = "not sent";
    return r;
  }, true, nullptr, Options());
  RawClient c(server.port());
  ASSERT_TRUE(c.connected());
  c.Send(kGet);
  std::string head = c.ReadUntil("\r\n\r\n");
  EXPECT_EQ(head.rfind("HTTP/1.1 201", 0), 0u) << head;
  EXPECT_NE(head.find("Transfer-Encoding: chunked"), std::string::npos) << head;
  EXPECT_NE(head.find("Content-Type: text/event-stream"), std::string::npos) << head;
  EXPECT_NE(head.find("X-Upstream: yes"), std::string::npos) << head;
  EXPECT_EQ(head.find("Content-Length"), std::string::npos) << head;  // the server frames the body
  EXPECT_EQ(head.find("close"), std::string::npos) << head;
  std::string body = c.ReadUntil("0\r\n\r\n");
  EXPECT_EQ(Dechunk(body), "data: one\n\ndata: two\n\n");
  // Kept alive: the next request on the same connection.
  c.Send(kGet);
  std::string next = c.ReadUntil("plain");
  EXPECT_EQ(next.rfind("HTTP/1.1 200", 0), 0u) << next;
  EXPECT_NE(next.find("Content-Length: 5"), std::string::npos) << next;
}

// A producer that holds (one read of its source at a time): the head and
// pieces go out at Flush(), Flush(true) ends the body (once: the connection
// carries the next answer cleanly), and nothing may follow it.
TEST_P(StreamedAnswer, HeldPiecesGoOutAtTheFlushAndTheLastOneEndsTheBody) {
  testing::Gate look;     // passed by the handler once it holds the head and two pieces
  testing::Gate flushed;  // passed once it flushed them
  Running server(StreamedThenPlain([&](ResponseWriter& w) {
    w.Hold();
    EXPECT_TRUE(w.Begin(200, "text/event-stream", {{"X-Upstream", "yes"}}));
    EXPECT_TRUE(w.Write("data: one\n\n"));
    EXPECT_TRUE(w.Write("data: two\n\n"));
    look.Pass();
    EXPECT_TRUE(w.Flush(false));
    flushed.Pass();
    EXPECT_TRUE(w.Write("data: three\n\n"));
    EXPECT_TRUE(w.Flush(true));
    EXPECT_FALSE(w.Write("after the end"));
    EXPECT_FALSE(w.Flush(true));
  }), true, nullptr, Options());
  OpenAtExit open_look{look}, open_flushed{flushed};
  RawClient c(server.port());
  c.Send(kGet);
  ASSERT_TRUE(look.WaitArrived());
  if (GetParam()) {
    EXPECT_FALSE(c.HasUnread()) << "a held head went out before the flush";
  }
  look.Open();
  const std::string head = c.ReadUntil("\r\n\r\n");
  EXPECT_EQ(head.rfind("HTTP/1.1 200", 0), 0u) << head;
  EXPECT_NE(head.find("Transfer-Encoding: chunked"), std::string::npos) << head;
  EXPECT_NE(head.find("X-Upstream: yes"), std::string::npos) << head;
  ASSERT_TRUE(flushed.WaitArrived());
  std::string body = c.ReadUntil("data: two\n\n\r\n");  // the flush sent them: the handler waits
  flushed.Open();
  EXPECT_EQ(Dechunk(body + c.ReadUntil("0\r\n\r\n")), "data: one\n\ndata: two\n\ndata: three\n\n");
  c.Send(kGet);
  const std::string next = c.ReadUntil("plain");
  EXPECT_EQ(next.rfind("HTTP/1.1 200", 0), 0u) << next;  // no second last chunk before it
}

// A streamed answer whose status has no body (an upstream's 204 or 304
// sent as an event stream): its head alone, neither chunked nor with a
// length, then the close; the pieces are dropped, held or not. A producer
// that aborts cuts nothing: the head still goes out, and the close is a
// clean one, not a reset.
TEST_P(StreamedAnswer, AStatusWithoutABodyGoesOutAsItsHeadAloneThenTheClose) {
  for (bool hold : {false, true}) {
    for (bool abort : {false, true}) {
      Running server(
          [&](const HttpRequest& req) {
            if (hold) req.writer->Hold();
            EXPECT_TRUE(req.writer->Begin(204, "text/event-stream", {}));
            EXPECT_TRUE(req.writer->Write("data: dropped\n\n"));
            if (abort) {
              req.writer->Abort();
            } else if (hold) {
              EXPECT_TRUE(req.writer->Flush(true));
            }
            return HttpResponse{};
          },
          true, nullptr, Options());
      RawClient c(server.port());
      c.Send(kGet);
      const std::string all = c.ReadToEnd();
      EXPECT_TRUE(all.starts_with("HTTP/1.1 204 No Content\r\n")) << all;
      EXPECT_TRUE(all.ends_with("\r\nConnection: close\r\n\r\n")) << all;  // nothing after the head
      EXPECT_EQ(all.find("Transfer-Encoding"), std::string::npos) << all;
      EXPECT_TRUE(c.closed()) << "hold " << hold << ", abort " << abort;  // (a reset is not a close)
    }
  }
}

// A piece too large to hold is not kept for the Flush(): it goes out at
// once, after what was held.
TEST_P(StreamedAnswer, ALargePieceGoesOutWithoutWaitingForTheFlush) {
  testing::Gate wrote;  // passed by the handler after the large piece, before its Flush()
  const std::string large = std::string(100 * 1024, 'x') + "END";
  Running server([&](const HttpRequest& req) {
    req.writer->Hold();
    EXPECT_TRUE(req.writer->Begin(200, "text/plain", {}));
    EXPECT_TRUE(req.writer->Write("small,"));
    EXPECT_TRUE(req.writer->Write(large));
    wrote.Pass();
    EXPECT_TRUE(req.writer->Flush(true));
    return HttpResponse{};
  }, true, nullptr, Options());
  OpenAtExit open_wrote{wrote};
  RawClient c(server.port());
  c.Send(kGet);
  EXPECT_EQ(c.ReadUntil("\r\n\r\n").rfind("HTTP/1.1 200", 0), 0u);
  std::string body = c.ReadUntil("END\r\n");  // the handler cannot flush before the gate opens
  const bool before_the_flush = body.ends_with("END\r\n");
  wrote.Open();
  EXPECT_TRUE(before_the_flush) << body.size() << " bytes before the flush";
  EXPECT_EQ(Dechunk(body + c.ReadUntil("0\r\n\r\n")), "small," + large);
}

// Held pieces, then an Abort(): what was held reaches the client, then the
// close, without the last chunk. (Queued, Hold() changes nothing: what is
// queued goes out before the close.)
TEST_P(StreamedAnswer, AnAbortSendsWhatIsHeldThenClosesWithoutTheLastChunk) {
  Running server([&](const HttpRequest& req) {
    req.writer->Hold();
    EXPECT_TRUE(req.writer->Begin(200, "text/event-stream", {}));
    EXPECT_TRUE(req.writer->Write("data: held\n\n"));
    req.writer->Abort();
    EXPECT_FALSE(req.writer->Flush(false));
    return HttpResponse{};
  }, true, nullptr, Options());
  RawClient c(server.port());
  c.Send(kGet);
  const std::string head = c.ReadUntil("\r\n\r\n");
  EXPECT_EQ(head.rfind("HTTP/1.1 200", 0), 0u) << head;
  const std::string body = c.ReadToEnd();
  EXPECT_TRUE(c.closed());
  EXPECT_EQ(body, "c\r\ndata: held\n\n\r\n");
}

// Over HTTP/1.0 the close ends the body, so an Abort() must not send what
// is held, and the answer ends with a reset: the client would take the cut
// body for whole. Direct, nothing was flushed, so nothing comes (queued, the
// head went at Begin()).
TEST_P(StreamedAnswer, AnHttp10AnswerAbortedBeforeItsFlushSendsNothingHeld) {
  Running server([&](const HttpRequest& req) {
    req.writer->Hold();
    EXPECT_TRUE(req.writer->Begin(200, "text/plain", {}));
    EXPECT_TRUE(req.writer->Write("partial"));
    req.writer->Abort();
    return HttpResponse{};
  }, true, nullptr, Options());
  RawClient c(server.port());
  c.Send("GET /x HTTP/1.0\r\nHost: t\r\n\r\n");
  const std::string all = c.ReadToEnd();
  EXPECT_TRUE(c.reset());
  if (GetParam()) {
    EXPECT_EQ(all, "");
  }
}

// An HTTP/1.0 answer cut after a flush (which the client has read: a reset
// drops what is still unsent) ends with a reset, not the close that would
// end a whole body.
TEST_P(StreamedAnswer, AnHttp10AnswerCutAfterAFlushEndsWithAReset) {
  testing::Gate read_first;
  Running server([&](const HttpRequest& req) {
    req.writer->Hold();
    EXPECT_TRUE(req.writer->Begin(200, "text/plain", {}));
    EXPECT_TRUE(req.writer->Write("one,"));
    EXPECT_TRUE(req.writer->Flush(false));
    read_first.Pass();
    req.writer->Write("two");  // dropped, or sent before the cut (queued): either way the reset follows
    req.writer->Abort();
    return HttpResponse{};
  }, true, nullptr, Options());
  OpenAtExit open_read_first{read_first};
  RawClient c(server.port());
  c.Send("GET /x HTTP/1.0\r\nHost: t\r\n\r\n");
  EXPECT_EQ(c.ReadUntil("\r\n\r\n").rfind("HTTP/1.0 200", 0), 0u);
  EXPECT_EQ(c.ReadUntil("one,"), "one,");
  read_first.Open();
  c.ReadToEnd();
  EXPECT_TRUE(c.reset());
  EXPECT_FALSE(c.closed());
}

// An HTTP/1.0 stream the shutdown's grace cuts (its end never reaches the
// stopped I/O threads: the socket closes with the server) ends with a
// reset too, not a close.
TEST_P(StreamedAnswer, AnHttp10AnswerCutByTheShutdownEndsWithAReset) {
  HttpServerOptions o = Options();
  o.shutdown_grace = std::chrono::seconds(1);
  testing::Gate read_first;
  OpenAtExit open_read_first{read_first};
  auto server = std::make_unique<Running>([&](const HttpRequest& req) {
    EXPECT_TRUE(req.writer->Begin(200, "text/plain", {}));
    EXPECT_TRUE(req.writer->Write("one,"));
    EXPECT_TRUE(req.writer->Flush(false));
    read_first.Pass();
    // Until the I/O threads have stopped for good (the grace is over).
    while (req.writer->Write("more,") && req.writer->Flush(false)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return HttpResponse{};
  }, true, nullptr, o);
  RawClient c(server->port());
  c.Send("GET /x HTTP/1.0\r\nHost: t\r\n\r\n");
  EXPECT_NE(c.ReadUntil("one,").find("one,"), std::string::npos);
  read_first.Open();
  server.reset();  // shuts down, waits out the grace, and closes what is left
  c.ReadToEnd();
  EXPECT_TRUE(c.reset());
  EXPECT_FALSE(c.closed());
}

// What is held when the handler returns goes out, then the last chunk.
TEST_P(StreamedAnswer, WhatIsHeldWhenTheHandlerReturnsGoesOut) {
  Running server(StreamedThenPlain([](ResponseWriter& w) {
    w.Hold();
    EXPECT_TRUE(w.Begin(200, "text/plain", {}));
    EXPECT_TRUE(w.Write("kept"));
  }), true, nullptr, Options());
  RawClient c(server.port());
  c.Send(kGet);
  EXPECT_EQ(c.ReadUntil("\r\n\r\n").rfind("HTTP/1.1 200", 0), 0u);
  EXPECT_EQ(Dechunk(c.ReadUntil("0\r\n\r\n")), "kept");
  c.Send(kGet);
  EXPECT_EQ(c.ReadUntil("plain").rfind("HTTP/1.1 200", 0), 0u);
}

TEST(HttpServerStream, HeadersReachTheHandler) {
  std::promise<std::vector<std::pair<std::string, std::string>>> seen;
  Running server([&](const HttpRequest& req) {
    seen.set_value(req.headers);
    return HttpResponse{};
  });
  RawClient c(server.port());
  c.Send(kGet);
  c.ReadUntil("\r\n\r\n");
  auto headers = seen.get_future().get();
  std::vector<std::string> custom;
  for (const auto& [k, v] : headers) {
    if (k == "X-Custom") custom.push_back(v);
  }
  EXPECT_EQ(custom, (std::vector<std::string>{"v1", "v2"}));
}

// What a handler saw of a request, as its answer: the path, the
// Authorization, whether the trailer's X-T field came in as a header, and the
// body, ended by '|'.
HttpResponse DescribeRequest(const HttpRequest& req) {
  bool trailer_seen = false;
  for (const auto& [k, v] : req.headers) trailer_seen = trailer_seen || k == "X-T";
  HttpResponse r;
  r.body = req.path + " auth=[" + req.authorization + "] trailer=" + (trailer_seen ? "yes" : "no") +
           " body=" + req.body + "|";
  return r;
}

// A kept-alive connection's next request, when it comes whole in one read,
// is parsed from the read buffer (Session::ParseBuffered), not by a composed
// read: it must be the same request. A chunked body's trailer is not its
// header (review 38b), and a body that comes in two pieces is read on.
TEST(HttpServerRead, AKeptAliveConnectionsNextRequestIsReadWhole) {
  Running server(DescribeRequest, false);
  RawClient c(server.port());
  ASSERT_TRUE(c.connected());
  c.Send(kGet);
  ASSERT_NE(c.ReadUntil("|").find("/x auth=[]"), std::string::npos);
  c.Send("POST /chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
         "2\r\n{}\r\n0\r\nAuthorization: Bearer from-the-trailer\r\nX-T: 1\r\n\r\n");
  std::string answer = c.ReadUntil("|");
  EXPECT_NE(answer.find("/chunked auth=[] trailer=no body={}|"), std::string::npos) << answer;
  c.Send("POST /pieces HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n01234");
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // (two reads: the server parses the first alone)
  c.Send("56789");
  answer = c.ReadUntil("|");
  EXPECT_NE(answer.find("/pieces auth=[] trailer=no body=0123456789|"), std::string::npos) << answer;
  c.Send("GET /bad\x01 HTTP/1.1\r\nHost: t\r\n\r\n");
  EXPECT_NE(c.ReadUntil("\r\n\r\n").rfind("HTTP/1.1 400", 0), std::string::npos);
}

// A kept-alive connection's next request split in two at every byte (a
// Content-Length body, a chunked one whose trailer holds an Authorization,
// an Expect: 100-continue), then a third request: each read whole, whatever
// ParseBuffered saw of it first.
TEST(HttpServerRead, ANextRequestSplitAtAnyByteIsReadWhole) {
  Running server(DescribeRequest, false);
  const std::vector<std::pair<std::string, std::string>> shapes = {
      {"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello", "/p auth=[] trailer=no body=hello|"},
      {"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n3\r\nabc\r\n0\r\n"
       "Authorization: Bearer T\r\nX-T: 1\r\nConnection: close\r\n\r\n",
       "/c auth=[] trailer=no body={}abc|"},
      {"POST /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nxyz",
       "/e auth=[] trailer=no body=xyz|"},
  };
  for (const auto& [req, want] : shapes) {
    for (size_t k = 1; k < req.size(); ++k) {
      RawClient c(server.port());
      ASSERT_TRUE(c.connected());
      c.NoDelay();
      c.Send(kGet);
      ASSERT_NE(c.ReadUntil("|").find("/x auth=[]"), std::string::npos);
      c.Send(req.substr(0, k));
      std::this_thread::sleep_for(std::chrono::milliseconds(3));  // (two reads, most often)
      c.Send(req.substr(k));
      std::string answer = c.ReadUntil("|");
      EXPECT_NE(answer.find(want), std::string::npos) << "split at " << k << ": " << answer;
      c.Send("GET /third HTTP/1.1\r\nHost: t\r\n\r\n");
      answer = c.ReadUntil("|");
      EXPECT_NE(answer.find("/third auth=[]"), std::string::npos) << "split at " << k << ": " << answer;
    }
  }
}

// A deferred /v1 answer: the upstream's body, or "failed", then "|"; counts
// its Finish and Answered calls.
class RecordedDeferred final : public DeferredAnswer {
  // Only the body (RecordingSink copies it at every flush: slow for megabytes).
  struct BodySink final : UpstreamSink {
    bool OnHead(const UpstreamHead&) override { return true; }
    bool OnBody(std::string_view piece) override {
      body.append(piece);
      return true;
    }
    std::string body;
  };

 public:
  RecordedDeferred(std::string url, std::atomic<int>* finished, std::atomic<int>* answered, bool throws = false)
      : up_(Post(url)), finished_(finished), answered_(answered), throws_(throws) {
    up_.timeouts.connect = std::chrono::milliseconds(200);
  }
  const UpstreamRequest* upstream() const override { return &up_; }
  UpstreamSink& sink() override { return sink_; }
  HttpResponse Finish(const Status& sent) override {
    ++*finished_;
    if (throws_) throw std::runtime_error("a bug in Finish");
    HttpResponse r;
    r.status = sent.ok() ? 200 : 502;
    r.body = (sent.ok() ? sink_.body : std::string("failed")) + "|";
    return r;
  }
  void Answered() override {
    EXPECT_EQ(*finished_, *answered_ + 1) << "Answered before Finish, or twice";
    ++*answered_;
  }
  HttpResponse RunOnPool(const HttpRequest&) override {
    HttpResponse r;
    r.body = "pool|";
    return r;
  }

 private:
  UpstreamRequest up_;
  BodySink sink_;
  std::atomic<int>* finished_;
  std::atomic<int>* answered_;
  const bool throws_;
};

// A /v1 call, as the servers of the tests below take it.
constexpr std::string_view kV1Call = "POST /v1/x HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}";

// An evented call whose Done runs within Begin (a metadata address, refused
// before anything is sent): answered, and the connection kept, one request
// at a time and pipelined; told Answered once per answer, after its Finish.
TEST(HttpServerEvented, ACallEndedWithinBeginIsAnsweredAndTheConnectionKept) {
  HttpServerOptions o = Running::Options();
  o.evented_upstream = true;
  std::atomic<int> finished{0}, answered{0};
  Running server(
      [&](const HttpRequest& req) {
        HttpResponse r;
        if (!req.may_defer) {
          r.body = "not deferred|";
          return r;
        }
        r.deferred = std::make_shared<RecordedDeferred>("http://169.254.169.254/x", &finished, &answered);
        return r;
      },
      false, [](HttpRequest&) { return HandlerPool::kEvented; }, o);
  RawClient c(server.port());
  ASSERT_TRUE(c.connected());
  const std::string req(kV1Call);
  for (int i = 0; i < 3; ++i) {
    c.Send(req);
    std::string a = c.ReadUntil("|");
    EXPECT_NE(a.find("502"), std::string::npos) << a;
    EXPECT_NE(a.find("failed|"), std::string::npos) << a;
  }
  c.Send(req + req + req);
  for (int i = 0; i < 3; ++i) {
    std::string a = c.ReadUntil("|");
    EXPECT_NE(a.find("failed|"), std::string::npos) << i << ": " << a;
  }
  // (told on the loop just after each answer went out)
  for (int i = 0; i < 200 && answered < 6; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(finished, 6);
  EXPECT_EQ(answered, 6);
}

// A deferred answer whose Finish throws (a bug) is answered 500, in /v1's
// error shape, the connection kept; Answered still follows, once (the
// access line: AccountedAnswer).
TEST(HttpServerEvented, AFinishThatThrowsIsAnswered500AndStillToldAnswered) {
  HttpServerOptions o = Running::Options();
  o.evented_upstream = true;
  std::atomic<int> finished{0}, answered{0};
  Running server(
      [&](const HttpRequest&) {
        HttpResponse r;
        r.deferred = std::make_shared<RecordedDeferred>("http://169.254.169.254/x", &finished, &answered, true);
        return r;
      },
      false, [](HttpRequest&) { return HandlerPool::kEvented; }, o);
  RawClient c(server.port());
  for (int i = 0; i < 2; ++i) {
    c.Send(kV1Call);
    const std::string a = c.ReadUntil("}}");
    EXPECT_TRUE(a.starts_with("HTTP/1.1 500 ")) << a;
    EXPECT_NE(a.find(R"("type":"server_error")"), std::string::npos) << a;
  }
  for (int i = 0; i < 200 && answered < 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(finished, 2);
  EXPECT_EQ(answered, 2);
}

// A server whose every request is an evented call to `upstream_url`
// (RecordedDeferred).
std::unique_ptr<Running> EventedTo(const std::string& upstream_url, HttpServerOptions o = Running::Options()) {
  o.evented_upstream = true;
  auto counts = std::make_shared<std::pair<std::atomic<int>, std::atomic<int>>>();
  return std::make_unique<Running>(
      [upstream_url, counts](const HttpRequest&) {
        HttpResponse r;
        r.deferred = std::make_shared<RecordedDeferred>(upstream_url, &counts->first, &counts->second);
        return r;
      },
      false, [](HttpRequest&) { return HandlerPool::kEvented; }, o);
}

LoopbackHttpServer::ServerScript AnswerEachWith(std::string body) {
  return [body](LoopbackConn& c, LoopbackHttpServer& server) {
    while (!server.Read(c).empty()) {
      if (!c.Write(Answer(body))) return;
    }
  };
}

// A deferred answer streamed through the request's writer (the session's
// held writer), under `status` whatever the upstream's.
class StreamedDeferred final : public DeferredAnswer {
  struct Sink final : UpstreamSink {
    bool OnHead(const UpstreamHead&) override { return writer->Begin(status, "text/event-stream", {}); }
    bool OnBody(std::string_view piece) override { return writer->Write(piece); }
    bool OnFlush(bool last) override { return writer->Flush(last); }
    ResponseWriter* writer = nullptr;
    int status = 200;
  };

 public:
  StreamedDeferred(const std::string& url, ResponseWriter* writer, int status) : up_(Post(url)) {
    sink_.writer = writer;
    sink_.status = status;
  }
  const UpstreamRequest* upstream() const override { return &up_; }
  UpstreamSink& sink() override { return sink_; }
  HttpResponse Finish(const Status&) override { return HttpResponse{}; }
  HttpResponse RunOnPool(const HttpRequest&) override { return HttpResponse{}; }

 private:
  UpstreamRequest up_;
  Sink sink_;
};

// On the loops too: an upstream's stream under a status that has no body
// goes out as its head alone, then the close; a 200 stream is chunked and
// the connection kept.
TEST(HttpServerEvented, AStreamedStatusWithoutABodyGoesOutAsItsHeadAloneThenTheClose) {
  LoopbackHttpServer upstream(AnswerEachWith("data: dropped\n\n"));
  HttpServerOptions o = Running::Options();
  o.evented_upstream = true;
  std::atomic<int> status{200};
  Running server(
      [&](const HttpRequest& req) {
        HttpResponse r;
        r.deferred = std::make_shared<StreamedDeferred>(upstream.url("/v1/x"), req.writer, status.load());
        return r;
      },
      false, [](HttpRequest&) { return HandlerPool::kEvented; }, o);
  RawClient c(server.port());
  c.Send(kV1Call);
  EXPECT_NE(c.ReadUntil("0\r\n\r\n").find("Transfer-Encoding: chunked"), std::string::npos);
  status = 304;
  c.Send(kV1Call);
  const std::string all = c.ReadToEnd();
  EXPECT_TRUE(all.starts_with("HTTP/1.1 304 Not Modified\r\n")) << all;
  EXPECT_TRUE(all.ends_with("\r\nConnection: close\r\n\r\n")) << all;  // nothing after the head
  EXPECT_EQ(all.find("Transfer-Encoding"), std::string::npos) << all;
  EXPECT_TRUE(c.closed());
}

// After an upstream call, the connection's next request is awaited on the
// hang-up watch the call left queued (Session::ReadOnWatch): each is read
// and answered, whether it comes whole, with its head in two pieces, or two
// at once.
TEST(HttpServerEvented, TheNextRequestAfterAnUpstreamCallIsReadHoweverItComes) {
  LoopbackHttpServer upstream(AnswerEachWith("up"));
  auto server = EventedTo(upstream.url("/v1/x"));
  RawClient c(server->port());
  ASSERT_TRUE(c.connected());
  c.NoDelay();
  const std::string req(kV1Call);
  for (int i = 0; i < 3; ++i) {
    c.Send(req);
    EXPECT_NE(c.ReadUntil("|").find("200 OK"), std::string::npos) << i;
  }
  for (size_t split : {size_t{5}, req.find("\r\n\r\n") + 2, req.size() - 1}) {
    c.Send(req.substr(0, split));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // (two reads, most often)
    c.Send(req.substr(split));
    std::string a = c.ReadUntil("|");
    EXPECT_NE(a.find("200 OK"), std::string::npos) << "split at " << split << ": " << a;
    EXPECT_NE(a.find("up|"), std::string::npos) << "split at " << split << ": " << a;
  }
  c.Send(req + req);
  for (int i = 0; i < 2; ++i) EXPECT_NE(c.ReadUntil("|").find("up|"), std::string::npos) << "pipelined " << i;
  EXPECT_EQ(upstream.requests().size(), 8u);
}

// A next request that comes while a large answer is still being written
// (after the watch stopped) is read once the answer is out.
TEST(HttpServerEvented, ANextRequestSentWhileTheAnswerIsWrittenIsReadAfterIt) {
  LoopbackHttpServer upstream(AnswerEachWith(std::string(8 << 20, 'x')));  // more than the socket buffers hold
  auto server = EventedTo(upstream.url("/v1/x"));
  RawClient c(server->port());
  ASSERT_TRUE(c.connected());
  const std::string req(kV1Call);
  c.Send(req);
  ASSERT_NE(c.ReadUntil("\r\n\r\n").find("200 OK"), std::string::npos);  // the head: the rest is being written
  c.Send(req);
  EXPECT_EQ(c.ReadUntil("|").size(), (8u << 20) + 1);
  EXPECT_NE(c.ReadUntil("\r\n\r\n").find("200 OK"), std::string::npos) << "the next request was not answered";
  EXPECT_EQ(c.ReadUntil("|").size(), (8u << 20) + 1);
}

// A client that sends nothing after an upstream call's answer is closed at
// the idle timeout (the wait for its next request has one too).
TEST(HttpServerEvented, AConnectionIdleAfterAnUpstreamCallClosesAtTheIdleTimeout) {
  LoopbackHttpServer upstream(AnswerEachWith("up"));
  HttpServerOptions o = Running::Options();
  o.idle_timeout = std::chrono::seconds(1);
  auto server = EventedTo(upstream.url("/v1/x"), o);
  RawClient c(server->port());
  ASSERT_TRUE(c.connected());
  c.Send(kV1Call);
  ASSERT_NE(c.ReadUntil("|").find("up|"), std::string::npos);
  EXPECT_EQ(c.ReadToEnd(), "");
  EXPECT_TRUE(c.closed()) << "still open 10 s after the answer, with a 1 s idle timeout";
}

// Stops a server on a thread of its own.
class Stopping {
 public:
  explicit Stopping(std::unique_ptr<Running>& server)
      : thread_([this, &server] {
          server.reset();
          stopped_.set_value();
        }) {}
  ~Stopping() { thread_.join(); }
  // Whether it stopped within 10 s (LongGrace: its grace period is 20 s).
  bool InTime() { return done_.wait_for(std::chrono::seconds(10)) == std::future_status::ready; }

 private:
  std::promise<void> stopped_;
  std::future<void> done_ = stopped_.get_future();
  std::thread thread_;  // last: started once the rest is made
};

HttpServerOptions LongGrace() {
  HttpServerOptions o = Running::Options();
  o.shutdown_grace = std::chrono::seconds(20);
  return o;
}

// An upstream call's answer that closes the connection (the request's
// Connection: close) ends the session with it, though the client keeps its
// end open and sends nothing: the call's hang-up wait, still queued, does
// not hold it (a shutdown would wait for it until its grace ended).
TEST(HttpServerEvented, AnUpstreamCallsAnswerThatClosesEndsTheSession) {
  LoopbackHttpServer upstream(AnswerEachWith("up"));
  auto server = EventedTo(upstream.url("/v1/x"), LongGrace());
  RawClient c(server->port());
  ASSERT_TRUE(c.connected());
  c.Send("POST /v1/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}");
  EXPECT_NE(c.ReadToEnd().find("up|"), std::string::npos);
  ASSERT_TRUE(c.closed());
  EXPECT_TRUE(Stopping(server).InTime()) << "a session that answered and closed was still open";
}

// The same when the shutdown begins during the call: its answer closes the
// connection (AfterWrite), and the session ends with it.
TEST(HttpServerEvented, AShutdownDuringAnUpstreamCallEndsTheSessionWithItsAnswer) {
  testing::Gate answer;
  LoopbackHttpServer upstream([&](LoopbackConn& c, LoopbackHttpServer& s) {
    while (!s.Read(c).empty()) {
      answer.Pass();
      if (!c.Write(Answer("up"))) return;
    }
  });
  auto server = EventedTo(upstream.url("/v1/x"), LongGrace());
  RawClient c(server->port());
  ASSERT_TRUE(c.connected());
  c.Send(kV1Call);
  ASSERT_TRUE(answer.WaitArrived(1));  // the upstream has the request
  Stopping stopping(server);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // (the shutdown has begun: the session is busy)
  answer.Open();
  EXPECT_NE(c.ReadToEnd().find("up|"), std::string::npos);
  EXPECT_TRUE(c.closed());
  EXPECT_TRUE(stopping.InTime()) << "a session that answered and closed was still open";
}

// A shutdown closes a connection idle after an upstream call at once, and
// one whose client closed first is gone: the server stops long before its
// grace period ends.
TEST(HttpServerEvented, AShutdownClosesAConnectionIdleAfterAnUpstreamCall) {
  LoopbackHttpServer upstream(AnswerEachWith("up"));
  auto server = EventedTo(upstream.url("/v1/x"), LongGrace());
  const std::string req(kV1Call);
  RawClient gone(server->port()), idle(server->port());
  ASSERT_TRUE(gone.connected() && idle.connected());
  for (RawClient* c : {&gone, &idle}) {
    c->Send(req);
    ASSERT_NE(c->ReadUntil("|").find("up|"), std::string::npos);
  }
  gone.Close();
  Stopping stopping(server);
  EXPECT_EQ(idle.ReadToEnd(), "");
  EXPECT_TRUE(idle.closed()) << "not closed by the shutdown";
  EXPECT_TRUE(stopping.InTime());
}

// A chunked request with a trailer, a GET and half a POST in one write, the
// rest of the POST later: each read as itself, the trailer in none.
TEST(HttpServerRead, RequestsPipelinedAfterATrailerAreReadInOrder) {
  Running server(DescribeRequest, false);
  RawClient c(server.port());
  ASSERT_TRUE(c.connected());
  c.Send(kGet);
  ASSERT_NE(c.ReadUntil("|").find("/x auth=[]"), std::string::npos);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  c.Send("POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n"
         "Authorization: Bearer T\r\nX-T: 1\r\n\r\nGET /g HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer G\r\n\r\n"
         "POST /h HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nab");
  std::string a = c.ReadUntil("|");
  EXPECT_NE(a.find("/c auth=[] trailer=no body={}|"), std::string::npos) << a;
  a = c.ReadUntil("|");
  EXPECT_NE(a.find("/g auth=[Bearer G] trailer=no body=|"), std::string::npos) << a;
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  c.Send("cd");
  a = c.ReadUntil("|");
  EXPECT_NE(a.find("/h auth=[] trailer=no body=abcd|"), std::string::npos) << a;
}

// A request the upstream pool's thread reads next (NextOnPool) and hands to
// the loop for the evented path is classified once: the classifier
// (App::PoolFor) hashes the client token.
TEST(HttpServerLinger, ANextRequestHandedToTheLoopIsClassifiedOnce) {
  HttpServerOptions o = Running::Options();
  o.evented_upstream = true;
  o.pool_linger = std::chrono::milliseconds(500);
  auto counts = std::make_shared<std::map<std::string, int>>();
  auto mu = std::make_shared<std::mutex>();
  Running server(
      [](const HttpRequest& req) {
        HttpResponse r;
        r.body = req.path + "|";
        return r;
      },
      true,
      [counts, mu](HttpRequest& r) {
        std::lock_guard<std::mutex> lock(*mu);
        ++(*counts)[r.path];
        return r.path == "/v1/next" ? HandlerPool::kEvented : HandlerPool::kUpstream;
      },
      o);
  RawClient c(server.port());
  ASSERT_TRUE(c.connected());
  c.Send("GET /v1/models HTTP/1.1\r\nHost: t\r\n\r\n");
  ASSERT_NE(c.ReadUntil("|").find("/v1/models|"), std::string::npos);
  c.Send("POST /v1/next HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}");  // within the linger
  ASSERT_NE(c.ReadUntil("|").find("/v1/next|"), std::string::npos);
  std::lock_guard<std::mutex> lock(*mu);
  EXPECT_EQ((*counts)["/v1/models"], 1);
  EXPECT_EQ((*counts)["/v1/next"], 1) << "classified (its token hashed) on the pool thread and again on the loop";
}

TEST(HttpServerStream, InlineHandlersHaveNoWriter) {
  bool had_writer = true;
  Running server(
      [&](const HttpRequest& req) {
        had_writer = req.writer != nullptr;
        HttpResponse r;
        r.body = "inline";
        return r;
      },
      false);
  RawClient c(server.port());
  c.Send(kGet);
  EXPECT_NE(c.ReadUntil("inline").find("Content-Length: 6"), std::string::npos);
  EXPECT_FALSE(had_writer);
}

// A handler that throws is answered 500 naming the request id, in the error
// shape its client reads: OpenAI's for /v1, the envelope otherwise.
TEST(HttpServerStream, AThrowingHandlersFiveHundredIsInItsPathsErrorShape) {
  Running server([](const HttpRequest&) -> HttpResponse { throw std::runtime_error("boom"); }, false);
  RawClient c(server.port());
  c.Send("GET /admin/x HTTP/1.1\r\nHost: t\r\nX-Request-Id: req-1\r\n\r\n");
  std::string got = c.ReadUntil("}}");
  EXPECT_TRUE(got.starts_with("HTTP/1.1 500 ")) << got;
  EXPECT_TRUE(got.ends_with(
      R"({"status":"error","error":{"code":"INTERNAL_ERROR","message":"internal error; request id req-1"}})"))
      << got;
  c.Send("POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nX-Request-Id: req-\"2\r\nContent-Length: 0\r\n\r\n");
  got = c.ReadUntil("}}");
  EXPECT_TRUE(got.starts_with("HTTP/1.1 500 ")) << got;
  EXPECT_NE(got.find(R"({"error":{"code":"internal_error","message":"internal error; request id req-\"2",)"
                     R"("param":null,"type":"server_error"}})"),
            std::string::npos)
      << got;
}

// A request line the parser refuses (over the header limit, a bad version)
// is answered in the shape its target's client reads, as far as the target
// can be read from what was sent.
TEST(HttpServerRead, ARefusedRequestLineIsAnsweredInItsTargetsErrorShape) {
  Running server([](const HttpRequest&) { return HttpResponse{}; }, false);
  const std::string long_tail(20000, 'a');
  for (const auto& [line, status, v1] : std::vector<std::tuple<std::string, std::string, bool>>{
           {"POST /v1/chat/completions?x=" + long_tail + " HTTP/1.1", "431", true},
           {"POST /v1/chat/completions HTTP/9.1", "400", true},
           {"GET /admin/x/" + long_tail + " HTTP/1.1", "431", false},
           {"GET /admin/x HTTP/9.1", "400", false}}) {
    RawClient c(server.port());
    c.Send(line + "\r\nHost: t\r\n\r\n");
    std::string got = c.ReadUntil("}}");
    EXPECT_TRUE(got.starts_with("HTTP/1.1 " + status + " ")) << got.substr(0, 200);
    EXPECT_EQ(got.find(R"({"error":{"code":)") != std::string::npos, v1) << got.substr(0, 400);
    EXPECT_EQ(got.find(R"({"status":"error")") != std::string::npos, !v1) << got.substr(0, 400);
  }
}

// A HEAD answer is the head alone, its Content-Length the body's; the next
// request on the connection is answered in step. Inline and on a pool, and a
// HEAD is never given a writer to stream with.
TEST(HttpServerHead, TheBodyIsDroppedAndItsLengthKept) {
  for (bool blocking : {false, true}) {
    std::atomic<bool> had_writer{false};
    Running server(
        [&](const HttpRequest& req) {
          if (req.method == "HEAD" && req.writer) had_writer = true;
          HttpResponse r;
          r.body = req.path == "/empty" ? "" : "twelve bytes";
          return r;
        },
        blocking);
    RawClient c(server.port());
    c.Send("HEAD /x HTTP/1.1\r\nHost: t\r\n\r\n");
    std::string head = c.ReadUntil("\r\n\r\n");
    EXPECT_TRUE(head.starts_with("HTTP/1.1 200 ")) << head;
    EXPECT_NE(head.find("Content-Length: 12\r\n"), std::string::npos) << head;
    c.Send("HEAD /empty HTTP/1.1\r\nHost: t\r\n\r\n");
    head = c.ReadUntil("\r\n\r\n");
    EXPECT_TRUE(head.starts_with("HTTP/1.1 200 ")) << head;  // no body bytes of the first HEAD before it
    EXPECT_NE(head.find("Content-Length: 0\r\n"), std::string::npos) << head;
    c.Send("GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    const std::string rest = c.ReadToEnd();
    EXPECT_TRUE(rest.starts_with("HTTP/1.1 200 ")) << rest;  // no body bytes of the HEADs before it
    EXPECT_TRUE(rest.ends_with("\r\n\r\ntwelve bytes")) << rest;
    EXPECT_TRUE(c.closed());
    EXPECT_FALSE(had_writer) << blocking;
  }
}

// A whole answer's head: a field the handler repeats goes out each time
// (a proxied Vary or Link); those the server frames are its own, whatever
// the handler set; a 204 goes out with neither body nor length, and the
// connection is kept in step. Inline and on a pool.
TEST(HttpServerHead, AWholeAnswersFieldsAreTheHandlersAndItsFramingTheServers) {
  for (bool blocking : {false, true}) {
    Running server(
        [&](const HttpRequest& req) {
          HttpResponse r;
          r.status = req.path == "/none" ? 204 : 200;
          r.body = "twelve bytes";
          r.headers = {{"Vary", "Origin"}, {"Vary", "Accept"}, {"Content-Length", "3"},
                       {"Connection", "close"}, {"Server", "upstream"}, {"X-Request-Id", "theirs"}};
          return r;
        },
        blocking);
    RawClient c(server.port());
    c.Send("GET /x HTTP/1.1\r\nHost: t\r\n\r\n");
    std::string got = c.ReadUntil("twelve bytes");
    EXPECT_NE(got.find("\r\nVary: Origin\r\nVary: Accept\r\n"), std::string::npos) << got;
    EXPECT_NE(got.find("\r\nContent-Length: 12\r\n"), std::string::npos) << got;
    EXPECT_NE(got.find("\r\nServer: dyad-gateway\r\n"), std::string::npos) << got;
    for (std::string_view theirs : {"Content-Length: 3", "Connection", "upstream", "theirs"}) {
      EXPECT_EQ(got.find(theirs), std::string::npos) << theirs << " in " << got;
    }
    c.Send("GET /none HTTP/1.1\r\nHost: t\r\n\r\n");
    got = c.ReadUntil("\r\n\r\n");
    EXPECT_TRUE(got.starts_with("HTTP/1.1 204 No Content\r\n")) << got;
    EXPECT_EQ(got.find("Content-Length"), std::string::npos) << got;
    c.Send("GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    const std::string rest = c.ReadToEnd();
    EXPECT_TRUE(rest.starts_with("HTTP/1.1 200 OK\r\n")) << rest;  // no body of the 204 before it
    EXPECT_TRUE(rest.ends_with("\r\n\r\ntwelve bytes")) << rest;
    EXPECT_TRUE(c.closed()) << blocking;
  }
}

TEST_P(StreamedAnswer, ClientGoneFailsTheNextWrites) {
  std::promise<int> stopped_after;  // how many writes succeeded before one failed (-1: none failed)
  std::promise<void> head_read;
  auto head_read_f = head_read.get_future().share();
  Running server([&](const HttpRequest& req) {
    EXPECT_TRUE(req.writer->Begin(200, "text/event-stream", {}));
    head_read_f.wait();
    std::string piece(16 * 1024, 'x');
    int ok = 0;
    for (; ok < 100000; ++ok) {
      if (!req.writer->Write(piece)) break;
    }
    EXPECT_FALSE(req.writer->Write(piece));  // stays failed
    stopped_after.set_value(ok == 100000 ? -1 : ok);
    return HttpResponse{};
  }, true, nullptr, Options());
  {
    RawClient c(server.port());
    c.Send(kGet);
    c.ReadUntil("\r\n\r\n");
    c.Close();
  }
  head_read.set_value();
  int n = stopped_after.get_future().get();
  EXPECT_GE(n, 0) << "every write succeeded after the client closed";
}

TEST_P(StreamedAnswer, BeginOnlyOnce) {
  std::promise<bool> second;
  Running server([&](const HttpRequest& req) {
    EXPECT_TRUE(req.writer->Begin(200, "text/plain", {}));
    second.set_value(req.writer->Begin(500, "text/plain", {}));
    return HttpResponse{};
  }, true, nullptr, Options());
  RawClient c(server.port());
  c.Send(kGet);
  EXPECT_EQ(c.ReadUntil("\r\n\r\n").rfind("HTTP/1.1 200", 0), 0u);
  EXPECT_EQ(Dechunk(c.ReadUntil("0\r\n\r\n")), "");
  EXPECT_FALSE(second.get_future().get());
}

// Handlers the classifier sends to the upstream pool never take the
// blocking pool's threads: with every upstream thread held, a blocking
// request (and an inline one) still answers.
TEST(HttpServerPools, UpstreamPoolSaturatedLeavesTheBlockingPoolFree) {
  testing::Gate upstream;  // the /up handlers pass it: held until opened
  std::atomic<int> blocking_calls{0};
  auto classify = [](const HttpRequest& r) {
    if (r.path == "/up") return HandlerPool::kUpstream;
    if (r.path == "/admin") return HandlerPool::kBlocking;
    return HandlerPool::kIo;
  };
  HttpServerOptions o = Running::Options();
  o.blocking_threads = 1;
  o.upstream_threads = 2;
  Running server(
      [&](const HttpRequest& req) {
        HttpResponse r;
        if (req.path == "/up") {
          EXPECT_TRUE(req.writer->Begin(200, "text/event-stream", {}));
          EXPECT_TRUE(req.writer->Write("data: held\n\n"));
          upstream.Pass();
          return r;
        }
        if (req.path == "/admin") ++blocking_calls;
        r.body = req.path == "/admin" ? "admin-ok" : "io-ok";
        return r;
      },
      true, classify, o);
  std::vector<std::unique_ptr<RawClient>> streams;
  for (int i = 0; i < 2; ++i) {
    streams.push_back(std::make_unique<RawClient>(server.port()));
    streams.back()->Send("GET /up HTTP/1.1\r\nHost: t\r\n\r\n");
    EXPECT_NE(streams.back()->ReadUntil("data: held").find("data: held"), std::string::npos);
  }
  EXPECT_TRUE(upstream.WaitArrived(2));  // both upstream threads are held
  for (int i = 0; i < 3; ++i) {
    RawClient admin(server.port());
    admin.Send("GET /admin HTTP/1.1\r\nHost: t\r\n\r\n");
    EXPECT_NE(admin.ReadUntil("admin-ok").find("admin-ok"), std::string::npos);
  }
  EXPECT_EQ(blocking_calls.load(), 3);
  RawClient io(server.port());
  io.Send("GET /io HTTP/1.1\r\nHost: t\r\n\r\n");
  EXPECT_NE(io.ReadUntil("io-ok").find("io-ok"), std::string::npos);
  upstream.Open();
  for (auto& c : streams) EXPECT_NE(c->ReadUntil("0\r\n\r\n").find("\r\n0\r\n\r\n"), std::string::npos);
}

// A handler pool's thread refused at start is Listen()'s error, naming the
// pool, before the port is bound; the threads already started are joined
// (the destructor returns).
TEST(HttpServerPools, ARefusedPoolThreadIsListensErrorNamingThePool) {
  struct Case {
    int refuse_from;
    std::string pool;
  };
  for (const Case& c : {Case{1, "thread 1 of 2 of the blocking handler pool (GATEWAY_BLOCKING_THREADS)"},
                        Case{2, "thread 2 of 2 of the blocking handler pool (GATEWAY_BLOCKING_THREADS)"},
                        Case{4, "thread 2 of 3 of the /v1 upstream handler pool (GATEWAY_V1_THREADS)"}}) {
    SCOPED_TRACE(c.pool);
    testing::RefusingThreads threads(c.refuse_from);
    HttpServerOptions o = Running::Options();
    o.blocking_threads = 2;
    o.upstream_threads = 3;
    o.start_thread = threads.starter();
    HttpServer server(o, [](const HttpRequest&) { return HttpResponse{}; },
                      [](const HttpRequest&) { return HandlerPool::kBlocking; });
    Status s = server.Listen();
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), ErrorCode::kUnavailable);
    EXPECT_NE(s.error().message.find(c.pool), std::string::npos) << s.error().message;
    EXPECT_NE(s.error().message.find("Resource temporarily unavailable"), std::string::npos);
    EXPECT_EQ(server.port(), 0) << "bound although it cannot serve";
    EXPECT_EQ(threads.asked(), c.refuse_from);  // no thread asked for after the refusal
  }
}

// Without a classifier every handler runs on the I/O threads: Listen()
// starts no pool, so a system out of threads does not stop a server that
// needs none.
TEST(HttpServerPools, NoClassifierStartsNoPool) {
  testing::RefusingThreads threads;
  HttpServerOptions o = Running::Options();
  o.threads = 1;
  o.start_thread = threads.starter();
  HttpServer server(o, [](const HttpRequest&) { return HttpResponse{}; });
  ASSERT_TRUE(server.Listen().ok());
  EXPECT_NE(server.port(), 0);
  EXPECT_EQ(threads.asked(), 0);
}

// Every pool thread started: requests are served on them as before.
TEST(HttpServerPools, PoolThreadsStartedThroughTheStarter) {
  testing::RefusingThreads threads(/*refuse_from=*/1000);
  HttpServerOptions o = Running::Options();
  o.start_thread = threads.starter();
  Running server([](const HttpRequest&) {
    HttpResponse r;
    r.body = "pooled";
    return r;
  }, true, nullptr, o);
  RawClient c(server.port());
  c.Send("GET /x HTTP/1.1\r\nHost: t\r\n\r\n");
  EXPECT_NE(c.ReadUntil("pooled").find("pooled"), std::string::npos);
  EXPECT_EQ(threads.asked(), o.blocking_threads + o.upstream_threads + (o.threads - 1));
}

// A client that reads slowly: the producer's Write() returns once a piece
// is queued, but waits while the stream buffer is full, so what it has
// handed over and the client has not read stays bounded by the buffer, the
// kernel's socket buffers and one piece; every byte arrives, in order.
TEST_P(StreamedAnswer, ASlowReaderKeepsWhatIsHeldBoundedAndOrdered) {
  constexpr size_t kPiece = 16 * 1024;
  constexpr int kPieces = 4096;  // 64 MiB in all
  std::atomic<size_t> produced{0};
  HttpServerOptions o = Options();
  constexpr size_t kBuffer = 64 * 1024;
  o.stream_buffer_bytes = kBuffer;
  Running server(
      [&](const HttpRequest& req) {
        EXPECT_TRUE(req.writer->Begin(200, "application/octet-stream", {}));
        std::string piece(kPiece, 'x');
        for (int i = 0; i < kPieces; ++i) {
          std::snprintf(piece.data(), 9, "%08d", i);  // its sequence number first
          piece[8] = 'x';
          if (!req.writer->Write(piece)) break;
          produced += piece.size();
        }
        return HttpResponse{};
      },
      true, nullptr, o);
  // A small receive buffer (no autotuning on this side); the server's send
  // buffer may still grow to tcp_wmem's maximum.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  int rcv = 32 * 1024;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(server.port());
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string req = "GET /x HTTP/1.1\r\nHost: t\r\n\r\n";
  ASSERT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), ssize_t(req.size()));
  size_t wmem_max = 4 << 20;
  if (FILE* f = std::fopen("/proc/sys/net/ipv4/tcp_wmem", "r")) {
    unsigned long lo = 0, mid = 0, hi = 0;
    if (std::fscanf(f, "%lu %lu %lu", &lo, &mid, &hi) == 3) wmem_max = hi;
    std::fclose(f);
  }
  socklen_t len = sizeof rcv;
  ::getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, &len);
  const size_t bound = kBuffer + kPiece + wmem_max + static_cast<size_t>(rcv) + 64 * 1024;
  ASSERT_LT(bound * 2, kPiece * kPieces) << "the test could not tell a bounded queue from an unbounded one";
  std::string wire;  // what came, framing included
  size_t received = 0;
  size_t worst = 0;
  std::vector<char> buf(4096);
  while (wire.size() < 5 || wire.compare(wire.size() - 5, 5, "0\r\n\r\n") != 0) {
    ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);  // small reads: a slow reader
    ASSERT_GT(n, 0) << "the stream ended early after " << wire.size() << " bytes";
    wire.append(buf.data(), static_cast<size_t>(n));
    received += static_cast<size_t>(n);
    size_t p = produced.load();
    if (p > received) worst = std::max(worst, p - received);
  }
  ::close(fd);
  EXPECT_LT(worst, bound) << "unread bytes handed over by the producer";
  std::string body = Dechunk(wire.substr(wire.find("\r\n\r\n") + 4));
  ASSERT_EQ(body.size(), kPiece * kPieces);
  for (int i = 0; i < kPieces; ++i) {
    char want[9];
    std::snprintf(want, sizeof want, "%08d", i);
    ASSERT_EQ(body.compare(static_cast<size_t>(i) * kPiece, 8, want), 0) << "piece " << i << " out of order";
  }
}

// A producer that fails mid-answer (Abort) closes the connection without the
// last chunk, so the client cannot take what it got for whole.
TEST_P(StreamedAnswer, AnAbortedAnswerEndsWithoutTheLastChunk) {
  Running server([&](const HttpRequest& req) {
    EXPECT_TRUE(req.writer->Begin(200, "text/event-stream", {}));
    EXPECT_TRUE(req.writer->Write("data: a\n\n"));
    req.writer->Abort();
    EXPECT_FALSE(req.writer->Write("data: b\n\n"));
    return HttpResponse{};
  }, true, nullptr, Options());
  RawClient c(server.port());
  c.Send(kGet);
  EXPECT_NE(c.ReadUntil("\r\n\r\n").find("Transfer-Encoding: chunked"), std::string::npos);
  std::string body = c.ReadToEnd();
  EXPECT_TRUE(c.closed());
  EXPECT_NE(body.find("data: a"), std::string::npos) << body;  // queued too: what was queued goes out
  EXPECT_EQ(body.find("data: b"), std::string::npos) << body;
  EXPECT_EQ(body.find("0\r\n\r\n"), std::string::npos) << body;
}

// HTTP/1.0 has no chunks: the body is the pieces as they are, ended by the close.
// So too when held, and ended by Flush(true).
TEST_P(StreamedAnswer, AnHttp10AnswerIsEndedByTheClose) {
  for (const bool hold : {false, true}) {
    SCOPED_TRACE(hold ? "held" : "not held");
    Running server([&](const HttpRequest& req) {
      if (hold) req.writer->Hold();
      EXPECT_TRUE(req.writer->Begin(200, "text/plain", {}));
      EXPECT_TRUE(req.writer->Write("one,"));
      EXPECT_TRUE(req.writer->Flush(false));
      EXPECT_TRUE(req.writer->Write("two"));
      if (hold) {
        EXPECT_TRUE(req.writer->Flush(true));
      }
      return HttpResponse{};
    }, true, nullptr, Options());
    RawClient c(server.port());
    c.Send("GET /x HTTP/1.0\r\nHost: t\r\n\r\n");
    std::string head = c.ReadUntil("\r\n\r\n");
    EXPECT_EQ(head.rfind("HTTP/1.0 200", 0), 0u) << head;
    EXPECT_EQ(head.find("chunked"), std::string::npos) << head;
    EXPECT_EQ(c.ReadToEnd(), "one,two");
    EXPECT_TRUE(c.closed());
  }
}

// A client that reads nothing for the idle timeout fails the producer's
// Write(), which so stops holding its upstream and its thread.
TEST_P(StreamedAnswer, AClientNotReadingForTheIdleTimeoutFailsTheProducer) {
  HttpServerOptions o = Options();
  o.idle_timeout = std::chrono::seconds(1);
  std::promise<bool> refused;
  Running server([&](const HttpRequest& req) {
    EXPECT_TRUE(req.writer->Begin(200, "application/octet-stream", {}));
    std::string piece(64 * 1024, 'x');
    bool failed = false;
    for (int i = 0; i < 100000 && !failed; ++i) failed = !req.writer->Write(piece);  // 6.4 GB: never all taken
    refused.set_value(failed);
    return HttpResponse{};
  }, true, nullptr, o);
  RawClient c(server.port());
  c.Send(kGet);
  auto f = refused.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(20)), std::future_status::ready) << "the producer still waits";
  EXPECT_TRUE(f.get());
}

// A handler that throws after Begin(): its 500 cannot be sent, so the answer
// is cut short (no last chunk, the connection closed), never taken for whole.
TEST_P(StreamedAnswer, AHandlerThrowingMidAnswerEndsItWithoutTheLastChunk) {
  Running server([&](const HttpRequest& req) -> HttpResponse {
    EXPECT_TRUE(req.writer->Begin(200, "text/event-stream", {}));
    EXPECT_TRUE(req.writer->Write("data: partial\n\n"));
    throw std::runtime_error("the upstream's parser failed");
  }, true, nullptr, Options());
  RawClient c(server.port());
  c.Send(kGet);
  EXPECT_EQ(c.ReadUntil("\r\n\r\n").rfind("HTTP/1.1 200", 0), 0u);
  std::string body = c.ReadToEnd();
  EXPECT_TRUE(c.closed());
  EXPECT_EQ(body.find("0\r\n\r\n"), std::string::npos) << body;
}

// Past the shutdown grace the I/O threads stop and a streamed answer's queue
// will never drain (or, direct, its producer must stop): a producer waiting
// for room is woken (no polling) and its Write() fails, so the pool's join,
// and Run(), return.
TEST_P(StreamedAnswer, StopPastTheGraceWakesAProducerWaitingForRoom) {
  HttpServerOptions o = Options();
  o.stream_buffer_bytes = 1024;
  o.shutdown_grace = std::chrono::seconds(0);
  std::atomic<int> written{0};
  std::atomic<bool> refused{false};
  HttpServer server(o, [&](const HttpRequest& req) {
    EXPECT_TRUE(req.writer->Begin(200, "application/octet-stream", {}));
    std::string piece(64 * 1024, 'x');
    // The client reads nothing: this fills the socket buffers, then waits.
    for (int i = 0; i < 100000; ++i) {
      if (!req.writer->Write(piece)) {
        refused = true;
        break;
      }
      ++written;
    }
    return HttpResponse{};
  }, [](const HttpRequest&) { return HandlerPool::kUpstream; });
  ASSERT_TRUE(server.Listen().ok());
  auto run = std::async(std::launch::async, [&] { server.Run(); });
  RawClient c(server.port());
  ASSERT_TRUE(c.connected());
  c.Send(kGet);
  // The producer waits inside Write() once the buffers are full: no piece
  // written for 200 ms (nothing else can say so from outside). A shutdown
  // sooner could find it between two writes and prove nothing.
  int seen = -1;
  for (int i = 0; i < 500 && (seen <= 0 || seen != written.load()); ++i) {
    seen = written.load();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  ASSERT_GT(seen, 0);
  ASSERT_EQ(seen, written.load()) << "the producer never stalled";
  server.Shutdown();
  if (run.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
    ADD_FAILURE() << "Run() did not return: the producer was not woken";
    std::_Exit(1);  // the server's threads cannot be joined
  }
  EXPECT_TRUE(refused);
}

// A plain answer is written at once while it fits the socket's buffers; the
// rest of a larger one (or to a client not reading yet) follows
// asynchronously, whole and in order, and the connection is kept for the next
// request, inline handler or not.
TEST(HttpServerStream, ALargePlainAnswerToASlowReaderArrivesWholeAndKeepsTheConnection) {
  constexpr size_t kSize = 16 << 20;
  for (bool blocking : {false, true}) {
    Running server(
        [&](const HttpRequest& req) {
          HttpResponse r;
          r.content_type = "application/octet-stream";
          r.body = req.path == "/big" ? std::string(kSize, 'y') : "small";
          if (req.path == "/big") std::snprintf(r.body.data() + kSize - 8, 9, "%s", "THE-END!");
          return r;
        },
        blocking);
    RawClient c(server.port());
    ASSERT_TRUE(c.connected());
    c.Send("GET /big HTTP/1.1\r\nHost: t\r\n\r\n");
    std::string head = c.ReadUntil("\r\n\r\n");
    EXPECT_NE(head.find("Content-Length: " + std::to_string(kSize)), std::string::npos) << head;
    std::string body = c.ReadUntil("THE-END!");
    EXPECT_EQ(body.size(), kSize) << blocking;
    EXPECT_EQ(body.find_first_not_of('y'), kSize - 8);
    c.Send("GET /small HTTP/1.1\r\nHost: t\r\n\r\n");
    EXPECT_NE(c.ReadUntil("small").find("200 OK"), std::string::npos) << blocking;
  }
}

// A handler pool's thread that wrote a plain answer waits (pool_linger) for
// the connection's next request and serves it too: a busy keep-alive client
// is served by one thread, in order, with no hand-off to the I/O threads.
// A long linger makes that certain here (the client answers at once).
// The socket stays in the I/O threads' epoll (detach_lingering off): both
// ways are tested.
HttpServerOptions Lingering() {
  HttpServerOptions o = Running::Options();
  o.pool_linger = std::chrono::seconds(10);
  o.detach_lingering = false;
  return o;
}

// Lingering(), the socket out of the I/O threads' epoll meanwhile (the default).
HttpServerOptions LingeringDetached() {
  HttpServerOptions o = Lingering();
  o.detach_lingering = true;
  return o;
}

// Each answer's body: the path, and the handler's thread.
std::string PathAndThread(const HttpRequest& req) {
  std::ostringstream out;
  out << req.path << "@" << std::this_thread::get_id();
  return out.str();
}

// The linger tests' handler: answers "<path>|", or "<path>:<body>|".
HttpResponse EchoPath(const HttpRequest& req) {
  HttpResponse r;
  r.body = req.path + (req.body.empty() ? "" : ":" + req.body) + "|";
  return r;
}

// Sends GET `path` on `c` and expects EchoPath's answer.
void ExpectServed(RawClient& c, const std::string& path) {
  c.Send("GET " + path + " HTTP/1.1\r\nHost: t\r\n\r\n");
  EXPECT_NE(c.ReadUntil("|").find(path + "|"), std::string::npos) << path;
}

TEST(HttpServerLinger, ABusyKeepAliveClientIsServedInOrderByOneThread) {
  Running server([](const HttpRequest& req) {
    HttpResponse r;
    r.body = PathAndThread(req) + "|";
    return r;
  }, true, nullptr, Lingering());
  RawClient c(server.port());
  ASSERT_TRUE(c.connected());
  std::set<std::string> threads;
  for (int i = 0; i < 20; ++i) {
    c.Send("GET /r" + std::to_string(i) + " HTTP/1.1\r\nHost: t\r\n\r\n");
    std::string answer = c.ReadUntil("|");
    size_t at = answer.find("/r" + std::to_string(i) + "@");
    ASSERT_NE(at, std::string::npos) << answer;
    threads.insert(answer.substr(at + answer.substr(at).find('@')));
  }
  EXPECT_EQ(threads.size(), 1u);
}

// A streamed answer written by its producer's thread (stream_direct) is
// followed as a plain one: the thread lingers and serves the next request.
TEST(HttpServerLinger, AStreamedAnswersNextRequestIsServedByTheSameThread) {
  Running server([](const HttpRequest& req) {
    if (req.path != "/stream") {
      HttpResponse r;
      r.body = PathAndThread(req) + "|";
      return r;
    }
    EXPECT_TRUE(req.writer->Begin(200, "text/event-stream", {}));
    EXPECT_TRUE(req.writer->Write(PathAndThread(req) + "|"));
    return HttpResponse{};
  }, true, nullptr, Lingering());
  RawClient c(server.port());
  ASSERT_TRUE(c.connected());
  std::set<std::string> threads;
  for (int i = 0; i < 10; ++i) {
    c.Send("GET /stream HTTP/1.1\r\nHost: t\r\n\r\n");
    c.ReadUntil("\r\n\r\n");
    std::string streamed = Dechunk(c.ReadUntil("0\r\n\r\n"));
    c.Send("GET /plain HTTP/1.1\r\nHost: t\r\n\r\n");
    std::string plain = c.ReadUntil("|");
    ASSERT_NE(streamed.find("/stream@"), std::string::npos) << streamed;
    ASSERT_NE(plain.find("/plain@"), std::string::npos) << plain;
    threads.insert(streamed.substr(streamed.find('@')));
    threads.insert(plain.substr(plain.find('@')));
  }
  EXPECT_EQ(threads.size(), 1u) << "other threads served some";
}

// Two requests sent together (pipelined) while the thread lingers: both
// answered, in order.
TEST(HttpServerLinger, PipelinedRequestsAreAnsweredInOrder) {
  Running server(EchoPath, true, nullptr, Lingering());
  RawClient c(server.port());
  ExpectServed(c, "/first");
  c.Send("GET /a HTTP/1.1\r\nHost: t\r\n\r\n"
         "POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nxyz"
         "GET /c HTTP/1.1\r\nHost: t\r\n\r\n");
  EXPECT_NE(c.ReadUntil("|").find("/a|"), std::string::npos);
  EXPECT_NE(c.ReadUntil("|").find("/b:xyz|"), std::string::npos);
  EXPECT_NE(c.ReadUntil("|").find("/c|"), std::string::npos);
}

// A next request that comes in pieces during the linger is read on by the
// I/O threads (under the header and idle timeouts), then served.
TEST(HttpServerLinger, ARequestArrivingInPiecesIsReadOnAndServed) {
  Running server(EchoPath, true, nullptr, Lingering());
  RawClient c(server.port());
  ExpectServed(c, "/first");
  c.Send("POST /split HTTP/1.1\r\nHo");  // the head cut short
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  c.Send("st: t\r\nContent-Length: 6\r\n\r\nabc");  // the body cut short
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  c.Send("def");
  EXPECT_NE(c.ReadUntil("|").find("/split:abcdef|"), std::string::npos);
  ExpectServed(c, "/after");
}

// A bad next request read during the linger gets the same answers as one
// read by the I/O threads: 413 for a body over the limit, 400 when
// malformed, each closing the connection.
TEST(HttpServerLinger, ABadNextRequestIsRefusedAsOnTheIoThreads) {
  const std::pair<std::string, std::string> cases[] = {
      {"POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n", "HTTP/1.1 413"},
      {"GET /x HTTP/1.1\r\nHost: t\r\nContent-Length: nope\r\n\r\n", "HTTP/1.1 400"},
      {"\x01\x02 garbage\r\n\r\n", "HTTP/1.1 400"}};
  for (const auto& [request, status] : cases) {
    int calls = 0;
    Running server([&](const HttpRequest& req) {
      ++calls;
      return EchoPath(req);
    }, true, nullptr, Lingering());
    RawClient c(server.port());
    ExpectServed(c, "/first");
    c.Send(request);
    std::string answer = c.ReadUntil("\r\n\r\n");
    EXPECT_EQ(answer.rfind(status, 0), 0u) << answer;
    EXPECT_NE(answer.find("Connection: close"), std::string::npos) << answer;
    EXPECT_EQ(calls, 1);
  }
}

// The next request belongs to another pool (or the I/O threads): it runs
// there, not on the lingering thread.
TEST(HttpServerLinger, ANextRequestForAnotherPoolRunsThere) {
  std::mutex mu;
  std::map<std::string, std::thread::id> ran_on;
  auto classify = [](const HttpRequest& r) {
    if (r.path == "/up") return HandlerPool::kUpstream;
    if (r.path == "/admin") return HandlerPool::kBlocking;
    return HandlerPool::kIo;
  };
  HttpServerOptions o = Lingering();
  o.upstream_threads = 1;
  o.blocking_threads = 1;
  Running server([&](const HttpRequest& req) {
    {
      std::lock_guard lock(mu);
      ran_on[req.path] = std::this_thread::get_id();
    }
    return EchoPath(req);
  }, true, classify, o);
  RawClient c(server.port());
  for (std::string path : {"/up", "/admin", "/up", "/io", "/up"}) ExpectServed(c, path);
  std::lock_guard lock(mu);
  EXPECT_NE(ran_on["/up"], ran_on["/admin"]);
  EXPECT_NE(ran_on["/up"], ran_on["/io"]);
  EXPECT_NE(ran_on["/admin"], ran_on["/io"]);
}

// The inode of the socket behind descriptor `fd`.
ino_t InodeOf(int fd) {
  struct stat st {};
  return ::fstat(fd, &st) == 0 ? st.st_ino : 0;
}

// Whether an epoll instance of this process watches the socket `inode` by
// descriptor `fd` (/proc/self/fdinfo lists each watched "tfd: <fd> ...
// ino:<inode, hex>").
bool WatchedByAnEpoll(int fd, ino_t inode) {
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    if (std::filesystem::read_symlink(entry.path(), ec).string() != "anon_inode:[eventpoll]") continue;
    std::ifstream info("/proc/self/fdinfo/" + entry.path().filename().string());
    for (std::string line; std::getline(info, line);) {
      int watched = -1;
      const size_t ino = line.find(" ino:");
      if (std::sscanf(line.c_str(), "tfd: %d", &watched) == 1 && watched == fd && ino != std::string::npos &&
          std::strtoull(line.c_str() + ino + 5, nullptr, 16) == inode) {
        return true;
      }
    }
  }
  return false;
}

// Whether a descriptor of this process is still open on the socket `inode`.
bool SocketOpen(ino_t inode) {
  const std::string target = "socket:[" + std::to_string(inode) + "]";
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    if (std::filesystem::read_symlink(entry.path(), ec).string() == target) return true;
  }
  return false;
}

// Polls `done` until it holds or 10 s pass.
template <class Done>
bool Eventually(Done done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return done();
}

// With detach_lingering, a request read by a lingering pool thread runs
// with the connection's socket out of the I/O threads' epoll (so its arrival woke no I/O thread);
// handed back to the strand (here for a request of the I/O threads), the
// socket is watched again, and the connection goes on as before.
TEST(HttpServerLinger, TheIoThreadsDoNotWatchAConnectionAPoolThreadLingersOn) {
  std::mutex mu;
  std::map<std::string, bool> watched;  // per path, while its handler ran
  int fd = -1;
  ino_t inode = 0;
  Running server([&](const HttpRequest& req) {
    std::lock_guard lock(mu);
    if (req.writer) {
      fd = req.writer->HangUpFd();
      inode = InodeOf(fd);
    }
    watched[req.path] = WatchedByAnEpoll(fd, inode);
    return EchoPath(req);
  }, true, [](const HttpRequest& r) { return r.path == "/io" ? HandlerPool::kIo : HandlerPool::kBlocking; },
                 LingeringDetached());
  RawClient c(server.port());
  ASSERT_TRUE(c.connected());
  for (std::string path : {"/first", "/lingered", "/io", "/after-io", "/lingered-again"}) ExpectServed(c, path);
  std::lock_guard lock(mu);
  EXPECT_TRUE(watched["/first"]);  // read by the strand: the socket leaves only for the linger
  EXPECT_FALSE(watched["/lingered"]);
  EXPECT_TRUE(watched["/io"]);
  EXPECT_TRUE(watched["/after-io"]);
  EXPECT_FALSE(watched["/lingered-again"]);
}

// A streamed answer queued to the strand (stream_direct off) for a request
// the lingering thread read: the socket is back with the I/O threads before
// the strand writes, and the connection goes on.
TEST(HttpServerLinger, AQueuedStreamForALingeredRequestIsWritten) {
  HttpServerOptions o = LingeringDetached();
  o.stream_direct = false;
  Running server([&](const HttpRequest& req) {
    if (req.path != "/stream") return EchoPath(req);
    EXPECT_TRUE(req.writer->Begin(200, "text/plain", {}));
    EXPECT_TRUE(req.writer->Write("streamed|"));
    return HttpResponse{};
  }, true, nullptr, o);
  RawClient c(server.port());
  ASSERT_TRUE(c.connected());
  ExpectServed(c, "/one");  // the thread now lingers, the socket detached
  c.Send("GET /stream HTTP/1.1\r\nHost: t\r\n\r\n");
  EXPECT_EQ(c.ReadUntil("\r\n\r\n").rfind("HTTP/1.1 200", 0), 0u);
  EXPECT_EQ(Dechunk(c.ReadUntil("0\r\n\r\n")), "streamed|");
  ExpectServed(c, "/after");
}

// A server with one lingering pool thread whose handler answers "<path>|",
// records the order of its calls, and holds a request for /hold until
// held.Open().
class OneLingeringThread {
 public:
  explicit OneLingeringThread(std::chrono::microseconds linger = std::chrono::seconds(10), bool detached = false)
      : server_([this](const HttpRequest& req) { return Handle(req); }, true,
                [this](const HttpRequest&) {
                  classified_.Pass();  // on the I/O thread, right before the request is queued for the pool
                  return HandlerPool::kBlocking;
                },
                Options(linger, detached)) {}
  // A failed assertion must not leave /hold's thread held: the server's
  // destructor joins it.
  ~OneLingeringThread() { held.Open(); }
  uint16_t port() const { return server_.port(); }
  std::vector<std::string> Order() DYAD_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    return order_;
  }
  // Sends `request` on `client` once the /hold request holds the thread, and
  // lets /hold go on once `request` is queued for the pool.
  void QueueBehindTheHeld(RawClient& client, std::string_view request) {
    ASSERT_TRUE(held.WaitArrived(1));
    const int before = classified_.arrived();
    client.Send(request);
    ASSERT_TRUE(classified_.WaitArrived(before + 1));
    // Classified: the post to the pool follows at once on the I/O thread; a
    // margin for a preemption between the two.
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    held.Open();
  }

  testing::Gate held;

 private:
  static HttpServerOptions Options(std::chrono::microseconds linger, bool detached) {
    HttpServerOptions o = detached ? LingeringDetached() : Lingering();
    o.pool_linger = linger;
    o.blocking_threads = 1;
    return o;
  }
  HttpResponse Handle(const HttpRequest& req) DYAD_LOCKS_EXCLUDED(mu_) {
    if (req.path == "/hold") held.Pass();
    {
      MutexLock lock(&mu_);
      order_.push_back(req.path);
    }
    return EchoPath(req);
  }

  testing::Gate classified_{true};  // counts the requests classified, holds none
  Mutex mu_;
  std::vector<std::string> order_ DYAD_GUARDED_BY(mu_);
  Running server_;  // last: its threads call Handle
};

// A client that closes while the thread lingers frees it at once: the
// pool's only thread serves the next connection.
TEST(HttpServerLinger, AClientClosingDuringTheLingerFreesTheThread) {
  OneLingeringThread server;
  {
    RawClient first(server.port());
    ExpectServed(first, "/one");
  }  // closed: the linger ends
  RawClient second(server.port());
  ExpectServed(second, "/two");
}

// Work waiting for the pool ends a linger: with one thread, a second
// connection's request is not held for the first connection's linger.
TEST(HttpServerLinger, WorkWaitingForThePoolIsNotHeldBehindALinger) {
  OneLingeringThread server(std::chrono::seconds(30));  // past the client's 10 s: a held request fails the test
  RawClient first(server.port());
  first.Send("GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
  RawClient second(server.port());
  ASSERT_NO_FATAL_FAILURE(server.QueueBehindTheHeld(second, "GET /second HTTP/1.1\r\nHost: t\r\n\r\n"));
  EXPECT_NE(first.ReadUntil("|").find("/hold|"), std::string::npos);
  // Without the check the thread would now wait 30 s for /hold's connection.
  EXPECT_NE(second.ReadUntil("|").find("/second|"), std::string::npos);
  second.Close();  // the thread now lingers on it: closed, it serves the first connection again
  ExpectServed(first, "/again");
}

// A request that arrives while the thread has the socket out of the I/O
// threads' epoll, and that the thread hands back unread (other work waits
// for the pool), is read by the strand and served.
TEST(HttpServerLinger, ARequestArrivingWhileDetachedIsServedAfterTheHandBack) {
  OneLingeringThread server(std::chrono::seconds(30), /*detached=*/true);  // past the client's 10 s: a held request fails the test
  RawClient first(server.port());
  ExpectServed(first, "/one");  // the thread lingers on `first`, its socket detached
  first.Send("GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");  // read by the lingering thread, then held
  ASSERT_TRUE(server.held.WaitArrived(1));
  first.Send("GET /pipelined HTTP/1.1\r\nHost: t\r\n\r\n");  // arrives while detached
  RawClient second(server.port());
  ASSERT_NO_FATAL_FAILURE(server.QueueBehindTheHeld(second, "GET /second HTTP/1.1\r\nHost: t\r\n\r\n"));
  EXPECT_NE(first.ReadUntil("|").find("/hold|"), std::string::npos);
  EXPECT_NE(second.ReadUntil("|").find("/second|"), std::string::npos);
  second.Close();
  EXPECT_NE(first.ReadUntil("|").find("/pipelined|"), std::string::npos);
}

// A client that closes while its socket is out of the I/O threads' epoll
// (during the linger, or during a request the lingering thread read) leaves
// no socket open behind it.
TEST(HttpServerLinger, AClientClosingWhileDetachedLeavesNoSocketOpen) {
  for (const bool in_handler : {false, true}) {
    SCOPED_TRACE(in_handler ? "closed during a request read in the linger" : "closed during the linger");
    testing::Gate held;
    std::atomic<ino_t> inode{0};
    Running server([&](const HttpRequest& req) {
      inode = InodeOf(req.writer->HangUpFd());
      if (req.path == "/hold") held.Pass();
      return EchoPath(req);
    }, true, nullptr, LingeringDetached());
    OpenAtExit open_held{held};
    {
      RawClient c(server.port());
      ExpectServed(c, "/one");  // the thread lingers, the socket detached
      if (in_handler) {
        c.Send("GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
        ASSERT_TRUE(held.WaitArrived(1));
      }
      ASSERT_TRUE(SocketOpen(inode));
    }  // closed
    held.Open();
    EXPECT_TRUE(Eventually([&] { return !SocketOpen(inode); }));
  }
}

// Work posted while the pool's only thread lingers ends the linger at once:
// the second connection's request is not held for the first one's linger.
TEST(HttpServerLinger, WorkPostedDuringALingerEndsIt) {
  OneLingeringThread server(std::chrono::seconds(60));  // past the client's 10 s: a held request fails the test
  RawClient first(server.port());
  ExpectServed(first, "/one");  // the thread now lingers on `first`
  RawClient second(server.port());
  ExpectServed(second, "/two");
  second.Close();
  ExpectServed(first, "/three");  // read on by the strand, or by the thread lingering on it
}

// Two requests posted together while both of the pool's threads linger end
// both lingers: one wake-up is not taken for the two posts. The first request
// holds its thread, so only the other thread can serve the second.
TEST(HttpServerLinger, TwoPostsWhileTwoThreadsLingerEndBothLingers) {
  HttpServerOptions o = Lingering();
  o.pool_linger = std::chrono::seconds(60);  // past the client's 10 s: a held request fails the test
  o.blocking_threads = 2;
  for (int round = 0; round < 10; ++round) {
    testing::Gate held;
    Running server([&](const HttpRequest& req) {
      if (req.path == "/held") held.Pass();
      return EchoPath(req);
    }, true, nullptr, o);
    struct OpenAtEnd {  // before the server's destructor joins the held thread
      testing::Gate& gate;
      ~OpenAtEnd() { gate.Open(); }
    } open_at_end{held};
    RawClient a(server.port());
    ExpectServed(a, "/a");  // one thread lingers on `a`
    RawClient b(server.port());
    ExpectServed(b, "/b");  // the other, idle, served `b` and lingers on it
    RawClient c(server.port());
    RawClient d(server.port());
    c.Send("GET /held HTTP/1.1\r\nHost: t\r\n\r\n");
    d.Send("GET /d HTTP/1.1\r\nHost: t\r\n\r\n");
    EXPECT_NE(d.ReadUntil("|").find("/d|"), std::string::npos) << round;
    held.Open();
    EXPECT_NE(c.ReadUntil("|").find("/held|"), std::string::npos) << round;
  }
}

// A shutdown ends a linger at once: the connection closes and Run() returns
// long before the linger (or the grace period) would end.
TEST(HttpServerLinger, AShutdownEndsALinger) {
  HttpServerOptions o = Lingering();
  o.pool_linger = std::chrono::seconds(60);
  o.shutdown_grace = std::chrono::seconds(60);
  HttpServer server(o, EchoPath, [](const HttpRequest&) { return HandlerPool::kBlocking; });
  ASSERT_TRUE(server.Listen().ok());
  auto run = std::async(std::launch::async, [&] { server.Run(); });
  RawClient c(server.port());
  ExpectServed(c, "/one");  // the thread now lingers on `c`
  server.Shutdown();
  EXPECT_EQ(c.ReadToEnd(), "");
  EXPECT_TRUE(c.closed()) << "the connection was not closed";
  if (run.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
    ADD_FAILURE() << "Run() did not return: the lingering thread was not woken";
    std::_Exit(1);  // the server's threads cannot be joined
  }
}

// on_shutdown runs once when the shutdown begins, not when Run() ends: a
// handler waiting for what it ends (a write queued on a provider's lock)
// answers within the grace period, and Run() returns long before it ends.
TEST(HttpServerShutdown, OnShutdownRunsOnceWhenTheShutdownBegins) {
  HttpServerOptions o;
  o.port = 0;
  o.shutdown_grace = std::chrono::seconds(60);
  std::atomic<int> calls{0};
  std::atomic<bool> waiting{false};
  o.on_shutdown = [&] { ++calls; };
  HttpServer server(
      o,
      [&](const HttpRequest&) {
        waiting = true;
        const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        while (calls.load() == 0 && std::chrono::steady_clock::now() < give_up) std::this_thread::yield();
        HttpResponse r;
        r.body = calls.load() > 0 ? "interrupted|" : "timed out|";
        return r;
      },
      [](const HttpRequest&) { return HandlerPool::kBlocking; });
  ASSERT_TRUE(server.Listen().ok());
  auto run = std::async(std::launch::async, [&] { server.Run(); });
  RawClient c(server.port());
  c.Send("GET /write HTTP/1.1\r\nHost: t\r\n\r\n");
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!waiting && std::chrono::steady_clock::now() < give_up) std::this_thread::yield();
  ASSERT_TRUE(waiting) << "the handler never ran";
  EXPECT_EQ(calls.load(), 0);
  server.Shutdown();
  server.Shutdown();  // a second signal begins nothing new
  EXPECT_NE(c.ReadUntil("|").find("interrupted|"), std::string::npos);
  if (run.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
    ADD_FAILURE() << "Run() did not return within 20 s (the grace is 60 s)";
    std::_Exit(1);
  }
  EXPECT_EQ(calls.load(), 1);
}

// Review: requests a client pipelined were served back to back by the
// lingering thread while another connection's request waited for the pool.
// Now the waiting request goes first; the pipelined ones queue behind it.
TEST(HttpServerLinger, PipelinedRequestsDoNotHoldWorkWaitingForThePool) {
  OneLingeringThread server;
  RawClient a(server.port());
  a.Send("GET /hold HTTP/1.1\r\nHost: t\r\n\r\nGET /a2 HTTP/1.1\r\nHost: t\r\n\r\nGET /a3 HTTP/1.1\r\nHost: t\r\n\r\n");
  RawClient b(server.port());
  ASSERT_NO_FATAL_FAILURE(server.QueueBehindTheHeld(b, "GET /b HTTP/1.1\r\nHost: t\r\n\r\n"));
  EXPECT_NE(b.ReadUntil("|").find("/b|"), std::string::npos);
  b.Close();  // were the thread lingering on it, closed it lets the thread take /a2
  for (std::string path : {"/hold|", "/a2|", "/a3|"}) EXPECT_NE(a.ReadUntil("|").find(path), std::string::npos) << path;
  EXPECT_EQ(server.Order(), (std::vector<std::string>{"/hold", "/b", "/a2", "/a3"}));
}

// A head the handler refuses whatever its body (an unknown caller) is
// answered without its body ever read or held: the handler sees it marked
// body_unread, the connection closes, and what the client still sends is
// read and dropped, so the client reads the answer and a clean close, not a
// reset. The pool's lingering thread (the next request) judges it the same.
HttpServerOptions RefusingHeads(HttpServerOptions o) {
  o.max_body_bytes = 4 << 20;
  o.refuses_head = [](const HttpRequest& head) { return head.path == "/refused"; };
  return o;
}

// What the handler saw of the last request to each path.
struct SeenRequest {
  struct Seen {
    bool body_unread = false;
    size_t body_size = 0;
  };
  std::mutex mu;
  int calls = 0;
  std::map<std::string, Seen> by_path;
  Seen Of(const std::string& path) {
    std::lock_guard<std::mutex> lock(mu);
    return by_path[path];
  }
  int Calls() {
    std::lock_guard<std::mutex> lock(mu);
    return calls;
  }
  RequestHandler Handler() {
    return [this](const HttpRequest& req) {
      {
        std::lock_guard<std::mutex> lock(mu);
        ++calls;
        by_path[req.path] = {req.body_unread, req.body.size()};
      }
      HttpResponse r = EchoPath(req);
      if (req.path == "/refused") r.status = 401;
      return r;
    };
  }
};

TEST(HttpServerRefusedHead, IsAnsweredWithoutItsBodyThenWhatStillComesIsDiscarded) {
  for (bool lingering : {false, true}) {
    for (bool body_at_once : {false, true}) {
      SCOPED_TRACE(lingering ? "read by the lingering pool thread" : "read by the I/O thread");
      SCOPED_TRACE(body_at_once ? "the body sent with the head" : "the body sent after the answer");
      SeenRequest seen;
      Running server(seen.Handler(), true, nullptr, RefusingHeads(lingering ? Lingering() : Running::Options()));
      RawClient c(server.port());
      if (lingering) ExpectServed(c, "/first");
      const size_t kBody = 3 << 20;  // more than the socket buffers between the two hold
      const std::string head = "POST /refused HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(kBody) + "\r\n\r\n";
      // Sent at once, the body is read only as far as one buffer before the
      // refusal, the rest discarded (else the send would block, or reset).
      c.Send(body_at_once ? head + std::string(kBody, 'x') : head + "{\"a\":");
      std::string answer = c.ReadUntil("|");
      EXPECT_EQ(answer.rfind("HTTP/1.1 401", 0), 0u) << answer;
      EXPECT_NE(answer.find("Connection: close"), std::string::npos) << answer;
      EXPECT_EQ(seen.Calls(), lingering ? 2 : 1);
      EXPECT_TRUE(seen.Of("/refused").body_unread);
      EXPECT_EQ(seen.Of("/refused").body_size, 0u);
      if (!body_at_once) c.Send(std::string(kBody - 5, 'x'));  // the server reads it (a closed socket would reset)
      c.ShutdownWrite();
      EXPECT_EQ(c.ReadToEnd(), "");
      EXPECT_TRUE(c.closed());
      EXPECT_FALSE(c.reset());
    }
  }
}

TEST(HttpServerRefusedHead, GetsNo100ContinueAndAHeadNotRefusedIsReadWhole) {
  SeenRequest seen;
  Running server(seen.Handler(), true, nullptr, RefusingHeads(Running::Options()));
  {
    RawClient c(server.port());
    c.Send("POST /refused HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    std::string answer = c.ReadUntil("|");
    EXPECT_EQ(answer.rfind("HTTP/1.1 401", 0), 0u) << answer;
    EXPECT_EQ(answer.find("100 Continue"), std::string::npos) << answer;
  }
  RawClient c(server.port());
  c.Send("POST /taken HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nab");
  c.Send("cde");
  EXPECT_NE(c.ReadUntil("|").find("/taken:abcde|"), std::string::npos);
  EXPECT_FALSE(seen.Of("/taken").body_unread);
}

// A refused head whose body came with it, on a new connection (judged
// after the first read): served as any whole request, its connection kept
// and the next request answered; the handler refuses it with its body.
TEST(HttpServerRefusedHead, IsNotAskedWhenTheBodyCameWithTheHead) {
  SeenRequest seen;
  Running server(seen.Handler(), true, nullptr, RefusingHeads(Running::Options()));
  RawClient c(server.port());
  c.Send("POST /refused HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}GET /next HTTP/1.1\r\nHost: t\r\n\r\n");
  std::string first = c.ReadUntil("|");
  EXPECT_EQ(first.rfind("HTTP/1.1 401", 0), 0u) << first;
  EXPECT_EQ(first.find("Connection: close"), std::string::npos) << first;
  EXPECT_NE(c.ReadUntil("|").find("/next|"), std::string::npos);
  EXPECT_EQ(seen.Calls(), 2);
  EXPECT_FALSE(seen.Of("/refused").body_unread);
  EXPECT_EQ(seen.Of("/refused").body_size, 2u);
}

// The shutdown ends a discard at once: it does not wait out its deadline
// nor the grace (here both longer than the client's read timeout, 10 s).
TEST(HttpServerRefusedHead, TheShutdownEndsADiscard) {
  HttpServerOptions o = RefusingHeads(Running::Options());
  o.header_timeout = std::chrono::seconds(60);
  o.shutdown_grace = std::chrono::seconds(60);
  SeenRequest seen;
  HttpServer server(o, seen.Handler(), [](const HttpRequest&) { return HandlerPool::kBlocking; });
  ASSERT_TRUE(server.Listen().ok());
  std::thread run([&] { server.Run(); });
  RawClient c(server.port());
  c.Send("POST /refused HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n");
  EXPECT_EQ(c.ReadUntil("|").rfind("HTTP/1.1 401", 0), 0u);
  c.ReadToEnd();  // the answer's end: the discard has begun
  ASSERT_TRUE(c.closed());
  c.Send("still sending");
  server.Shutdown();
  // The server's socket closed (not only its side shut: the answer's end
  // goes first): a send is then reset. Tried for up to 10 s.
  bool reset = false;
  for (int i = 0; i < 200 && !reset; ++i) {
    reset = !c.TrySend("more");
    if (!reset) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(reset);
  run.join();
}

// An answer given before the request was read whole (a body over the limit)
// discards what the client still sends: the client's send goes through and
// it reads a clean close.
TEST(HttpServerRefusedHead, ABodyOverTheLimitIsDiscardedAfterThe413) {
  HttpServerOptions o = Running::Options();
  o.max_body_bytes = 1 << 20;
  Running server(EchoPath, true, nullptr, o);
  RawClient c(server.port());
  c.Send("POST /big HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(2 << 20) + "\r\n\r\n");
  std::string answer = c.ReadUntil("\r\n\r\n");
  EXPECT_EQ(answer.rfind("HTTP/1.1 413", 0), 0u) << answer;
  c.Send(std::string(2 << 20, 'x'));  // more than the socket buffers hold
  c.ShutdownWrite();
  c.ReadToEnd();
  EXPECT_TRUE(c.closed());
  EXPECT_FALSE(c.reset());
}

}  // namespace
}  // namespace dyad
