// VaultClient: calls of one Vault (or OpenBao) server's HTTP API: the shared
// cloud client (cloud/json_client.h) with the token auth step
// (vault_auth.h), the namespace header and Vault's error decoder.
//
// Call() sends METHOD /v1/<path> (a path below /v1/, e.g.
// "secret/data/dyad-gateway/providers/openai"), with `body` as JSON when
// given, and returns the answer's JSON (an empty object for 204). Errors keep
// Vault's own message from {"errors":[…]} and map to codes (DecodeVaultReply):
// 400 "check-and-set parameter did not match" kConflict, other 400
// kInvalidArgument, 403 kPermissionDenied with the path and the capability
// the call needed ("permission denied: update on transit/encrypt/k"), 404
// kNotFound (KV v2's soft-deleted or destroyed latest version says so:
// "kv.read: HTTP 404: version 3 is deleted"), 429 and 5xx kUnavailable
// (503 "Vault is sealed", a standby), a 412 (a performance standby behind)
// kUnavailable. 429 and 503 honour
// Retry-After. A 307 to the active node is followed by the transport. A 403
// is offered once to the auth step, which logs in again when its token may
// have expired (then the call is sent once more), else fails closed.
//
// X-Vault-Namespace goes with every call when a namespace is configured
// (VAULT_NAMESPACE); a login to an auth mount in another namespace uses a
// client of its own. Listing is GET with list=true (no custom method).
// Thread-safe; one keep-alive transport per server.
#pragma once

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>

#include "cloud/json_client.h"
#include "core/clock.h"
#include "core/random.h"
#include "core/result.h"
#include "transport/http_transport.h"
#include "transport/retry.h"

namespace dyad {

struct VaultClientOptions {
  std::string address;    // VAULT_ADDR: scheme://host[:port]
  std::string name_space;  // VAULT_NAMESPACE; "" for the root namespace
  RetryPolicy retry;
  CloudCallObserver* observer = nullptr;  // optional; must outlive the client
};

struct VaultCall {
  std::string op;             // names the call in errors and metrics: "kv.read", "transit.encrypt"
  std::string method = "GET";  // GET, POST, PUT, LIST, DELETE
  std::string path;           // below /v1/, no leading '/'
  const nlohmann::json* body = nullptr;
  std::string query;          // after '?', percent-encoded
  // The capability a 403 names ("read", "create", "update", "delete", "list").
  std::string capability;
  // Whether a 403 names the capability the token's policy lacks: not for
  // a login (no token is sent) nor a token's lookup of itself (the default
  // policy grants it: its 403 says the token is dead).
  bool policy_hint = true;
  // Sent besides the client's own (the token of a renew-self on the login
  // client); values are wiped after the call, never in errors.
  HttpHeaders headers{};
};

class VaultClient {
 public:
  // `auth` may be null (login calls go out without a token).
  static Result<std::unique_ptr<VaultClient>> Create(VaultClientOptions options, std::unique_ptr<RequestAuth> auth,
                                                     std::unique_ptr<HttpTransport> http, const Clock& clock,
                                                     Random& random);

  Result<nlohmann::json> Call(const VaultCall& call);

  const VaultClientOptions& options() const { return options_; }

 private:
  VaultClient(VaultClientOptions options, std::unique_ptr<JsonClient> client)
      : options_(std::move(options)), client_(std::move(client)) {}
  const VaultClientOptions options_;
  const std::unique_ptr<JsonClient> client_;
};

// Vault's answers that are not 2xx, as above; every 403 is `auth_rejected`
// (the auth step decides whether a new token can help), 429 `throttled`.
ReplyError DecodeVaultReply(std::string_view op, const HttpReply& reply);

}  // namespace dyad
