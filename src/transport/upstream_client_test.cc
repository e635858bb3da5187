// Tests of the libcurl UpstreamClient against loopback servers in this
// process (plain and TLS): the head and body handed on as they arrive,
// redirects handed back, metadata addresses refused, the three timeouts,
// cancelling, kept-alive connections, concurrent calls, and hostile answers.
#include "transport/upstream_client.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "core/secret_bytes.h"
#include "testing/loopback_checks.h"
#include "testing/loopback_http_server.h"
#include "testing/recording_sink.h"

namespace dyad {
namespace {

using std::chrono::milliseconds;

// A clock that moves a second each time it is read.
class SecondPerReadClock final : public Clock {
 public:
  Instant Now() const override { return Instant(std::chrono::seconds(++reads_)); }
  WallTime WallNow() const override { return WallTime(std::chrono::seconds(reads_.load())); }

 private:
  mutable std::atomic<long long> reads_{0};
};

std::unique_ptr<UpstreamClient> Client(UpstreamClientOptions options = {}) {
  auto c = NewUpstreamClient(options);
  EXPECT_TRUE(c.ok()) << c.error().message;
  return std::move(c).value();
}

// The body handed on for Post(url), or why the call failed.
Result<std::string> BodyOf(UpstreamClient& client, const std::string& url) {
  RecordingSink sink;
  DYAD_RETURN_IF_ERROR(client.Send(Post(url), sink));
  return sink.body();
}

// Answers every request on a connection with `answer`, keeping it open.
LoopbackHttpServer::Script Always(std::string answer, LoopbackHttpServer*& self) {
  return [answer, &self](LoopbackConn& c) {
    while (!self->Read(c).empty()) {
      if (!c.Write(answer)) return;
    }
  };
}

TEST(IsForbiddenUpstreamAddress, LinkLocalAndMetadataInEveryForm) {
  for (const char* a : {"169.254.169.254", "169.254.0.1", "169.254.255.255", "fe80::1", "febf::1", "fe80::1%eth0",
                        "fd00:ec2::254", "FD00:EC2::254", "[fd00:ec2::254]", "::ffff:169.254.169.254",
                        "::ffff:a9fe:a9fe", "::169.254.169.254", "64:ff9b::169.254.169.254", "100.100.100.200",
                        "::ffff:100.100.100.200", "not-an-address", ""}) {
    EXPECT_TRUE(IsForbiddenUpstreamAddress(a)) << a;
  }
  for (const char* a : {"127.0.0.1", "10.0.0.1", "169.253.255.255", "169.255.0.0", "::1", "fec0::1", "fd00:ec2::253",
                        "::ffff:127.0.0.1", "2001:db8::1", "[::1]", "100.100.100.201", "100.64.0.1"}) {
    EXPECT_FALSE(IsForbiddenUpstreamAddress(a)) << a;
  }
}

TEST(UpstreamClient, StatusHeadersAndBodyHandedOnAndTheRequestSentAsGiven) {
  LoopbackHttpServer* self = nullptr;
  LoopbackHttpServer server(Always(Answer("{\"ok\":true}",
                                          "Content-Type: application/json\r\nX-Request-Id: abc\r\nConnection: "
                                          ", keep-alive,, X-Hop ,\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\n"
                                          "Proxy-Authenticate: Basic\r\nUpgrade: h2c\r\n"),
                                   self));
  self = &server;
  auto client = Client();
  RecordingSink sink;
  UpstreamRequest request = Post(server.url("/v1/chat/completions"));
  request.headers.push_back({"OpenAI-Organization", "org-1"});
  request.headers.push_back({"X-Empty", ""});
  // The caller's framing and connection headers are the client's to set.
  request.headers.push_back({"Connection", "close"});
  request.headers.push_back({"Transfer-Encoding", "chunked"});
  request.headers.push_back({"Host", "evil.example"});
  request.headers.push_back({"Content-Length", "999"});
  ASSERT_TRUE(client->Send(request, sink).ok());
  EXPECT_EQ(sink.heads, 1);
  EXPECT_EQ(sink.head.status, 200);
  EXPECT_EQ(sink.Header("content-type"), "application/json");
  EXPECT_EQ(sink.Header("x-request-id"), "abc");
  EXPECT_EQ(sink.Header("content-length"), "11");
  for (const char* hop : {"connection", "keep-alive", "x-hop", "proxy-authenticate", "upgrade"}) {
    EXPECT_EQ(sink.Header(hop), "<none>") << hop;
  }
  EXPECT_EQ(sink.body(), "{\"ok\":true}");

  ASSERT_EQ(server.requests().size(), 1u);
  const std::string seen = server.requests()[0];
  EXPECT_TRUE(seen.starts_with("POST /v1/chat/completions HTTP/1.1\r\n")) << seen;
  EXPECT_NE(seen.find("\r\nAuthorization: Bearer sk-upstream-secret\r\n"), std::string::npos) << seen;
  EXPECT_NE(seen.find("\r\nOpenAI-Organization: org-1\r\n"), std::string::npos) << seen;
  EXPECT_NE(seen.find("\r\nX-Empty:"), std::string::npos) << seen;
  EXPECT_NE(seen.find("\r\nContent-Type: application/json\r\n"), std::string::npos) << seen;
  EXPECT_NE(seen.find("\r\nContent-Length: 13\r\n"), std::string::npos) << seen;
  EXPECT_NE(seen.find("\r\nHost: 127.0.0.1:" + std::to_string(server.port()) + "\r\n"), std::string::npos) << seen;
  for (const char* absent : {"Expect", "evil.example", "Transfer-Encoding", "Connection: close", "999", "Accept:"}) {
    EXPECT_EQ(seen.find(absent), std::string::npos) << absent << " in " << seen;
  }
  EXPECT_TRUE(seen.ends_with("\r\n\r\n{\"model\":\"m\"}")) << seen;
}

TEST(UpstreamClient, GetHeadAndABodylessAnswerStillHaveAHead) {
  LoopbackHttpServer* self = nullptr;
  LoopbackHttpServer server(Always("HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", self));
  self = &server;
  auto client = Client();
  for (const char* method : {"GET", "HEAD", "DELETE", "POST"}) {
    RecordingSink sink;
    UpstreamRequest request = Post(server.url("/models"), "");
    request.method = method;
    request.headers.clear();
    ASSERT_TRUE(client->Send(request, sink).ok()) << method;
    EXPECT_EQ(sink.heads, 1) << method;
    EXPECT_EQ(sink.head.status, 204) << method;
    EXPECT_EQ(sink.Header("x-a"), "1");
    EXPECT_TRUE(sink.pieces.empty()) << method;
  }
  const auto seen = server.requests();
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_TRUE(seen[0].starts_with("GET /models HTTP/1.1\r\n")) << seen[0];
  EXPECT_EQ(seen[0].find("Content-Length"), std::string::npos) << seen[0];
  EXPECT_TRUE(seen[1].starts_with("HEAD /models HTTP/1.1\r\n")) << seen[1];
  EXPECT_TRUE(seen[2].starts_with("DELETE /models HTTP/1.1\r\n")) << seen[2];
  EXPECT_TRUE(seen[3].starts_with("POST /models HTTP/1.1\r\n")) << seen[3];
  EXPECT_NE(seen[3].find("Content-Length: 0\r\n"), std::string::npos) << seen[3];
  EXPECT_EQ(server.connections(), 1);  // one kept connection for all four
}

TEST(UpstreamClient, InterimHeadsAreSkipped) {
  LoopbackHttpServer* self = nullptr;
  LoopbackHttpServer server(
      Always("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + Answer("x", "X-Final: 1\r\n"), self));
  self = &server;
  RecordingSink sink;
  ASSERT_TRUE(Client()->Send(Post(server.url()), sink).ok());
  EXPECT_EQ(sink.heads, 1);
  EXPECT_EQ(sink.head.status, 200);
  EXPECT_EQ(sink.Header("link"), "<none>");
  EXPECT_EQ(sink.Header("x-final"), "1");
}

// The server sends a piece, waits until the sink has seen it, then sends the
// next: a client that buffered the body would hand on nothing before the end.
TEST(UpstreamClient, AStreamedAnswerArrivesPieceByPieceBeforeItsEnd) {
  std::promise<void> first_seen;
  std::future<void> first_seen_future = first_seen.get_future();
  std::atomic<bool> second_sent{false};
  std::atomic<bool> waited{false};
  LoopbackHttpServer* self = nullptr;
  LoopbackHttpServer server([&](LoopbackConn& c) {
    if (self->Read(c).empty()) return;
    c.Write("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            "b\r\ndata: one\n\n\r\n");
    waited = first_seen_future.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
    second_sent = true;
    c.Write("b\r\ndata: two\n\n\r\n0\r\n\r\n");
  });
  self = &server;
  RecordingSink sink;
  bool second_sent_before_first_seen = true;
  sink.on_body = [&](std::string_view piece) {
    if (piece.find("one") != std::string_view::npos) {
      second_sent_before_first_seen = second_sent.load();
      first_seen.set_value();
    }
    return true;
  };
  Status s = Client()->Send(Post(server.url()), sink);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_FALSE(second_sent_before_first_seen);
  EXPECT_TRUE(waited.load());
  EXPECT_EQ(sink.Header("transfer-encoding"), "<none>");
  EXPECT_EQ(sink.Header("content-type"), "text/event-stream");
  EXPECT_EQ(sink.body(), "data: one\n\ndata: two\n\n");  // the chunked framing removed
  EXPECT_GE(sink.pieces.size(), 2u);
}

TEST(UpstreamClient, ARedirectIsHandedBackNotFollowed) {
  LoopbackHttpServer* other_self = nullptr;
  LoopbackHttpServer other(Always(Answer("stolen"), other_self));
  other_self = &other;
  LoopbackHttpServer* self = nullptr;
  LoopbackHttpServer server(Always("HTTP/1.1 307 Temporary Redirect\r\nLocation: " + other.url("/steal") +
                                       "\r\nContent-Length: 0\r\n\r\n",
                                   self));
  self = &server;
  RecordingSink sink;
  ASSERT_TRUE(Client()->Send(Post(server.url()), sink).ok());
  EXPECT_EQ(sink.head.status, 307);
  EXPECT_EQ(sink.Header("location"), other.url("/steal"));
  EXPECT_EQ(other.connections(), 0);
}

TEST(UpstreamClient, MetadataAddressesAreRefusedBeforeConnecting) {
  auto client = Client();
  for (const std::string url : {"http://169.254.169.254/latest/meta-data?sig=query-secret",
                                "http://[::ffff:169.254.169.254]:80/x?sig=query-secret",
                                "https://[fd00:ec2::254]/x?sig=query-secret", "http://[fe80::1]:8080/?sig=query-secret"}) {
    RecordingSink sink;
    UpstreamRequest request = Post(url);
    request.timeouts.connect = milliseconds(20000);  // refused at once, not timed out
    Status s = client->Send(request, sink);
    ASSERT_FALSE(s.ok()) << url;
    EXPECT_EQ(s.error().code, ErrorCode::kUnavailable) << url;
    EXPECT_NE(s.error().message.find("refused to connect to "), std::string::npos) << s.error().message;
    EXPECT_EQ(s.error().message.find("query-secret"), std::string::npos) << s.error().message;
    EXPECT_EQ(s.error().message.find("sk-upstream-secret"), std::string::npos) << s.error().message;
    EXPECT_EQ(sink.heads, 0);
    EXPECT_EQ(sink.failures, std::vector<UpstreamFailure>{UpstreamFailure::kRefusedAddress}) << url;
  }
  RecordingSink sink;
  Status s = client->Send(Post("http://[::ffff:169.254.169.254]/"), sink);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("::ffff:169.254.169.254"), std::string::npos) << s.error().message;
}

TEST(UpstreamClient, URLsAndHeadersItWillNotSend) {
  auto client = Client();
  RecordingSink sink;
  for (const std::string url : {"ftp://127.0.0.1/x", "file:///etc/passwd", "http://user:pw@127.0.0.1/", "not a url"}) {
    Status s = client->Send(Post(url), sink);
    ASSERT_FALSE(s.ok()) << url;
    EXPECT_EQ(s.error().code, ErrorCode::kInvalidArgument) << url;
    EXPECT_EQ(s.error().message.find("pw"), std::string::npos) << s.error().message;
  }
  UpstreamRequest request = Post("http://127.0.0.1:1/");
  request.headers.push_back({"X-Injected", "secret-value\r\nX-Evil: 1"});
  Status s = client->Send(request, sink);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(s.error().message.find("X-Injected"), std::string::npos) << s.error().message;
  EXPECT_EQ(s.error().message.find("secret-value"), std::string::npos) << s.error().message;
  EXPECT_EQ(sink.failures.back(), UpstreamFailure::kInvalidRequest);
  request = Post("http://127.0.0.1:1/");
  request.headers.push_back({"Bad Name", "v"});
  EXPECT_EQ(client->Send(request, sink).error().code, ErrorCode::kInvalidArgument);
  request = Post("http://127.0.0.1:1/");
  request.method = "GET /x HTTP/1.1\r\n";
  EXPECT_EQ(client->Send(request, sink).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(sink.heads, 0);
}

TEST(UpstreamClient, AnUpstreamThatIsDownIsUnavailableWithoutTheCredential) {
  int port = 0;
  {
    LoopbackHttpServer gone([](LoopbackConn&) {});
    port = gone.port();
  }  // closed: nothing listens there now
  RecordingSink sink;
  Status s = Client()->Send(Post("http://127.0.0.1:" + std::to_string(port) + "/v1/x?k=query-secret"), sink);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(s.error().message.find("/v1/x"), std::string::npos) << s.error().message;
  EXPECT_EQ(s.error().message.find("sk-upstream-secret"), std::string::npos) << s.error().message;
  EXPECT_EQ(s.error().message.find("query-secret"), std::string::npos) << s.error().message;
  EXPECT_EQ(s.error().message.find("model"), std::string::npos) << s.error().message;  // nor the body
  EXPECT_EQ(sink.failures, std::vector<UpstreamFailure>{UpstreamFailure::kConnect});
  EXPECT_EQ(DescribeUpstreamFailure(sink.failures[0], {}), "could not connect");
}

// A listener whose accept queue is full drops the next SYN: the connection
// is never made, and the connect timeout is the one that passes.
TEST(UpstreamClient, AnUpstreamThatDoesNotAcceptHitsTheConnectTimeout) {
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(listen(listener, 0), 0);
  socklen_t len = sizeof a;
  getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len);
  const int filler = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_EQ(connect(filler, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);  // fills the queue
  RecordingSink sink;
  UpstreamRequest request = Post("http://127.0.0.1:" + std::to_string(ntohs(a.sin_port)) + "/");
  request.timeouts.connect = milliseconds(100);
  Status s = Client()->Send(request, sink);
  close(filler);
  close(listener);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kDeadlineExceeded) << s.error().message;
  EXPECT_NE(s.error().message.find("connect timeout (100 ms)"), std::string::npos) << s.error().message;
  EXPECT_EQ(sink.failures, std::vector<UpstreamFailure>{UpstreamFailure::kConnectTimeout});
  EXPECT_EQ(DescribeUpstreamFailure(sink.failures[0], request.timeouts), "the connect timeout (100 ms) passed");
}

TEST(UpstreamClient, AnUpstreamThatNeverAnswersHitsTheFirstByteTimeout) {
  LoopbackHttpServer* self = nullptr;
  LoopbackHttpServer server([&](LoopbackConn& c) {
    self->Read(c);
    c.WaitForClose();
  });
  self = &server;
  RecordingSink sink;
  UpstreamRequest request = Post(server.url());
  request.timeouts.first_byte = milliseconds(100);
  Status s = Client()->Send(request, sink);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kDeadlineExceeded);
  EXPECT_NE(s.error().message.find("first-byte timeout (100 ms)"), std::string::npos) << s.error().message;
  EXPECT_EQ(sink.heads, 0);
  EXPECT_EQ(sink.failures, std::vector<UpstreamFailure>{UpstreamFailure::kFirstByteTimeout});
}

TEST(UpstreamClient, ASilenceInTheBodyHitsTheIdleTimeoutAndTheConnectionIsClosed) {
  std::promise<void> closed;
  std::future<void> closed_future = closed.get_future();
  LoopbackHttpServer* self = nullptr;
  LoopbackHttpServer server([&](LoopbackConn& c) {
    self->Read(c);
    c.Write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n");
    c.WaitForClose();
    closed.set_value();
  });
  self = &server;
  RecordingSink sink;
  UpstreamRequest request = Post(server.url());
  request.timeouts.idle = milliseconds(100);
  Status s = Client()->Send(request, sink);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kDeadlineExceeded);
  EXPECT_NE(s.error().message.find("idle timeout (100 ms)"), std::string::npos) << s.error().message;
  EXPECT_EQ(sink.heads, 1);
  EXPECT_EQ(sink.body(), "one");
  EXPECT_EQ(closed_future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
}

// Issue 16 review, item 2: an upstream that never falls silent for an idle
// timeout but never ends either (a trickle) is stopped by the total deadline;
// one that never answers is too, before any head.
TEST(UpstreamClient, AnEndlessTrickleHitsTheTotalTimeoutAndTheConnectionIsClosed) {
  std::promise<void> closed;
  std::future<void> closed_future = closed.get_future();
  LoopbackHttpServer* self = nullptr;
  LoopbackHttpServer server([&](LoopbackConn& c) {
    self->Read(c);
    bool ok = c.Write("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
    while (ok) ok = c.Write("1\r\n.\r\n");  // until the client closes the connection
    closed.set_value();
  });
  self = &server;
  struct Counter : UpstreamSink {
    int heads = 0;
    size_t bytes = 0;
    bool OnHead(const UpstreamHead&) override { return ++heads, true; }
    bool OnBody(std::string_view piece) override { return bytes += piece.size(), true; }
  } sink;
  UpstreamRequest request = Post(server.url());
  request.timeouts.first_byte = milliseconds(60000);
  request.timeouts.idle = milliseconds(60000);
  request.timeouts.total = milliseconds(200);
  Status s = Client()->Send(request, sink);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kDeadlineExceeded);
  EXPECT_NE(s.error().message.find("total timeout (200 ms) passed; the answer was cut short"), std::string::npos)
      << s.error().message;
  EXPECT_EQ(sink.heads, 1);
  EXPECT_GT(sink.bytes, 0u);
  EXPECT_EQ(closed_future.wait_for(std::chrono::seconds(10)), std::future_status::ready);

  LoopbackHttpServer mute([&](LoopbackConn& c) { c.WaitForClose(); });
  Counter none;
  request = Post(mute.url());
  request.timeouts.first_byte = milliseconds(60000);
  request.timeouts.total = milliseconds(100);
  s = Client()->Send(request, none);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kDeadlineExceeded);
  EXPECT_NE(s.error().message.find("total timeout (100 ms) passed"), std::string::npos) << s.error().message;
  EXPECT_EQ(none.heads, 0);
}

TEST(UpstreamClient, ASinkThatStopsCancelsAndClosesTheConnection) {
  for (bool stop_at_head : {false, true}) {
    std::promise<void> closed;
    std::future<void> closed_future = closed.get_future();
    LoopbackHttpServer* self = nullptr;
    LoopbackHttpServer server([&](LoopbackConn& c) {
      self->Read(c);
      c.Write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n");
      c.WaitForClose();  // the rest is never sent: only the client's close ends this
      closed.set_value();
    });
    self = &server;
    auto client = Client();
    RecordingSink sink;
    sink.accept_head = !stop_at_head;
    sink.on_body = [](std::string_view) { return false; };
    Status s = client->Send(Post(server.url()), sink);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().code, ErrorCode::kCancelled);
    EXPECT_EQ(sink.pieces.size(), stop_at_head ? 0u : 1u);
    EXPECT_EQ(closed_future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  }
}

TEST(UpstreamClient, ConsecutiveCallsReuseOneConnectionUntilTheUpstreamClosesIt) {
  LoopbackHttpServer* self = nullptr;
  LoopbackHttpServer server([&](LoopbackConn& c) {
    for (int n = 0;; ++n) {
      if (self->Read(c).empty()) return;
      // The first connection's third answer ends it.
      const bool close = c.index() == 0 && n == 2;
      c.Write(Answer("r" + std::to_string(n), close ? "Connection: close\r\n" : ""));
      if (close) return;
    }
  });
  self = &server;
  auto client = Client();
  for (int i = 0; i < 3; ++i) {
    RecordingSink sink;
    ASSERT_TRUE(client->Send(Post(server.url()), sink).ok());
    EXPECT_EQ(sink.body(), "r" + std::to_string(i));
  }
  EXPECT_EQ(server.connections(), 1);
  RecordingSink sink;
  ASSERT_TRUE(client->Send(Post(server.url()), sink).ok());  // on a new connection
  EXPECT_EQ(sink.body(), "r0");
  EXPECT_EQ(server.connections(), 2);
}

// A kept connection idle longer than max_idle_age is closed, not used
// (here: every one is too old by the next call).
TEST(UpstreamClient, AConnectionIdleTooLongIsNotUsed) {
  LoopbackHttpServer* self = nullptr;
  LoopbackHttpServer server(Always(Answer("ok"), self));
  self = &server;
  UpstreamClientOptions options;
  options.max_idle_age = milliseconds(0);
  auto client = Client(options);
  for (int i = 0; i < 2; ++i) {
    RecordingSink sink;
    ASSERT_TRUE(client->Send(Post(server.url()), sink).ok());
    EXPECT_EQ(sink.body(), "ok");
  }
  EXPECT_EQ(server.connections(), 2);
}

// Targets are kept per URL (upstream_target.h): two base URLs on one origin
// each reach their own path over the origin's one kept connection, and a
// URL that now names another upstream (a provider's changed baseUrl) goes
// there, never to the one called before.
TEST(UpstreamClient, TwoPathsOnOneOriginAndAChangedUpstreamEachGoWhereTheirUrlSays) {
  std::mutex mu;
  std::vector<std::string> lines;  // request lines, both servers
  LoopbackHttpServer* first_self = nullptr;
  LoopbackHttpServer first([&](LoopbackConn& c) {
    for (;;) {
      std::string request = first_self->Read(c);
      if (request.empty()) return;
      {
        std::lock_guard<std::mutex> lock(mu);
        lines.push_back("first " + request.substr(0, request.find("\r\n")));
      }
      c.Write(Answer("one"));
    }
  });
  first_self = &first;
  LoopbackHttpServer* second_self = nullptr;
  LoopbackHttpServer second([&](LoopbackConn& c) {
    for (;;) {
      std::string request = second_self->Read(c);
      if (request.empty()) return;
      {
        std::lock_guard<std::mutex> lock(mu);
        lines.push_back("second " + request.substr(0, request.find("\r\n")));
      }
      c.Write(Answer("two"));
    }
  });
  second_self = &second;
  auto client = Client();
  for (int i = 0; i < 2; ++i) {
    for (const std::string path : {"/a/v1/chat/completions", "/b/v1/chat/completions"}) {
      RecordingSink sink;
      ASSERT_TRUE(client->Send(Post(first.url(path)), sink).ok());
      EXPECT_EQ(sink.body(), "one");
    }
  }
  EXPECT_EQ(first.connections(), 1);
  RecordingSink moved;
  ASSERT_TRUE(client->Send(Post(second.url("/a/v1/chat/completions")), moved).ok());
  EXPECT_EQ(moved.body(), "two");
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(lines, (std::vector<std::string>{
                       "first POST /a/v1/chat/completions HTTP/1.1", "first POST /b/v1/chat/completions HTTP/1.1",
                       "first POST /a/v1/chat/completions HTTP/1.1", "first POST /b/v1/chat/completions HTTP/1.1",
                       "second POST /a/v1/chat/completions HTTP/1.1"}));
}

// Issue 16 review round 2, item 3: a proxy named in the environment is not
// used (through it, the address checked would be the proxy's).
TEST(UpstreamClient, ProxyVariablesOfTheEnvironmentAreIgnored) {
  LoopbackHttpServer* self = nullptr;
  LoopbackHttpServer proxy(Always(Answer("via proxy"), self));
  self = &proxy;
  LoopbackHttpServer* up_self = nullptr;
  LoopbackHttpServer upstream(Always(Answer("direct"), up_self));
  up_self = &upstream;
  const std::vector<std::string> names = {"http_proxy", "https_proxy", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"};
  for (const auto& n : names) ASSERT_EQ(setenv(n.c_str(), proxy.url("").c_str(), 1), 0);
  unsetenv("no_proxy");
  unsetenv("NO_PROXY");
  auto client = Client();
  RecordingSink sink;
  Status direct = client->Send(Post(upstream.url("/v1/models")), sink);
  RecordingSink named_sink;  // a name only a proxy could reach
  Status named = client->Send(Post("http://upstream.invalid:8080/v1/models"), named_sink);
  for (const auto& n : names) unsetenv(n.c_str());
  ASSERT_TRUE(direct.ok()) << direct.error().message;
  EXPECT_EQ(sink.body(), "direct");
  ASSERT_FALSE(named.ok());
  EXPECT_EQ(named.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(proxy.requests().size(), 0u);
  EXPECT_EQ(proxy.connections(), 0);
}

// A resolver with fixed answers.
class FixedResolver final : public HostResolver {
 public:
  Result<std::vector<std::string>> Resolve(std::string_view host) override {
    if (host == "metadata.example") return std::vector<std::string>{"93.184.216.34", "169.254.169.254"};
    if (host == "upstream.example") return std::vector<std::string>{"93.184.216.34"};
    return MakeError(ErrorCode::kNotFound, "no such host");
  }
};

// GATEWAY_UPSTREAM_PROXY carries every call; the URL's host is resolved
// first and a link-local or metadata address among its answers refused.
TEST(UpstreamClient, TheConfiguredProxyCarriesTheCallAfterTheHostIsChecked) {
  LoopbackHttpServer* self = nullptr;
  LoopbackHttpServer proxy(Always(Answer("via proxy"), self));
  self = &proxy;
  ASSERT_EQ(setenv("no_proxy", "*", 1), 0);  // ignored: the configured proxy is for every call
  FixedResolver resolver;
  UpstreamClientOptions o;
  o.proxy = proxy.url("");
  o.resolver = &resolver;
  auto client = Client(o);
  RecordingSink sink;
  Status through = client->Send(Post("http://upstream.example:8080/v1/models"), sink);
  unsetenv("no_proxy");
  ASSERT_TRUE(through.ok()) << through.error().message;
  EXPECT_EQ(sink.body(), "via proxy");
  ASSERT_EQ(proxy.requests().size(), 1u);
  EXPECT_TRUE(proxy.requests()[0].starts_with("POST http://upstream.example:8080/v1/models HTTP/1.1\r\n"))
      << proxy.requests()[0];
  for (const char* url : {"http://169.254.169.254/latest", "http://[fd00:ec2::254]/x", "http://metadata.example/v1",
                          "http://unknown.example/v1"}) {
    RecordingSink refused_sink;
    Status refused = client->Send(Post(url), refused_sink);
    ASSERT_FALSE(refused.ok()) << url;
    EXPECT_EQ(refused.error().code, ErrorCode::kUnavailable) << url;
    EXPECT_EQ(refused_sink.heads, 0);
    EXPECT_EQ(refused_sink.failures.size(), 1u) << url;
  }
  EXPECT_EQ(proxy.requests().size(), 1u);  // none of those reached the proxy
  RecordingSink refused_sink;
  Status refused = client->Send(Post("http://metadata.example/v1"), refused_sink);
  EXPECT_NE(refused.error().message.find("refused to connect to 169.254.169.254"), std::string::npos)
      << refused.error().message;
}

// The hang-up tests' two ways: `server` called itself, or as the proxy
// (the URL's host then resolved by `resolver`).
UpstreamClientOptions ProxyIf(bool through_proxy, LoopbackHttpServer& server, HostResolver& resolver) {
  UpstreamClientOptions o;
  if (through_proxy) {
    o.proxy = server.url("");
    o.resolver = &resolver;
  }
  return o;
}
std::string UrlVia(bool through_proxy, LoopbackHttpServer& server) {
  return through_proxy ? "http://upstream.example:8080/v1/chat" : server.url();
}
// One call to a server that gives `answer` to every request, straight or
// through the proxy.
Status SendToOneThatAnswers(const std::string& answer, bool through_proxy, RecordingSink& sink) {
  LoopbackHttpServer* self = nullptr;
  LoopbackHttpServer server(Always(answer, self));
  self = &server;
  FixedResolver resolver;
  auto client = Client(ProxyIf(through_proxy, server, resolver));
  return client->Send(Post(UrlVia(through_proxy, server)), sink);
}

// Heads no answer may have, a bad answer whether our parser reads them or
// curl's (through the proxy), never relayed: a status outside 100 to 599
// is no HTTP status (RFC 9110 §15; curl takes any three digits;
// helper-155); a transfer coding before chunked would reach the client
// still applied (gzip bytes taken for the body, nothing saying so), and we
// send no TE, so none was asked for (helper-154); nor may curl's head be
// read otherwise than curl reads it (helper-157): a status line inside a
// head, a name with a space before its colon, both framings, a control
// character in a value, a 101 we did not ask for.
TEST(UpstreamClient, AMalformedHeadIsABadAnswerEitherWay) {
  for (const char* answer : {
           "HTTP/1.1 999 Odd\r\nContent-Length: 2\r\n\r\n{}",
           "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
           // A line that looks like a status line inside a head is a header to
           // curl: it must not start a new head here (helper-157).
           "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nHTTP/1.1: 200 OK\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
           "HTTP/1.1 999 Odd\r\nContent-Length: 2\r\nHTTP/x: 200\r\n\r\n{}",
           "HTTP/1.1 200 OK\r\nTransfer-Encoding : gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
           "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
           "HTTP/1.1 200 OK\r\nConnection: keep-alive,\x0bX-Foo\r\nX-Foo: bar\r\nContent-Length: 2\r\n\r\n{}",
           "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
           "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
           // curl skips only spaces and tabs before a coding: "\vchunked" is no
           // chunked to it (helper-158)
           "HTTP/1.1 200 OK\r\nTransfer-Encoding: \x0b" "chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
           "HTTP/1.1 200 OK\r\nTransfer-Encoding:\r chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
           // a bad final head after interim ones
           "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
           "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"}) {
    for (bool through_proxy : {false, true}) {
      SCOPED_TRACE(std::string(answer) + (through_proxy ? ", through the proxy" : ", own exchange"));
      RecordingSink sink;
      Status sent = SendToOneThatAnswers(answer, through_proxy, sink);
      ASSERT_FALSE(sent.ok());
      EXPECT_EQ(sent.error().code, ErrorCode::kUnavailable);
      EXPECT_EQ(sink.heads, 0);
      ASSERT_EQ(sink.failures.size(), 1u);
      EXPECT_EQ(sink.failures[0], UpstreamFailure::kBadAnswer);
    }
  }
}

// An obsolete folded line: Beast unfolds it on our own exchange, curl does
// not (its Transfer-Encoding here would be empty, the chunks relayed as the
// body): through the proxy, a bad answer (RFC 9112 §5.2 lets a gateway
// refuse it; helper-157).
TEST(UpstreamClient, AFoldedHeaderLineThroughTheProxyIsABadAnswer) {
  RecordingSink sink;
  Status sent = SendToOneThatAnswers(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", true, sink);
  ASSERT_FALSE(sent.ok());
  EXPECT_NE(sent.error().message.find("folded"), std::string::npos) << sent.error().message;
  EXPECT_EQ(sink.heads, 0);
  EXPECT_EQ(sink.failures, std::vector<UpstreamFailure>{UpstreamFailure::kBadAnswer});
}

// A hang-up of the caller's client (request.hang_up_fd) stops a call whose
// answer has not come, at once (the first-byte timeout is 30 s), and closes
// its upstream connection; bytes from the client alone (a pipelined
// request) are not a hang-up. Both ways: our own exchange and curl's through
// the proxy.
TEST(UpstreamClient, TheCallersClientHangingUpStopsTheWaitAndClosesTheConnection) {
  for (const bool through_proxy : {false, true}) {
    SCOPED_TRACE(through_proxy ? "through the proxy" : "own exchange");
    std::promise<void> requested, closed;
    std::future<void> requested_future = requested.get_future(), closed_future = closed.get_future();
    LoopbackHttpServer* self = nullptr;
    LoopbackHttpServer server([&](LoopbackConn& c) {
      self->Read(c);
      c.Write("HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n");  // an interim head keeps the watch
      requested.set_value();
      c.WaitForClose();
      closed.set_value();
    });
    self = &server;
    int client[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, client), 0);
    const std::string pipelined = "GET /next HTTP/1.1\r\n\r\n";
    ASSERT_EQ(write(client[1], pipelined.data(), pipelined.size()), static_cast<ssize_t>(pipelined.size()));
    FixedResolver resolver;
    const UpstreamClientOptions o = ProxyIf(through_proxy, server, resolver);
    auto upstream = Client(o);
    UpstreamRequest request = Post(UrlVia(through_proxy, server));
    request.timeouts.first_byte = std::chrono::seconds(30);
    request.hang_up_fd = client[0];
    RecordingSink sink;
    auto call = std::async(std::launch::async, [&] { return upstream->Send(request, sink); });
    ASSERT_EQ(requested_future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
    // The pipelined bytes did not stop it (a call that stopped would be back well within this).
    EXPECT_EQ(call.wait_for(milliseconds(200)), std::future_status::timeout);
    close(client[1]);
    ASSERT_EQ(call.wait_for(std::chrono::seconds(10)), std::future_status::ready) << "it went on after the hang-up";
    Status s = call.get();
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().code, ErrorCode::kCancelled) << s.error().message;
    EXPECT_NE(s.error().message.find("the client hung up"), std::string::npos) << s.error().message;
    EXPECT_EQ(s.error().message.find("sk-upstream-secret"), std::string::npos);
    EXPECT_EQ(sink.heads, 0);
    EXPECT_EQ(closed_future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
    close(client[0]);
  }
}

// What one read brought is flushed before the call waits for more (a sink
// that holds pieces sends them then): the upstream sends its second piece
// only once the first was flushed. Both ways.
TEST(UpstreamClient, EachReadIsFlushedBeforeTheCallWaitsForMore) {
  for (const bool through_proxy : {false, true}) {
    SCOPED_TRACE(through_proxy ? "through the proxy" : "own exchange");
    std::promise<void> first_flushed;
    std::future<void> first_flushed_future = first_flushed.get_future();
    std::atomic<bool> waited{false};
    LoopbackHttpServer* self = nullptr;
    LoopbackHttpServer server([&](LoopbackConn& c) {
      if (self->Read(c).empty()) return;
      c.Write("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
              "b\r\ndata: one\n\n\r\n");
      waited = first_flushed_future.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
      c.Write("b\r\ndata: two\n\n\r\n0\r\n\r\n");
    });
    self = &server;
    FixedResolver resolver;
    RecordingSink sink;
    bool signalled = false;
    sink.on_flush = [&] {
      if (!signalled && sink.body() == "data: one\n\n") first_flushed.set_value();
      signalled |= sink.body() == "data: one\n\n";
    };
    Status s = Client(ProxyIf(through_proxy, server, resolver))->Send(Post(UrlVia(through_proxy, server)), sink);
    ASSERT_TRUE(s.ok()) << s.error().message;
    EXPECT_TRUE(waited.load()) << "the first piece was not flushed before the call waited";
    EXPECT_EQ(sink.body(), "data: one\n\ndata: two\n\n");
    EXPECT_EQ(sink.flushes.back(), "data: one\n\ndata: two\n\n<last>");
  }
}

// The answer's end is flushed as the last, however its body is delimited
// (a sink that holds ends its own answer with it), both ways.
TEST(UpstreamClient, TheAnswersEndIsFlushedAsTheLast) {
  const std::vector<std::string> answers = {
      "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n",
      "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody",  // to the close
  };
  for (const bool through_proxy : {false, true}) {
    for (const std::string& answer : answers) {
      SCOPED_TRACE(std::string(through_proxy ? "through the proxy: " : "own exchange: ") + answer);
      LoopbackHttpServer* self = nullptr;
      LoopbackHttpServer server([&](LoopbackConn& c) {
        if (self->Read(c).empty()) return;
        c.Write(answer);  // and the connection closes
      });
      self = &server;
      FixedResolver resolver;
      RecordingSink sink;
      Status s = Client(ProxyIf(through_proxy, server, resolver))->Send(Post(UrlVia(through_proxy, server)), sink);
      ASSERT_TRUE(s.ok()) << s.error().message;
      ASSERT_FALSE(sink.flushes.empty());
      EXPECT_EQ(sink.flushes.back(), "body<last>");
      EXPECT_EQ(std::count_if(sink.flushes.begin(), sink.flushes.end(),
                              [](const std::string& f) { return f.ends_with("<last>"); }),
                1);
    }
  }
}

// A sink that stopped the answer is not asked to flush, and the call says
// it was cancelled (not that the transfer failed), both ways.
TEST(UpstreamClient, ASinkThatStopsIsNotFlushedAndTheCallIsCancelled) {
  for (const bool through_proxy : {false, true}) {
    SCOPED_TRACE(through_proxy ? "through the proxy" : "own exchange");
    LoopbackHttpServer* self = nullptr;
    LoopbackHttpServer server([&](LoopbackConn& c) {
      if (self->Read(c).empty()) return;
      c.Write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n");
      c.WaitForClose();
    });
    self = &server;
    FixedResolver resolver;
    RecordingSink sink;
    sink.on_body = [](std::string_view) { return false; };
    Status s = Client(ProxyIf(through_proxy, server, resolver))->Send(Post(UrlVia(through_proxy, server)), sink);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().code, ErrorCode::kCancelled) << s.error().message;
    EXPECT_EQ(sink.body(), "one");
    EXPECT_TRUE(sink.flushes.empty()) << sink.flushes.front();
  }
}

// A client gone before the call (it gave up while the call waited for a
// thread): no request goes out for it, either way.
TEST(UpstreamClient, AClientGoneBeforeTheCallSendsNothingUpstream) {
  for (const bool through_proxy : {false, true}) {
    SCOPED_TRACE(through_proxy ? "through the proxy" : "own exchange");
    LoopbackHttpServer* self = nullptr;
    LoopbackHttpServer server(Always(Answer("ok"), self));
    self = &server;
    int client[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, client), 0);
    close(client[1]);
    FixedResolver resolver;
    const UpstreamClientOptions o = ProxyIf(through_proxy, server, resolver);
    UpstreamRequest request = Post(UrlVia(through_proxy, server));
    request.hang_up_fd = client[0];
    RecordingSink sink;
    Status s = Client(o)->Send(request, sink);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().code, ErrorCode::kCancelled) << s.error().message;
    EXPECT_TRUE(server.requests().empty());
    close(client[0]);
  }
}

// Once the answer began, the client's hang-up is not watched (the sink's
// writes find a client gone mid-answer): one that closes at an event
// stream's [DONE], as the OpenAI SDK does, leaves the answer to end and its
// connection kept.
TEST(UpstreamClient, AHangUpAfterTheAnswerBeganLetsItEndAndKeepsTheConnection) {
  for (const bool through_proxy : {false, true}) {
    SCOPED_TRACE(through_proxy ? "through the proxy" : "own exchange");
    std::promise<void> hung_up;
    std::shared_future<void> hung_up_future = hung_up.get_future().share();
    std::atomic<int> connections{0};
    LoopbackHttpServer* self = nullptr;
    LoopbackHttpServer server([&](LoopbackConn& c) {
      ++connections;
      if (self->Read(c).empty()) return;
      c.Write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n[DONE]\r\n");
      hung_up_future.wait();
      c.Write("0\r\n\r\n");
      while (!self->Read(c).empty()) c.Write(Answer("again"));
    });
    self = &server;
    int client[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, client), 0);
    FixedResolver resolver;
    const UpstreamClientOptions o = ProxyIf(through_proxy, server, resolver);
    auto upstream = Client(o);
    const std::string url = UrlVia(through_proxy, server);
    UpstreamRequest request = Post(url);
    request.hang_up_fd = client[0];
    RecordingSink sink;
    sink.on_body = [&](std::string_view) {
      close(client[1]);  // the client read [DONE] and left
      hung_up.set_value();
      return true;
    };
    Status s = upstream->Send(request, sink);
    ASSERT_TRUE(s.ok()) << s.error().message;
    EXPECT_EQ(sink.body(), "[DONE]");
    auto again = BodyOf(*upstream, url);
    ASSERT_TRUE(again.ok()) << again.error().message;
    EXPECT_EQ(*again, "again");
    EXPECT_EQ(connections.load(), 1);  // kept
    close(client[0]);
  }
}

TEST(UpstreamClient, AProxyUrlThatIsNotOneIsRefusedWithoutQuotingIt) {
  for (const char* bad : {"proxy.example:3128", "ftp://proxy.example", "http://", "http://u:hunter2@p.example/path",
                          "http://p.example:3128/?x=1", "http://p .example", "http://u:hunter2@p.example:3128/#f",
                          "file:///etc/passwd", "http://p.example:99999"}) {
    UpstreamClientOptions o;
    o.proxy = bad;
    auto c = NewUpstreamClient(o);
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_EQ(c.error().code, ErrorCode::kInvalidArgument);
    EXPECT_EQ(c.error().message.rfind("GATEWAY_UPSTREAM_PROXY: ", 0), 0u) << c.error().message;
    EXPECT_EQ(c.error().message.find("hunter2"), std::string::npos) << c.error().message;
  }
  for (const char* good : {"http://proxy.example:3128", "https://u:p@proxy.example", "socks5h://127.0.0.1:1080/",
                           "HTTP://[::1]:8080"}) {
    UpstreamClientOptions o;
    o.proxy = good;
    EXPECT_TRUE(NewUpstreamClient(o).ok()) << good;
  }
}

TEST(UpstreamClient, HttpsWithAPrivateCaAndRefusedWithAnother) {
  const LoopbackTls tls = MakeLoopbackTls("upstream_ok");
  ASSERT_TRUE(tls.ctx);
  TlsFiles stranger = MakeCertAndKey("upstream_stranger");
  LoopbackHttpServer* self = nullptr;
  LoopbackHttpServer server(Always(Answer("secure"), self), tls.ctx.get());
  self = &server;
  auto client = Client(UpstreamClientOptions{tls.ca_file});
  for (int i = 0; i < 2; ++i) {
    RecordingSink sink;
    Status s = client->Send(Post(server.url("/v1/models")), sink);
    ASSERT_TRUE(s.ok()) << s.error().message;
    EXPECT_EQ(sink.body(), "secure");
  }
  EXPECT_EQ(server.connections(), 1);  // TLS kept alive too

  for (auto options : {UpstreamClientOptions{stranger.cert_file}, UpstreamClientOptions{}}) {
    RecordingSink sink;
    Status s = Client(options)->Send(Post(server.url("/v1/models")), sink);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().code, ErrorCode::kUnavailable);
    EXPECT_NE(s.error().message.find("certificate"), std::string::npos) << s.error().message;
    EXPECT_EQ(sink.heads, 0);
    EXPECT_EQ(sink.failures, std::vector<UpstreamFailure>{UpstreamFailure::kTls});
  }
  EXPECT_EQ(server.requests().size(), 2u);
  auto missing = NewUpstreamClient(UpstreamClientOptions{"/nonexistent/ca.pem"});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("GATEWAY_UPSTREAM_CA_FILE"), std::string::npos);
}

