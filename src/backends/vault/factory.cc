#include "backends/vault/factory.h"

#include <cctype>

#include "backends/vault/dynamic_secrets.h"
#include "backends/vault/kv_store.h"
#include "backends/vault/transit_key_manager.h"
#include "backends/vault/vault_auth.h"
#include "backends/vault/vault_client.h"
#include "backends/vault/vault_settings.h"
#include "core/env_vars.h"
#include "core/residency.h"
#include "transport/curl_transport.h"

namespace dyad {
namespace {

// A Transit key name is one segment of a URL path.
Status CheckTransitKeyName(const std::string& name) {
  bool ok = !name.empty() && name.size() <= 128 && name != "." && name != "..";
  for (char c : name) {
    ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-');
  }
  if (!ok) {
    return BadVariable("ENCRYPTION_KEY_ID", "'" + name + "' is not a Transit key name; use 1 to 128 letters, digits "
                                            "and ._- (the seed's policy expects dyad-gateway-*)");
  }
  return OkStatus();
}

class VaultBackendFactory final : public BackendFactory {
 public:
  const std::string& Name() const override { return name_; }

  // Both SECRETS_ENCRYPTION_MODE values are taken (LoadConfig has checked it is one of them).
  Status Check(const Config& config) const override {
    DYAD_RETURN_IF_ERROR(CheckVaultSecretsPrefix(config.secrets_prefix));
    DYAD_ASSIGN_OR_RETURN(VaultSettings vault, ReadVaultSettings(config.env, config.secret_env));
    DYAD_RETURN_IF_ERROR(CheckTransitKeyName(config.encryption_key_id));
    // KV and Transit both live at VAULT_ADDR; a standby may redirect a call
    // to a VAULT_REDIRECT_HOSTS host, which must be listed too.
    DYAD_RETURN_IF_ERROR(CheckUrlAllowed(config.allowed_regions, "VAULT_ADDR", "the Vault server (KV and Transit)",
                                         vault.address));
    const std::string scheme = vault.address.substr(0, vault.address.find("://"));
    for (const auto& host : vault.redirect_hosts) {
      DYAD_RETURN_IF_ERROR(CheckUrlAllowed(config.allowed_regions, "VAULT_REDIRECT_HOSTS", "a redirect host",
                                           scheme + "://" + host));
    }
    return OkStatus();
  }

  // The server, namespace and KV mount the names go under.
  Result<std::string> StoreLocation(const Config& config) const override {
    DYAD_ASSIGN_OR_RETURN(VaultSettings vault, ReadVaultSettings(config.env, config.secret_env));
    return "vault at " + CanonicalUrl(vault.address).value_or(vault.address) + ", namespace '" + vault.name_space +
           "', KV mount '" + vault.kv_mount + "', SECRETS_PREFIX '" + config.secrets_prefix + "'";
  }

  Result<Backend> Open(const BackendContext& context) const override {
    const Config& config = context.config;
    DYAD_RETURN_IF_ERROR(Check(config));
    DYAD_ASSIGN_OR_RETURN(VaultSettings vault, ReadVaultSettings(config.env, config.secret_env));
    Backend b;
    CurlOptions curl;
    curl.ca_file = vault.ca_cert;
    curl.ca_path = vault.ca_path;
    curl.client_cert = vault.client_cert;
    curl.client_key = vault.client_key;
    curl.tls_server_name = vault.tls_server_name;
    curl.follow_redirects = true;  // a standby's 307 to the active node
  curl.redirect_hosts = vault.redirect_hosts;  // besides VAULT_ADDR's host
    curl.request_timeout = std::chrono::milliseconds(vault.timeout_ms);
    RetryPolicy retry;
    retry.max_attempts = vault.max_attempts;

    // Logins and the token's own calls: no auth step, in the auth namespace.
    // One attempt each: they run inside a data call's Authorize(), whose
    // client retries them already (3 x 3 attempts otherwise).
    RetryPolicy once = retry;
    once.max_attempts = 1;
    VaultClientOptions lo{vault.address, vault.auth_namespace.empty() ? vault.name_space : vault.auth_namespace,
                          once, context.observer};
    DYAD_ASSIGN_OR_RETURN(auto login, VaultClient::Create(std::move(lo), nullptr, NewCurlTransport(curl),
                                                          context.clock, context.random));
    VaultClient& login_client = b.resources.Add(std::move(login));
    auto auth = std::make_unique<VaultTokenAuth>(vault, login_client, context.clock);
    VaultClientOptions dataopts{vault.address, vault.name_space, retry, context.observer};
    DYAD_ASSIGN_OR_RETURN(auto data, VaultClient::Create(std::move(dataopts), std::move(auth), NewCurlTransport(curl),
                                                         context.clock, context.random));
    VaultClient& client = b.resources.Add(std::move(data));

    TransitOptions to;
    to.mount = vault.transit_mount;
    to.key = config.encryption_key_id;
    to.retire_in_vault = vault.transit_retire;
    DYAD_ASSIGN_OR_RETURN(b.keys, NewTransitKeyManager(std::move(to), client, context.db->NewKeyVersionRepository(),
                                                       context.clock, context.random));
    KvStoreOptions ko;
    ko.mount = vault.kv_mount;
    ko.prefix = config.secrets_prefix;
    ko.parallelism = static_cast<size_t>(vault.concurrency);
    b.traits.rotation_parallelism = ko.parallelism;
    // Every attempt of a write at its timeout, and the backoff between them.
    b.traits.longest_write = std::chrono::seconds(vault.max_attempts * (vault.timeout_ms / 1000 + 5));
    b.store = NewVaultKvStore(std::move(ko), client);
    // Credential fields may refer to Vault secrets (database/creds/<role>, …)
    // through the same client, token and namespace: only under
    // VAULT_DYNAMIC_PATHS, never under the gateway's own mounts.
    VaultDynamicOptions dyn;
    dyn.allowed = vault.dynamic_paths;
    dyn.kv_mount = vault.kv_mount;
    dyn.transit_mount = vault.transit_mount;
    b.dynamic = NewVaultDynamicSecrets(client, std::move(dyn));
    return b;
  }

 private:
  const std::string name_ = "vault";
};

}  // namespace

Status RegisterVaultBackend(BackendRegistry& registry) {
  return registry.Register(std::make_unique<VaultBackendFactory>());
}

}  // namespace dyad
