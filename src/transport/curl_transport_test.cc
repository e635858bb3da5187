// Tests of the curl transport: its own HTTP/1.1 exchange on a connection
// curl makes (keep-alive, reconnecting, answer framing, limits, timeouts),
// the curl_easy_perform path a proxy takes, its reused header storage and
// its Content-Length reservation, against loopback servers in this process.
#include "transport/curl_transport.h"

#include <gtest/gtest.h>
#include <fcntl.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "testing/gate.h"
#include "testing/loopback_checks.h"
#include "testing/loopback_http_server.h"

namespace dyad {
namespace {

// A server for one exchange: reads a request, sends `answer`, closes.
LoopbackHttpServer::ServerScript OneShot(std::string answer) {
  return [answer](LoopbackConn& c, LoopbackHttpServer& s) {
    if (!s.Read(c).empty()) c.Write(answer);
  };
}

// A Content-Length that is not the body's (here on an interim 1xx answer,
// which has no body) must not make the transport hold megabytes for a
// two-byte answer: the reservation is the endpoint's word, not its bytes,
// and whoever wipes the body (Cleanse: the whole capacity) then touches all
// of it. A malicious endpoint gets max_response_bytes of committed memory
// per request in flight for free.
TEST(curl_transport_unit, AContentLengthThatIsNotTheBodysDoesNotReserveMegabytes) {
  LoopbackHttpServer server(OneShot(
      "HTTP/1.1 100 Continue\r\nContent-Length: 4000000\r\n\r\n"
      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"));
  auto transport = NewCurlTransport();
  HttpCall call;
  call.method = "POST";
  call.url = server.url();
  call.headers = {{"Content-Type", "application/json"}};
  call.body = "{}";
  auto reply = transport->Send(call);
  ASSERT_TRUE(reply.ok()) << reply.error().message;
  EXPECT_EQ(reply->status, 200);
  EXPECT_EQ(reply->body, "{}");
  EXPECT_LT(reply->body.capacity(), 65536u) << "a 2-byte answer held in " << reply->body.capacity() << " bytes";
}

// Header lines are now written by hand into the handle's buffer: a value
// with CR/LF (a token from a credential endpoint, a configured header)
// must be refused, not sent as a second header line.
TEST(curl_transport_unit, AHeaderValueWithALineBreakIsNotSentAsAnotherHeader) {
  LoopbackHttpServer server(OneShot("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"));
  auto transport = NewCurlTransport();
  HttpCall call;
  call.url = server.url();
  call.headers = {{"X-Amz-Security-Token", "token\r\nX-Injected: yes"}};
  auto reply = transport->Send(call);
  EXPECT_TRUE(server.requests().empty()) << server.requests()[0];
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(reply.error().message.find("X-Amz-Security-Token"), std::string::npos) << reply.error().message;
  EXPECT_EQ(reply.error().message.find("token\r"), std::string::npos) << "the value is in the error";
  EXPECT_EQ(reply.error().message.find("X-Injected"), std::string::npos) << "the value is in the error";
}

// A lone LF or a NUL in a value, and a line break in a name, are refused
// the same way, before anything is sent.
TEST(curl_transport_unit, ALoneLineFeedANulOrABreakInANameIsRefused) {
  auto transport = NewCurlTransport();
  const std::vector<HttpHeaders> bad = {
      {{"Authorization", "Bearer secret-token\nX-Injected: yes"}},
      {{"Authorization", std::string("Bearer secret-token\0tail", 24)}},
      {{"X-Injected: yes\r\nAuthorization", "Bearer secret-token"}},
  };
  for (const HttpHeaders& headers : bad) {
    HttpCall call;
    call.url = "http://127.0.0.1:1/";
    call.headers = headers;
    auto reply = transport->Send(call);
    ASSERT_FALSE(reply.ok());
    EXPECT_EQ(reply.error().code, ErrorCode::kInvalidArgument) << reply.error().message;
    EXPECT_EQ(reply.error().message.find("secret-token"), std::string::npos) << reply.error().message;
  }
}

TEST(curl_transport_unit, ACallersFramingHeaderIsRefused) {
  auto transport = NewCurlTransport();
  for (const char* name : {"Content-Length", "transfer-encoding", "CONNECTION"}) {
    HttpCall call;
    call.method = "POST";
    call.url = "http://127.0.0.1:1/";
    call.headers = {{name, "0"}};
    auto reply = transport->Send(call);
    ASSERT_FALSE(reply.ok()) << name;
    EXPECT_EQ(reply.error().code, ErrorCode::kInvalidArgument) << reply.error().message;
    EXPECT_NE(reply.error().message.find("set by the transport"), std::string::npos) << reply.error().message;
  }
}

// A Content-Length arriving after the body — a trailer of a chunked answer,
// which curl hands to the header callback too — makes the transport
// reserve() a body that already holds the secret: the bytes are copied to
// a new buffer and the old one freed unwiped, exactly what the reservation
// was meant to prevent. Seen here as the body's buffer having grown to the
// trailer's figure after the body was received.
// Our own exchange refuses the answer instead: a Content-Length trailer is
// framing a sender must not put there (RFC 9112 §7.1.2), and the received
// body is wiped with the failed reply.
TEST(curl_transport_unit, ATrailersContentLengthDoesNotMoveTheReceivedBody) {
  const std::string secret = R"({"SecretString":"hunter2-hunter2-hunter2-hunter2"})";
  char size[16];
  snprintf(size, sizeof size, "%zx", secret.size());
  const std::string answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Content-Length\r\n"
                             "Connection: close\r\n\r\n" +
                             std::string(size) + "\r\n" + secret + "\r\n0\r\nContent-Length: 100000\r\n\r\n";
  for (bool libcurl : {true, false}) {
    LoopbackHttpServer server(OneShot(answer));
    CurlOptions options;
    options.libcurl_http = libcurl;
    auto transport = NewCurlTransport(options);
    HttpCall call;
    call.url = server.url();
    auto reply = transport->Send(call);
    if (!libcurl) {
      ASSERT_FALSE(reply.ok());
      EXPECT_EQ(reply.error().code, ErrorCode::kUnavailable);
      EXPECT_EQ(reply.error().message.find("hunter2"), std::string::npos) << reply.error().message;
      continue;
    }
    ASSERT_TRUE(reply.ok()) << reply.error().message;
    EXPECT_EQ(reply->body, secret);
    EXPECT_LT(reply->body.capacity(), 100000u) << "the body was moved to a buffer of " << reply->body.capacity();
  }
}

const char kOk[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";

// Answers every request on a connection with `answer` until the client closes.
LoopbackHttpServer::ServerScript AnswerAll(std::string answer) {
  return [answer](LoopbackConn& c, LoopbackHttpServer& s) {
    while (!s.Read(c).empty()) c.Write(answer);
  };
}

HttpCall Post(const std::string& url, std::string body = R"({"SecretId":"x"})") {
  HttpCall call;
  call.method = "POST";
  call.url = url;
  call.headers = {{"Content-Type", "application/x-amz-json-1.1"}, {"X-Amz-Target", "secretsmanager.GetSecretValue"}};
  call.body = std::move(body);
  return call;
}

HttpCall Get(const std::string& url) {
  HttpCall call;
  call.url = url;
  return call;
}

// The body of the answer to Post(url), or why there is none.
Result<std::string> BodyOf(HttpTransport& transport, const std::string& url) {
  DYAD_ASSIGN_OR_RETURN(HttpReply reply, transport.Send(Post(url)));
  return std::move(reply.body);
}

TEST(curl_transport_unit, KeptAliveRequestsShareOneConnection) {
  LoopbackHttpServer server(AnswerAll(kOk));
  auto transport = NewCurlTransport();
  for (int i = 0; i < 5; ++i) {
    auto reply = transport->Send(i % 2 ? Get(server.url()) : Post(server.url()));
    ASSERT_TRUE(reply.ok()) << reply.error().message;
    EXPECT_EQ(reply->status, 200);
    EXPECT_EQ(reply->body, "{}");
    EXPECT_EQ(reply->Header("content-type"), "application/json") << "names are lower-cased";
  }
  EXPECT_EQ(server.requests().size(), 5u);
  EXPECT_EQ(server.connections(), 1);
}

// What goes on the wire: the request line (origin form), Host from the URL,
// the caller's headers as given, Content-Length and the body; no Expect.
TEST(curl_transport_unit, TheRequestIsWrittenAsTheCallerGaveIt) {
  LoopbackHttpServer server(AnswerAll(kOk));
  auto transport = NewCurlTransport();
  HttpCall put = Post(server.url("/v1/secret/data/a?version=2"), "{\"a\":1}");
  put.method = "PUT";
  ASSERT_TRUE(transport->Send(put).ok());
  HttpCall del = Get(server.url("/v1/x"));
  del.method = "DELETE";
  del.headers = {{"Host", "vault.example"}, {"X-Vault-Token", "t"}};
  ASSERT_TRUE(transport->Send(del).ok());
  ASSERT_TRUE(transport->Send(Get(server.url("/g"))).ok());
  const auto r = server.requests();
  ASSERT_EQ(r.size(), 3u);
  const std::string host = server.url("").substr(7);
  EXPECT_EQ(r[0], "PUT /v1/secret/data/a?version=2 HTTP/1.1\r\nHost: " + host +
                      "\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: secretsmanager.GetSecretValue\r\n"
                      "Content-Length: 7\r\n\r\n{\"a\":1}");
  EXPECT_EQ(r[1], "DELETE /v1/x HTTP/1.1\r\nHost: vault.example\r\nX-Vault-Token: t\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(r[2], "GET /g HTTP/1.1\r\nHost: " + host + "\r\n\r\n");
}

// A second answer in the TLS record that ends the first, the read ending
// exactly at the first's end: the rest waits decrypted in OpenSSL, where
// poll() does not see it. The connection is not reused for the next call.
TEST(curl_transport_unit, BytesBehindAnAnswerInsideATlsRecordAreNotReadByTheNextCall) {
  const LoopbackTls tls = MakeLoopbackTls("backend_trailing");
  ASSERT_TRUE(tls.ctx);
  // Read into 16 KiB: a first record of 10000 bytes (the head cut inside its
  // last field; the lines before it parsed), then the room left, which ends
  // where the answer ends, inside the second record.
  const std::string whole_lines = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n";
  const std::string first_part = whole_lines + "X-Pad: " + std::string(10000 - whole_lines.size() - 7, 'p');
  const size_t room = 16384 - (first_part.size() - whole_lines.size());
  const std::string second_part = std::string(room - 6, 'q') + "\r\n\r\n{}";
  const std::string stale = "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n\"stale\"";
  LoopbackHttpServer server(
      [&](LoopbackConn& c, LoopbackHttpServer& s) {
        if (c.index() == 0) {
          if (s.Read(c).empty()) return;
          c.Write(first_part);
          c.Write(second_part + stale);  // one record
          while (!s.Read(c).empty()) c.Write(stale);
          return;
        }
        while (!s.Read(c).empty()) c.Write("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n\"fresh\"");
      },
      tls.ctx.get());
  CurlOptions options;
  options.ca_file = tls.ca_file;
  auto transport = NewCurlTransport(options);
  auto first = transport->Send(Post(server.url()));
  ASSERT_TRUE(first.ok()) << first.error().message;
  EXPECT_EQ(first->body, "{}");
  ExpectAnsweredOnANewConnection(BodyOf(*transport, server.url()), server, "\"fresh\"");
}

// A server that closes an idle kept connection: the next request sees it
// closed before sending and goes out on a new one.
TEST(curl_transport_unit, AConnectionTheServerClosedIsReplacedBeforeSending) {
  LoopbackHttpServer server(OneShot(kOk));  // a keep-alive answer, then close
  auto transport = NewCurlTransport();
  for (int i = 0; i < 3; ++i) {
    auto reply = transport->Send(Post(server.url()));
    ASSERT_TRUE(reply.ok()) << i << ": " << reply.error().message;
    EXPECT_EQ(reply->body, "{}");
    // The case under test is a connection already closed when the next
    // request starts: wait for the server's close (a close racing the next
    // send is the retry layer's, not this test's).
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (server.closed() < i + 1 && std::chrono::steady_clock::now() < give_up) std::this_thread::yield();
  }
  EXPECT_EQ(server.requests().size(), 3u) << "a POST was sent twice or not at all";
  EXPECT_EQ(server.connections(), 3);
}

// A kept connection that closes after taking a POST, before answering: the
// POST may have been acted on, so it is not sent again (kUnavailable).
TEST(curl_transport_unit, APostSentOnAConnectionThatClosesIsNotSentTwice) {
  LoopbackHttpServer server([](LoopbackConn& c, LoopbackHttpServer& s) {
    if (s.Read(c).empty()) return;
    if (c.index() == 0) {
      c.Write(kOk);
      s.Read(c);  // the second POST: closed without an answer
      return;
    }
    c.Write(kOk);
  });
  auto transport = NewCurlTransport();
  ASSERT_TRUE(transport->Send(Post(server.url())).ok());
  auto second = transport->Send(Post(server.url()));
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(server.requests().size(), 2u);
  EXPECT_EQ(server.connections(), 1) << "the POST was sent again on a new connection";
  auto third = transport->Send(Post(server.url()));  // a new connection
  ASSERT_TRUE(third.ok()) << third.error().message;
  EXPECT_EQ(server.connections(), 2);
}

// The same for a GET: sent once more, on a new connection, and answered.
TEST(curl_transport_unit, AGetSentOnAConnectionThatClosesIsSentOnceMore) {
  LoopbackHttpServer server([](LoopbackConn& c, LoopbackHttpServer& s) {
    if (s.Read(c).empty()) return;
    c.Write(kOk);
    if (c.index() == 0) s.Read(c);  // the second GET: closed without an answer
  });
  auto transport = NewCurlTransport();
  ASSERT_TRUE(transport->Send(Get(server.url())).ok());
  auto second = transport->Send(Get(server.url("/again")));
  ASSERT_TRUE(second.ok()) << second.error().message;
  EXPECT_EQ(second->body, "{}");
  const auto r = server.requests();
  ASSERT_EQ(r.size(), 3u);
  EXPECT_TRUE(r[1].starts_with("GET /again ")) << r[1];
  EXPECT_TRUE(r[2].starts_with("GET /again ")) << r[2];
  EXPECT_EQ(server.connections(), 2);
}

// ... but only once: a new connection that closes too is an error.
TEST(curl_transport_unit, AGetIsResentOnlyOnce) {
  LoopbackHttpServer server([](LoopbackConn& c, LoopbackHttpServer& s) {
    if (s.Read(c).empty()) return;
    if (c.index() == 0) {
      c.Write(kOk);
      s.Read(c);
    }
  });
  auto transport = NewCurlTransport();
  ASSERT_TRUE(transport->Send(Get(server.url())).ok());
  auto second = transport->Send(Get(server.url()));
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(server.requests().size(), 3u);
  EXPECT_EQ(server.connections(), 2);
}

// An endpoint that refuses a large body before reading it (413) and stops
// reading: the refusal is the reply, at once (not the call's timeout), the
// rest of the body is not sent, and the connection (its request cut short)
// is not kept: the next call goes out on a new one.
TEST(curl_transport_unit, AnEarlyRefusalDuringALargeBodyIsTheReplyAndItsConnectionIsNotKept) {
  testing::Gate hold;  // the first connection neither reads nor closes until the test ends
  LoopbackHttpServer server([&](LoopbackConn& c, LoopbackHttpServer& s) {
    if (c.index() == 0) {
      c.Write("HTTP/1.1 413 Content Too Large\r\nContent-Length: 2\r\n\r\nno");  // before reading a byte
      hold.Pass();
      return;
    }
    while (!s.Read(c).empty()) c.Write("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n\"fresh\"");
  });
  struct OpenAtEnd {
    testing::Gate& gate;
    ~OpenAtEnd() { gate.Open(); }
  } open_at_end{hold};
  auto transport = NewCurlTransport();
  HttpCall call = Post(server.url(), std::string(32 * 1024 * 1024, 'b'));  // more than loopback's buffers take
  call.timeout = std::chrono::seconds(10);
  auto reply = transport->Send(call);
  ASSERT_TRUE(reply.ok()) << reply.error().message;
  EXPECT_EQ(reply->status, 413);
  EXPECT_EQ(reply->body, "no");
  ExpectAnsweredOnANewConnection(BodyOf(*transport, server.url()), server, "\"fresh\"");
}

TEST(curl_transport_unit, APartialAnswerThenCloseIsUnavailable) {
  for (const std::string& answer : std::vector<std::string>{
           "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "HTTP/1.1 200 OK\r\nContent-Le",
           "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"}) {
    LoopbackHttpServer server(OneShot(answer));
    auto transport = NewCurlTransport();
    auto reply = transport->Send(Get(server.url()));
    ASSERT_FALSE(reply.ok()) << answer;
    EXPECT_EQ(reply.error().code, ErrorCode::kUnavailable);
    EXPECT_EQ(server.requests().size(), 1u) << "a fresh connection's request is not resent";
  }
}

TEST(curl_transport_unit, AMalformedAnswerIsUnavailableWithoutItsBytes) {
  LoopbackHttpServer server(OneShot("HTTP/1.1 2x0 OK\r\nX-Secret: hunter2\r\n\r\n"));
  auto transport = NewCurlTransport();
  auto reply = transport->Send(Get(server.url()));
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(reply.error().message.find("hunter2"), std::string::npos) << reply.error().message;
}

TEST(curl_transport_unit, ABodyOverTheLimitIsRefusedHoweverItIsFramed) {
  const std::string big(1000, 'x');
  for (const std::string& answer :
       {"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + big,
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n" + big + "\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n" + big.substr(0, 64) + "\r\n40\r\n" +
            big.substr(0, 64) + "\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + big}) {
    LoopbackHttpServer server(OneShot(answer));
    CurlOptions options;
    options.max_response_bytes = 100;
    auto transport = NewCurlTransport(options);
    auto reply = transport->Send(Get(server.url()));
    ASSERT_FALSE(reply.ok()) << answer.substr(0, 60);
    EXPECT_EQ(reply.error().code, ErrorCode::kUnavailable);
    EXPECT_NE(reply.error().message.find("larger than 100 bytes"), std::string::npos) << reply.error().message;
  }
}

// Chunked: the body joined, trailers not among the answer's headers, and the
// connection kept (the chunked framing ends the answer).
TEST(curl_transport_unit, AChunkedAnswerIsJoinedAndItsTrailersDropped) {
  LoopbackHttpServer server(AnswerAll(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
      "3;ext=1\r\n{\"a\r\n4\r\n\":1}\r\n0\r\nX-Checksum: 42\r\n\r\n"));
  auto transport = NewCurlTransport();
  for (int i = 0; i < 2; ++i) {
    auto reply = transport->Send(Get(server.url()));
    ASSERT_TRUE(reply.ok()) << reply.error().message;
    EXPECT_EQ(reply->body, R"({"a":1})");
    EXPECT_EQ(reply->Header("x-checksum"), "");
    EXPECT_EQ(reply->Header("transfer-encoding"), "chunked");
  }
  EXPECT_EQ(server.connections(), 1);
}

// No length: the body is what comes until the server closes; the next
// request needs a new connection.
TEST(curl_transport_unit, AnAnswerWithoutALengthIsReadToClose) {
  LoopbackHttpServer server(OneShot("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello, world"));
  auto transport = NewCurlTransport();
  for (int i = 0; i < 2; ++i) {
    auto reply = transport->Send(Get(server.url()));
    ASSERT_TRUE(reply.ok()) << reply.error().message;
    EXPECT_EQ(reply->body, "hello, world");
  }
  EXPECT_EQ(server.connections(), 2);
}

// "Connection: close" and HTTP/1.0 without keep-alive end the connection;
// HTTP/1.0 with keep-alive keeps it.
TEST(curl_transport_unit, ConnectionCloseAndHttp10EndTheConnection) {
  const std::pair<std::string, int> cases[] = {
      {"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}", 3},
      {"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}", 3},
      {"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}", 1},
  };
  for (const auto& [answer, connections] : cases) {
    LoopbackHttpServer server(AnswerAll(answer));
    auto transport = NewCurlTransport();
    for (int i = 0; i < 3; ++i) {
      auto reply = transport->Send(Get(server.url()));
      ASSERT_TRUE(reply.ok()) << reply.error().message;
      EXPECT_EQ(reply->body, "{}");
    }
    EXPECT_EQ(server.connections(), connections) << answer;
  }
}

// 1xx answers before the final one are skipped with their fields; a HEAD's
// answer has no body whatever its Content-Length says.
TEST(curl_transport_unit, InterimAnswersAreSkippedAndHeadHasNoBody) {
  LoopbackHttpServer server([](LoopbackConn& c, LoopbackHttpServer& s) {
    std::string r;
    while (!(r = s.Read(c)).empty()) {
      if (r.starts_with("HEAD")) {
        c.Write("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n");
      } else {
        c.Write("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\nX-Interim: 1\r\n\r\n"
                "HTTP/1.1 201 Created\r\nX-Final: 2\r\nContent-Length: 2\r\n\r\n{}");
      }
    }
  });
  auto transport = NewCurlTransport();
  auto reply = transport->Send(Post(server.url()));
  ASSERT_TRUE(reply.ok()) << reply.error().message;
  EXPECT_EQ(reply->status, 201);
  EXPECT_EQ(reply->body, "{}");
  EXPECT_EQ(reply->Header("x-final"), "2");
  EXPECT_EQ(reply->Header("x-interim"), "");
  HttpCall head = Get(server.url());
  head.method = "HEAD";
  auto h = transport->Send(head);
  ASSERT_TRUE(h.ok()) << h.error().message;
  EXPECT_EQ(h->status, 200);
  EXPECT_EQ(h->body, "");
  ASSERT_TRUE(transport->Send(Post(server.url())).ok());
  EXPECT_EQ(server.connections(), 1);
}

// A server that takes the request and never answers: the call's timeout
// ends the wait (kUnavailable), and the connection is not used again.
TEST(curl_transport_unit, AServerThatNeverAnswersTimesOut) {
  LoopbackHttpServer server([](LoopbackConn& c, LoopbackHttpServer& s) {
    if (s.Read(c).empty()) return;
    if (c.index() == 0) {
      c.WaitForClose();
      return;
    }
    c.Write(kOk);
  });
  auto transport = NewCurlTransport();
  HttpCall call = Post(server.url());
  call.timeout = std::chrono::milliseconds(150);
  auto reply = transport->Send(call);
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(reply.error().message.find("timed out"), std::string::npos) << reply.error().message;
  auto next = transport->Send(Post(server.url()));
  ASSERT_TRUE(next.ok()) << next.error().message;
  EXPECT_EQ(server.connections(), 2);
}

// With a proxy named in the environment, curl_easy_perform carries the
// request (to the proxy, in absolute form).
TEST(curl_transport_unit, AProxyInTheEnvironmentTakesTheRequest) {
  LoopbackHttpServer proxy(AnswerAll(kOk));
  ASSERT_EQ(setenv("http_proxy", proxy.url("").c_str(), 1), 0);
  auto transport = NewCurlTransport();
  auto reply = transport->Send(Get("http://origin.invalid:8080/path"));
  unsetenv("http_proxy");
  ASSERT_TRUE(reply.ok()) << reply.error().message;
  ASSERT_EQ(proxy.requests().size(), 1u);
  EXPECT_TRUE(proxy.requests()[0].starts_with("GET http://origin.invalid:8080/path HTTP/1.1\r\n"))
      << proxy.requests()[0];
}

// Plain http to a loopback host (a local Vault, an emulator) never goes
// through that proxy: it would carry the token in clear off the machine.
TEST(curl_transport_unit, PlainHttpToLoopbackBypassesTheEnvironmentsProxy) {
  LoopbackHttpServer proxy(AnswerAll(kOk));
  LoopbackHttpServer origin(AnswerAll(kOk));
  ASSERT_EQ(setenv("http_proxy", proxy.url("").c_str(), 1), 0);
  auto transport = NewCurlTransport();
  auto direct = transport->Send(Get(origin.url()));
  auto proxied = transport->Send(Get("http://origin.invalid:8080/path"));  // the same handle, reused
  unsetenv("http_proxy");
  ASSERT_TRUE(direct.ok()) << direct.error().message;
  ASSERT_TRUE(proxied.ok()) << proxied.error().message;
  EXPECT_EQ(origin.requests().size(), 1u);
  ASSERT_EQ(proxy.requests().size(), 1u);
  EXPECT_TRUE(proxy.requests()[0].starts_with("GET http://origin.invalid:8080/path")) << proxy.requests()[0];
}

// The curl_easy_perform path, when asked for, still answers.
TEST(curl_transport_unit, TheLibcurlPathAnswersToo) {
  LoopbackHttpServer server(AnswerAll(kOk));
  CurlOptions options;
  options.libcurl_http = true;
  auto transport = NewCurlTransport(options);
  for (int i = 0; i < 2; ++i) {
    auto reply = transport->Send(Post(server.url()));
    ASSERT_TRUE(reply.ok()) << reply.error().message;
    EXPECT_EQ(reply->body, "{}");
    EXPECT_EQ(reply->Header("content-type"), "application/json");
  }
  EXPECT_EQ(server.connections(), 1);
}

// A status outside 100 to 599 is no HTTP status (RFC 9110 §15): both paths
// refuse it (curl's own parser takes any three digits), without the answer's bytes.
TEST(curl_transport_unit, AStatusOver599IsUnavailableOnBothPaths) {
  for (bool libcurl : {false, true}) {
    LoopbackHttpServer server(OneShot("HTTP/1.1 999 Odd\r\nX-Secret: hunter2\r\nContent-Length: 2\r\n\r\n{}"));
    CurlOptions options;
    options.libcurl_http = libcurl;
    auto reply = NewCurlTransport(options)->Send(Get(server.url()));
    ASSERT_FALSE(reply.ok()) << libcurl;
    EXPECT_EQ(reply.error().code, ErrorCode::kUnavailable) << libcurl;
    EXPECT_EQ(reply.error().message.find("hunter2"), std::string::npos) << reply.error().message;
  }
}

int OpenDescriptors() {
  int n = 0;
  for (int fd = 0; fd < 4096; ++fd) n += fcntl(fd, F_GETFD) != -1;
  return n;
}

// A retired connection's socket is closed, not kept by curl: forty answers
// that each end their connection leave no more descriptors open than one.
// (Counted whatever their state: a kept socket whose peer closed is no
// longer connected, but still open.)
TEST(curl_transport_unit, RetiredConnectionsDoNotPileUp) {
  LoopbackHttpServer server(AnswerAll("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"));
  auto transport = NewCurlTransport();
  ASSERT_TRUE(transport->Send(Get(server.url())).ok());
  ASSERT_TRUE(ServerClosed(server, 1));
  const int before = OpenDescriptors();
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(transport->Send(Get(server.url())).ok());
  ASSERT_TRUE(ServerClosed(server, 41));
  EXPECT_LE(OpenDescriptors(), before + 1);
  EXPECT_EQ(server.connections(), 41);
}

TEST(curl_transport_unit, ARefusedConnectionIsUnavailable) {
  auto transport = NewCurlTransport();
  auto reply = transport->Send(Get("http://127.0.0.1:1/"));
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.error().code, ErrorCode::kUnavailable);
  auto bad = transport->Send(Get("ftp://127.0.0.1/"));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace dyad

namespace dyad {
namespace {

// Found by review: a VAULT_REDIRECT_HOSTS entry without a port let a
// redirect go to any port of that host. Entries are host:port now (the
// Vault settings fill in the scheme's default), and the target is compared
// as curl parses it, whatever its spelling.
TEST(CurlRedirects, ARedirectGoesOnlyToTheRequestsHostOrAListedHostAndPort) {
  const std::string from = "https://vault-a.example:8200/v1/secret/data/x";
  const std::vector<std::string> listed = {"vault-b.example:8200", "10.0.0.7:443", "[fd00::2]:8200"};
  for (const char* ok : {"https://vault-a.example:9999/v1/x", "https://VAULT-A.example./v1/x",
                         "https://vault-b.example:8200/v1/x", "https://VAULT-B.EXAMPLE:8200/v1/x",
                         "https://vault-b.example.:8200/v1/x", "https://vault-b.example:08200/v1/x",
                         "https://10.0.0.7/v1/x", "https://10.0.0.7:443/v1/x", "https://[fd00::2]:8200/v1/x",
                         "https://[FD00::2]:8200/v1/x"}) {
    EXPECT_EQ(RedirectRefusal(from, ok, listed), "") << ok;
  }
  for (const char* bad : {"https://vault-b.example/v1/x",          // port 443, not 8200
                          "https://vault-b.example:8201/v1/x",     // another port
                          "http://vault-b.example/v1/x",           // port 80
                          "https://10.0.0.7:8443/v1/x",            // listed with 443 only
                          "https://vault-b.example.evil.com:8200/v1/x", "https://evil.com:8200/vault-b.example:8200",
                          "https://vault-b.example:8200@evil.com:8200/v1/x", "https://user@vault-b.example:8200/v1/x",
                          "https://[fd00::3]:8200/v1/x", "https://vault-b.example..:8200/v1/x",
                          "https://evil.com:8200/?vault-b.example:8200", "https://evil.com:8200#vault-b.example:8200"}) {
    std::string why = RedirectRefusal(from, bad, listed);
    EXPECT_EQ(why.rfind("refused a redirect to ", 0), 0u) << bad << ": " << why;
    EXPECT_EQ(why.find("/v1/x"), std::string::npos) << why;  // never the path
  }
  // A port-less entry (not one the Vault settings make) matches nothing.
  EXPECT_NE(RedirectRefusal(from, "https://vault-b.example/v1/x", {"vault-b.example"}), "");
  EXPECT_EQ(RedirectRefusal(from, "https://vault-b.example:8200/v1/x", listed), "");
  EXPECT_EQ(RedirectRefusal(from, "https://vault-b.example/", listed),
            "refused a redirect to vault-b.example:443, a host that is neither the request's nor an allowed one");
}

}  // namespace
}  // namespace dyad