TEST(UpstreamClient, EightThreadsAtOnceEachGetTheirOwnAnswer) {
  LoopbackHttpServer* self = nullptr;
  LoopbackHttpServer server([&](LoopbackConn& c) {
    for (;;) {
      const std::string request = self->Read(c);
      if (request.empty()) return;
      const std::string body = request.substr(request.find("\r\n\r\n") + 4);
      c.Write(Answer("echo:" + body));
    }
  });
  self = &server;
  auto client = Client();
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        const std::string body = "t" + std::to_string(t) + "-" + std::to_string(i);
        RecordingSink sink;
        if (client->Send(Post(server.url(), body), sink).ok() && sink.body() == "echo:" + body) good.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(good.load(), 8 * 25);
  EXPECT_LE(server.connections(), 8);  // at most one per call at a time, each kept
}

// Hostile upstreams: each call ends in an error; nothing crashes, nothing
// of the answer's bytes is trusted as a head.
TEST(UpstreamClient, GarbageHugeHeadsAndCutBodiesAreErrors) {
  const std::string huge_value(200 * 1024, 'a');
  std::string many_headers;
  for (int i = 0; i < 2000; ++i) many_headers += "X-H" + std::to_string(i) + ": " + std::string(40, 'b') + "\r\n";
  struct Case {
    std::string answer;
    bool head_expected;
    UpstreamFailure kind;  // a close before the end is a lost connection, anything else a bad answer
  };
  constexpr UpstreamFailure kBad = UpstreamFailure::kBadAnswer, kLost = UpstreamFailure::kConnectionLost;
  const std::vector<Case> cases = {
      {"hello, this is not http\r\n\r\n", false, kBad},
      {"HTTP/1.1 OK\r\n\r\n", false, kBad},
      {std::string("\x16\x03\x01\x00\x05garbage", 12), false, kBad},  // a TLS record, its NUL included
      {"HTTP/1.1 200 OK\r\nX-Big: " + huge_value + "\r\nContent-Length: 0\r\n\r\n", false, kBad},
      {"HTTP/1.1 200 OK\r\n" + many_headers + "Content-Length: 0\r\n\r\n", false, kBad},
      {"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b", true, kLost},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", true, kLost},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", true, kBad},
      {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello", true, kBad},
      {"", false, kLost},
  };
  auto client = Client();
  for (const auto& c : cases) {
    LoopbackHttpServer* self = nullptr;
    LoopbackHttpServer server([&](LoopbackConn& conn) {
      self->Read(conn);
      conn.Write(c.answer);
    });  // the script returns: the connection is closed
    self = &server;
    RecordingSink sink;
    Status s = client->Send(Post(server.url()), sink);
    const std::string shown = c.answer.substr(0, 40);
    ASSERT_FALSE(s.ok()) << shown;
    EXPECT_EQ(s.error().code, ErrorCode::kUnavailable) << shown << ": " << s.error().message;
    EXPECT_LE(sink.heads, 1) << shown;
    if (!c.head_expected) {
      EXPECT_EQ(sink.heads, 0) << shown;
    }
    ASSERT_EQ(sink.failures.size(), 1u) << shown;
    EXPECT_EQ(sink.failures[0], c.kind) << shown << ": " << s.error().message;
    EXPECT_EQ(s.error().message.find("sk-upstream-secret"), std::string::npos) << s.error().message;
  }
}

