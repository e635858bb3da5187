// Tests of EventedUpstream: each call runs on an asio::io_context driven by
// the test's own thread (a handler at a time until Done, ten seconds at most
// as a safety net), against loopback upstreams (LoopbackHttpServer, a script
// per connection on a thread of its own). What is checked: the answer handed
// to the sink whole and the request as upstream_wire.h writes it; connections
// kept and reused per event loop, and dropped when they cannot carry another
// request; the resend of a request whose kept connection closed unanswered;
// the errors and the failure kinds the sink is told; the timeouts; Cancel;
// backpressure (the upstream not read while the client has not taken what
// the sink wrote); the refused metadata address; and which calls Supports.
// Timeouts are tens of milliseconds only so that a call ends: nothing here
// measures speed.
#include "server/evented_upstream.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/result.h"
#include "testing/loopback_checks.h"
#include "testing/loopback_http_server.h"
#include "testing/recording_sink.h"

namespace dyad {
namespace {

namespace asio = boost::asio;
using std::chrono::milliseconds;
using Steady = std::chrono::steady_clock;

constexpr auto kSafetyNet = std::chrono::seconds(10);

// Runs `io` on this thread, a handler at a time, until `until()` holds: true
// then; false when it did not within the safety net, or the loop ran out of
// work with it still false (nothing left could make it hold).
bool RunUntil(asio::io_context& io, const std::function<bool()>& until) {
  const Steady::time_point give_up = Steady::now() + kSafetyNet;
  while (!until()) {
    const Steady::time_point now = Steady::now();
    if (now >= give_up) return false;
    io.restart();
    if (io.run_one_for(give_up - now) == 0 && io.stopped()) return until();
  }
  return true;
}

// A Pause that lets the call read on as soon as the loop turns (as a
// client's write completing would).
EventedUpstream::Pause ResumeAtOnce(asio::io_context& io) {
  return [&io](std::function<void(bool)> resume) {
    asio::post(io, [resume = std::move(resume)] { resume(true); });
  };
}

// A started call: its handle and, once Done was called, its status (shared
// with the Done handler, so that a call a failed test leaves behind writes
// nowhere stale).
struct Started {
  std::shared_ptr<EventedUpstream::Call> call;
  std::shared_ptr<std::optional<Status>> status = std::make_shared<std::optional<Status>>();
  std::shared_ptr<int> dones = std::make_shared<int>(0);
  bool done() const { return status->has_value(); }
};

Started Start(EventedUpstream& upstream, asio::io_context& io, const UpstreamRequest& request, RecordingSink& sink,
              EventedUpstream::Pause pause = nullptr) {
  Started s;
  if (!pause) pause = ResumeAtOnce(io);
  s.call = upstream.Start(request, sink, io.get_executor(), std::move(pause),
                          [status = s.status, dones = s.dones](Status st) {
                            ++*dones;
                            *status = std::move(st);
                          });
  EXPECT_FALSE(s.done()) << "Done was called from within Start";
  if (!s.call) {
    ADD_FAILURE() << "Start cannot make this call";
    *s.status = MakeError(ErrorCode::kInternal, "test: Start made no call");
    return s;
  }
  asio::post(io, [call = s.call] { call->Begin(); });
  return s;
}

// Runs the loop until the call's Done: its status, or kInternal when it did
// not end within the safety net.
Status Finish(asio::io_context& io, Started& s) {
  if (!RunUntil(io, [&] { return s.done(); })) {
    return MakeError(ErrorCode::kInternal, "test: the call did not end within the safety net");
  }
  EXPECT_EQ(*s.dones, 1) << "Done called more than once";
  return **s.status;
}

Status CallOnce(EventedUpstream& upstream, asio::io_context& io, const UpstreamRequest& request, RecordingSink& sink,
                EventedUpstream::Pause pause = nullptr) {
  Started s = Start(upstream, io, request, sink, std::move(pause));
  return Finish(io, s);
}

// Answers every request on a connection with `answer`, keeping it open
// until the client closes it.
LoopbackHttpServer::ServerScript AnswerEach(std::string answer) {
  return [answer](LoopbackConn& c, LoopbackHttpServer& server) {
    while (!server.Read(c).empty()) {
      if (!c.Write(answer)) return;
    }
  };
}

// A port on 127.0.0.1 that refuses connections: bound, never listening.
class RefusingPort {
 public:
  RefusingPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  ~RefusingPort() { ::close(fd_); }
  std::string url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(port_) + path; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// --- Answers reach the sink whole; the request as written ---------------

TEST(EventedUpstream, APlainAnswerReachesTheSinkWholeAndTheRequestIsSentAsWritten) {
  asio::io_context io;
  const std::string answer_body = "{\"id\":\"a1\",\"choices\":[{\"text\":\"hello\"}]}";
  LoopbackHttpServer server(AnswerEach(
      Answer(answer_body, "Content-Type: application/json\r\nX-Request-Id: r-7\r\nKeep-Alive: timeout=5\r\n")));
  EventedUpstream upstream({});
  const std::string body = "{\"model\":\"m\",\"messages\":[]}";
  UpstreamRequest request = Post(server.url("/v1/chat/completions?api-version=2024-10"), body);
  request.headers.push_back({"X-Custom", "v1"});
  // Host, Content-Length and hop-by-hop headers are the client's to write: these are dropped.
  request.headers.push_back({"Host", "elsewhere.example"});
  request.headers.push_back({"Connection", "close"});
  request.headers.push_back({"Content-Length", "999"});
  RecordingSink sink, again;

  Status s = CallOnce(upstream, io, request, sink);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(sink.heads, 1);
  EXPECT_EQ(sink.head.status, 200);
  EXPECT_EQ(sink.Header("content-type"), "application/json");
  EXPECT_EQ(sink.Header("x-request-id"), "r-7");
  EXPECT_EQ(sink.Header("keep-alive"), "<none>");  // hop-by-hop: not handed on
  EXPECT_EQ(sink.body(), answer_body);
  ASSERT_FALSE(sink.flushes.empty());
  EXPECT_EQ(sink.flushes.back(), answer_body + "<last>");
  EXPECT_TRUE(sink.failures.empty());

  // A second call on the kept connection: the upstream reads it as written
  // too (anything sent beyond the first request would begin this one).
  s = CallOnce(upstream, io, request, again);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(again.body(), answer_body);
  EXPECT_EQ(server.connections(), 1);

  const std::string expected = "POST /v1/chat/completions?api-version=2024-10 HTTP/1.1\r\n"
                               "Host: 127.0.0.1:" + std::to_string(server.port()) + "\r\n"
                               "Authorization: Bearer sk-upstream-secret\r\n"
                               "Content-Type: application/json\r\n"
                               "X-Custom: v1\r\n"
                               "Content-Length: " + std::to_string(body.size()) + "\r\n"
                               "\r\n" + body;
  EXPECT_EQ(server.requests(), (std::vector<std::string>{expected, expected}));
}

TEST(EventedUpstream, AChunkedAnswerInPiecesReachesTheSinkWholeWithoutItsFraming) {
  asio::io_context io;
  LoopbackHttpServer server([](LoopbackConn& c, LoopbackHttpServer& server) {
    while (!server.Read(c).empty()) {
      // Each in a write of its own: a chunk's size line, data and CRLF cut apart.
      for (const char* w : {"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n1",
                            "0\r\ndata: abcdefgh\n\n\r", "\nb\r\ndata: d", "ef\n\n\r\n", "0\r\n\r\n"}) {
        if (!c.Write(w)) return;
      }
    }
  });
  EventedUpstream upstream({});
  RecordingSink sink;

  Status s = CallOnce(upstream, io, Post(server.url("/v1/chat/completions")), sink);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(sink.heads, 1);
  EXPECT_EQ(sink.Header("content-type"), "text/event-stream");
  EXPECT_EQ(sink.Header("transfer-encoding"), "<none>");
  EXPECT_EQ(sink.body(), "data: abcdefgh\n\ndata: def\n\n");
  ASSERT_FALSE(sink.flushes.empty());
  EXPECT_EQ(sink.flushes.back(), "data: abcdefgh\n\ndata: def\n\n<last>");
  EXPECT_EQ(upstream.IdleConnections(), 1u);  // the answer ended at its last chunk: kept
}

// --- Kept connections ---------------------------------------------------

TEST(EventedUpstream, AKeptConnectionCarriesTheNextCallOnTheSameLoop) {
  asio::io_context io;
  LoopbackHttpServer server(AnswerEach(Answer("k")));
  EventedUpstream upstream({});
  RecordingSink first, second;
  const UpstreamRequest request = Post(server.url("/v1/embeddings"));

  ASSERT_TRUE(CallOnce(upstream, io, request, first).ok());
  EXPECT_EQ(upstream.IdleConnections(), 1u);
  Status s = CallOnce(upstream, io, request, second);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(second.body(), "k");
  EXPECT_EQ(server.connections(), 1);
  EXPECT_EQ(server.requests().size(), 2u);
  EXPECT_EQ(upstream.IdleConnections(), 1u);
}

TEST(EventedUpstream, AnAnswerWithConnectionCloseIsNotKept) {
  asio::io_context io;
  // The script reads on after its answer: a connection the client kept would carry the next call.
  LoopbackHttpServer server(AnswerEach(Answer("bye", "Connection: close\r\n")));
  EventedUpstream upstream({});
  RecordingSink first, second;
  const UpstreamRequest request = Post(server.url("/v1/embeddings"));

  Status s = CallOnce(upstream, io, request, first);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(first.body(), "bye");
  EXPECT_EQ(upstream.IdleConnections(), 0u);
  EXPECT_TRUE(ServerClosed(server, 1)) << "the client did not close the connection";
  ASSERT_TRUE(CallOnce(upstream, io, request, second).ok());
  EXPECT_EQ(server.connections(), 2);
}

TEST(EventedUpstream, CallsOnTwoLoopsDoNotShareAKeptConnection) {
  asio::io_context io1, io2;
  LoopbackHttpServer server(AnswerEach(Answer("k")));
  EventedUpstream upstream({});
  const UpstreamRequest request = Post(server.url("/v1/embeddings"));
  RecordingSink a, b, c;

  ASSERT_TRUE(CallOnce(upstream, io1, request, a).ok());
  ASSERT_TRUE(CallOnce(upstream, io2, request, b).ok());
  EXPECT_EQ(server.connections(), 2);  // io2 did not take io1's kept connection
  EXPECT_EQ(upstream.IdleConnections(), 2u);
  ASSERT_TRUE(CallOnce(upstream, io1, request, c).ok());
  EXPECT_EQ(server.connections(), 2);  // io1 took its own
  EXPECT_EQ(server.requests().size(), 3u);
}

// The per-loop shards, found through a per-thread cache: two clients
// in turn on one loop and one thread keep apart; one made where another was
// (same address, likely) starts with nothing kept; after CloseIdle, a call
// on a loop not seen before keeps nothing either, nor one on a seen loop.
TEST(EventedUpstream, ShardsOfTwoClientsOnOneThreadAndAfterCloseIdle) {
  asio::io_context io;
  LoopbackHttpServer server(AnswerEach(Answer("k")));
  const UpstreamRequest request = Post(server.url("/v1/embeddings"));
  RecordingSink s1, s2, s3, s4, s5, s6;
  {
    EventedUpstream a({}), b({});
    ASSERT_TRUE(CallOnce(a, io, request, s1).ok());
    ASSERT_TRUE(CallOnce(b, io, request, s2).ok());
    EXPECT_EQ(a.IdleConnections(), 1u);
    EXPECT_EQ(b.IdleConnections(), 1u);
    EXPECT_EQ(server.connections(), 2);
    ASSERT_TRUE(CallOnce(a, io, request, s3).ok());
    EXPECT_EQ(server.connections(), 2);
  }
  {
    EventedUpstream c({});
    EXPECT_EQ(c.IdleConnections(), 0u);
    ASSERT_TRUE(CallOnce(c, io, request, s4).ok());
    EXPECT_EQ(server.connections(), 3);
    c.CloseIdle();
    EXPECT_EQ(c.IdleConnections(), 0u);
    ASSERT_TRUE(CallOnce(c, io, request, s5).ok());
    EXPECT_EQ(c.IdleConnections(), 0u) << "kept after CloseIdle (a seen loop)";
    asio::io_context other;
    ASSERT_TRUE(CallOnce(c, other, request, s6).ok());
    EXPECT_EQ(c.IdleConnections(), 0u) << "kept after CloseIdle (a new loop)";
  }
}

// A request the upstream's socket does not take at once (a small
// receive buffer, read late): the sendmsg's remainder is written
// asynchronously, and the upstream reads the request byte for byte.
TEST(EventedUpstream, ARequestWrittenInPartsArrivesWhole) {
  const int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int small = 2048;
  ::setsockopt(lfd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(lfd, 4), 0);
  socklen_t len = sizeof a;
  ::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len);
  const std::string url = "http://127.0.0.1:" + std::to_string(ntohs(a.sin_port)) + "/v1/embeddings";
  std::string body(EventedUpstream::kMaxBody, 'x');
  for (size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>('a' + i % 26);
  const UpstreamRequest request = Post(url, body);
  std::promise<std::string> got;
  std::thread upstream_thread([&] {
    const int fd = ::accept(lfd, nullptr, nullptr);
    std::this_thread::sleep_for(milliseconds(200));  // the client's sendmsg meets a full window
    std::string in;
    char buf[4096];
    while (in.find("\r\n\r\n") == std::string::npos || in.size() < in.find("\r\n\r\n") + 4 + body.size()) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      in.append(buf, static_cast<size_t>(n));
    }
    const std::string answer = Answer("ok");
    ::send(fd, answer.data(), answer.size(), MSG_NOSIGNAL);
    got.set_value(in);
    std::this_thread::sleep_for(milliseconds(100));
    ::close(fd);
  });
  asio::io_context io;
  EventedUpstream upstream({});
  RecordingSink sink;
  UpstreamRequest r = request;
  r.headers.push_back({"X-Big", std::string(4 << 20, 'h')});  // more than the socket takes at once
  r.timeouts.first_byte = std::chrono::seconds(5);
  Status s = CallOnce(upstream, io, r, sink);
  upstream_thread.join();
  ::close(lfd);
  ASSERT_TRUE(s.ok()) << s.error().message;
  const std::string in = got.get_future().get();
  const size_t head_end = in.find("\r\n\r\n");
  ASSERT_NE(head_end, std::string::npos);
  EXPECT_EQ(in.substr(head_end + 4), body);
  EXPECT_EQ(sink.body(), "ok");
}

// The upstream half-closes a kept connection while it is idle (its FIN, as
// an upstream ending idle connections sends) but reads on: a request still
// written on it would be recorded. The next call must make a new one.
TEST(EventedUpstream, AKeptConnectionTheUpstreamClosedWhileIdleIsNotUsed) {
  asio::io_context io;
  std::promise<void> half_closed;
  std::future<void> half_closed_future = half_closed.get_future();
  LoopbackHttpServer server([&](LoopbackConn& c, LoopbackHttpServer& server) {
    for (int answered = 0; !server.Read(c).empty(); ++answered) {
      if (answered > 0) continue;  // a request written on the half-closed connection: recorded, never answered
      c.Write(Answer(c.index() == 0 ? "c0" : "c1"));
      if (c.index() == 0) {
        ::shutdown(c.fd(), SHUT_WR);
        half_closed.set_value();
      }
    }
  });
  EventedUpstream upstream({});
  const UpstreamRequest request = Post(server.url("/v1/embeddings"));
  RecordingSink first, second;

  ASSERT_TRUE(CallOnce(upstream, io, request, first).ok());
  EXPECT_EQ(first.body(), "c0");
  ASSERT_EQ(half_closed_future.wait_for(kSafetyNet), std::future_status::ready);
  Status s = CallOnce(upstream, io, request, second);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(second.body(), "c1");
  EXPECT_EQ(server.connections(), 2);
  EXPECT_EQ(server.requests().size(), 2u) << "the request was written on the closed connection too";
  EXPECT_TRUE(ServerClosed(server, 1)) << "the dropped connection was not closed";
}

// The upstream reads the second request on the kept connection and closes it
// unanswered (it had closed it idle as the request went out): the request is
// sent once more, on a new connection, and answered there.
TEST(EventedUpstream, ARequestOnAKeptConnectionClosedBeforeAnyAnswerByteIsResentOnceOnANewOne) {
  asio::io_context io;
  LoopbackHttpServer server([](LoopbackConn& c, LoopbackHttpServer& server) {
    if (c.index() == 0) {
      if (server.Read(c).empty()) return;
      c.Write(Answer("first"));
      server.Read(c);
      return;  // closed, the second request unanswered
    }
    while (!server.Read(c).empty()) c.Write(Answer("second"));
  });
  EventedUpstream upstream({});
  const UpstreamRequest request = Post(server.url("/v1/embeddings"));
  RecordingSink first, second;

  ASSERT_TRUE(CallOnce(upstream, io, request, first).ok());
  Status s = CallOnce(upstream, io, request, second);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(second.heads, 1);
  EXPECT_EQ(second.body(), "second");
  EXPECT_TRUE(second.failures.empty());
  EXPECT_EQ(server.connections(), 2);
  const std::vector<std::string> seen = server.requests();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[1], seen[2]);  // the same request, sent again
}

// A new connection closed unanswered: the request is not sent twice.
TEST(EventedUpstream, ARequestOnANewConnectionClosedUnansweredIsNotResent) {
  asio::io_context io;
  LoopbackHttpServer server([](LoopbackConn& c, LoopbackHttpServer& server) { server.Read(c); });
  EventedUpstream upstream({});
  RecordingSink sink;

  Status s = CallOnce(upstream, io, Post(server.url("/v1/embeddings")), sink);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kUnavailable) << s.error().message;
  EXPECT_EQ(sink.heads, 0);
  EXPECT_EQ(sink.failures.size(), 1u);
  EXPECT_EQ(server.connections(), 1);
  EXPECT_EQ(server.requests().size(), 1u);
}

