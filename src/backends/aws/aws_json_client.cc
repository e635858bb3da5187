#include "backends/aws/aws_json_client.h"

#include <nlohmann/json.hpp>
#include <set>

#include "backends/aws/xml_text.h"

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

bool NotPermitted(const Error& e) {
  // The message is "<Action>: <ErrorType>: …" (DecodeAwsReply).
  const size_t type = e.message.find(": ");
  return e.code == ErrorCode::kPermissionDenied && type != std::string::npos &&
         std::string_view(e.message).substr(type + 2).starts_with("AccessDenied");
}

ReplyError DecodeAwsReply(std::string_view action, const HttpReply& reply) {
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
  const bool throttled = kThrottling.count(type) || reply.status == 429;

  ErrorCode code;
  if (throttled || kServerSide.count(type) || reply.status >= 500) {
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
  std::string text(action);
  text += ": " + type;
  if (!message.empty()) text += ": " + message;
  return ReplyError{MakeError(code, std::move(text)), throttled, skew};
}

Error AwsErrorFromReply(const std::string& action, const HttpReply& reply, bool* clock_skew) {
  ReplyError decoded = DecodeAwsReply(action, reply);
  if (clock_skew) *clock_skew = decoded.auth_rejected;
  return std::move(decoded.error);
}

Result<std::unique_ptr<AwsJsonClient>> AwsJsonClient::Create(AwsServiceOptions options,
                                                             AwsCredentialSource& credentials,
                                                             std::unique_ptr<HttpTransport> http, const Clock& clock,
                                                             Random& random) {
  auto auth = std::make_unique<SigV4Auth>(credentials, options.region, options.service, clock);
  SigV4Auth* auth_ptr = auth.get();
  auto client = JsonClient::Create({options.endpoint, options.retry, DecodeAwsReply, options.observer},
                                   std::move(auth), std::move(http), clock, random);
  if (!client.ok()) return MakeError(client.code(), options.service + ": " + client.error().message);
  options.endpoint = (*client)->url();
  return std::unique_ptr<AwsJsonClient>(new AwsJsonClient(std::move(options), auth_ptr, std::move(client).value()));
}

Result<std::string> AwsJsonClient::Call(const std::string& action, const std::string& request_json) {
  JsonRequest request;
  request.op = action;
  request.headers = {{"Content-Type", "application/x-amz-json-1.1"},
                     {"X-Amz-Target", options_.target_prefix + "." + action}};
  request.body = request_json;
  auto reply = client_->Call(request);
  Cleanse(request.body);  // it may carry a credential (provider mode)
  if (!reply.ok()) return reply.error();
  return std::move(reply->body);
}

}  // namespace dyad
