// PATCH /admin/providers/{id}: a JSON Merge Patch (RFC 7396) of the
// provider document that GET shows. An object merges member by member, at
// any depth (adapterConfig, a credential reference); `null` removes a
// member (a credential field, every credential with "credentials":null);
// any other value replaces. The result is validated as a create body is,
// with the same errors naming the field. Credentials are merged with the
// stored ones, which this code only sees masked (ProviderEdit): a value it
// keeps is never in its hands. Pure functions; thread-safe.
#pragma once

#include <nlohmann/json.hpp>
#include <string_view>

#include "registry/provider.h"
#include "service/provider_service.h"

namespace dyad {

// Whether `patch` changes the credentials (the edit then reads the stored
// ones): a "credentials" member other than an empty object.
bool PatchTouchesCredentials(const nlohmann::json& patch);

// `row` with its masked `stored` credentials, merged with `patch` and
// validated: the whole provider to write (credentials only when touched;
// kStoredValue where a stored value is kept).
Result<ProviderPatch> MergeProviderPatch(const Provider& row, const CredentialFields& stored,
                                         const nlohmann::json& patch);

// application/merge-patch+json or application/json, parameters aside,
// case-insensitive.
bool IsMergePatchMediaType(std::string_view content_type);

}  // namespace dyad
