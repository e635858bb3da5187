// VaultTokenAuth: the auth step of Vault's data calls (cloud/request_auth.h):
// adds X-Vault-Token with a token held in a RefreshingCredential.
//
// Where the token comes from (VaultSettings::auth):
// - a token: VAULT_TOKEN, or the file VAULT_TOKEN_FILE / ~/.vault-token
//   (read again whenever a new token is wanted). On first use
//   `auth/token/lookup-self` says its ttl and whether it is renewable; ttl 0
//   (a root token) never expires; a lookup the policy denies (403) makes it a
//   token that never expires, logged once.
// - a login (no token sent), to the login client: AppRole `auth/<mount>/login`
//   {role_id, secret_id} (VAULT_SECRET_ID_FILE read at each login),
//   Kubernetes {role, jwt: the service-account token file, read at each
//   login}, JWT {role, jwt: VAULT_JWT_FILE}, cert {name?} over the TLS client
//   certificate of the login client's transport. The answer's
//   auth.client_token, lease_duration and renewable make the token.
//
// A renewable token is renewed with `auth/token/renew-self` (increment: its
// lease's length) at two thirds of its lease. A renewal granting less than it
// asked has met the token's max TTL: the token is not renewed again, and a
// login method logs in anew at two thirds of what is left (a non-renewable
// login token likewise). A renewal refused (403, 400) logs in again, reads
// the token file again, or (VAULT_TOKEN, or a file still holding the same
// token) stops renewing that token; an unavailable Vault keeps the token
// until it expires, trying again 30 s later. The
// token's own calls (lookup-self, renew-self, login) go through the login
// client, in VAULT_AUTH_NAMESPACE or else VAULT_NAMESPACE.
//
// OnRejected (a data call's 403): Vault says 403 both for a dead token and
// for a path the policy denies, so the held token is looked up first
// (`auth/token/lookup-self` on the login client). It is alive: the policy
// refused, false (fail closed, no login). Refused (403, 400): the token is
// dead; with a login method or a token file it is invalidated and the call
// retried once with a new one, unless the token was obtained less than 30 s
// ago (false); with VAULT_TOKEN, false without a lookup. The lookup itself
// denied for a token known not to be allowed it (its first lookup was
// denied, or it is a fresh login's token right after one judged dead): the
// token is taken as alive, logged once. Vault unavailable: false.
// A login that replaces a token revokes the old one (`auth/token/revoke-self`
// with it, best effort, errors ignored), so a token still valid does not
// outlive its use; a token from VAULT_TOKEN or a file is never revoked.
//
// Errors: the login client's codes (kUnavailable when Vault is down or sealed);
// a refused login is kPermissionDenied with Vault's message. Tokens, secret
// ids and JWTs never appear in logs or errors and are wiped after use.
// Thread-safe.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <string>

#include "backends/vault/vault_client.h"
#include "backends/vault/vault_settings.h"
#include "cloud/refreshing_credential.h"
#include "cloud/request_auth.h"
#include "core/clock.h"
#include "core/mutex.h"
#include "core/secret_bytes.h"

namespace dyad {

class VaultTokenAuth final : public RequestAuth {
 public:
  // `login` (a VaultClient without auth, in the auth namespace) must outlive this.
  VaultTokenAuth(const VaultSettings& settings, VaultClient& login, const Clock& clock);

  Status Authorize(CloudRequest& request) override;
  bool OnRejected(std::string_view op, const HttpReply& reply) override;

  // The current token (fetched, renewed or logged in as needed).
  Result<SecretBytes> Token() { return current_.Get(); }

 private:
  // What the auth step knows of the token it holds.
  struct Held {
    SecretBytes token;
    bool renewable = false;
    bool capped = false;      // at its max TTL: renewals no longer extend it
    long long increment = 0;  // seconds a renewal asks for: the lease's length
    long long ttl = 0;        // seconds left when learned; 0: never expires
    Clock::WallTime learned{};
    bool lookup_denied = false;  // the policy does not let it look itself up
    bool after_dead = false;     // a login's token replacing one Vault refused
  };
  enum class Liveness { kAlive, kDead, kUnknown };

  Result<Expiring<SecretBytes>> Fetch() DYAD_LOCKS_EXCLUDED(mu_);
  // A token from the configured source, described.
  Result<Held> Acquire() DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Result<Held> Login();
  Result<Held> Describe(SecretBytes token) DYAD_EXCLUSIVE_LOCKS_REQUIRED(mu_);  // lookup-self
  Error RefusedTokenInFile() const;
  Result<Held> Renew(const Held& held);      // renew-self
  // Whether Vault still honours the held token (lookup-self).
  Liveness Probe(std::string_view op) DYAD_LOCKS_EXCLUDED(mu_);
  void Revoke(const SecretBytes& token);     // revoke-self, best effort
  Expiring<SecretBytes> ToExpiring(const Held& held) const;
  bool LoginBased() const;

  // What the settings say, copied (secret_id wiped with this object).
  const VaultAuthMethod method_;
  const SecretBytes static_token_;
  const std::string token_file_;
  const std::string role_id_;
  const SecretBytes secret_id_;
  const std::string secret_id_file_;
  const std::string mount_;
  const std::string role_;
  const std::string jwt_file_;
  const char* jwt_file_variable_;

  VaultClient& login_;
  const Clock& clock_;
  Mutex mu_;
  std::optional<Held> held_ DYAD_GUARDED_BY(mu_);
  // A token file's token Vault refused: never taken again from the file
  // (its lookup, also refused, would make it one that never expires).
  std::optional<SecretBytes> refused_token_ DYAD_GUARDED_BY(mu_);
  bool lookup_denied_logged_ DYAD_GUARDED_BY(mu_) = false;
  bool capped_logged_ DYAD_GUARDED_BY(mu_) = false;
  bool probe_denied_logged_ DYAD_GUARDED_BY(mu_) = false;
  // A data call was refused with the held token: the next fetch does not
  // try to renew it.
  std::atomic<bool> rejected_{false};
  RefreshingCredential<SecretBytes> current_;
};

}  // namespace dyad
