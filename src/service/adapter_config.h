// AdapterConfig: how the /v1 path calls an http-sdk or proxy provider's
// upstream, read from the provider's adapterConfig JSON (DESIGN.md §12).
//
//   {"baseUrl": "https://api.openai.com/v1",
//    "auth": {"header": "x-api-key", "template": "{api_key}"},
//    "credentialHeaders": {"organization": "OpenAI-Organization"},
//    "validatePath": "/models"}
//
// Only baseUrl is required. baseUrl is an absolute http(s) URL without user
// info, query or fragment (a trailing '/' is dropped); plain http only to a
// loopback host (localhost, 127.0.0.0/8, ::1) unless the policy allows it
// (GATEWAY_ALLOW_PLAINTEXT_UPSTREAM); a host that is a link-local or metadata
// address in any spelling (transport/upstream_address.h) is refused. What a
// host name resolves to is checked elsewhere (UpstreamHostCheck at create and
// update, and UpstreamClient on every connection). The auth header carries
// the template with each {field} replaced by that credential field; each
// credentialHeaders entry sends a credential field, when the provider has
// it, under a header name. Header names are HTTP tokens and never a framing
// or hop-by-hop header (Host, Content-Length, Transfer-Encoding,
// Connection, …). Other adapterConfig members are left to other adapters.
//
// Pure functions; thread-safe. ParseAdapterConfig's errors are
// kInvalidArgument naming the member ("adapterConfig.auth.header: …").
// CredentialHeaders' are kFailedPrecondition naming the credential field
// (missing, or holding CR, LF, NUL or another control character that would
// split a header); never a value. CheckHeaderBoundFields refuses the latter
// when credentials are written, CredentialHeaders still when they are used.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/result.h"
#include "secrets/credentials.h"
#include "transport/http_transport.h"

namespace dyad {

// Whether a provider type calls an upstream (http-sdk, proxy: it needs a
// baseUrl, and its credentials are sent per its adapterConfig).
bool UsesUpstream(std::string_view type);

struct UpstreamAuth {
  std::string header = "Authorization";
  std::string value_template = "Bearer {api_key}";
};

struct AdapterConfig {
  std::string base_url;  // no trailing '/'
  UpstreamAuth auth;
  // credential field -> header name
  std::vector<std::pair<std::string, std::string>> credential_headers = {{"organization", "OpenAI-Organization"}};
  std::string validate_path = "/models";
};

struct UpstreamPolicy {
  bool allow_plaintext = false;  // GATEWAY_ALLOW_PLAINTEXT_UPSTREAM
};

Result<AdapterConfig> ParseAdapterConfig(std::string_view adapter_config_json, const UpstreamPolicy& policy);

// The headers that carry `fields` upstream: the auth header, then each
// credentialHeaders entry whose field the credentials hold.
Result<HttpHeaders> CredentialHeaders(const AdapterConfig& config, const CredentialFields& fields);

// For a write: kInvalidArgument naming the first field of `fields` that
// `config` sends in a header (a {field} of auth.template, a credentialHeaders
// entry) and whose value CredentialHeaders would refuse (CR, LF, NUL or
// another control character), or that auth.template sends and is empty:
// such a credential could never be sent, so it is not stored. A reference
// (resolved at use) and a field sent in no header (a PEM key with its line
// breaks) are not checked. Never a value.
Status CheckHeaderBoundFields(const AdapterConfig& config, const CredentialFields& fields);

// For a write: kInvalidArgument naming the first {field} of auth.template
// that `names` (the credential field names the provider will hold) lacks:
// every call would fail on it. No names (no credentials stored: the
// environment's are read, or none yet) are not checked.
Status CheckTemplateFields(const AdapterConfig& config, const std::vector<std::string>& names);

// The {field}s of an auth.template ParseAdapterConfig accepted, in order,
// each once.
std::vector<std::string> TemplateFields(std::string_view value_template);

// A write of credentials to a provider of `type` with this adapterConfig:
// CheckHeaderBoundFields of `fields` (when given) and CheckTemplateFields
// of `names` (the field names the provider will hold). Any baseUrl scheme
// is taken: where plain http may go is not this check's (another instance,
// allowed it, may serve the provider). OK for a type without upstream and
// for an adapterConfig that does not parse (another check's error, or an
// old row's, kept as it is).
Status CheckCredentialsWrite(std::string_view type, std::string_view adapter_config_json,
                             const CredentialFields* fields, const std::vector<std::string>& names);

// The credential fields a provider of `type` with this adapterConfig sends
// upstream on every call: auth.template's {field}s ("api_key" by default,
// and for an adapterConfig that does not parse); none for a type without
// upstream.
std::vector<std::string> RequiredCredentialFields(std::string_view type, std::string_view adapter_config_json);

// The host of an http(s) URL as ParseAdapterConfig accepted it, without
// brackets or port ("api.openai.com", "::1"); empty when there is none.
std::string UpstreamHost(std::string_view base_url);

}  // namespace dyad
