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

// Parses and validates a create or update body. kInvalidArgument errors name
// the field; credential values never appear in messages.
Result<ProviderPatch> ParseProviderBody(std::string_view body, BodyKind kind);
// Parses {"credentials":{…}} for the rotate route.
Result<CredentialFields> ParseCredentialsBody(std::string_view body);

nlohmann::json ProviderToJson(const Provider& p);

// The JSON object of a body, or kInvalidArgument ("malformed JSON …").
Result<nlohmann::json> ParseJsonObject(std::string_view body);

}  // namespace dyad