// --- Errors -------------------------------------------------------------

TEST(EventedUpstream, ARefusedConnectionIsUnavailableAndTheSinkToldConnect) {
  asio::io_context io;
  RefusingPort refusing;
  EventedUpstream upstream({});
  RecordingSink sink;

  Status s = CallOnce(upstream, io, Post(refusing.url("/v1/embeddings")), sink);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kUnavailable) << s.error().message;
  EXPECT_NE(s.error().message.find("cannot connect"), std::string::npos) << s.error().message;
  EXPECT_EQ(sink.failures, std::vector<UpstreamFailure>{UpstreamFailure::kConnect});
  EXPECT_EQ(sink.heads, 0);
}

// An upstream that sends the head and part of a Content-Length body, then closes.
LoopbackHttpServer::ServerScript ClosesMidBody() {
  return [](LoopbackConn& c, LoopbackHttpServer& server) {
    server.Read(c);
    c.Write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b");
  };  // the script returns: the connection is closed
}

TEST(EventedUpstream, AnAnswerClosedMidBodyIsUnavailableCutShortAndNotKept) {
  asio::io_context io;
  LoopbackHttpServer server(ClosesMidBody());
  EventedUpstream upstream({});
  RecordingSink sink;

  Status s = CallOnce(upstream, io, Post(server.url("/v1/embeddings")), sink);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kUnavailable) << s.error().message;
  EXPECT_NE(s.error().message.find("cut short"), std::string::npos) << s.error().message;
  EXPECT_EQ(sink.failures.size(), 1u);  // its kind: the test below
  EXPECT_EQ(sink.heads, 1);
  EXPECT_EQ(sink.body(), "only ten b");
  for (const std::string& f : sink.flushes) EXPECT_EQ(f.find("<last>"), std::string::npos) << f;
  EXPECT_EQ(upstream.IdleConnections(), 0u);
}

