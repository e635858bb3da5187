// Which cloud endpoints may be called in plain text. A backend's endpoint
// (VAULT_ADDR, AWS_ENDPOINT_URL*) carries its token or signed requests and
// the data keys: https, or plain http only to a loopback host (a local
// emulator, an agent on the machine), unless the operator says the network
// between is trusted (SECRETS_ALLOW_PLAINTEXT_BACKEND=true).
#pragma once

#include <string_view>

#include "core/endpoint.h"
#include "core/env_vars.h"
#include "core/result.h"

namespace dyad {

// OK when `endpoint`, read from `variable`, may be called; otherwise an
// error naming the variable and saying what would cross in clear
// (`carried`: "the Vault token and data keys").
Status CheckEndpointTransport(const EnvMap& env, std::string_view variable, const Endpoint& endpoint,
                              std::string_view carried);

}  // namespace dyad
