#include "backends/azure/azure_client.h"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

#include "core/endpoint.h"
#include "core/secret_bytes.h"

namespace dyad {
namespace {

using nlohmann::json;

// "<code>: <message>" from {"error":{"code","message"}}, one bounded line.
std::string AzureMessage(const std::string& body) {
  auto j = json::parse(body, nullptr, false);
  std::string out;
  if (j.is_object() && j.contains("error") && j["error"].is_object()) {
    const json& e = j["error"];
    if (e.contains("code") && e["code"].is_string()) out = e["code"].get<std::string>();
    if (e.contains("message") && e["message"].is_string()) {
      if (!out.empty()) out += ": ";
      out += e["message"].get<std::string>();
    }
  }
  for (char& c : out) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  if (out.size() > 300) out.resize(300);
  return out;
}

// error.innererror.code ("SecretDisabled", "ForbiddenByConnection"), when
// it is 1-64 letters and digits; "" otherwise.
std::string InnerCode(const std::string& body) {
  auto j = json::parse(body, nullptr, false);
  if (!j.is_object() || !j.contains("error") || !j["error"].is_object()) return "";
  const json& e = j["error"];
  if (!e.contains("innererror") || !e["innererror"].is_object()) return "";
  const json& inner = e["innererror"];
  if (!inner.contains("code") || !inner["code"].is_string()) return "";
  std::string code = inner["code"].get<std::string>();
  if (code.empty() || code.size() > 64 ||
      !std::all_of(code.begin(), code.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; })) {
    return "";
  }
  return code;
}

std::string Prefix(std::string_view op, int status) { return std::string(op) + ": HTTP " + std::to_string(status); }

}  // namespace

ReplyError DecodeAzureReply(std::string_view op, const HttpReply& reply) {
  const int s = reply.status;
  ErrorCode code = s == 429 || s >= 500 ? ErrorCode::kUnavailable
                   : s == 401           ? ErrorCode::kUnauthenticated
                   : s == 403           ? ErrorCode::kPermissionDenied
                   : s == 404           ? ErrorCode::kNotFound
                   : s == 409           ? ErrorCode::kConflict
                   : s >= 400           ? ErrorCode::kInvalidArgument
                                        : ErrorCode::kInternal;  // 1xx, 3xx: not followed
  if (s == 501) code = ErrorCode::kUnimplemented;
  std::string text = Prefix(op, s);
  if (std::string inner = InnerCode(reply.body); !inner.empty()) text += " [inner " + inner + "]";
  if (std::string m = AzureMessage(reply.body); !m.empty()) text += ": " + m;
  return ReplyError{MakeError(code, std::move(text)), s == 429, s == 401};
}

bool AzureInnerCodeIs(const Error& e, std::string_view op, int status, std::string_view inner_code) {
  return e.message.starts_with(Prefix(op, status) + " [inner " + std::string(inner_code) + "]");
}

Result<std::unique_ptr<AzureClient>> AzureClient::Create(AzureClientOptions options, std::unique_ptr<RequestAuth> auth,
                                                         std::unique_ptr<HttpTransport> http, const Clock& clock,
                                                         Random& random) {
  DYAD_ASSIGN_OR_RETURN(auto client,
                        JsonClient::Create(ServiceClientOptions(options.vault_url, options.retry, DecodeAzureReply, options.observer),
                                           std::move(auth), std::move(http), clock, random));
  return std::unique_ptr<AzureClient>(new AzureClient(std::move(options), std::move(client)));
}

Result<json> AzureClient::Call(const AzureCall& call) {
  JsonRequest request;
  request.path = call.path;
  request.query = "api-version=" + options_.api_version + (call.query.empty() ? "" : "&" + call.query);
  return Send(call, std::move(request));
}

Result<json> AzureClient::CallUrl(const AzureCall& call, const std::string& next_link) {
  auto endpoint = ParseEndpoint(next_link.substr(0, next_link.find('/', next_link.find("://") + 3)));
  const std::string::size_type path_at = next_link.find('/', next_link.find("://") + 3);
  if (!endpoint || path_at == std::string::npos || endpoint->url != client_->url()) {
    return MakeError(ErrorCode::kUnavailable, call.op + ": nextLink is not on this vault (" + client_->host() + ")");
  }
  JsonRequest request;
  std::string rest = next_link.substr(path_at);
  const auto q = rest.find('?');
  request.path = rest.substr(0, q);
  if (q != std::string::npos) request.query = rest.substr(q + 1);
  return Send(call, std::move(request));
}

Result<json> AzureClient::Send(const AzureCall& call, JsonRequest request) {
  request.op = call.op;
  request.method = call.method;
  if (call.body) request.body = call.body->dump();
  auto reply = client_->Call(request);
  Cleanse(request.body);
  if (!reply.ok()) {
    Error e = reply.error();
    if (e.code == ErrorCode::kPermissionDenied && !call.role.empty()) {
      e.message += " (the identity needs the RBAC role '" + call.role + "' on this vault)";
    }
    return e;
  }
  return JsonObjectAnswer(call.op, *reply);
}

}  // namespace dyad
