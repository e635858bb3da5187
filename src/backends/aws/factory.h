// The "aws" backend: Secrets Manager as the SecretStore and KMS as the
// KeyManager, through the AWS credential chain. Its settings are
// AwsSettings (aws_settings.h); it takes SECRETS_ENCRYPTION_MODE=provider
// (Secrets Manager encrypts under ENCRYPTION_KEY_ID) and SECRETS_PREFIX
// within AWS's secret-name rules. Registering it twice in one registry is
// kAlreadyExists.
#pragma once

#include "backends/registry.h"

namespace dyad {

Status RegisterAwsBackend(BackendRegistry& registry);

}  // namespace dyad