// Our own exchange (no proxy configured): what curl did for us before.

// A chunked event stream whose chunks are cut anywhere (a chunk's size line,
// its data, its CRLF each in a write of its own): each decoded piece reaches
// the sink as it arrives, the framing never does.
TEST(UpstreamClient, ChunksCutAnywhereArriveAsTheirDecodedPieces) {
  const std::vector<std::string> writes = {
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n1",
      "0\r\ndata: abcdefgh\n\n\r", "\nb\r\ndata: d", "ef\n\n\r\n", "0\r\n\r\n"};
  std::vector<std::promise<void>> seen(writes.size());
  std::vector<std::future<void>> seen_future;
  for (auto& p : seen) seen_future.push_back(p.get_future());
  LoopbackHttpServer* self = nullptr;
  std::atomic<bool> all_waited{true};
  LoopbackHttpServer server([&](LoopbackConn& c) {
    if (self->Read(c).empty()) return;
    for (size_t i = 0; i < writes.size(); ++i) {
      c.Write(writes[i]);
      // Pieces 1..3 carry body bytes: the next write waits for the sink to have them.
      if (i >= 1 && i <= 3) {
        all_waited = all_waited && seen_future[i].wait_for(std::chrono::seconds(10)) == std::future_status::ready;
      }
    }
  });
  self = &server;
  RecordingSink sink;
  size_t next = 1;
  sink.on_body = [&](std::string_view) {
    if (next <= 3) seen[next++].set_value();
    return true;
  };
  Status s = Client()->Send(Post(server.url()), sink);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_TRUE(all_waited.load());
  EXPECT_EQ(sink.pieces, (std::vector<std::string>{"data: abcdefgh\n\n", "data: d", "ef\n\n"}));
  EXPECT_EQ(sink.Header("transfer-encoding"), "<none>");
}

