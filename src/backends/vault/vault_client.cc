#include "backends/vault/vault_client.h"

#include <nlohmann/json.hpp>

#include "core/secret_bytes.h"

namespace dyad {
namespace {

using nlohmann::json;

// Vault's {"errors":[…]} joined into one line ("" when there is none).
std::string VaultMessage(const std::string& body) {
  auto j = json::parse(body, nullptr, false);
  std::string out;
  if (j.is_object() && j.contains("errors") && j["errors"].is_array()) {
    for (const auto& e : j["errors"]) {
      if (!e.is_string()) continue;
      std::string one = e.get<std::string>();
      // "1 error occurred:\n\t* permission denied\n\n" → "permission denied"
      if (auto star = one.rfind("* "); one.starts_with("1 error occurred") && star != std::string::npos) {
        one = one.substr(star + 2);
      }
      while (!one.empty() && (one.back() == '\n' || one.back() == ' ')) one.pop_back();
      if (!out.empty()) out += "; ";
      out += one;
    }
  }
  for (char& c : out) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  if (out.size() > 300) out.resize(300);
  return out;
}

std::string DefaultCapability(const std::string& method, const std::string& query) {
  if (method == "GET" && query.find("list=true") != std::string::npos) return "list";
  if (method == "GET") return "read";
  if (method == "LIST") return "list";
  if (method == "DELETE") return "delete";
  return "update";
}

// KV v2 answers a read of a soft-deleted or destroyed latest version with
// 404 and that version's metadata: "version N is deleted" / "… is destroyed"
// ("" for any other body). The KV store reads N from it (kv_store.cc).
std::string KvDeletedNote(const std::string& body) {
  auto j = json::parse(body, nullptr, false);
  if (!j.is_object() || !j.contains("data") || !j["data"].is_object()) return "";
  const json& data = j["data"];
  auto meta = data.find("metadata");
  if (meta == data.end() || !meta->is_object()) return "";
  auto version = meta->find("version");
  if (version == meta->end() || !version->is_number_unsigned()) return "";
  const auto destroyed = meta->find("destroyed");
  const auto deleted = meta->find("deletion_time");
  std::string what;
  if (destroyed != meta->end() && destroyed->is_boolean() && destroyed->get<bool>()) {
    what = "destroyed";
  } else if (deleted != meta->end() && deleted->is_string() && !deleted->get<std::string>().empty()) {
    what = "deleted";
  } else {
    return "";
  }
  return "version " + std::to_string(version->get<uint64_t>()) + " is " + what;
}

}  // namespace

ReplyError DecodeVaultReply(std::string_view op, const HttpReply& reply) {
  const int s = reply.status;
  std::string message = VaultMessage(reply.body);
  ErrorCode code = ErrorCode::kInvalidArgument;
  if (s == 400 && message.find("check-and-set parameter did not match") != std::string::npos) {
    code = ErrorCode::kConflict;
  } else if (s == 429 || s == 412 || s == 473 || s >= 500) {
    // Over a rate quota; a performance standby behind; sealed, standby,
    // uninitialised or down: another attempt may succeed.
    code = ErrorCode::kUnavailable;
  } else if (s == 401) {
    code = ErrorCode::kUnauthenticated;
  } else if (s == 403) {
    code = ErrorCode::kPermissionDenied;
  } else if (s == 404) {
    code = ErrorCode::kNotFound;
  } else if (s == 405) {
    code = ErrorCode::kUnimplemented;
  } else if (s < 400) {
    code = ErrorCode::kInternal;  // 1xx, an unfollowed 3xx
  }
  if (s == 404 && message.empty()) message = KvDeletedNote(reply.body);
  std::string text = std::string(op) + ": HTTP " + std::to_string(s);
  if (!message.empty()) text += ": " + message;
  return ReplyError{MakeError(code, std::move(text)), s == 429, s == 403};
}

Result<std::unique_ptr<VaultClient>> VaultClient::Create(VaultClientOptions options, std::unique_ptr<RequestAuth> auth,
                                                         std::unique_ptr<HttpTransport> http, const Clock& clock,
                                                         Random& random) {
  DYAD_ASSIGN_OR_RETURN(auto client,
                        JsonClient::Create(ServiceClientOptions(options.address, options.retry, DecodeVaultReply, options.observer),
                                           std::move(auth), std::move(http), clock, random));
  return std::unique_ptr<VaultClient>(new VaultClient(std::move(options), std::move(client)));
}

Result<json> VaultClient::Call(const VaultCall& call) {
  JsonRequest request;
  request.op = call.op;
  request.method = call.method;
  request.path = "/v1/" + call.path;
  request.query = call.query;
  if (!options_.name_space.empty()) request.headers.emplace_back("X-Vault-Namespace", options_.name_space);
  request.headers.insert(request.headers.end(), call.headers.begin(), call.headers.end());
  if (call.body) request.body = call.body->dump();
  auto reply = client_->Call(request);
  Cleanse(request.body);
  for (auto& [name, value] : request.headers) Cleanse(value);
  if (!reply.ok()) {
    Error e = reply.error();
    // Vault's own 403 to this call (not the auth step's refused login,
    // which the error carries as it is).
    if (e.code == ErrorCode::kPermissionDenied && call.policy_hint && e.message.starts_with(call.op + ": HTTP 403")) {
      const std::string capability = call.capability.empty() ? DefaultCapability(call.method, call.query)
                                                             : call.capability;
      e.message += " (the token's policy needs '" + capability + "' on '" + call.path + "'";
      if (!options_.name_space.empty()) e.message += " in namespace '" + options_.name_space + "'";
      e.message += ")";
    }
    return e;
  }
  return JsonObjectAnswer(call.op, *reply);
}

}  // namespace dyad
