// LoopbackHttpServer: a scripted HTTP/1.1 server on 127.0.0.1 for tests and
// benches of HTTP clients. Every accepted connection runs the script on a
// thread of its own (so concurrent clients are served at once), over plain
// TCP or, given an SSL_CTX, TLS. The script reads requests and writes bytes
// as it likes: well-formed answers, pieces with pauses it controls, or
// garbage. It counts connections, records requests, and notes when a client
// closed a connection the script waited on.
//
// No gtest in here: bench/ uses it.
// Thread-safe; the destructor stops accepting, shuts every open connection
// down (a script blocked reading returns) and joins the threads.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace dyad {

// One accepted connection.
class LoopbackConn {
 public:
  LoopbackConn(int fd, SSL* ssl, int index) : fd_(fd), ssl_(ssl), index_(index) {}
  int index() const { return index_; }  // 0 for the server's first connection
  // The socket, for what the script does beyond reading and writing (a
  // half-close: shutdown(fd(), SHUT_WR)). Plain TCP only.
  int fd() const { return fd_; }

  // The next whole request (head and Content-Length body), "" at the end of
  // the stream.
  std::string ReadRequest() {
    for (;;) {
      const size_t eoh = buf_.find("\r\n\r\n");
      if (eoh != std::string::npos) {
        size_t length = 0;
        std::string head = buf_.substr(0, eoh);
        for (char& c : head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (size_t at = head.find("\r\ncontent-length: "); at != std::string::npos) {
          length = std::stoul(head.substr(at + 18));
        }
        if (buf_.size() >= eoh + 4 + length) {
          std::string request = buf_.substr(0, eoh + 4 + length);
          buf_.erase(0, eoh + 4 + length);
          return request;
        }
      }
      char chunk[16384];
      const long n = Read(chunk, sizeof chunk);
      if (n <= 0) return "";
      buf_.append(chunk, static_cast<size_t>(n));
    }
  }
  // What arrives next, up to `size` bytes, as it comes (no request framing,
  // not recorded; after the bytes ReadRequest kept, if any); "" at the end
  // of the stream.
  std::string ReadSome(size_t size) {
    std::string some = std::move(buf_);
    buf_.clear();
    if (!some.empty()) return some;
    some.resize(size);
    const long n = Read(some.data(), size);
    some.resize(n > 0 ? static_cast<size_t>(n) : 0);
    return some;
  }
  bool Write(std::string_view s) {
    size_t off = 0;
    while (off < s.size()) {
      const long n = ssl_ ? SSL_write(ssl_, s.data() + off, static_cast<int>(s.size() - off))
                          : ::send(fd_, s.data() + off, s.size() - off, MSG_NOSIGNAL);  // a closed peer: false, not SIGPIPE
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }
  // Waits until the client closes (or the server stops).
  void WaitForClose() {
    char chunk[256];
    while (Read(chunk, sizeof chunk) > 0) {
    }
  }

 private:
  long Read(char* into, size_t size) {
    return ssl_ ? SSL_read(ssl_, into, static_cast<int>(size)) : ::read(fd_, into, size);
  }
  int fd_;
  SSL* ssl_;
  int index_;
  std::string buf_;
};

class LoopbackHttpServer {
 public:
  using Script = std::function<void(LoopbackConn&)>;
  // A script that also reaches the server running it (to Read() and record).
  using ServerScript = std::function<void(LoopbackConn&, LoopbackHttpServer&)>;

  // `tls`: serve TLS with this context (not owned; must outlive the server).
  // SSL_write and SSL_shutdown write with write(2), not send(MSG_NOSIGNAL):
  // a process serving TLS ignores SIGPIPE (the unit tests' main does,
  // src/testing/unit_test_main.cc), or a client that closed first ends it.
  explicit LoopbackHttpServer(Script script, SSL_CTX* tls = nullptr) : script_(std::move(script)), tls_(tls) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    listen(fd_, 128);
    socklen_t len = sizeof a;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { Accept(); });
  }
  ~LoopbackHttpServer() {
    stopping_ = true;
    shutdown(fd_, SHUT_RDWR);
    acceptor_.join();
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (int c : open_) shutdown(c, SHUT_RDWR);
    }
    for (auto& t : workers_) t.join();
    close(fd_);
  }
  explicit LoopbackHttpServer(ServerScript script, SSL_CTX* tls = nullptr)
      : LoopbackHttpServer(Script([this, script = std::move(script)](LoopbackConn& c) { script(c, *this); }), tls) {}
  LoopbackHttpServer(const LoopbackHttpServer&) = delete;
  LoopbackHttpServer& operator=(const LoopbackHttpServer&) = delete;

  int port() const { return port_; }
  std::string url(const std::string& path = "/") const {
    return std::string(tls_ ? "https" : "http") + "://127.0.0.1:" + std::to_string(port_) + path;
  }
  int connections() const { return connections_.load(); }
  // Connections the server has closed (after their script returned).
  int closed() const { return closed_.load(); }

  // Reads a request on `conn` and records it.
  std::string Read(LoopbackConn& conn) {
    std::string r = conn.ReadRequest();
    if (!r.empty()) {
      std::lock_guard<std::mutex> lock(mu_);
      requests_.push_back(r);
    }
    return r;
  }
  std::vector<std::string> requests() {
    std::lock_guard<std::mutex> lock(mu_);
    return requests_;
  }

 private:
  void Accept() {
    for (int i = 0;; ++i) {
      const int c = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) {
        if (stopping_) return;
        continue;
      }
      connections_.fetch_add(1);
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) {
        close(c);
        return;
      }
      open_.push_back(c);
      workers_.emplace_back([this, c, i] { Serve(c, i); });
    }
  }
  void Serve(int c, int index) {
    SSL* ssl = nullptr;
    bool ready = true;
    if (tls_) {
      ssl = SSL_new(tls_);
      SSL_set_fd(ssl, c);
      ready = SSL_accept(ssl) == 1;
    }
    if (ready) {
      LoopbackConn conn(c, ssl, index);
      script_(conn);
    }
    if (ssl) {
      if (ready) SSL_shutdown(ssl);
      SSL_free(ssl);
    }
    std::lock_guard<std::mutex> lock(mu_);
    open_.erase(std::find(open_.begin(), open_.end(), c));
    close(c);
    closed_.fetch_add(1);
  }

  Script script_;
  SSL_CTX* tls_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> connections_{0};
  std::atomic<int> closed_{0};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<int> open_;
  std::vector<std::thread> workers_;
  std::vector<std::string> requests_;
};

}  // namespace dyad
