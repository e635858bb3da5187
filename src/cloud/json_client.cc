#include "cloud/json_client.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>

#include "core/encoding.h"
#include "core/endpoint.h"
#include "core/parse_int.h"
#include "core/secret_bytes.h"
#include "core/time_format.h"

namespace dyad {
namespace {

bool SameName(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                    [](unsigned char x, unsigned char y) { return std::tolower(x) == std::tolower(y); });
}

bool HasHeader(const HttpHeaders& headers, std::string_view name) {
  return std::any_of(headers.begin(), headers.end(), [&](const auto& h) { return SameName(h.first, name); });
}

}  // namespace

ReplyError DecodeHttpStatus(std::string_view op, const HttpReply& reply) {
  const int s = reply.status;
  ErrorCode code = s == 501                ? ErrorCode::kUnimplemented
                   : s == 429 || s >= 500  ? ErrorCode::kUnavailable
                   : s == 401              ? ErrorCode::kUnauthenticated
                   : s == 403              ? ErrorCode::kPermissionDenied
                   : s == 404              ? ErrorCode::kNotFound
                   : s == 409              ? ErrorCode::kConflict
                   : s == 412              ? ErrorCode::kFailedPrecondition
                   : s >= 400              ? ErrorCode::kInvalidArgument
                                           : ErrorCode::kInternal;  // 1xx, 3xx: not followed
  std::string message = std::string(op) + ": HTTP " + std::to_string(s);
  if (!reply.body.empty()) {
    std::string snippet = reply.body.substr(0, 300);
    for (char& c : snippet) {
      if (c == '\n' || c == '\r') c = ' ';
    }
    message += ": " + snippet;
  }
  return ReplyError{MakeError(code, std::move(message)), s == 429, false};
}

Result<std::unique_ptr<JsonClient>> JsonClient::Create(JsonClientOptions options, std::unique_ptr<RequestAuth> auth,
                                                       std::unique_ptr<HttpTransport> http, const Clock& clock,
                                                       Random& random) {
  auto endpoint = ParseEndpoint(options.endpoint);
  if (!endpoint) {
    return MakeError(ErrorCode::kInvalidArgument, "endpoint '" + options.endpoint + "' is not http(s)://host[:port]");
  }
  if (!options.decode_error) options.decode_error = DecodeHttpStatus;
  return std::unique_ptr<JsonClient>(new JsonClient(std::move(options), std::move(endpoint->url),
                                                    std::move(endpoint->host), std::move(auth), std::move(http),
                                                    clock, random));
}

JsonClient::JsonClient(JsonClientOptions options, std::string url, std::string host, std::unique_ptr<RequestAuth> auth,
                       std::unique_ptr<HttpTransport> http, const Clock& clock, Random& random)
    : options_(std::move(options)),
      url_(std::move(url)),
      host_(std::move(host)),
      auth_(std::move(auth)),
      http_(std::move(http)),
      clock_(clock),
      random_(random) {}

Result<HttpReply> JsonClient::Call(const JsonRequest& request) {
  if (!request.path.starts_with('/')) {
    return Report(request, MakeError(ErrorCode::kInvalidArgument, request.op + ": path '" + request.path +
                                                                      "' does not start with '/'"));
  }
  const RetryPolicy& policy = options_.retry;
  bool auth_retry_left = true;
  for (int attempt = 1;;) {
    const auto sent_at = options_.observer ? clock_.Now() : Clock::Instant{};
    Result<HttpReply> sent = Send(request);
    if (options_.observer) {
      options_.observer->OnAttempt(host_, request.op, attempt, sent.ok() ? sent->status : 0,
                                   sent.ok() ? std::nullopt : std::optional<ErrorCode>(sent.code()),
                                   clock_.Now() - sent_at);
    }
    Clock::Duration retry_after{0};
    Error error{ErrorCode::kInternal, ""};
    if (!sent.ok()) {
      error = sent.error();
    } else if (sent->status >= 200 && sent->status < 300) {
      return Report(request, std::move(sent));
    } else {
      ReplyError decoded = options_.decode_error(request.op, *sent);
      if (decoded.throttled && options_.observer) options_.observer->OnThrottle(host_, request.op);
      if (decoded.auth_rejected && auth_retry_left && auth_ && auth_->OnRejected(request.op, *sent)) {
        // At once, and not one of the policy's attempts; once per call: a
        // correction that did not help is not tried again.
        auth_retry_left = false;
        if (options_.observer) options_.observer->OnRetry(host_, request.op);
        continue;
      }
      error = std::move(decoded.error);
      if (error.code == ErrorCode::kUnavailable) retry_after = RetryAfter(*sent);
    }
    if (error.code != ErrorCode::kUnavailable) return Report(request, std::move(error));
    if (attempt >= policy.max_attempts) {
      if (policy.max_attempts > 1) error.message += " (after " + std::to_string(attempt) + " attempts)";
      return Report(request, std::move(error));
    }
    Clock::Duration wait = FullJitterBackoff(policy, attempt - 1, random_);
    wait = std::max(wait, std::min(retry_after, Clock::Duration(policy.cap)));
    if (options_.observer) options_.observer->OnRetry(host_, request.op);
    clock_.SleepFor(wait);
    ++attempt;
  }
}

