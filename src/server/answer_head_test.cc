#include "server/answer_head.h"

#include <gtest/gtest.h>

#include <boost/beast/core/buffers_range.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <sstream>

namespace dyad {
namespace {

namespace http = boost::beast::http;
using Headers = std::vector<std::pair<std::string, std::string>>;

// The same answer as Beast frames it: the message built field by field,
// its keep-alive and payload prepared, serialized whole.
std::string AsBeastWrites(int status, std::string_view content_type, const Headers& headers,
                          std::string_view request_id, const AnswerFraming& f, const std::string& body) {
  http::response<http::string_body> res(static_cast<http::status>(status), f.version);
  res.set(http::field::server, "dyad-gateway");
  res.set(http::field::content_type, content_type);
  res.set("X-Request-Id", request_id);
  for (const auto& [name, value] : headers) res.insert(name, value);
  res.body() = body;
  res.keep_alive(f.keep_alive);
  res.prepare_payload();
  std::ostringstream out;
  out << res;
  return out.str();
}

// A streamed answer's head as Beast frames it: chunked over HTTP/1.1.
std::string StreamHeadAsBeastWrites(int status, std::string_view content_type, const Headers& headers,
                                    std::string_view request_id, const AnswerFraming& f) {
  http::response<http::empty_body> res(static_cast<http::status>(status), f.version);
  res.set(http::field::server, "dyad-gateway");
  res.set(http::field::content_type, content_type);
  res.set("X-Request-Id", request_id);
  for (const auto& [name, value] : headers) res.insert(name, value);
  if (f.version >= 11) res.chunked(true);
  res.keep_alive(f.keep_alive);
  http::fields::writer head(res, res.version(), res.result_int());
  const auto buffers = head.get();  // (a temporary in the loop's range would dangle)
  std::string out;
  for (const auto b : boost::beast::buffers_range_ref(buffers)) out.append(static_cast<const char*>(b.data()), b.size());
  return out;
}

TEST(AnswerHead, IsWhatBeastWritesForTheSameAnswerWholeOrStreamed) {
  const Headers none;
  const Headers some = {{"WWW-Authenticate", "Bearer"}, {"x-ratelimit-remaining", "9"}, {"Vary", "Origin"},
                        {"vary", "Accept"}, {"Retry-After", "1"}, {"x-empty", ""}};
  for (int status : {200, 201, 400, 401, 404, 409, 413, 429, 500, 502, 503, 504, 418, 299, 599}) {
    for (unsigned version : {10u, 11u}) {
      for (bool keep_alive : {false, true}) {
        for (const Headers* headers : {&none, &some}) {
          for (const std::string& body : {std::string(), std::string(R"({"ok":true})"), std::string(70000, 'x')}) {
            const AnswerFraming f{version, keep_alive, body.size()};
            SCOPED_TRACE(testing::Message() << status << " HTTP/1." << version % 10 << " keep-alive " << keep_alive
                                            << " headers " << headers->size() << " body " << body.size());
            EXPECT_EQ(AnswerHead(status, "application/json", *headers, "req-1", f) + body,
                      AsBeastWrites(status, "application/json", *headers, "req-1", f, body));
          }
          const AnswerFraming streamed{version, keep_alive, std::nullopt};
          EXPECT_EQ(AnswerHead(status, "text/event-stream", *headers, "req-2", streamed),
                    StreamHeadAsBeastWrites(status, "text/event-stream", *headers, "req-2", streamed))
              << status << " HTTP/1." << version % 10 << " keep-alive " << keep_alive;
        }
      }
    }
  }
}

TEST(AnswerHead, FramesTheAnswerItselfWhateverTheHandlerSet) {
  const Headers headers = {{"Content-Length", "5"},       {"transfer-encoding", "chunked"}, {"Connection", "keep-alive"},
                           {"Server", "nginx"},           {"content-type", "text/html"},    {"X-Request-Id", "theirs"},
                           {"x-upstream-request-id", "u"}};
  const std::string head = AnswerHead(200, "application/json", headers, "ours", {11, false, 12});
  EXPECT_EQ(head,
            "HTTP/1.1 200 OK\r\n"
            "Server: dyad-gateway\r\n"
            "Content-Type: application/json\r\n"
            "X-Request-Id: ours\r\n"
            "x-upstream-request-id: u\r\n"
            "Connection: close\r\n"
            "Content-Length: 12\r\n"
            "\r\n");
}

TEST(AnswerHead, AnAnswerThatHasNoBodyHasNoLength) {
  for (int status : {100, 101, 204, 304}) {
    EXPECT_TRUE(AnswerHasNoBody(status)) << status;
    EXPECT_EQ(AnswerHead(status, "", {}, "r", {11, true, 0}).find("Content-Length"), std::string::npos) << status;
    const std::string streamed = AnswerHead(status, "", {}, "r", {11, false, std::nullopt});
    EXPECT_EQ(streamed.find("Transfer-Encoding"), std::string::npos) << status;
  }
  for (int status : {200, 205, 302, 400}) EXPECT_FALSE(AnswerHasNoBody(status)) << status;
  EXPECT_EQ(AnswerHead(204, "", {}, "r", {11, true, 0}),
            "HTTP/1.1 204 No Content\r\nServer: dyad-gateway\r\nX-Request-Id: r\r\n\r\n");
}

TEST(AnswerHead, AStreamIsChunkedOverHttp11AndEndedByTheCloseOverHttp10) {
  EXPECT_EQ(AnswerHead(200, "text/event-stream", {}, "r", {11, true, std::nullopt}),
            "HTTP/1.1 200 OK\r\nServer: dyad-gateway\r\nContent-Type: text/event-stream\r\nX-Request-Id: r\r\n"
            "Transfer-Encoding: chunked\r\n\r\n");
  EXPECT_EQ(AnswerHead(200, "text/event-stream", {}, "r", {10, false, std::nullopt}),
            "HTTP/1.0 200 OK\r\nServer: dyad-gateway\r\nContent-Type: text/event-stream\r\nX-Request-Id: r\r\n\r\n");
}

TEST(AnswerHead, AnEmptyContentTypeIsLeftOut) {
  EXPECT_EQ(AnswerHead(200, "", {}, "r", {10, true, 2}),
            "HTTP/1.0 200 OK\r\nServer: dyad-gateway\r\nX-Request-Id: r\r\nConnection: keep-alive\r\n"
            "Content-Length: 2\r\n\r\n");
}

}  // namespace
}  // namespace dyad
