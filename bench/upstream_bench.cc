// The /v1 path's upstream call alone: requests/s and per-request latency of
// UpstreamClient (libcurl, kept-alive connections) to a loopback server in
// this process, beside a minimal blocking-socket client (write the request,
// read the answer) to the same server in the same run; the difference is the
// client's own overhead per request. A plain answer (one body piece) and a
// streamed one (chunked, 16 pieces); one client thread, then eight.
// Usage: dyad_upstream_bench [REQUESTS_PER_THREAD]   (default 20000)
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "testing/loopback_http_server.h"
#include "transport/upstream_client.h"

namespace {

using Clock = std::chrono::steady_clock;

const std::string kBody = "{\"model\":\"gpt-x\",\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}]}";

std::string PlainAnswer() {
  const std::string body = "{\"id\":\"chatcmpl-1\",\"choices\":[{\"message\":{\"content\":\"hi\"}}]}";
  return "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n\r\n" + body;
}

std::string StreamedAnswer() {
  std::string a = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
  char size[16];
  for (int i = 0; i < 16; ++i) {
    const std::string event = "data: {\"delta\":\"token" + std::to_string(i) + "\"}\n\n";
    std::snprintf(size, sizeof size, "%zx\r\n", event.size());
    a += size + event + "\r\n";
  }
  return a + "0\r\n\r\n";
}

struct CountingSink : dyad::UpstreamSink {
  size_t bytes = 0;
  bool OnHead(const dyad::UpstreamHead&) override { return true; }
  bool OnBody(std::string_view piece) override {
    bytes += piece.size();
    return true;
  }
};

// A blocking client on one kept connection: the least any client can do.
class RawClient {
 public:
  explicit RawClient(int port) : fd_(socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    request_ = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer sk-bench\r\n"
               "Content-Type: application/json\r\nContent-Length: " +
               std::to_string(kBody.size()) + "\r\n\r\n" + kBody;
  }
  ~RawClient() { close(fd_); }
  // Sends the request and reads until the answer's known length arrived.
  bool Call(size_t answer_size) {
    if (write(fd_, request_.data(), request_.size()) != static_cast<ssize_t>(request_.size())) return false;
    char buf[16384];
    size_t got = 0;
    while (got < answer_size) {
      const ssize_t n = read(fd_, buf, sizeof buf);
      if (n <= 0) return false;
      got += static_cast<size_t>(n);
    }
    return true;
  }

 private:
  int fd_;
  std::string request_;
};

struct Figures {
  double rps = 0, p50 = 0, p99 = 0;
};

// `call` run `count` times on each of `threads` threads.
template <typename MakeCall>
Figures Run(int threads, int count, MakeCall make_call) {
  std::vector<std::vector<double>> samples(threads);
  std::vector<std::thread> pool;
  const auto start = Clock::now();
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      auto call = make_call();
      samples[t].reserve(count);
      for (int i = 0; i < count; ++i) {
        const auto t0 = Clock::now();
        if (!call()) {
          std::fprintf(stderr, "a call failed\n");
          std::exit(1);
        }
        samples[t].push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
      }
    });
  }
  for (auto& t : pool) t.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<double> all;
  for (auto& s : samples) all.insert(all.end(), s.begin(), s.end());
  std::sort(all.begin(), all.end());
  return Figures{all.size() / seconds, all[all.size() / 2], all[all.size() * 99 / 100]};
}

}  // namespace

int main(int argc, char** argv) {
  const int count = argc > 1 ? std::atoi(argv[1]) : 20000;
  auto made = dyad::NewUpstreamClient({});
  if (!made.ok()) {
    std::fprintf(stderr, "%s\n", made.error().message.c_str());
    return 1;
  }
  std::unique_ptr<dyad::UpstreamClient> client = std::move(made).value();
  std::printf("%-10s %-8s %-20s %12s %10s %10s\n", "answer", "threads", "client", "requests/s", "p50 us", "p99 us");
  for (const bool streamed : {false, true}) {
    const std::string answer = streamed ? StreamedAnswer() : PlainAnswer();
    dyad::LoopbackHttpServer* self = nullptr;
    dyad::LoopbackHttpServer server([&](dyad::LoopbackConn& c) {
      while (!self->Read(c).empty()) {
        if (!c.Write(answer)) return;
      }
    });
    self = &server;
    const std::string url = server.url("/v1/chat/completions");
    for (const int threads : {1, 8}) {
      const Figures raw = Run(threads, count, [&] {
        return [raw = std::make_shared<RawClient>(server.port()), &answer] { return raw->Call(answer.size()); };
      });
      const Figures up = Run(threads, count, [&] {
        return [&] {
          dyad::UpstreamRequest request;
          request.url = url;
          request.body = kBody;
          request.headers = {{"Authorization", "Bearer sk-bench"}, {"Content-Type", "application/json"}};
          CountingSink sink;
          return client->Send(request, sink).ok() && sink.bytes > 0;
        };
      });
      const char* kind = streamed ? "streamed" : "plain";
      std::printf("%-10s %-8d %-20s %12.0f %10.1f %10.1f\n", kind, threads, "raw socket", raw.rps, raw.p50, raw.p99);
      std::printf("%-10s %-8d %-20s %12.0f %10.1f %10.1f\n", kind, threads, "UpstreamClient", up.rps, up.p50, up.p99);
      std::printf("%-10s %-8d %-20s %12s %10.1f %10.1f\n", kind, threads, "overhead", "", up.p50 - raw.p50,
                  up.p99 - raw.p99);
    }
  }
  return 0;
}
