// One client's latency through several HTTP/1.1 paths, interleaved request by request.
//
// The /v1 bench (issue 16) wants the latency a proxy adds at one client: its p99 minus the p99 of the same request
// sent straight to the upstream. Measured one path after another (wrk -c1, a few seconds each), the difference is
// mostly the shared machine's noise: a burst of other work lands in one path's seconds and not in another's. Here
// every round sends one request on each path, in a shuffled order, on one kept-alive connection per path, so a
// burst falls on all paths alike and the difference of the percentiles is the proxies' own.
//
// Usage: dyad_one_client_probe [--rounds N] [--warmup N] NAME=HOST:PORT:REQUEST_FILE...
//   REQUEST_FILE holds one whole HTTP/1.1 request (head and body), sent as is for each round.
// Output: one JSON object, {"rounds": N, "paths": {NAME: {"requests", "failed", "p50_us", "p90_us", "p99_us",
// "p999_us", "max_us"}}}. A request counts as failed if its answer is not a 200 or the connection breaks (it is
// then reopened); failed requests are not in the percentiles.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace {

struct Path {
  std::string name;
  std::string host;
  int port = 0;
  std::string request;
  int fd = -1;
  std::string pending;  // bytes read past the last answer (none expected: one request in flight)
  std::vector<double> micros;
  int failed = 0;
};

[[noreturn]] void Die(const std::string& why) {
  std::fprintf(stderr, "dyad_one_client_probe: %s\n", why.c_str());
  std::exit(2);
}

bool Connect(Path& p) {
  if (p.fd >= 0) close(p.fd);
  p.pending.clear();
  p.fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(p.port));
  if (p.fd < 0 || inet_pton(AF_INET, p.host.c_str(), &addr.sin_addr) != 1 ||
      connect(p.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return false;
  int one = 1;
  setsockopt(p.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  timeval timeout{10, 0};
  setsockopt(p.fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  return true;
}

// Reads until `buf` holds at least `n` bytes; false if the connection ends or times out first.
bool Fill(Path& p, std::string& buf, size_t n) {
  char chunk[16384];
  while (buf.size() < n) {
    ssize_t got = read(p.fd, chunk, sizeof chunk);
    if (got <= 0) return false;
    buf.append(chunk, static_cast<size_t>(got));
  }
  return true;
}

// Reads until `buf` contains `what` at or after `from`; its offset, or nullopt.
std::optional<size_t> FillUntil(Path& p, std::string& buf, size_t from, std::string_view what) {
  for (;;) {
    if (size_t at = buf.find(what, from); at != std::string::npos) return at;
    if (!Fill(p, buf, buf.size() + 1)) return std::nullopt;
  }
}

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

// Reads one whole answer (Content-Length or chunked); true if it was a 200.
bool ReadAnswer(Path& p) {
  std::string& buf = p.pending;
  auto head_end = FillUntil(p, buf, 0, "\r\n\r\n");
  if (!head_end) return false;
  const std::string head = Lower(std::string_view(buf).substr(0, *head_end));
  const bool ok = head.rfind("http/1.1 200", 0) == 0;
  size_t pos = *head_end + 4;
  if (head.find("\r\ntransfer-encoding: chunked") != std::string::npos) {
    for (;;) {
      auto line_end = FillUntil(p, buf, pos, "\r\n");
      if (!line_end) return false;
      const size_t size = std::strtoul(buf.c_str() + pos, nullptr, 16);
      pos = *line_end + 2;
      if (size == 0) {  // trailers (none expected), then the empty line
        auto end = FillUntil(p, buf, pos - 2, "\r\n\r\n");
        if (!end) return false;
        pos = *end + 4;
        break;
      }
      if (!Fill(p, buf, pos + size + 2)) return false;
      pos += size + 2;
    }
  } else if (size_t at = head.find("\r\ncontent-length:"); at != std::string::npos) {
    pos += std::strtoul(head.c_str() + at + 17, nullptr, 10);
    if (!Fill(p, buf, pos)) return false;
  } else {
    return false;  // an answer delimited by the close: not what any path here sends
  }
  buf.erase(0, pos);
  return ok;
}

bool Exchange(Path& p) {
  if (p.fd < 0 && !Connect(p)) return false;
  size_t sent = 0;
  while (sent < p.request.size()) {
    ssize_t n = send(p.fd, p.request.data() + sent, p.request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return ReadAnswer(p);
}

double Percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const size_t i = static_cast<size_t>(q * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(i, sorted.size() - 1)];
}

Path ParsePath(const std::string& arg) {
  Path p;
  const size_t eq = arg.find('='), c1 = arg.find(':', eq + 1), c2 = arg.find(':', c1 + 1);
  if (eq == std::string::npos || c1 == std::string::npos || c2 == std::string::npos)
    Die("expected NAME=HOST:PORT:REQUEST_FILE, got " + arg);
  p.name = arg.substr(0, eq);
  p.host = arg.substr(eq + 1, c1 - eq - 1);
  p.port = std::atoi(arg.substr(c1 + 1, c2 - c1 - 1).c_str());
  std::ifstream in(arg.substr(c2 + 1), std::ios::binary);
  if (!in) Die("cannot read " + arg.substr(c2 + 1));
  std::ostringstream body;
  body << in.rdbuf();
  p.request = body.str();
  if (p.port <= 0 || p.request.empty()) Die("bad port or empty request in " + arg);
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 5000, warmup = 200;
  std::vector<Path> paths;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if ((arg == "--rounds" || arg == "--warmup") && i + 1 < argc) {
      (arg == "--rounds" ? rounds : warmup) = std::atoi(argv[++i]);
    } else {
      paths.push_back(ParsePath(arg));
    }
  }
  if (paths.empty() || rounds <= 0) Die("usage: dyad_one_client_probe [--rounds N] [--warmup N] NAME=HOST:PORT:FILE...");
  for (Path& p : paths)
    if (!Connect(p)) Die("cannot connect to " + p.name + " at " + p.host + ":" + std::to_string(p.port));

  std::mt19937 shuffle(20261203);
  std::vector<size_t> order(paths.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  for (int round = -warmup; round < rounds; ++round) {
    std::shuffle(order.begin(), order.end(), shuffle);
    for (size_t i : order) {
      Path& p = paths[i];
      const auto start = std::chrono::steady_clock::now();
      const bool ok = Exchange(p);
      const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
      if (round < 0) continue;
      if (ok) {
        p.micros.push_back(us);
      } else {
        ++p.failed;
        Connect(p);
      }
    }
  }

  std::printf("{\"rounds\": %d, \"paths\": {", rounds);
  for (size_t i = 0; i < paths.size(); ++i) {
    Path& p = paths[i];
    std::sort(p.micros.begin(), p.micros.end());
    std::printf("%s\"%s\": {\"requests\": %zu, \"failed\": %d, \"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, "
                "\"p999_us\": %.1f, \"max_us\": %.1f}",
                i ? ", " : "", p.name.c_str(), p.micros.size(), p.failed, Percentile(p.micros, 0.5),
                Percentile(p.micros, 0.9), Percentile(p.micros, 0.99), Percentile(p.micros, 0.999),
                p.micros.empty() ? 0.0 : p.micros.back());
  }
  std::printf("}}\n");
  return 0;
}
