#include "backends/aws/aws_json_client.h"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>
#include <set>

#include "backends/aws/xml_text.h"
#include "core/endpoint.h"
#include "core/time_format.h"

namespace dyad {
namespace {

const std::set<std::string, std::less<>> kThrottling = {
    "ThrottlingException", "Throttling", "ThrottledException", "TooManyRequestsException", "RequestLimitExceeded",
    "RequestThrottled", "RequestThrottledException", "SlowDown", "ProvisionedThroughputExceededException"};
const std::set<std::string, std::less<>> kServerSide = {"InternalServiceError", "InternalFailure",
                                                        "KMSInternalException", "ServiceUnavailable",
                                                        "ServiceUnavailableException", "DependencyTimeoutException"};
const std::set<std::string, std::less<>> kDenied = {
    "AccessDeniedException", "AccessDenied", "UnrecognizedClientException", "InvalidSignatureException",
    "IncompleteSignature", "MissingAuthenticationToken", "InvalidClientTokenId", "SignatureDoesNotMatch",
    "ExpiredTokenException", "ExpiredToken", "AuthFailure", "NotAuthorized"};
const std::set<std::string, std::less<>> kSkew = {"RequestTimeTooSkewed", "RequestExpired", "RequestInTheFuture"};

std::string ShortType(std::string type) {
  if (auto hash = type.rfind('#'); hash != std::string::npos) type = type.substr(hash + 1);
  if (auto colon = type.find(':'); colon != std::string::npos) type = type.substr(0, colon);
  return type;
}

}  // namespace

Error AwsErrorFromReply(const std::string& action, const HttpReply& reply, bool* clock_skew) {
  std::string type = ShortType(reply.Header("x-amzn-errortype"));
  std::string message;
  auto j = nlohmann::json::parse(reply.body, nullptr, false);
  if (j.is_object()) {
    if (type.empty() && j.contains("__type") && j["__type"].is_string()) type = ShortType(j["__type"].get<std::string>());
    for (const char* k : {"message", "Message"}) {
      if (j.contains(k) && j[k].is_string()) message = j[k].get<std::string>();
    }
  } else if (reply.body.starts_with("<")) {  // query-protocol XML (some auth errors)
    if (type.empty()) type = XmlElementText(reply.body, "Code");
    message = XmlElementText(reply.body, "Message");
  } else if (!reply.body.empty()) {
    // Not JSON (a proxy's page, an XML auth error): keep a bounded snippet.
    message = reply.body.substr(0, 300);
    for (char& c : message) {
      if (c == '\n' || c == '\r') c = ' ';
    }
  }
  if (type.empty()) type = "HTTP " + std::to_string(reply.status);
  const bool skew = kSkew.count(type) ||
                    (type == "InvalidSignatureException" &&
                     (message.find("Signature expired") != std::string::npos ||
                      message.find("not yet current") != std::string::npos));
  if (clock_skew) *clock_skew = skew;

  ErrorCode code;
  if (kThrottling.count(type) || kServerSide.count(type) || reply.status >= 500) {
    code = reply.status == 501 ? ErrorCode::kUnimplemented : ErrorCode::kUnavailable;
  } else if (kDenied.count(type) || skew || reply.status == 401 || reply.status == 403) {
    code = ErrorCode::kPermissionDenied;
  } else if (type == "ResourceNotFoundException" || type == "NotFoundException") {
    code = ErrorCode::kNotFound;
  } else if (type == "ResourceExistsException" || type == "AlreadyExistsException") {
    code = ErrorCode::kAlreadyExists;
  } else if (type == "InvalidCiphertextException" || type == "IncorrectKeyException" || type == "DecryptionFailure") {
    code = ErrorCode::kDataLoss;
  } else if (type == "DisabledException" || type == "KMSInvalidStateException" || type == "InvalidRequestException" ||
             type == "UnsupportedOperationException" || type == "LimitExceededException") {
    code = ErrorCode::kFailedPrecondition;
  } else if (type == "InvalidParameterException" || type == "ValidationException" ||
             type == "SerializationException" || type == "InvalidKeyUsageException") {
    code = ErrorCode::kInvalidArgument;
  } else {
    code = ErrorCode::kInternal;
  }
  return MakeError(code, action + ": " + type + (message.empty() ? "" : ": " + message));
}

Result<std::unique_ptr<AwsJsonClient>> AwsJsonClient::Create(AwsServiceOptions options,
                                                             AwsCredentialSource& credentials,
                                                             std::unique_ptr<HttpTransport> http, const Clock& clock,
                                                             Random& random) {
  auto endpoint = ParseEndpoint(options.endpoint);
  if (!endpoint) {
    return MakeError(ErrorCode::kInvalidArgument, "endpoint of " + options.service + " '" + options.endpoint +
                                                      "' is not http(s)://host[:port]");
  }
  options.endpoint = endpoint->url;
  return std::unique_ptr<AwsJsonClient>(
      new AwsJsonClient(std::move(options), std::move(endpoint->host), credentials, std::move(http), clock, random));
}

AwsJsonClient::AwsJsonClient(AwsServiceOptions options, std::string host, AwsCredentialSource& credentials,
                             std::unique_ptr<HttpTransport> http, const Clock& clock, Random& random)
    : options_(std::move(options)),
      host_(std::move(host)),
      credentials_(credentials),
      http_(std::move(http)),
      clock_(clock),
      random_(random) {}

Result<std::string> AwsJsonClient::Call(const std::string& action, const std::string& request_json) {
  return WithRetries(options_.retry, clock_, random_, [&] { return Attempt(action, request_json, true); });
}

Result<std::string> AwsJsonClient::Attempt(const std::string& action, const std::string& request_json,
                                           bool skew_retry_left) {
  DYAD_ASSIGN_OR_RETURN(AwsCredentials creds, credentials_.Get());
  SigningRequest req;
  req.method = "POST";
  req.path = "/";
  req.headers = {{"Host", host_},
                 {"Content-Type", "application/x-amz-json-1.1"},
                 {"X-Amz-Target", options_.target_prefix + "." + action}};
  req.body = request_json;
  SigningParams params;
  params.region = options_.region;
  params.service = options_.service;
  params.time = std::chrono::time_point_cast<std::chrono::system_clock::duration>(
      clock_.WallNow() + Clock::Duration(skew_ns_.load(std::memory_order_relaxed)));
  auto signed_req = signer_.Sign(req, creds, params);
  Cleanse(req.body);  // the body may carry a credential (provider mode)
  if (!signed_req.ok()) return signed_req.error();

  HttpCall call;
  call.method = "POST";
  call.url = options_.endpoint + "/";
  call.headers = std::move(req.headers);
  for (auto& h : signed_req->headers) call.headers.push_back(std::move(h));
  call.body = request_json;
  auto reply = http_->Send(call);
  Cleanse(call.body);
  if (!reply.ok()) return MakeError(reply.code(), action + ": " + reply.error().message);
  if (reply->status >= 200 && reply->status < 300) return std::move(reply->body);

  bool skew = false;
  Error error = AwsErrorFromReply(action, *reply, &skew);
  if (skew && skew_retry_left) {
    if (auto server = ParseHttpDate(reply->Header("date"))) {
      auto offset = *server - clock_.WallNow();
      skew_ns_.store(std::chrono::duration_cast<Clock::Duration>(offset).count());
      spdlog::warn("{}: clock skew of {:.1f} s against {}; signing with the server's time", action,
                   std::chrono::duration<double>(offset).count(), options_.service);
      return Attempt(action, request_json, false);
    }
  }
  return error;
}

}  // namespace dyad
