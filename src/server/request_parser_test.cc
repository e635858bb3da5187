#include "server/request_parser.h"

#include <gtest/gtest.h>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include <string>
#include <vector>

namespace dyad {
namespace {

namespace http = boost::beast::http;
using boost::beast::error_code;
using Headers = std::vector<std::pair<std::string, std::string>>;

constexpr uint64_t kBodyLimit = 1024;
constexpr uint32_t kHeaderLimit = 512;

// Feeds `in` to `parser` `step` bytes at a time (0: at once), keeping what
// it did not use, as the session does with its read buffer; the parser's
// error, need_more when the bytes ran out first.
template <class Parser>
error_code Feed(Parser& parser, std::string_view in, size_t step) {
  std::string pending;
  error_code ec;
  for (size_t pos = 0; !parser.is_done();) {
    if (pos == in.size() && (pending.empty() || ec == http::error::need_more)) return http::error::need_more;
    const size_t take = step == 0 ? in.size() - pos : std::min(step, in.size() - pos);
    pending.append(in.substr(pos, take));
    pos += take;
    ec = {};
    pending.erase(0, parser.put(boost::asio::buffer(pending), ec));
    if (ec && ec != http::error::need_more) return ec;
  }
  return {};
}

struct Parsed {
  error_code ec;
  std::string method, path, query, body;
  Headers headers;
  unsigned version = 0;
  bool keep_alive = false;
};

Parsed ByUs(std::string_view in, size_t step) {
  RequestParser parser(kBodyLimit, kHeaderLimit);
  Parsed p;
  p.ec = Feed(parser, in, step);
  if (p.ec) return p;
  HttpRequest& r = parser.request();
  p = {{}, r.method, r.path, r.query, r.body, r.headers, parser.version(), parser.header_keep_alive()};
  return p;
}

// What Beast's own parser makes of it: the message built, then read back.
Parsed ByBeast(std::string_view in, size_t step) {
  http::request_parser<http::string_body> parser;
  parser.body_limit(kBodyLimit);
  parser.header_limit(kHeaderLimit);
  Parsed p;
  p.ec = Feed(parser, in, step);
  if (p.ec) return p;
  const auto& m = parser.get();
  HttpRequest split;
  SetTarget(split, m.target());
  p.method = std::string(m.method_string());
  p.path = split.path;
  p.query = split.query;
  p.body = m.body();
  for (const auto& f : m) p.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
  p.version = m.version();
  p.keep_alive = m.keep_alive();  // the message's: the first Connection field
  return p;
}

void ExpectSame(const Parsed& a, const Parsed& b, std::string_view in) {
  EXPECT_EQ(a.ec, b.ec) << in;
  EXPECT_EQ(a.method, b.method) << in;
  EXPECT_EQ(a.path, b.path) << in;
  EXPECT_EQ(a.query, b.query) << in;
  EXPECT_EQ(a.body, b.body) << in;
  EXPECT_EQ(a.headers, b.headers) << in;
  EXPECT_EQ(a.version, b.version) << in;
  EXPECT_EQ(a.keep_alive, b.keep_alive) << in;
}

TEST(RequestParser, ParsesWhatBeastsOwnParserDoesWholeAndByteByByte) {
  const std::vector<std::string> requests = {
      "GET /v1/models HTTP/1.1\r\nHost: a\r\n\r\n",
      "GET /admin/providers?limit=5&x=%2F HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer t\r\n\r\n",
      "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 13\r\n"
      "\r\n{\"model\":\"m\"}",
      "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
      "POST /x HTTP/1.1\r\nVary: a\r\nvary: b\r\nX-Odd:   spaced value \t \r\nEmpty:\r\nContent-Length: 0\r\n\r\n",
      "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
      "GET / HTTP/1.0\r\n\r\n",
      "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
      "PURGE /cache HTTP/1.1\r\nHost: a\r\n\r\n",
      "HEAD /healthz HTTP/1.1\r\nHost: a\r\n\r\n",
      "GET /folded HTTP/1.1\r\nX-Fold: one\r\n two\r\n\r\n",
      "GET /bad HTTP/1.1\r\nBad Name: v\r\n\r\n",
      "GET /bad HTTP/2.0\r\n\r\n",
      "POST /big HTTP/1.1\r\nContent-Length: 1025\r\n\r\n",
      "POST /big HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n401\r\n" + std::string(1025, 'x') + "\r\n0\r\n\r\n",
      "GET /long HTTP/1.1\r\nX-Long: " + std::string(600, 'a') + "\r\n\r\n",
      "POST /two HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
  };
  for (const auto& in : requests) {
    for (size_t step : {size_t{0}, size_t{1}, size_t{7}}) ExpectSame(ByUs(in, step), ByBeast(in, step), in);
  }
}

TEST(RequestParser, KeepsTheFirstAuthorizationContentTypeAndRequestIdAndEveryFieldInOrder) {
  RequestParser parser(kBodyLimit, kHeaderLimit);
  ASSERT_FALSE(Feed(parser,
                    "POST /v1/embeddings?a=b HTTP/1.1\r\nx-request-id: first\r\nHost: a\r\nContent-Type: text/plain\r\n"
                    "Authorization: Bearer one\r\nContent-Type: application/json\r\nX-Request-Id: second\r\n"
                    "Content-Length: 2\r\n\r\n{}",
                    0));
  const HttpRequest& r = parser.request();
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.path, "/v1/embeddings");
  EXPECT_EQ(r.query, "a=b");
  EXPECT_EQ(r.authorization, "Bearer one");
  EXPECT_EQ(r.content_type, "text/plain");
  EXPECT_EQ(r.request_id, "first");
  EXPECT_EQ(r.body, "{}");
  ASSERT_EQ(r.headers.size(), 7u);
  EXPECT_EQ(r.headers[0], (std::pair<std::string, std::string>{"x-request-id", "first"}));
  EXPECT_EQ(r.headers[5], (std::pair<std::string, std::string>{"X-Request-Id", "second"}));
  EXPECT_FALSE(parser.refusal());
  EXPECT_FALSE(parser.head());
}

// Beast's message grouped fields of one name together; the request keeps
// them in the order they came (each name's order the same either way).
TEST(RequestParser, KeepsTheFieldsInTheOrderTheyCame) {
  RequestParser parser(kBodyLimit, kHeaderLimit);
  ASSERT_FALSE(Feed(parser, "GET / HTTP/1.1\r\nAccept: 1\r\nHost: a\r\naccept: 2\r\nX-B: 3\r\nACCEPT: 4\r\n\r\n", 0));
  EXPECT_EQ(parser.request().headers,
            (Headers{{"Accept", "1"}, {"Host", "a"}, {"accept", "2"}, {"X-B", "3"}, {"ACCEPT", "4"}}));
}

TEST(RequestParser, AChunkedBodysTrailerIsNotPartOfTheRequest) {
  RequestParser parser(kBodyLimit, kHeaderLimit);
  ASSERT_FALSE(Feed(parser,
                    "POST /x HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer one\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "2\r\n{}\r\n0\r\nAuthorization: Bearer two\r\nConnection: close\r\nX-Request-Id: t\r\n\r\n",
                    1));
  const HttpRequest& r = parser.request();
  EXPECT_EQ(r.body, "{}");
  EXPECT_EQ(r.headers.size(), 3u);
  EXPECT_EQ(r.authorization, "Bearer one");
  EXPECT_EQ(r.request_id, "");
  EXPECT_FALSE(parser.refusal());          // the trailer's Authorization is not a second one
  EXPECT_TRUE(parser.header_keep_alive());  // nor its Connection the header's
}

TEST(RequestParser, RefusesOddFramingASecondAuthorizationAndAMissingOrRepeatedHost) {
  struct Case {
    std::string in;
    int status;
    std::string_view says;
  };
  const std::vector<Case> cases = {
      {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501, "only chunked"},
      {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501,
       "only chunked"},
      {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 501, "only chunked"},
      {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "HTTP/1.0"},
      {"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer a\r\nauthorization: Bearer b\r\n\r\n", 400,
       "Authorization"},
      {"GET / HTTP/1.1\r\n\r\n", 400, "without a Host"},
      {"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", 400, "more than one Host"},
      {"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", 400, "more than one Host"},
      // the framing's refusal first, then the identity's
      {"POST / HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\nTransfer-Encoding: gzip\r\n\r\n", 501,
       "only chunked"},
      {"GET / HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n", 400, "Authorization"},
  };
  for (const auto& c : cases) {
    RequestParser parser(kBodyLimit, kHeaderLimit);
    Feed(parser, c.in, 0);
    ASSERT_TRUE(parser.is_header_done()) << c.in;
    auto refused = parser.refusal();
    ASSERT_TRUE(refused) << c.in;
    EXPECT_EQ(refused->status, c.status) << c.in;
    EXPECT_NE(refused->message.find(c.says), std::string::npos) << c.in << refused->message;
  }
  for (std::string_view fine : {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  Chunked \r\n\r\n0\r\n\r\n",
                                "GET / HTTP/1.0\r\n\r\n", "GET / HTTP/1.1\r\nHost:\r\n\r\n"}) {
    RequestParser parser(kBodyLimit, kHeaderLimit);
    ASSERT_FALSE(Feed(parser, fine, 0)) << fine;
    EXPECT_FALSE(parser.refusal()) << fine;
  }
}

TEST(RequestParser, ExpectsContinueOnlyForTheFirstExpectOfAnHttp11Request) {
  auto expects = [](std::string_view in) {
    RequestParser parser(kBodyLimit, kHeaderLimit);
    Feed(parser, in, 0);
    return parser.is_header_done() && parser.expects_continue();
  };
  EXPECT_TRUE(expects("POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n"));
  EXPECT_FALSE(expects("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"));
  EXPECT_FALSE(expects("POST / HTTP/1.1\r\nExpect: nothing\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"));
  EXPECT_FALSE(expects("POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n"));
}

// RFC 9112 §9.3, as helper-155 found it broken: "close" in any Connection
// field wins, Proxy-Connection is no Connection, HTTP/1.0 keeps the
// connection only when asked.
TEST(RequestParser, KeepsTheConnectionAsEveryConnectionFieldSays) {
  auto keeps = [](std::string_view head) {
    RequestParser parser(kBodyLimit, kHeaderLimit);
    EXPECT_FALSE(Feed(parser, std::string(head) + "\r\n", 0)) << head;
    return parser.header_keep_alive();
  };
  EXPECT_TRUE(keeps("GET / HTTP/1.1\r\nHost: a\r\n"));
  EXPECT_FALSE(keeps("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: close\r\n"));
  EXPECT_FALSE(keeps("GET / HTTP/1.1\r\nHost: a\r\nConnection: x-a, Close\r\n"));
  EXPECT_TRUE(keeps("GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: close\r\n"));
  EXPECT_FALSE(keeps("GET / HTTP/1.0\r\n"));
  EXPECT_TRUE(keeps("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n"));
  EXPECT_FALSE(keeps("GET / HTTP/1.0\r\nConnection: close\r\nProxy-Connection: keep-alive\r\n"));
  EXPECT_FALSE(keeps("GET / HTTP/1.0\r\nProxy-Connection: keep-alive\r\n"));
  EXPECT_FALSE(keeps("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n"));
}

TEST(RequestParser, AHostValueThatIsNoHostAndPortIsRefused) {
  for (std::string_view host : {"a, b", "a b", "a/b", "a@b", "a\tb", "\xC3\xA9.example"}) {
    RequestParser parser(kBodyLimit, kHeaderLimit);
    Feed(parser, "GET / HTTP/1.1\r\nHost: " + std::string(host) + "\r\n\r\n", 0);
    ASSERT_TRUE(parser.is_header_done()) << host;
    ASSERT_TRUE(parser.refusal()) << host;
    EXPECT_NE(parser.refusal()->message.find("not a host and port"), std::string::npos) << host;
  }
  for (std::string_view host : {"gateway.example:8080", "127.0.0.1", "[::1]:80", "xn--bcher-kva.example", "a,b"}) {
    RequestParser parser(kBodyLimit, kHeaderLimit);
    ASSERT_FALSE(Feed(parser, "GET / HTTP/1.1\r\nHost: " + std::string(host) + "\r\n\r\n", 0)) << host;
    EXPECT_FALSE(parser.refusal()) << host;
  }
}

TEST(RequestParser, AHeadRequestIsKnownForOne) {
  RequestParser parser(kBodyLimit, kHeaderLimit);
  ASSERT_FALSE(Feed(parser, "HEAD / HTTP/1.1\r\n\r\n", 0));
  EXPECT_TRUE(parser.head());
}

}  // namespace
}  // namespace dyad