// The upstream ends a kept connection while it is idle: the next call finds
// it closed (the probe) or fails to use it before any byte (the resend), and
// either way succeeds on a new connection, the request read once.
TEST(UpstreamClient, AKeptConnectionTheUpstreamClosedIsRetiredAndTheCallMadeOnANewOne) {
  LoopbackHttpServer* self = nullptr;
  LoopbackHttpServer server([&](LoopbackConn& c) {
    if (self->Read(c).empty()) return;
    c.Write(Answer("c" + std::to_string(c.index())));  // keep-alive by the answer, then closed
  });
  self = &server;
  auto client = Client();
  RecordingSink first;
  ASSERT_TRUE(client->Send(Post(server.url()), first).ok());
  EXPECT_EQ(first.body(), "c0");
  ASSERT_TRUE(ServerClosed(server, 1));
  RecordingSink second;
  Status s = client->Send(Post(server.url()), second);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(second.body(), "c1");
  EXPECT_EQ(server.connections(), 2);
  EXPECT_EQ(server.requests().size(), 2u);
}

// Bytes that arrive on an idle kept connection (an upstream that answered
// twice, or talks out of turn) retire it: the next call is not answered by them.
TEST(UpstreamClient, StrayBytesOnAnIdleConnectionRetireIt) {
  std::promise<void> first_done;
  std::future<void> first_done_future = first_done.get_future();
  std::promise<void> stray_sent;
  std::future<void> stray_sent_future = stray_sent.get_future();
  LoopbackHttpServer* self = nullptr;
  LoopbackHttpServer server([&](LoopbackConn& c) {
    if (c.index() == 0) {
      if (self->Read(c).empty()) return;
      c.Write(Answer("first"));
      first_done_future.wait_for(std::chrono::seconds(10));
      c.Write(Answer("stray"));
      stray_sent.set_value();
      c.WaitForClose();
      return;
    }
    while (!self->Read(c).empty()) c.Write(Answer("fresh"));
  });
  self = &server;
  auto client = Client();
  RecordingSink first;
  ASSERT_TRUE(client->Send(Post(server.url()), first).ok());
  first_done.set_value();
  ASSERT_EQ(stray_sent_future.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  ExpectAnsweredOnANewConnection(BodyOf(*client, server.url()), server, "fresh");
}

// Bytes behind an answer, sent with it: the answer is handed on, the
// connection is not kept (nothing on it can be trusted).
TEST(UpstreamClient, BytesBehindTheAnswerMeanTheConnectionIsNotKept) {
  LoopbackHttpServer* self = nullptr;
  LoopbackHttpServer server(Always(Answer("one") + Answer("extra"), self));
  self = &server;
  auto client = Client();
  for (int i = 0; i < 2; ++i) {
    RecordingSink sink;
    Status s = client->Send(Post(server.url()), sink);
    ASSERT_TRUE(s.ok()) << s.error().message;
    EXPECT_EQ(sink.body(), "one");
  }
  EXPECT_EQ(server.connections(), 2);
}

// A second answer in the same TLS record as the end of the first, the read
// ending exactly at the first's end: the rest waits decrypted inside
// OpenSSL, the socket is quiet. The connection is not reused: the next call
// goes on a new one and gets its own answer, not the stale one.
TEST(UpstreamClient, BytesBehindTheAnswerInsideATlsRecordMeanTheConnectionIsNotKept) {
  const LoopbackTls tls = MakeLoopbackTls("upstream_trailing");
  ASSERT_TRUE(tls.ctx);
  // The client reads into 16 KiB: a first record of 10000 bytes (a head cut
  // short inside its last field: the lines before it are parsed, the field
  // is kept), then a read of the room left, which ends where the answer
  // ends, inside the second record.
  const std::string whole_lines = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n";
  const std::string first_part = whole_lines + "X-Pad: " + std::string(10000 - whole_lines.size() - 7, 'p');
  const size_t room = 16384 - (first_part.size() - whole_lines.size());
  const std::string second_part = std::string(room - 6, 'q') + "\r\n\r\nok";
  LoopbackHttpServer* self = nullptr;
  LoopbackHttpServer server(
      [&](LoopbackConn& c) {
        if (c.index() == 0) {
          if (self->Read(c).empty()) return;
          c.Write(first_part);
          c.Write(second_part + Answer("stale"));  // one record: the answer's end and another answer
          while (!self->Read(c).empty()) c.Write(Answer("kept"));
          return;
        }
        while (!self->Read(c).empty()) c.Write(Answer("fresh"));
      },
      tls.ctx.get());
  self = &server;
  auto client = Client(UpstreamClientOptions{tls.ca_file});
  RecordingSink first;
  Status s = client->Send(Post(server.url()), first);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(first.body(), "ok");
  ExpectAnsweredOnANewConnection(BodyOf(*client, server.url()), server, "fresh");
}

// Buffers freed through the wiping allocator while a test watches: whether
// one the size of a request was, and whether any still held a byte.
std::atomic<size_t> g_largest_wiped_free{0};
std::atomic<bool> g_unwiped_free{false};
void RecordWipedFree(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) g_unwiped_free = g_unwiped_free || p[i] != 0;
  size_t seen = g_largest_wiped_free.load();
  while (n > seen && !g_largest_wiped_free.compare_exchange_weak(seen, n)) {
  }
}