// A close before the answer's end is a connection lost ("connection reset
// or closed" to a /v1 client), not an answer that is not HTTP.
TEST(EventedUpstream, AnAnswerClosedMidBodyIsToldConnectionLost) {
  asio::io_context io;
  LoopbackHttpServer server(ClosesMidBody());
  EventedUpstream upstream({});
  RecordingSink sink;

  Status s = CallOnce(upstream, io, Post(server.url("/v1/embeddings")), sink);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kUnavailable) << s.error().message;
  EXPECT_EQ(sink.failures, std::vector<UpstreamFailure>{UpstreamFailure::kConnectionLost});
}

TEST(EventedUpstream, AnAnswerThatIsNotHttpIsABadAnswer) {
  asio::io_context io;
  LoopbackHttpServer server([](LoopbackConn& c, LoopbackHttpServer& server) {
    server.Read(c);
    c.Write("hello, this is not http\r\n\r\n");
    c.WaitForClose();
  });
  EventedUpstream upstream({});
  RecordingSink sink;

  Status s = CallOnce(upstream, io, Post(server.url("/v1/embeddings")), sink);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kUnavailable) << s.error().message;
  EXPECT_EQ(s.error().message.find("hello"), std::string::npos) << "the answer's bytes quoted: " << s.error().message;
  EXPECT_EQ(sink.failures, std::vector<UpstreamFailure>{UpstreamFailure::kBadAnswer});
  EXPECT_EQ(sink.heads, 0);
  EXPECT_EQ(upstream.IdleConnections(), 0u);
  EXPECT_TRUE(ServerClosed(server, 1));
}

