#include "transport/curl_common.h"

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace dyad {

void EnsureCurlGlobalInit() {
  static std::once_flag init;
  std::call_once(init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

bool ProxyInEnvironment() {
  for (const char* name : {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"}) {
    const char* v = std::getenv(name);
    if (v && *v) return true;
  }
  return false;
}

// find_first_of of three characters is a memchr for each of them, per byte
// (≈ 10 k instructions per signed request).
bool HasBreakOrNul(std::string_view s) {
  bool found = false;
  for (char c : s) found |= (c == '\r') | (c == '\n') | (c == '\0');
  return found;
}

bool SendAllOn(CURL* curl, curl_socket_t sock, std::string_view data, std::chrono::steady_clock::time_point deadline,
               size_t& sent, std::string& why) {
  while (sent < data.size()) {
    size_t n = 0;
    const CURLcode rc = curl_easy_send(curl, data.data() + sent, data.size() - sent, &n);
    if (rc == CURLE_OK) {
      sent += n;
    } else if (rc != CURLE_AGAIN) {
      why = curl_easy_strerror(rc);
      return false;
    } else if (!WaitForSocket(sock, POLLOUT, deadline)) {
      why = "timed out sending the request";
      return false;
    }
  }
  return true;
}

short WaitForSocketEvents(curl_socket_t sock, short events, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return 0;
    pollfd p{sock, events, 0};
    const int n = poll(&p, 1, static_cast<int>(std::min<long long>(left + 1, 1 << 30)));
    if (n > 0) return p.revents;
    if (n < 0 && errno != EINTR) return 0;  // as a timeout: a retry would spin (ENOMEM, say)
  }
}

bool WaitForSocket(curl_socket_t sock, short events, std::chrono::steady_clock::time_point deadline) {
  return WaitForSocketEvents(sock, events, deadline) != 0;
}

namespace {

// What a read while sending found.
enum class EarlyRead { kNothing, kAnswer, kEnded };

EarlyRead ReadWhileSending(CURL* curl, char* into, size_t room, size_t& got, std::string& why) {
  size_t n = 0;
  const CURLcode rc = curl_easy_recv(curl, into, room, &n);
  if (rc == CURLE_AGAIN) return EarlyRead::kNothing;  // no data (a session ticket, say)
  if (rc == CURLE_OK && n > 0) {
    got = n;
    return EarlyRead::kAnswer;
  }
  why = rc == CURLE_OK ? "the connection closed before any answer" : curl_easy_strerror(rc);
  return EarlyRead::kEnded;
}

}  // namespace

SendEnd SendWatchingForAnswer(CURL* curl, curl_socket_t sock, std::string_view data,
                              std::chrono::steady_clock::time_point deadline, size_t& sent, char* into, size_t room,
                              size_t& got, std::string& why) {
  got = 0;
  while (sent < data.size()) {
    size_t n = 0;
    const CURLcode rc = curl_easy_send(curl, data.data() + sent, data.size() - sent, &n);
    if (rc == CURLE_OK) {
      sent += n;
      continue;
    }
    if (rc != CURLE_AGAIN) {
      // An upstream that answered and reset: the answer is still to be read.
      std::string ignored;
      if (ReadWhileSending(curl, into, room, got, ignored) == EarlyRead::kAnswer) return SendEnd::kAnswered;
      why = curl_easy_strerror(rc);
      return SendEnd::kFailed;
    }
    const short ready = WaitForSocketEvents(sock, POLLIN | POLLOUT, deadline);
    if (ready == 0) {
      why = "timed out sending the request";
      return SendEnd::kFailed;
    }
    if (ready & (POLLIN | POLLERR | POLLHUP)) {
      switch (ReadWhileSending(curl, into, room, got, why)) {
        case EarlyRead::kAnswer:
          return SendEnd::kAnswered;
        case EarlyRead::kEnded:
          return SendEnd::kFailed;
        case EarlyRead::kNothing:
          break;
      }
    }
  }
  return SendEnd::kSent;
}

bool Idempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "PUT" || method == "DELETE" || method == "OPTIONS";
}

// No poll() shortcut: bytes of a TLS record already read from the socket
// wait inside OpenSSL, where poll() does not see them (the socket is quiet,
// the connection is not). curl_easy_recv asks OpenSSL first, then the
// socket: CURLE_AGAIN only when neither holds anything (one syscall, as the
// poll() was).
bool ConnectionStillOpen(CURL* curl) {
  char byte;
  size_t n = 0;
  return curl_easy_recv(curl, &byte, 1, &n) == CURLE_AGAIN;
}

bool MakeRoom(std::vector<char>& in, size_t& begin, size_t& end, size_t max_size) {
  if (begin > 0) {
    std::memmove(in.data(), in.data() + begin, end - begin);
    end -= begin;
    begin = 0;
  }
  if (end < in.size()) return true;
  if (in.size() >= max_size) return false;
  in.resize(in.size() * 2);
  return true;
}

}  // namespace dyad