// A sink that throws (the gateway's allocates): the exception reaches the
// caller, the request's buffer (it holds the credential) is wiped as it is
// freed with its entry, and the client goes on, on a new connection.
TEST(UpstreamClient, ASinkThatThrowsLeavesTheRequestBufferWipedAndTheClientUsable) {
  LoopbackHttpServer* self = nullptr;
  LoopbackHttpServer server(Always(Answer("body"), self));
  self = &server;
  auto client = Client();
  struct Throwing : UpstreamSink {
    bool OnHead(const UpstreamHead&) override { return true; }
    bool OnBody(std::string_view) override { throw std::runtime_error("out of memory, say"); }
  } throwing;
  UpstreamRequest request = Post(server.url());
  request.headers.emplace_back("X-Pad", std::string(2000, 'x'));  // a request larger than any other buffer here
  g_largest_wiped_free = 0;
  g_unwiped_free = false;
  SetSecretFreeObserverForTesting(&RecordWipedFree);
  EXPECT_THROW(static_cast<void>(client->Send(request, throwing)), std::runtime_error);
  SetSecretFreeObserverForTesting(nullptr);
  EXPECT_GE(g_largest_wiped_free.load(), server.requests().at(0).size());
  EXPECT_FALSE(g_unwiped_free.load());
  RecordingSink sink;
  Status s = client->Send(Post(server.url()), sink);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(sink.body(), "body");
  EXPECT_EQ(server.connections(), 2);  // the thrown-through entry's connection was not pooled
}