// A transfer coding before chunked (not asked for: no TE is sent) would
// reach the client still applied: a bad answer, the connection not kept.
TEST(EventedUpstream, ATransferCodingOtherThanChunkedIsABadAnswer) {
  asio::io_context io;
  LoopbackHttpServer server(AnswerEach("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"));
  EventedUpstream upstream({});
  RecordingSink sink;

  Status s = CallOnce(upstream, io, Post(server.url("/v1/embeddings")), sink);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kUnavailable) << s.error().message;
  EXPECT_EQ(sink.failures, std::vector<UpstreamFailure>{UpstreamFailure::kBadAnswer});
  EXPECT_EQ(sink.heads, 0);
  EXPECT_EQ(upstream.IdleConnections(), 0u);
}

// A head over the reader's 64 KiB is refused; one of 60 KiB (more than the
// first 16 KiB buffer holds) is read whole.
TEST(EventedUpstream, AHeadOver64KiBIsABadAnswerAndOneUnderItIsRead) {
  asio::io_context io;
  auto answer_with_header_of = [](size_t size) {
    return "HTTP/1.1 200 OK\r\nX-Big: " + std::string(size, 'a') + "\r\nContent-Length: 2\r\n\r\nok";
  };
  LoopbackHttpServer huge([&](LoopbackConn& c, LoopbackHttpServer& server) {
    server.Read(c);
    c.Write(answer_with_header_of(70 * 1024));  // may fail part way: the client closes
    c.WaitForClose();
  });
  LoopbackHttpServer large(AnswerEach(answer_with_header_of(60 * 1024)));
  EventedUpstream upstream({});
  RecordingSink refused, read;

  Status s = CallOnce(upstream, io, Post(huge.url("/v1/embeddings")), refused);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kUnavailable) << s.error().message;
  EXPECT_NE(s.error().message.find("larger than"), std::string::npos) << s.error().message;
  EXPECT_EQ(refused.failures, std::vector<UpstreamFailure>{UpstreamFailure::kBadAnswer});
  EXPECT_EQ(refused.heads, 0);

  s = CallOnce(upstream, io, Post(large.url("/v1/embeddings")), read);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(read.Header("x-big").size(), 60u * 1024);
  EXPECT_EQ(read.body(), "ok");
}

