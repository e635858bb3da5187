// AzureClient: calls of one Azure Key Vault's REST API (secrets and keys):
// the shared cloud client (cloud/json_client.h) with the Entra bearer auth
// step (entra_auth.h), the api-version, and Key Vault's error decoder.
//
// Call() sends METHOD <vault>/<path>?api-version=<v>[&<query>] (path like
// "/secrets/dyad-gateway--providers--openai"), with `body` as JSON when
// given, and returns the answer's JSON (an empty object for 204). CallUrl()
// follows a `nextLink` of a paged list (it must be on the same vault host:
// anything else is refused, a token is never sent elsewhere). Errors keep Key
// Vault's own {"error":{"code","message"}} ("<op>: HTTP <status>[ [inner
// <innererror code>]]: <code>: <message>") and
// map to codes (DecodeAzureReply): 400 kInvalidArgument, 401
// kUnauthenticated, 403 kPermissionDenied naming the RBAC role the call
// needs, 404 kNotFound, 409 kConflict (a name held by a soft-deleted secret:
// the code is "Conflict" and the message says so), 429 and 5xx kUnavailable
// (retried with Retry-After). A 401 is offered to the auth step once (a
// challenge it had not seen, an expired token).
// Thread-safe; one keep-alive transport per vault.
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

struct AzureClientOptions {
  std::string vault_url;            // AZURE_KEY_VAULT_URL: https://NAME.vault.azure.net
  std::string api_version = "7.5";  // a current GA api-version of Key Vault's data plane
  RetryPolicy retry;
  CloudCallObserver* observer = nullptr;  // optional; must outlive the client
};

struct AzureCall {
  std::string op;              // names the call in errors and metrics: "secrets.get", "keys.unwrap"
  std::string method = "GET";  // GET, PUT, POST, PATCH, DELETE
  std::string path;            // starts with '/'
  const nlohmann::json* body = nullptr;
  std::string query;           // extra query parameters after api-version, percent-encoded ("maxresults=25")
  // The RBAC role a 403 names ("Key Vault Secrets Officer", "Key Vault Crypto Officer").
  std::string role;
};

class AzureClient {
 public:
  // `auth` may be null (tests of an open double).
  static Result<std::unique_ptr<AzureClient>> Create(AzureClientOptions options, std::unique_ptr<RequestAuth> auth,
                                                     std::unique_ptr<HttpTransport> http, const Clock& clock,
                                                     Random& random);

  Result<nlohmann::json> Call(const AzureCall& call);
  // A paged list's next page: `next_link` as the service gave it.
  Result<nlohmann::json> CallUrl(const AzureCall& call, const std::string& next_link);

  const AzureClientOptions& options() const { return options_; }

 private:
  AzureClient(AzureClientOptions options, std::unique_ptr<JsonClient> client)
      : options_(std::move(options)), client_(std::move(client)) {}
  Result<nlohmann::json> Send(const AzureCall& call, JsonRequest request);

  const AzureClientOptions options_;
  const std::unique_ptr<JsonClient> client_;
};

// Key Vault's answers that are not 2xx, as above; a 401 is `auth_rejected`,
// 429 `throttled`.
// Key Vault's error.innererror.code (1-64 letters and digits), when given,
// follows the status in a fixed form: "<op>: HTTP 403 [inner SecretDisabled]:
// Forbidden: <message>" (Key Vault's own text comes after it, so it cannot
// forge it).
ReplyError DecodeAzureReply(std::string_view op, const HttpReply& reply);

// Whether `e` is Key Vault's answer `status` to `op` whose inner error code is
// exactly `inner_code` ("SecretDisabled", "KeyDisabled"). Decisions are made
// on this, never on the free text of the message.
bool AzureInnerCodeIs(const Error& e, std::string_view op, int status, std::string_view inner_code);

}  // namespace dyad
