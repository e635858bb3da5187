#include "server/envelope.h"

#include <nlohmann/json.hpp>

#include <cctype>
#include <string>

namespace dyad {

HttpResponse JsonSuccess(const nlohmann::json& data, int status) {
  HttpResponse r;
  r.status = status;
  // "status" first, as the seed shows it (a json object would sort it last).
  r.body = "{\"status\":\"success\",\"data\":" +
           data.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "}";
  return r;
}

HttpResponse JsonError(int status, std::string_view code, std::string_view message) {
  return JsonError(status, code, message, nlohmann::json::object());
}

HttpResponse JsonError(int status, std::string_view code, std::string_view message, const nlohmann::json& details) {
  HttpResponse r;
  r.status = status;
  nlohmann::json error = details.is_object() ? details : nlohmann::json::object();
  error["code"] = std::string(code);
  error["message"] = std::string(message);
  r.body = "{\"status\":\"error\",\"error\":" +
           error.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "}";
  return r;
}

HttpResponse OpenAiError(int status, std::string_view type, std::string_view message, std::string_view code,
                         std::string_view param) {
  HttpResponse r;
  r.status = status;
  auto opt = [](std::string_view v) { return v.empty() ? nlohmann::json(nullptr) : nlohmann::json(std::string(v)); };
  nlohmann::json error = {{"message", std::string(message)}, {"type", std::string(type)}, {"param", opt(param)},
                          {"code", opt(code)}};
  r.body = "{\"error\":" + error.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "}";
  return r;
}

bool AimsAtV1(std::string_view path) {
  while (!path.empty()) {
    size_t slash = path.find('/');
    std::string_view seg = path.substr(0, slash);
    if (!seg.empty() && seg != ".") return seg == "v1";
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return false;
}

HttpResponse ErrorFor(std::string_view path, int status, std::string_view code, std::string_view message) {
  if (!AimsAtV1(path)) return JsonError(status, code, message);
  std::string lower(code);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return OpenAiError(status, status == 500 ? "server_error" : "invalid_request_error", message, lower);
}

int HttpStatusFor(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return 400;
    case ErrorCode::kUnauthenticated: return 401;
    case ErrorCode::kPermissionDenied: return 403;
    case ErrorCode::kNotFound: return 404;
    case ErrorCode::kAlreadyExists:
    case ErrorCode::kConflict:
    case ErrorCode::kFailedPrecondition: return 409;
    case ErrorCode::kUnimplemented: return 501;
    case ErrorCode::kUnavailable: return 503;
    case ErrorCode::kDeadlineExceeded: return 504;
    case ErrorCode::kCancelled: return 499;
    case ErrorCode::kDataLoss:
    case ErrorCode::kInternal: return 500;
  }
  return 500;
}

static std::string_view EnvelopeCode(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "VALIDATION_ERROR";
    case ErrorCode::kUnauthenticated: return "UNAUTHORIZED";
    case ErrorCode::kPermissionDenied: return "FORBIDDEN";
    case ErrorCode::kNotFound: return "NOT_FOUND";
    case ErrorCode::kAlreadyExists: return "CONFLICT";
    case ErrorCode::kConflict: return "CONFLICT";
    case ErrorCode::kFailedPrecondition: return "FAILED_PRECONDITION";
    case ErrorCode::kUnimplemented: return "NOT_IMPLEMENTED";
    case ErrorCode::kUnavailable: return "SERVICE_UNAVAILABLE";
    case ErrorCode::kDeadlineExceeded: return "GATEWAY_TIMEOUT";
    case ErrorCode::kCancelled: return "CANCELLED";
    case ErrorCode::kDataLoss: return "DATA_LOSS";
    case ErrorCode::kInternal: return "INTERNAL_ERROR";
  }
  return "INTERNAL_ERROR";
}

HttpResponse JsonError(const Error& error) {
  return JsonError(HttpStatusFor(error.code), EnvelopeCode(error.code), error.message);
}

}  // namespace dyad