// --- Timeouts -------------------------------------------------------------

// An upstream silent before the answer's head (the first-byte timeout) or
// inside its body (the idle one): the call ends with the timeout named, the
// sink told its kind, and the connection closed, not kept.
TEST(EventedUpstream, AnUpstreamSilentBeforeTheHeadOrInTheBodyTimesOutAndIsNotKept) {
  struct Case {
    std::string sent;  // what the upstream sends before it goes silent
    milliseconds UpstreamTimeouts::*timeout;
    std::string named;
    UpstreamFailure kind;
    int heads;
  };
  const std::vector<Case> cases = {
      {"", &UpstreamTimeouts::first_byte, "first-byte timeout (40 ms)", UpstreamFailure::kFirstByteTimeout, 0},
      {"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst", &UpstreamTimeouts::idle, "idle timeout (40 ms)",
       UpstreamFailure::kIdleTimeout, 1},
  };
  for (const Case& c : cases) {
    asio::io_context io;
    LoopbackHttpServer server([&](LoopbackConn& conn, LoopbackHttpServer& server) {
      server.Read(conn);
      if (!c.sent.empty()) conn.Write(c.sent);
      conn.WaitForClose();
    });
    EventedUpstream upstream({});
    UpstreamRequest request = Post(server.url("/v1/embeddings"));
    request.timeouts.*c.timeout = milliseconds(40);
    RecordingSink sink;

    Status s = CallOnce(upstream, io, request, sink);
    ASSERT_FALSE(s.ok()) << c.named;
    EXPECT_EQ(s.error().code, ErrorCode::kDeadlineExceeded) << s.error().message;
    EXPECT_NE(s.error().message.find(c.named), std::string::npos) << s.error().message;
    EXPECT_EQ(sink.failures, std::vector<UpstreamFailure>{c.kind}) << c.named;
    EXPECT_EQ(sink.heads, c.heads) << c.named;
    if (c.heads == 1) EXPECT_EQ(sink.body(), "first");
    EXPECT_EQ(upstream.IdleConnections(), 0u) << c.named;
    EXPECT_TRUE(ServerClosed(server, 1)) << c.named << ": the timed-out connection was not closed";
  }
}

