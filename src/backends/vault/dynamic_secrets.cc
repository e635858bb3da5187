#include "backends/vault/dynamic_secrets.h"

#include <nlohmann/json.hpp>

namespace dyad {
namespace {

using nlohmann::json;

// Ten years: longer than any lease Vault grants (its max TTL is 32 days by
// default); anything above is a malformed answer, not a lease.
constexpr int64_t kMaxLeaseSeconds = 10LL * 365 * 24 * 3600;

Error Malformed(const std::string& op, const std::string& what) {
  return MakeError(ErrorCode::kDataLoss, op + ": the answer's " + what);
}

VaultCall Call(std::string op, std::string method, std::string path, const json* body) {
  VaultCall call;
  call.op = std::move(op);
  call.method = std::move(method);
  call.path = std::move(path);
  call.body = body;
  call.capability = call.method == "GET" ? "read" : "update";
  return call;
}

Result<std::chrono::seconds> LeaseSeconds(const json& answer, const std::string& op) {
  if (!answer.contains("lease_duration")) return std::chrono::seconds(0);
  const json& d = answer["lease_duration"];
  if (!d.is_number_integer() || d.get<int64_t>() < 0 || d.get<int64_t>() > kMaxLeaseSeconds) {
    return Malformed(op, "'lease_duration' is not a whole number of seconds from 0 to " +
                             std::to_string(kMaxLeaseSeconds));
  }
  return std::chrono::seconds(d.get<int64_t>());
}

bool Under(std::string_view path, const std::string& mount) {
  return path == mount || (path.starts_with(mount) && path.size() > mount.size() && path[mount.size()] == '/');
}

Error Refused(std::string message) { return MakeError(ErrorCode::kInvalidArgument, std::move(message)); }

class VaultDynamicSecrets final : public DynamicSecretSource {
 public:
  VaultDynamicSecrets(VaultClient& client, VaultDynamicOptions options)
      : client_(client), options_(std::move(options)) {}

  Status CheckPath(std::string_view path) const override {
    bool allowed = false;
    for (const auto& prefix : options_.allowed) allowed = allowed || path.starts_with(prefix);
    if (!allowed) {
      return Refused(options_.allowed.empty()
                         ? "references a Vault secret outside VAULT_DYNAMIC_PATHS (unset: dynamic secrets are off)"
                         : "references a Vault secret outside VAULT_DYNAMIC_PATHS");
    }
    for (size_t start = 0; start <= path.size();) {
      size_t end = path.find('/', start);
      if (end == std::string_view::npos) end = path.size();
      std::string_view seg = path.substr(start, end - start);
      for (const char* reserved : {"sys", "auth", "identity", "cubbyhole"}) {
        if (seg == reserved) {
          return Refused("references a Vault secret with a '" + std::string(seg) +
                         "' segment (the token's own secrets and settings), whatever VAULT_DYNAMIC_PATHS allows");
        }
      }
      start = end + 1;
    }
    if (Under(path, options_.kv_mount)) {
      return Refused("references a Vault secret under the gateway's own KV mount " + options_.kv_mount +
                     "/ (VAULT_MOUNT_PATH: every provider's credentials), whatever VAULT_DYNAMIC_PATHS allows");
    }
    if (Under(path, options_.transit_mount)) {
      return Refused("references a Vault secret under the gateway's own Transit mount " + options_.transit_mount +
                     "/ (VAULT_TRANSIT_MOUNT), whatever VAULT_DYNAMIC_PATHS allows");
    }
    return OkStatus();
  }

  Result<DynamicSecret> Read(const std::string& path) override {
    const std::string op = "dynamic.read " + path;
    DYAD_RETURN_IF_ERROR(Enforce(op, path));
    DYAD_ASSIGN_OR_RETURN(json answer, client_.Call(Call("dynamic.read", "GET", path, nullptr)));
    DynamicSecret out;
    if (!answer.contains("data") || !answer["data"].is_object()) return Malformed(op, "'data' is not an object");
    json* data = &answer["data"];
    // A KV v2 read: the fields are one level down, beside their metadata.
    if (data->size() == 2 && data->contains("metadata") && data->contains("data") && (*data)["data"].is_object()) {
      data = &(*data)["data"];
    }
    for (auto it = data->begin(); it != data->end(); ++it) {
      if (!it.value().is_string()) continue;  // only string fields can be a credential
      auto& v = it.value().get_ref<std::string&>();
      out.fields.emplace(it.key(), SecretBytes(v));
      Cleanse(v);
    }
    if (answer.contains("lease_id")) {
      if (!answer["lease_id"].is_string()) return Malformed(op, "'lease_id' is not a string");
      out.lease_id = answer["lease_id"].get<std::string>();
    }
    DYAD_ASSIGN_OR_RETURN(out.lease_ttl, LeaseSeconds(answer, op));
    if (answer.contains("renewable")) {
      if (!answer["renewable"].is_boolean()) return Malformed(op, "'renewable' is not true or false");
      out.renewable = answer["renewable"].get<bool>();
    }
    if (out.lease_id.empty()) out.lease_ttl = std::chrono::seconds(0), out.renewable = false;
    return out;
  }

  Result<std::chrono::seconds> Renew(const std::string& lease_id, std::chrono::seconds increment) override {
    DYAD_RETURN_IF_ERROR(Enforce("lease.renew", lease_id));
    const json body = {{"lease_id", lease_id}, {"increment", increment.count()}};
    DYAD_ASSIGN_OR_RETURN(json answer, client_.Call(Call("lease.renew", "PUT", "sys/leases/renew", &body)));
    if (!answer.contains("lease_duration")) return Malformed("lease.renew", "'lease_duration' is missing");
    return LeaseSeconds(answer, "lease.renew");
  }

  Status Revoke(const std::string& lease_id) override {
    const json body = {{"lease_id", lease_id}};
    auto r = client_.Call(Call("lease.revoke", "PUT", "sys/leases/revoke", &body));
    if (!r.ok()) return r.error();
    return OkStatus();
  }

 private:
  // CheckPath at use: a path (or a lease's) the settings no longer allow.
  Status Enforce(const std::string& op, std::string_view path) const {
    Status ok = CheckPath(path);
    if (ok.ok()) return ok;
    return MakeError(ErrorCode::kFailedPrecondition, op + ": " + ok.error().message);
  }

  VaultClient& client_;
  const VaultDynamicOptions options_;
};

}  // namespace

std::unique_ptr<DynamicSecretSource> NewVaultDynamicSecrets(VaultClient& client, VaultDynamicOptions options) {
  return std::make_unique<VaultDynamicSecrets>(client, std::move(options));
}

}  // namespace dyad