// The upstream reads the request on a kept connection and closes without a
// byte of answer: sent once more on a new connection (a POST too, as curl
// did). On a new connection the same is an error: never sent twice.
TEST(UpstreamClient, APostIsResentOnceOnlyWhenAKeptConnectionClosedBeforeAnyByte) {
  LoopbackHttpServer* self = nullptr;
  LoopbackHttpServer server([&](LoopbackConn& c) {
    if (self->Read(c).empty()) return;
    if (c.index() != 0) return;  // a new connection's request: closed unanswered
    c.Write(Answer("kept"));
    self->Read(c);  // the second request on the kept connection: closed unanswered
  });
  self = &server;
  auto client = Client();
  RecordingSink first;
  ASSERT_TRUE(client->Send(Post(server.url()), first).ok());
  RecordingSink second;
  Status s = client->Send(Post(server.url()), second);
  ASSERT_FALSE(s.ok());  // resent once on connection 1, which closes unanswered too
  EXPECT_EQ(s.error().code, ErrorCode::kUnavailable) << s.error().message;
  EXPECT_EQ(second.heads, 0);
  EXPECT_EQ(server.connections(), 2);
  EXPECT_EQ(server.requests().size(), 3u);  // once on the kept connection, once on the new one
  EXPECT_EQ(s.error().message.find("sk-upstream-secret"), std::string::npos) << s.error().message;

  RecordingSink third;
  s = client->Send(Post(server.url()), third);  // on a new connection: not resent
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(server.connections(), 3);
  EXPECT_EQ(server.requests().size(), 4u);
}