// A client slower than the idle timeout is not the upstream's silence: while
// the call waits for the client to take a piece, only the total timeout runs,
// and the idle one starts again with the next read.
TEST(EventedUpstream, AClientSlowerThanTheIdleTimeoutDoesNotCutTheAnswer) {
  asio::io_context io;
  LoopbackHttpServer server([](LoopbackConn& c, LoopbackHttpServer& server) {
    server.Read(c);
    c.Write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n");
    c.WaitForClose();
  });
  EventedUpstream upstream({});
  UpstreamRequest request = Post(server.url("/v1/chat/completions"));
  request.timeouts.idle = milliseconds(40);
  RecordingSink sink;
  // Each piece is taken 150 ms after it was written (a timer on the loop).
  asio::steady_timer slow_client(io);
  auto slow = [&](std::function<void(bool)> resume) {
    slow_client.expires_after(milliseconds(150));
    slow_client.async_wait([resume = std::move(resume)](const boost::system::error_code&) { resume(true); });
  };

  Status s = CallOnce(upstream, io, request, sink, slow);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(sink.body(), "onetwo");
  EXPECT_TRUE(sink.failures.empty());
}

// --- The client going away ----------------------------------------------

TEST(EventedUpstream, CancelEndsTheCallCancelledAndClosesTheUpstreamConnection) {
  asio::io_context io;
  Started started;
  std::promise<bool> saw_eof;
  std::future<bool> saw_eof_future = saw_eof.get_future();
  LoopbackHttpServer server([&](LoopbackConn& c, LoopbackHttpServer& server) {
    if (server.Read(c).empty()) return;
    // The request is in; no answer comes. The client hangs up, on the call's loop.
    asio::post(io, [&started] { started.call->Cancel(); });
    saw_eof.set_value(c.ReadSome(1).empty());
  });
  EventedUpstream upstream({});
  UpstreamRequest request = Post(server.url("/v1/embeddings"));
  RecordingSink sink;

  started = Start(upstream, io, request, sink);
  Status s = Finish(io, started);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kCancelled) << s.error().message;
  EXPECT_TRUE(sink.failures.empty());  // a client gone is told nothing
  EXPECT_EQ(sink.heads, 0);
  ASSERT_EQ(saw_eof_future.wait_for(kSafetyNet), std::future_status::ready) << "the upstream connection stayed open";
  EXPECT_TRUE(saw_eof_future.get()) << "the upstream read something other than the close";
  EXPECT_EQ(upstream.IdleConnections(), 0u);
}

