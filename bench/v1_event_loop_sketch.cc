// The /v1 proxy's per-request work done event-driven: what the gateway's design could reach on this machine.
//
// Not a product: a measuring stick for issue 16 (bench/v1_proxy_bench.py runs it as the "event-loop sketch" path
// when it is built, under DYAD_BENCH). The gateway serves each /v1 request on a thread that blocks twice, for the
// client's next request and for the upstream's answer; on a 2-core VM the wake-ups cost more than the work. This
// sketch does the same request-path work as nginx does it: one asio io_context per thread (SO_REUSEPORT, no
// hand-offs), each connection's request read by Beast's parser, the client token checked as the gateway checks it
// (SHA-256, constant-time compare), the model picked from the body, the upstream request written on a pooled
// keep-alive connection with the upstream key, and the answer read by the gateway's own AnswerReader and re-framed as
// chunks to the client, one write per upstream read. No timeouts, metrics, access log, cache or error answers: a
// request it cannot serve closes its connection.
//
// Usage: dyad_v1_event_loop_sketch PORT STUB_PORT CLIENT_TOKEN UPSTREAM_KEY [THREADS=2]
// Routes: a body naming "bench-model-sse" to the stub's /sse/v1/chat/completions, any other to /v1/chat/completions.

#include <sys/socket.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/encoding.h"
#include "transport/http_answer.h"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

struct Settings {
  int stub_port = 0;
  std::string token_sha256;
  std::string upstream_key;
};

// One thread's kept-alive upstream connections (the thread's own: no lock).
using UpstreamPool = std::vector<std::unique_ptr<tcp::socket>>;

class Session : public std::enable_shared_from_this<Session>, public dyad::AnswerListener {
 public:
  Session(tcp::socket client, UpstreamPool& pool, const Settings& settings)
      : client_(std::move(client)), pool_(pool), settings_(settings) {}

  void Read() {
    parser_.emplace();
    parser_->body_limit(1 << 20);
    http::async_read(client_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (!ec) self->OnRequest();
    });
  }

 private:
  void OnRequest() {
    const auto& request = parser_->get();
    const std::string_view auth = request[http::field::authorization];
    if (auth.substr(0, 7) != "Bearer " ||
        !dyad::ConstantTimeEquals(dyad::Sha256(auth.substr(7)), settings_.token_sha256)) {
      return;  // closes
    }
    const std::string& body = request.body();
    const bool sse = body.find("\"bench-model-sse\"") != std::string::npos;
    upstream_request_.clear();
    upstream_request_.append("POST ")
        .append(sse ? "/sse/v1/chat/completions" : "/v1/chat/completions")
        .append(" HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ")
        .append(settings_.upstream_key)
        .append("\r\nContent-Type: application/json\r\nContent-Length: ")
        .append(std::to_string(body.size()))
        .append("\r\n\r\n")
        .append(body);
    if (!pool_.empty()) {
      upstream_ = std::move(pool_.back());
      pool_.pop_back();
      return SendUpstream();
    }
    upstream_ = std::make_unique<tcp::socket>(client_.get_executor());
    const tcp::endpoint stub(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(settings_.stub_port));
    upstream_->async_connect(stub, [self = shared_from_this()](beast::error_code ec) {
      if (ec) return;
      self->upstream_->set_option(tcp::no_delay(true));
      self->SendUpstream();
    });
  }

  void SendUpstream() {
    asio::async_write(*upstream_, asio::buffer(upstream_request_), [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return;
      self->reader_.StartStreaming(&self->answer_headers_, self.get(), false);
      self->answered_ = false;
      self->ReadUpstream();
    });
  }

  void ReadUpstream() {
    upstream_->async_read_some(asio::buffer(read_buffer_), [self = shared_from_this()](beast::error_code ec, size_t n) {
      if (ec) return;
      self->Feed(n);
      if (!self->reader_.failed() && !self->answered_) self->ReadUpstream();
    });
  }

  // What the reader did not use yet waits in unread_ for the next read's bytes.
  void Feed(size_t n) {
    if (unread_.empty()) {
      const size_t used = reader_.Feed(read_buffer_, n);
      unread_.assign(read_buffer_ + used, n - used);
      return;
    }
    unread_.append(read_buffer_, n);
    unread_.erase(0, reader_.Feed(unread_.data(), unread_.size()));
  }

  bool OnAnswerHead(int status) override {
    held_.append("HTTP/1.1 ").append(std::to_string(status)).append(" OK\r\n");
    for (const auto& [name, value] : answer_headers_) {
      if (name == "content-type") held_.append("Content-Type: ").append(value).append("\r\n");
    }
    held_.append("Transfer-Encoding: chunked\r\n\r\n");
    return true;
  }

  bool OnAnswerBody(std::string_view piece) override {
    char size[24];
    const int n = std::snprintf(size, sizeof size, "%zx\r\n", piece.size());
    held_.append(size, static_cast<size_t>(n)).append(piece).append("\r\n");
    return true;
  }

  bool OnAnswerFlush(bool last) override {
    if (last) {
      held_.append("0\r\n\r\n");
      answered_ = true;
      pool_.push_back(std::move(upstream_));
    }
    auto out = std::make_shared<std::string>(std::move(held_));
    held_.clear();
    asio::async_write(client_, asio::buffer(*out), [self = shared_from_this(), out, last](beast::error_code ec, size_t) {
      if (!ec && last) self->Read();
    });
    return true;
  }

  tcp::socket client_;
  UpstreamPool& pool_;
  const Settings& settings_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::unique_ptr<tcp::socket> upstream_;
  std::string upstream_request_;
  dyad::AnswerReader reader_;
  dyad::HttpHeaders answer_headers_;
  char read_buffer_[16384];
  std::string unread_;
  std::string held_;
  bool answered_ = false;
};

void Accept(tcp::acceptor& acceptor, UpstreamPool& pool, const Settings& settings) {
  acceptor.async_accept([&acceptor, &pool, &settings](beast::error_code ec, tcp::socket socket) {
    if (!ec) {
      socket.set_option(tcp::no_delay(true));
      std::make_shared<Session>(std::move(socket), pool, settings)->Read();
    }
    Accept(acceptor, pool, settings);
  });
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: dyad_v1_event_loop_sketch PORT STUB_PORT CLIENT_TOKEN UPSTREAM_KEY [THREADS]\n");
    return 2;
  }
  const auto port = static_cast<unsigned short>(std::atoi(argv[1]));
  const Settings settings{std::atoi(argv[2]), dyad::Sha256(argv[3]), argv[4]};
  const int threads = argc > 5 ? std::atoi(argv[5]) : 2;
  std::vector<std::thread> running;
  for (int i = 0; i < threads; ++i) {
    running.emplace_back([port, &settings] {
      asio::io_context io(1);
      UpstreamPool pool;
      tcp::acceptor acceptor(io);
      acceptor.open(tcp::v4());
      acceptor.set_option(asio::socket_base::reuse_address(true));
      int one = 1;
      setsockopt(acceptor.native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
      acceptor.bind(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
      acceptor.listen();
      Accept(acceptor, pool, settings);
      io.run();
    });
  }
  for (auto& t : running) t.join();
}
