#include "backends/azure/factory.h"

#include <spdlog/spdlog.h>

#include <cctype>

#include "backends/azure/azure_client.h"
#include "backends/azure/azure_settings.h"
#include "backends/azure/entra_auth.h"
#include "backends/azure/key_manager.h"
#include "backends/azure/secret_store.h"
#include "core/endpoint.h"
#include "core/env_vars.h"
#include "core/residency.h"
#include "transport/curl_transport.h"

namespace dyad {
namespace {

class AzureBackendFactory final : public BackendFactory {
 public:
  const std::string& Name() const override { return name_; }

  Status Check(const Config& config) const override {
    DYAD_RETURN_IF_ERROR(CheckAzureSecretsPrefix(config.secrets_prefix));
    DYAD_ASSIGN_OR_RETURN(AzureSettings az, ReadAzureSettings(config.env, config.secret_env));
    DYAD_RETURN_IF_ERROR(CheckUrlAllowed(config.allowed_regions, "AZURE_KEY_VAULT_URL", "the secrets vault",
                                         az.vault_url));
    const char* key_variable = FindVariable(config.env, "AZURE_KEY_VAULT_KEY_URL") ? "AZURE_KEY_VAULT_KEY_URL"
                                                                                    : "ENCRYPTION_KEY_ID";
    if (az.key_vault_url != az.vault_url) {
      DYAD_RETURN_IF_ERROR(CheckUrlAllowed(config.allowed_regions, key_variable, "the key's vault", az.key_vault_url));
    }
    return OkStatus();
  }

  // The vault; Key Vault names are case-insensitive, so is the prefix.
  Result<std::string> StoreLocation(const Config& config) const override {
    DYAD_ASSIGN_OR_RETURN(AzureSettings az, ReadAzureSettings(config.env, config.secret_env));
    std::string prefix = config.secrets_prefix;
    for (char& c : prefix) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return "azure vault " + CanonicalUrl(az.vault_url).value_or(az.vault_url) + ", SECRETS_PREFIX '" + prefix + "'";
  }

  Result<Backend> Open(const BackendContext& context) const override {
    const Config& config = context.config;
    DYAD_ASSIGN_OR_RETURN(AzureSettings az, ReadAzureSettings(config.env, config.secret_env));
    Backend b;
    CurlOptions curl;
    curl.ca_file = az.ca_bundle;
    curl.request_timeout = std::chrono::milliseconds(az.timeout_ms);
    HttpTransport& identity_http = b.resources.Add(NewCurlTransport(curl));
    DYAD_ASSIGN_OR_RETURN(auto source, NewEntraTokenSource(az, identity_http, context.clock, context.random));
    spdlog::info("Azure Key Vault {}: Entra ID credential: {}", az.vault_host, source->Name());
    auto credential = std::make_shared<EntraCredential>(std::move(source), context.clock);
    RetryPolicy retry;
    retry.max_attempts = az.max_retries + 1;
    auto client = [&](const std::string& vault_url) -> Result<AzureClient*> {
      AzureClientOptions options;
      options.vault_url = vault_url;
      options.retry = retry;
      options.observer = context.observer;
      auto endpoint = ParseEndpoint(vault_url);
      if (!endpoint) return MakeError(ErrorCode::kInvalidArgument, "not a vault URL: " + vault_url);
      const std::string host = endpoint->host;
      DYAD_ASSIGN_OR_RETURN(auto c, AzureClient::Create(std::move(options),
                                                        NewEntraAuth(host, az.verify_challenge_resource, credential, az.tenant_id),
                                                        NewCurlTransport(curl), context.clock, context.random));
      return &b.resources.Add(std::move(c));
    };
    DYAD_ASSIGN_OR_RETURN(AzureClient * key_vault, client(az.key_vault_url));
    AzureKeyOptions ko;
    ko.key_name = az.key_name;
    ko.key_version_pinned = az.key_version;
    DYAD_ASSIGN_OR_RETURN(b.keys, NewAzureKeyManager(std::move(ko), *key_vault,
                                                     context.db->NewKeyVersionRepository(), context.clock,
                                                     context.random));
    DYAD_ASSIGN_OR_RETURN(AzureClient * secrets_vault, client(az.vault_url));
    AzureSecretStoreOptions so;
    so.prefix = config.secrets_prefix;
    so.purge_on_delete = az.purge_on_delete;
    so.parallelism = static_cast<size_t>(az.concurrency);
    so.clock = &context.clock;
    b.traits.rotation_parallelism = so.parallelism;
    // Every attempt of a write at its timeout with the backoff between them,
    // a token fetch, and a soft-deleted name's recovery before the write.
    b.traits.longest_write = std::chrono::seconds((az.max_retries + 1) * (az.timeout_ms / 1000 + 5) * 2);
    b.store = NewAzureSecretStore(std::move(so), *secrets_vault);
    return b;
  }

 private:
  const std::string name_ = "azure";
};

}  // namespace

Status RegisterAzureBackend(BackendRegistry& registry) {
  return registry.Register(std::make_unique<AzureBackendFactory>());
}

}  // namespace dyad