// A client that hangs up before its call has begun (Cancel before the loop
// ran Start's work), with a kept connection ready for it: nothing is sent
// upstream, and the kept connection stays kept for the next call.
TEST(EventedUpstream, ACallCancelledBeforeItRunsSendsNothingUpstream) {
  asio::io_context io;
  LoopbackHttpServer server(AnswerEach(Answer("k")));
  EventedUpstream upstream({});
  const UpstreamRequest request = Post(server.url("/v1/embeddings"));
  RecordingSink first, second;
  ASSERT_TRUE(CallOnce(upstream, io, request, first).ok());
  ASSERT_EQ(upstream.IdleConnections(), 1u);

  Started started = Start(upstream, io, request, second);
  started.call->Cancel();  // this thread is the loop's (it runs nothing now)
  Status s = Finish(io, started);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kCancelled) << s.error().message;
  EXPECT_EQ(second.heads, 0);
  EXPECT_EQ(server.requests().size(), 1u) << "the cancelled call's request reached the upstream";
  EXPECT_EQ(upstream.IdleConnections(), 1u);  // not taken
}

// The sink wrote "one"; the client has not taken it (the Pause holds the
// resume): the upstream's next chunk, already sent, is not read until it
// does. resume(false) then ends the call cancelled and the connection closed.
TEST(EventedUpstream, WhileTheClientHasNotTakenAPieceTheUpstreamIsNotReadAgain) {
  asio::io_context io;
  std::promise<void> send_more, more_sent;
  std::future<void> send_more_future = send_more.get_future(), more_sent_future = more_sent.get_future();
  LoopbackHttpServer server([&](LoopbackConn& c, LoopbackHttpServer& server) {
    if (server.Read(c).empty()) return;
    c.Write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n");
    if (send_more_future.wait_for(kSafetyNet) != std::future_status::ready) return;
    c.Write("3\r\ntwo\r\n");
    more_sent.set_value();
    c.WaitForClose();
  });
  EventedUpstream upstream({});
  UpstreamRequest request = Post(server.url("/v1/chat/completions"));
  RecordingSink sink;
  std::function<void(bool)> held;
  int pauses = 0;
  auto hold = [&](std::function<void(bool)> resume) {
    ++pauses;
    held = std::move(resume);
  };
  auto resume = [&](bool took_it) {
    auto r = std::move(held);
    held = nullptr;
    r(took_it);
  };
  auto paused = [&] { return held != nullptr; };

  Started started = Start(upstream, io, request, sink, hold);
  // The head and "one" may come in one read or two: the client takes each until "one" is in.
  ASSERT_TRUE(RunUntil(io, paused));
  while (sink.body() != "one") {
    resume(true);
    ASSERT_TRUE(RunUntil(io, paused)) << sink.body();
  }
  const int pauses_at_one = pauses;
  send_more.set_value();
  ASSERT_EQ(more_sent_future.wait_for(kSafetyNet), std::future_status::ready);
  // "two" is on the socket. The loop runs a while (the only wait here: what
  // is checked is that nothing happens): nothing may read it.
  io.restart();
  io.run_for(milliseconds(50));
  EXPECT_EQ(sink.body(), "one") << "the upstream was read while the client had not taken what the sink wrote";
  EXPECT_EQ(pauses, pauses_at_one);
  EXPECT_FALSE(started.done());

  // It was there to read: the client takes "one", and "two" comes.
  resume(true);
  ASSERT_TRUE(RunUntil(io, [&] { return paused() && sink.body() == "onetwo"; })) << sink.body();
  // The client goes.
  resume(false);
  Status s = Finish(io, started);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kCancelled) << s.error().message;
  EXPECT_EQ(upstream.IdleConnections(), 0u);
  EXPECT_TRUE(ServerClosed(server, 1)) << "the upstream connection stayed open";
}