Result<HttpReply> JsonClient::Send(const JsonRequest& request) {
  CloudRequest req{request.method, host_, request.path, request.query, {}, request.body};
  req.headers.reserve(request.headers.size() + 6);  // with the auth step's: no growth
  req.headers.emplace_back("Host", host_);
  req.headers.insert(req.headers.end(), request.headers.begin(), request.headers.end());
  if (!req.body.empty() && !HasHeader(req.headers, "Content-Type")) {
    req.headers.emplace_back("Content-Type", "application/json");
  }
  if (auth_) {
    if (Status authorized = auth_->Authorize(req); !authorized.ok()) {
      Cleanse(req.body);
      return authorized.error();
    }
  }
  HttpCall call;
  call.method = std::move(req.method);
  call.url.reserve(url_.size() + req.path.size() + req.query.size() + 1);
  call.url.append(url_).append(req.path);
  if (!req.query.empty()) call.url.append(1, '?').append(req.query);
  call.headers = std::move(req.headers);
  call.body = std::move(req.body);
  Cleanse(req.body);  // a short body's move leaves its bytes in the small-string buffer
  auto reply = http_->Send(call);
  Cleanse(call.body);
  for (auto& header : call.headers) Cleanse(header.second);  // a token or signature
  if (!reply.ok()) return MakeError(reply.code(), request.op + ": " + reply.error().message);
  return reply;
}

Clock::Duration JsonClient::RetryAfter(const HttpReply& reply) const {
  const std::string header = reply.Header("retry-after");
  std::string_view value = TrimSpace(header);
  if (value.empty()) return Clock::Duration(0);
  if (auto seconds = ParseInt<uint32_t>(value)) return std::chrono::seconds(*seconds);
  if (auto date = ParseHttpDate(value)) {
    return std::max(Clock::Duration(0), std::chrono::duration_cast<Clock::Duration>(*date - clock_.WallNow()));
  }
  return Clock::Duration(0);
}

Result<HttpReply> JsonClient::Report(const JsonRequest& request, Result<HttpReply> result) {
  if (options_.observer) {
    options_.observer->OnCall(host_, request.op,
                              result.ok() ? std::nullopt : std::optional<ErrorCode>(result.code()));
  }
  return result;
}

JsonClientOptions ServiceClientOptions(std::string endpoint, RetryPolicy retry, ErrorDecoder decode_error,
                                       CloudCallObserver* observer) {
  JsonClientOptions o;
  o.endpoint = std::move(endpoint);
  while (o.endpoint.ends_with('/')) o.endpoint.pop_back();
  o.retry = retry;
  o.decode_error = std::move(decode_error);
  o.observer = observer;
  return o;
}

Result<nlohmann::json> JsonObjectAnswer(const std::string& op, HttpReply& reply) {
  if (reply.body.empty()) return nlohmann::json::object();
  auto j = nlohmann::json::parse(reply.body, nullptr, false);
  Cleanse(reply.body);
  if (j.is_discarded() || !j.is_object()) {
    return MakeError(ErrorCode::kUnavailable,
                     op + ": the answer (HTTP " + std::to_string(reply.status) + ") is not a JSON object");
  }
  return j;
}

}  // namespace dyad
