#include "transport/curl_transport.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <vector>

#include "core/mutex.h"

namespace dyad {

std::string HttpReply::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (k == name) return v;
  }
  return "";
}

namespace {

struct Received {
  HttpReply* reply;
  size_t limit;
  bool too_big = false;
};

size_t OnBody(char* data, size_t size, size_t n, void* user) {
  auto* r = static_cast<Received*>(user);
  size_t bytes = size * n;
  if (r->reply->body.size() + bytes > r->limit) {
    r->too_big = true;
    return 0;  // aborts the transfer
  }
  r->reply->body.append(data, bytes);
  return bytes;
}

size_t OnHeader(char* data, size_t size, size_t n, void* user) {
  auto* r = static_cast<Received*>(user);
  size_t bytes = size * n;
  std::string_view line(data, bytes);
  if (line.starts_with("HTTP/")) {
    r->reply->headers.clear();  // a 100-continue or redirect before the final answer
    return bytes;
  }
  auto colon = line.find(':');
  if (colon == std::string_view::npos) return bytes;
  std::string name(line.substr(0, colon));
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  std::string_view value = line.substr(colon + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' ')) value.remove_suffix(1);
  r->reply->headers.emplace_back(std::move(name), std::string(value));
  return bytes;
}

class CurlTransport final : public HttpTransport {
 public:
  explicit CurlTransport(CurlOptions options) : options_(std::move(options)) {
    static std::once_flag init;
    std::call_once(init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  }
  ~CurlTransport() override {
    for (CURL* h : idle_) curl_easy_cleanup(h);
  }

  Result<HttpReply> Send(const HttpCall& call) override {
    CURL* h = Lease();
    if (!h) return MakeError(ErrorCode::kInternal, "curl_easy_init failed");
    HttpReply reply;
    Received received{&reply, options_.max_response_bytes};
    curl_slist* headers = nullptr;
    for (const auto& [k, v] : call.headers) headers = curl_slist_append(headers, (k + ": " + v).c_str());
    headers = curl_slist_append(headers, "Expect:");  // no 100-continue round trip

    curl_easy_setopt(h, CURLOPT_URL, call.url.c_str());
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    if (call.method == "GET") {
      curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    } else {
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, call.body.data());
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(call.body.size()));
    }
    // A handle is reused: a verb set for an earlier request must not stick.
    bool plain = call.method == "GET" || call.method == "POST";
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, plain ? nullptr : call.method.c_str());
    auto timeout = call.timeout.count() > 0 ? call.timeout : options_.request_timeout;
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(std::min(timeout, options_.connect_timeout).count()));
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, OnBody);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &received);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, OnHeader);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &received);

    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, nullptr);
    curl_slist_free_all(headers);
    Return(h);
    if (received.too_big) {
      return MakeError(ErrorCode::kUnavailable, call.method + " " + call.url + ": response larger than " +
                                                    std::to_string(options_.max_response_bytes) + " bytes");
    }
    if (rc != CURLE_OK) {
      return MakeError(ErrorCode::kUnavailable, call.method + " " + call.url + ": " + curl_easy_strerror(rc));
    }
    reply.status = static_cast<int>(status);
    return reply;
  }

 private:
  CURL* Lease() {
    {
      MutexLock lock(&mu_);
      if (!idle_.empty()) {
        CURL* h = idle_.back();
        idle_.pop_back();
        return h;
      }
    }
    CURL* h = curl_easy_init();
    if (!h) return nullptr;
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    if (!options_.ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, options_.ca_file.c_str());
    return h;
  }
  void Return(CURL* h) {
    MutexLock lock(&mu_);
    idle_.push_back(h);
  }

  CurlOptions options_;
  Mutex mu_;
  std::vector<CURL*> idle_ DYAD_GUARDED_BY(mu_);
};

}  // namespace

std::unique_ptr<HttpTransport> NewCurlTransport(CurlOptions options) {
  return std::make_unique<CurlTransport>(std::move(options));
}

}  // namespace dyad
