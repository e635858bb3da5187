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
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "registry/provider.h"
#include "service/provider_service.h"

namespace dyad {

// Whether `patch` changes the credentials (the edit then reads the stored
// ones): a "credentials" member other than an empty object.
bool PatchTouchesCredentials(const nlohmann::json& patch);

// The credential fields `patch` names (at most kMaxCredentialFields, each
// cut to 64 characters), for the audit; nullopt when it has no
// "credentials" member (or an empty one), empty for "credentials":null. PATCH's audit says
// what was asked for, also when refused.
std::optional<std::vector<std::string>> PatchCredentialNames(const nlohmann::json& patch);

// `row` with its masked `stored` credentials (`stored_bytes`: the length
// of each masked value), merged with `patch` and validated: the whole
// provider to write (credentials only when touched; kStoredValue where a
// stored value is kept). The result is held to what a create or PUT body
// may hold (the JSON limits, `max_body_bytes` with the stored values
// counted), so that repeated PATCHes cannot grow it past that; the error
// names the largest member. "enabled": null is refused (its default, true,
// would re-enable a disabled provider), as are null name, slug and type.
Result<ProviderPatch> MergeProviderPatch(const Provider& row, const CredentialFields& stored,
                                         const StoredBytes& stored_bytes, const nlohmann::json& patch,
                                         size_t max_body_bytes);

// application/merge-patch+json or application/json, parameters aside,
// case-insensitive.
bool IsMergePatchMediaType(std::string_view content_type);

}  // namespace dyad