// --- Where calls may go ---------------------------------------------------

TEST(EventedUpstream, AMetadataAddressIsRefusedWithoutConnecting) {
  asio::io_context io;
  EventedUpstream upstream({});
  UpstreamRequest request = Post("http://169.254.169.254/latest/meta-data/");
  // Were a connection tried, it would end as a connect failure or timeout, not as refused.
  request.timeouts.connect = milliseconds(40);
  RecordingSink sink;

  Status s = CallOnce(upstream, io, request, sink);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kUnavailable) << s.error().message;
  EXPECT_NE(s.error().message.find("refused to connect"), std::string::npos) << s.error().message;
  EXPECT_EQ(sink.failures, std::vector<UpstreamFailure>{UpstreamFailure::kRefusedAddress});
}

TEST(EventedUpstream, SupportsPlainHttpToAnIpLiteralWithASmallBodyOnly) {
  EventedUpstream upstream({});
  const std::string at_limit(EventedUpstream::kMaxBody, 'x');
  const std::string over_limit(EventedUpstream::kMaxBody + 1, 'x');
  UpstreamRequest r = Post("http://127.0.0.1:8080/v1/chat/completions");
  EXPECT_TRUE(upstream.Supports(r));
  r.url = "http://[::1]:8080/v1/chat/completions";
  EXPECT_TRUE(upstream.Supports(r));
  r.url = "http://localhost:8080/v1/chat/completions";
  EXPECT_FALSE(upstream.Supports(r)) << "a host name needs resolving";
  r.url = "https://127.0.0.1:8443/v1/chat/completions";
  EXPECT_FALSE(upstream.Supports(r)) << "https needs a handshake";
  r.url = "not a url";
  EXPECT_FALSE(upstream.Supports(r));
  r.url = "http://127.0.0.1:8080/v1/chat/completions";
  r.body = at_limit;
  EXPECT_TRUE(upstream.Supports(r));
  r.body = over_limit;
  EXPECT_FALSE(upstream.Supports(r)) << "a body over kMaxBody";
}

}  // namespace
}  // namespace dyad
