// Entra ID (Azure AD) authentication of Key Vault calls: the token sources,
// the per-scope token cache, and the RequestAuth step adding
// `Authorization: Bearer <token>`.
//
// Token sources (Entra v2 endpoints, as azure-identity calls them):
//   secret       POST <authority>/<tenant>/oauth2/v2.0/token,
//                grant_type=client_credentials, client_secret
//   certificate  the same with client_assertion: an RS256 JWT signed with the
//                PEM's private key, header x5t#S256 = SHA-256 of the
//                certificate; aud = the token endpoint, iss = sub =
//                client id, a random jti, valid 10 minutes
//   workload     the same with the federated token file's content as
//                client_assertion, read again on every fetch (the kubelet
//                rotates it)
//   managed      App Service / Container Apps when IDENTITY_ENDPOINT is set
//                (api-version 2019-08-01, X-IDENTITY-HEADER), else IMDS
//                (GET <imds>/metadata/identity/oauth2/token,
//                api-version 2018-02-01, Metadata: true); a user-assigned
//                identity by AZURE_CLIENT_ID
//   chain        DefaultAzureCredential's order: environment (secret, then
//                certificate), workload identity, managed identity. Which
//                one is decided once, from the variables set: the first
//                configured one is used, and when it then fails its error
//                is reported, not skipped — as azure-identity raises a
//                configured EnvironmentCredential's authentication error
//                instead of trying the next. Managed identity is the last
//                resort (nothing else configured), so outside Azure the
//                error is its unreachable endpoint. The developer
//                credentials (Azure CLI, …) are not part of it.
//
// Tokens are cached per scope (cloud/refreshing_credential.h), refreshed 5
// minutes before `expires_in`/`expires_on`, kept as SecretBytes and never
// logged. Errors: kUnauthenticated when Entra or the identity endpoint
// refuses (its `error: error_description`), kUnavailable when unreachable,
// 429 or 5xx (the caller retries), kInvalidArgument for a bad certificate
// file or a malformed answer; never a secret.
//
// Challenge discovery (as the Key Vault SDKs' ChallengeAuthPolicy): until a
// vault has challenged, a request goes without a token and without its body;
// the 401's `WWW-Authenticate: Bearer authorization="…", resource="…"` (or
// scope="…") gives the scope, and the request is sent again with a token.
// Unless verification is off (AZURE_VERIFY_CHALLENGE_RESOURCE=false, for
// private endpoints and loopback), the vault's host must end with "." + the
// resource's host (vault.azure.net, vault.azure.cn, vault.usgovcloudapi.net,
// vault.microsoftazure.de): a token is never sent to a vault that does not
// match, nor when the challenge names a tenant other than AZURE_TENANT_ID.
// A 401 for a scope already known (an expired or revoked token)
// rejects the token that request carried: one fresh token, one retry, then
// the call fails. The
// tenant is the configured one (AZURE_TENANT_ID); the challenge's
// authority is not followed.
#pragma once

#include <memory>
#include <optional>
#include <string_view>
#include <string>

#include "backends/azure/azure_settings.h"
#include "cloud/refreshing_credential.h"
#include "cloud/request_auth.h"
#include "core/clock.h"
#include "core/random.h"
#include "core/result.h"
#include "core/secret_bytes.h"
#include "transport/http_transport.h"

namespace dyad {

class EntraTokenSource {
 public:
  virtual ~EntraTokenSource() = default;
  // A new access token for `scope` ("https://vault.azure.net/.default").
  virtual Result<Expiring<SecretBytes>> Fetch(const std::string& scope) = 0;
  // "client secret", "client certificate", "workload identity", "managed identity (IMDS)", …
  virtual const std::string& Name() const = 0;
};

// The source AZURE_AUTH_METHOD names (for "chain", the first configured).
// Reads the certificate file now (kInvalidArgument naming
// AZURE_CLIENT_CERTIFICATE_PATH when it is not a PEM certificate with an
// RSA private key). `http` and `random` must outlive the source.
Result<std::unique_ptr<EntraTokenSource>> NewEntraTokenSource(const AzureSettings& settings, HttpTransport& http,
                                                              const Clock& clock, Random& random);

// Tokens of one source, cached per scope; shared by the auth steps of every
// vault the backend calls. Thread-safe.
class EntraCredential {
 public:
  EntraCredential(std::unique_ptr<EntraTokenSource> source, const Clock& clock, RefreshOptions refresh = {});
  ~EntraCredential();
  Result<SecretBytes> Get(const std::string& scope);
  // The vault refused `rejected` (expired or revoked early): when it is still
  // the scope's current token, the next Get() fetches a new one. A burst of
  // refusals of one token makes one fetch; a refusal of a token already
  // replaced changes nothing. False when the refused token is fresher than
  // `min_retry_interval` (a denial, not an expiry): no new one is fetched and
  // the call fails.
  bool Reject(const std::string& scope, const SecretBytes& rejected);
  // Drops the token of a scope a vault no longer challenges for (the next
  // Get() of it fetches again), so that the cache holds no more scopes than
  // there are vaults.
  void Forget(const std::string& scope);
  size_t ScopeCount() const;
  const std::string& SourceName() const;

 private:
  struct Scopes;
  std::shared_ptr<RefreshingCredential<SecretBytes>> NewHolder(const std::string& scope) const;
  const std::unique_ptr<EntraTokenSource> source_;
  const Clock& clock_;
  const RefreshOptions refresh_;
  const std::unique_ptr<Scopes> scopes_;
};

struct EntraChallenge {
  std::string authority;  // "https://login.microsoftonline.com/<tenant>", "" when not given
  std::string scope;      // "https://vault.azure.net/.default"
};

// The Bearer challenge of a WWW-Authenticate header; nullopt when there is
// none or it names neither a resource nor a scope.
std::optional<EntraChallenge> ParseEntraChallenge(std::string_view header);

// True when `vault_host` (host[:port]) is a host of the scope's resource
// domain: it ends with "." + the scope URL's host.
bool ChallengeResourceMatches(std::string_view vault_host, std::string_view scope);

// The auth step of the vault at `vault_host` (host[:port]). `credential` is
// shared with the other vault's step. When `tenant_id` (AZURE_TENANT_ID) is
// set and a challenge's authorization names another tenant, no token is sent
// and the calls fail (kUnauthenticated naming both tenant ids).
std::unique_ptr<RequestAuth> NewEntraAuth(std::string vault_host, bool verify_challenge_resource,
                                          std::shared_ptr<EntraCredential> credential, std::string tenant_id = "");

}  // namespace dyad
