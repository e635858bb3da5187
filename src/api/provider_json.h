// JSON of the provider API: request bodies to ProviderPatch (with
// validation that names the field at fault) and Provider to its response
// document. Pure functions; thread-safe.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string_view>

#include "registry/provider.h"
#include "service/provider_service.h"

namespace dyad {

enum class BodyKind { kCreate, kUpdate };

// The most credential fields a provider holds.
inline constexpr size_t kMaxCredentialFields = 64;

// Parses and validates a create or update body. kInvalidArgument errors name
// the field; credential values never appear in messages.
Result<ProviderPatch> ParseProviderBody(std::string_view body, BodyKind kind);
// The same, of a body already parsed (a merged PATCH document). With
// `patch` (the PATCH's own body), a member it does not set is the stored
// one, and is not checked for control characters: a name, description or
// model id stored before that check (or by an older instance) does not
// block a change to another member.
Result<ProviderPatch> ParseProviderJson(const nlohmann::json& body, BodyKind kind,
                                        const nlohmann::json* patch = nullptr);
// Parses {"credentials":{…}} for the rotate route.
Result<CredentialFields> ParseCredentialsBody(std::string_view body);
// The rotate route's whole body: {"credentials":{…}, "validate": bool}
// ("validate" optional, false when absent).
struct RotateBody {
  CredentialFields credentials;
  bool validate = false;
};
Result<RotateBody> ParseRotateBody(std::string_view body);

nlohmann::json ProviderToJson(const Provider& p);

// What a request body may hold. Checked before a DOM is built, so the
// DOM and everything that walks it recursively (dump, destructors) stay
// within max_depth.
struct JsonLimits {
  size_t max_depth = 64;           // objects and arrays open at once
  size_t max_members = 10000;      // object members in the whole document
  size_t max_string_bytes = 64 << 20;  // per string or key (the largest body limit)
};

// The JSON object of a body, or kInvalidArgument: "malformed JSON …", or
// the limit crossed (nesting, members, string length), or the first
// duplicate key, named.
Result<nlohmann::json> ParseJsonObject(std::string_view body, const JsonLimits& limits = {});
// The first limit of `limits` the JSON text `text` crosses, said as
// "more than 10000 object members in all"; empty when within them (or not
// JSON). For a document built rather than received (a merged PATCH).
std::string JsonLimitCrossed(std::string_view text, const JsonLimits& limits = {});

}  // namespace dyad