TEST(UpstreamClient, AResentRequestIsAnsweredOnTheNewConnection) {
  LoopbackHttpServer* self = nullptr;
  LoopbackHttpServer server([&](LoopbackConn& c) {
    if (self->Read(c).empty()) return;
    c.Write(Answer("on " + std::to_string(c.index())));
    if (c.index() == 0) {
      self->Read(c);  // the second request: read, then closed unanswered
      return;
    }
    while (!self->Read(c).empty()) c.Write(Answer("again"));
  });
  self = &server;
  auto client = Client();
  RecordingSink first, second;
  ASSERT_TRUE(client->Send(Post(server.url()), first).ok());
  Status s = client->Send(Post(server.url(), "{\"n\":2}"), second);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(second.body(), "on 1");
  const auto seen = server.requests();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_TRUE(seen[1].ends_with("{\"n\":2}")) << seen[1];
  EXPECT_EQ(seen[1], seen[2]);  // the same request, whole, on the new connection
}

// The head's limit: 64 KiB. Just under it is an answer; just over is an
// error naming the limit, and the sink never hears the head.
TEST(UpstreamClient, AHeadOver64KiBIsRefusedAndOneUnderItIsNot) {
  auto head_of = [](size_t bytes) {
    std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n";
    while (head.size() + 4 < bytes) {
      head += "X-F: " + std::string(std::min<size_t>(1000, bytes - head.size() - 4 - 7), 'f') + "\r\n";
    }
    return head + "\r\n";
  };
  for (size_t bytes : {size_t{60 * 1024}, size_t{70 * 1024}}) {
    const std::string answer = head_of(bytes) + "ok";
    LoopbackHttpServer* self = nullptr;
    LoopbackHttpServer server(Always(answer, self));
    self = &server;
    RecordingSink sink;
    Status s = Client()->Send(Post(server.url()), sink);
    if (bytes < 64 * 1024) {
      ASSERT_TRUE(s.ok()) << s.error().message;
      EXPECT_EQ(sink.body(), "ok");
    } else {
      ASSERT_FALSE(s.ok());
      EXPECT_EQ(s.error().code, ErrorCode::kUnavailable);
      EXPECT_NE(s.error().message.find("is larger than 65536 bytes"), std::string::npos) << s.error().message;
      EXPECT_EQ(sink.heads, 0);
    }
  }
}

// Several 1xx heads, each in a write of its own, before the final one: only
// the final head reaches the sink, with none of the interim fields.
TEST(UpstreamClient, InterimHeadsInWritesOfTheirOwnAreSkipped) {
  for (bool through_proxy : {false, true}) {  // curl's head too: each head starts with its status line
    SCOPED_TRACE(through_proxy ? "through the proxy" : "own exchange");
    LoopbackHttpServer* self = nullptr;
    LoopbackHttpServer server([&](LoopbackConn& c) {
      while (!self->Read(c).empty()) {
        c.Write("HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n");
        c.Write("HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n");
        c.Write(Answer("final", "X-Final: 1\r\n"));
      }
    });
    self = &server;
    FixedResolver resolver;
    auto client = Client(ProxyIf(through_proxy, server, resolver));
    for (int i = 0; i < 2; ++i) {  // and the connection is kept after them
      RecordingSink sink;
      Status s = client->Send(Post(UrlVia(through_proxy, server)), sink);
      ASSERT_TRUE(s.ok()) << s.error().message;
      EXPECT_EQ(sink.heads, 1);
      EXPECT_EQ(sink.head.status, 200);
      EXPECT_EQ(sink.Header("x-interim"), "<none>");
      EXPECT_EQ(sink.Header("link"), "<none>");
      EXPECT_EQ(sink.Header("x-final"), "1");
      EXPECT_EQ(sink.body(), "final");
    }
    if (!through_proxy) EXPECT_EQ(server.connections(), 1);
  }
}

// An answer without a length is read to the close (HTTP/1.1 and 1.0): whole,
// and its connection is not kept.
TEST(UpstreamClient, ABodyReadToTheCloseIsWholeAndItsConnectionNotKept) {
  for (const std::string version : {"HTTP/1.1", "HTTP/1.0"}) {
    LoopbackHttpServer* self = nullptr;
    LoopbackHttpServer server([&](LoopbackConn& c) {
      if (self->Read(c).empty()) return;
      c.Write(version + " 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ");
      c.Write("the end");
    });
    self = &server;
    auto client = Client();
    for (int i = 0; i < 2; ++i) {
      RecordingSink sink;
      Status s = client->Send(Post(server.url()), sink);
      ASSERT_TRUE(s.ok()) << version << ": " << s.error().message;
      EXPECT_EQ(sink.body(), "until the end") << version;
    }
    EXPECT_EQ(server.connections(), 2) << version;
  }
}

// A stream the sink stopped does not leave its connection for the next call.
TEST(UpstreamClient, ACancelledStreamDoesNotPoolItsConnection) {
  LoopbackHttpServer* self = nullptr;
  LoopbackHttpServer server([&](LoopbackConn& c) {
    while (!self->Read(c).empty()) {
      if (!c.Write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n")) return;
    }
  });
  self = &server;
  auto client = Client();
  RecordingSink stopper;
  stopper.on_body = [](std::string_view) { return false; };
  Status s = client->Send(Post(server.url()), stopper);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ErrorCode::kCancelled);
  EXPECT_EQ(stopper.body(), "one");
  RecordingSink next;
  s = client->Send(Post(server.url()), next);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(next.body(), "onetwo");  // a whole answer of its own, not the rest of the first
  EXPECT_EQ(server.connections(), 2);
}

// The query goes into the request line as the URL has it; one that could
// end or split the line is refused, never sent.
TEST(UpstreamClient, TheQueryIsSentAsWrittenAndOneWithSpacesOrBreaksRefused) {
  LoopbackHttpServer* self = nullptr;
  LoopbackHttpServer server(Always(Answer("q"), self));
  self = &server;
  auto client = Client();
  for (const std::string& url : {server.url("/v1/models?api-version=2024-10-21&x=%20y#frag"),
                                server.url("/v1/models?"), "http://127.0.0.1:" + std::to_string(server.port())}) {
    RecordingSink sink;
    ASSERT_TRUE(client->Send(Post(url), sink).ok()) << url;
  }
  RecordingSink sink;
  for (const std::string& bad : std::vector<std::string>{"/v1?a b", "/v1?a\r\nX-Evil: 1", "/v1?a\tb", std::string("/v1?a\0b", 7)}) {
    Status s = client->Send(Post(server.url(bad)), sink);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().code, ErrorCode::kInvalidArgument) << s.error().message;
  }
  const auto seen = server.requests();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_TRUE(seen[0].starts_with("POST /v1/models?api-version=2024-10-21&x=%20y HTTP/1.1\r\n")) << seen[0];
  EXPECT_TRUE(seen[1].starts_with("POST /v1/models HTTP/1.1\r\n")) << seen[1];
  EXPECT_TRUE(seen[2].starts_with("POST / HTTP/1.1\r\n")) << seen[2];
}

// The client's own headers are dropped however the caller spells them; a
// header that only starts like one of them is the caller's and is sent.
TEST(UpstreamClient, TheClientsHeadersAreDroppedInAnySpellingAndLookAlikesKept) {
  LoopbackHttpServer* self = nullptr;
  LoopbackHttpServer server(Always(Answer("h"), self));
  self = &server;
  UpstreamRequest request = Post(server.url());
  request.headers = {{"CONTENT-LENGTH", "5"},
                     {"tRaNsFeR-EnCoDiNg", "chunked"},
                     {"HOST", "evil.example"},
                     {"Expect", "100-continue"},
                     {"Proxy-Authorization-With-A-Long-Name", "x"},
                     {"KEEP-ALIVE", "timeout=1"},
                     {"Hostname", "kept-1"},
                     {"Content-Length-Hint", "kept-2"},
                     {"X-A-Header-Name-Longer-Than-Twenty-Four", "kept-3"}};
  RecordingSink sink;
  Status s = Client()->Send(request, sink);
  ASSERT_TRUE(s.ok()) << s.error().message;
  const std::string seen = server.requests().at(0);
  for (const char* absent : {"CONTENT-LENGTH", "tRaNsFeR", "evil.example", "100-continue", "Proxy-Authorization",
                             "KEEP-ALIVE"}) {
    EXPECT_EQ(seen.find(absent), std::string::npos) << absent << " in " << seen;
  }
  for (const char* kept : {"\r\nHostname: kept-1\r\n", "\r\nContent-Length-Hint: kept-2\r\n",
                           "\r\nX-A-Header-Name-Longer-Than-Twenty-Four: kept-3\r\n", "\r\nContent-Length: 13\r\n"}) {
    EXPECT_NE(seen.find(kept), std::string::npos) << kept << " not in " << seen;
  }
}

// A body larger than what is copied behind the head is sent from the
// caller's buffer, whole.
TEST(UpstreamClient, ALargeBodyIsSentWhole) {
  LoopbackHttpServer* self = nullptr;
  LoopbackHttpServer server([&](LoopbackConn& c) {
    for (;;) {
      const std::string request = self->Read(c);
      if (request.empty()) return;
      c.Write(Answer(std::to_string(request.size() - request.find("\r\n\r\n") - 4)));
    }
  });
  self = &server;
  const std::string big(300 * 1024, 'z');
  RecordingSink sink;
  Status s = Client()->Send(Post(server.url(), big), sink);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(sink.body(), std::to_string(big.size()));
  EXPECT_NE(server.requests()[0].find("Content-Length: 307200\r\n"), std::string::npos);
}

// An upstream that answers before it read a large body and stops reading
// (401, 413): the answer is handed on at once, not after a timeout, the rest
// of the body is not sent, and the connection (its request incomplete) is
// not kept. Twice as much as loopback's buffers take, so the send blocks.
TEST(UpstreamClient, AnEarlyAnswerDuringALargeUploadIsReadAndItsConnectionNotKept) {
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  LoopbackHttpServer* self = nullptr;
  LoopbackHttpServer server([&](LoopbackConn& c) {
    if (c.index() == 0) {
      c.Write("HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\nno");  // before reading a byte
      released.wait();  // neither reads nor closes
      return;
    }
    while (!self->Read(c).empty()) c.Write(Answer("fresh"));
  });
  self = &server;
  struct Release {
    std::promise<void>& p;
    ~Release() { p.set_value(); }
  } release_at_end{release};
  auto client = Client();
  const std::string big(32 * 1024 * 1024, 'b');
  UpstreamRequest request = Post(server.url(), big);
  request.timeouts.first_byte = milliseconds(5000);
  RecordingSink sink;
  Status s = client->Send(request, sink);  // without reading early: the first-byte timeout
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(sink.head.status, 401);
  EXPECT_EQ(sink.body(), "no");
  ExpectAnsweredOnANewConnection(BodyOf(*client, server.url()), server, "fresh");
}

// The same on a kept connection, the upstream answering 413 and closing
// with the body unread (a reset): the 413 is the answer; the request is not
// sent again on a new connection.
TEST(UpstreamClient, AnEarlyAnswerAndAResetOnAKeptConnectionIsTheAnswerNotAResend) {
  LoopbackHttpServer* self = nullptr;
  LoopbackHttpServer server([&](LoopbackConn& c) {
    if (c.index() == 0) {
      if (self->Read(c).empty()) return;
      c.Write(Answer("kept"));
      if (c.ReadSome(1).empty()) return;  // the second request begins
      c.Write("HTTP/1.1 413 Content Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig");
      return;  // closed with the body unread: a reset
    }
    while (!self->Read(c).empty()) c.Write(Answer("resent"));
  });
  self = &server;
  auto client = Client();
  RecordingSink first;
  ASSERT_TRUE(client->Send(Post(server.url()), first).ok());
  const std::string big(32 * 1024 * 1024, 'b');
  UpstreamRequest request = Post(server.url(), big);
  request.timeouts.first_byte = milliseconds(5000);
  RecordingSink sink;
  Status s = client->Send(request, sink);
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(sink.head.status, 413);
  EXPECT_EQ(sink.body(), "big");
  EXPECT_EQ(server.connections(), 1);
}

// An upstream that sends a 1xx (an unasked 100 Continue, 103 Early Hints)
// or its final 2xx head before it has read a large body goes on reading it:
// the body is sent whole (not stopped at the first byte of answer, as for a
// refusal), the answer read, and the connection kept.
TEST(UpstreamClient, AnInterimOrEarlyHeadDuringALargeUploadDoesNotStopIt) {
  const std::string big(32 * 1024 * 1024, 'b');
  for (const std::string& early : {std::string("HTTP/1.1 100 Continue\r\n\r\n"),
                                   std::string("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"),
                                   std::string("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")}) {
    const bool head_first = early.starts_with("HTTP/1.1 200");
    LoopbackHttpServer* self = nullptr;
    LoopbackHttpServer server([&](LoopbackConn& c) {
      if (!c.Write(early)) return;  // before reading a byte
      for (bool first = true;; first = false) {
        const std::string request = self->Read(c);
        if (request.empty()) return;
        const bool whole = request.size() - request.find("\r\n\r\n") - 4 == (first ? big.size() : 2);
        const std::string body = whole ? "whole" : "short";
        if (!c.Write(first && head_first ? body : Answer(body))) return;
      }
    });
    self = &server;
    auto client = Client();
    UpstreamRequest request = Post(server.url(), big);
    request.timeouts.first_byte = request.timeouts.idle = milliseconds(5000);
    RecordingSink sink;
    Status s = client->Send(request, sink);
    ASSERT_TRUE(s.ok()) << early << s.error().message;
    EXPECT_EQ(sink.head.status, 200) << early;
    EXPECT_EQ(sink.body(), "whole") << early;
    RecordingSink second;
    s = client->Send(Post(server.url(), "{}"), second);
    ASSERT_TRUE(s.ok()) << early << s.error().message;
    EXPECT_EQ(second.body(), "whole") << early;
    EXPECT_EQ(server.connections(), 1) << early;
  }
}

// A POST the upstream read on a kept connection and worked on before it
// closed without answering may have been done: it is not sent again (a
// close right after the request is a stale connection, resent: above).
// A GET is (idempotent). "Long" on the client's clock: a second passes
// each time it is read, so the close comes a second or more after the
// request went out, with no real wait.
TEST(UpstreamClient, APostAKeptConnectionClosedOnLongAfterItWentOutIsNotResent) {
  for (const char* method : {"POST", "GET"}) {
    LoopbackHttpServer* self = nullptr;
    LoopbackHttpServer server([&](LoopbackConn& c) {
      if (self->Read(c).empty()) return;
      if (c.index() != 0) {
        c.Write(Answer("again"));
        return;
      }
      c.Write(Answer("kept"));
      self->Read(c);  // works on it, then dies
    });
    self = &server;
    SecondPerReadClock clock;
    auto client = Client(UpstreamClientOptions{.clock = &clock});
    RecordingSink first, second;
    UpstreamRequest request = Post(server.url());
    request.method = method;
    ASSERT_TRUE(client->Send(request, first).ok());
    Status s = client->Send(request, second);
    if (std::string_view(method) == "POST") {
      ASSERT_FALSE(s.ok());
      EXPECT_EQ(s.error().code, ErrorCode::kUnavailable) << s.error().message;
      EXPECT_EQ(server.requests().size(), 2u);
      EXPECT_EQ(server.connections(), 1);
    } else {
      ASSERT_TRUE(s.ok()) << s.error().message;
      EXPECT_EQ(second.body(), "again");
      EXPECT_EQ(server.requests().size(), 3u);
    }
  }
}

// TLS: an event stream in pieces over a kept TLS connection, twice.
TEST(UpstreamClient, AStreamOverTlsArrivesWholeAndTheConnectionIsKept) {
  const LoopbackTls tls = MakeLoopbackTls("upstream_stream");
  ASSERT_TRUE(tls.ctx);
  LoopbackHttpServer* self = nullptr;
  LoopbackHttpServer server(
      [&](LoopbackConn& c) {
        while (!self->Read(c).empty()) {
          c.Write("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
          for (int i = 0; i < 20; ++i) c.Write("7\r\ndata: " + std::to_string(i % 10) + "\r\n");
          c.Write("0\r\n\r\n");
        }
      },
      tls.ctx.get());
  self = &server;
  auto client = Client(UpstreamClientOptions{tls.ca_file});
  std::string want;
  for (int i = 0; i < 20; ++i) want += "data: " + std::to_string(i % 10);
  for (int i = 0; i < 2; ++i) {
    RecordingSink sink;
    Status s = client->Send(Post(server.url("/v1/chat/completions")), sink);
    ASSERT_TRUE(s.ok()) << s.error().message;
    EXPECT_EQ(sink.body(), want);
  }
  EXPECT_EQ(server.connections(), 1);
}

}  // namespace
}  // namespace dyad
