// The AWS KMS KeyManager: data keys from GenerateDataKey (AES_256), unwrapped
// by Decrypt and moved to the current key material by ReEncrypt, each answer's
// KeyId checked against the configured key's ARN (DescribeKey, or the KeyId
// of an Encrypt answer; resolved on first use so the service starts while KMS
// is down). The secret a data key protects goes with every call as
// EncryptionContext {"secret": NAME}, so a wrapped DEK unwraps under its own
// secret's name only. Probe() is a DescribeKey (or an Encrypt), for health.
//
// ENCRYPTION_KEY_ID may be a key id, a key or alias ARN, "alias/NAME", or a
// bare NAME (taken as alias/NAME). Key versions are the gateway's, kept in the
// registry database (a KeyVersionRepository, key id "aws-kms:" +
// ENCRYPTION_KEY_ID) so that every instance on it agrees: version 1 is the key
// as first used; Rotate() calls RotateKeyOnDemand (new backing material) and
// records the next version; Describe() counts the key's rotations with
// ListKeyRotations and makes a rotation KMS did on its own (automatic
// rotation) a new version too, so the rotation status shows what is left to
// re-encrypt. KMS keeps every backing key, so Retire() is the gateway
// refusing that version from then on. An endpoint that does not implement
// RotateKeyOnDemand (HTTP 501, e.g. local-kms, which rotates its material on
// its own schedule) still gets a new version: the rotation run then
// re-encrypts everything under whatever material is current.
//
// Under the seed's IAM policy (kms: Encrypt, Decrypt, GenerateDataKey,
// RotateKeyOnDemand) every KMS-side feature works: a denied ReEncrypt becomes
// Decrypt + Encrypt, a denied DescribeKey an Encrypt of a constant (for the
// ARN and the probe), a denied ListKeyRotations leaves the versions to the
// gateway's own rotations. Each denial is logged once, naming the missing
// permission, and not asked for again by this process. Thread-safe.
#pragma once

#include <memory>
#include <string>

#include "backends/aws/aws_json_client.h"
#include "backends/key_manager.h"
#include "registry/key_version_repository.h"

namespace dyad {

Result<std::unique_ptr<KeyManager>> NewKmsKeyManager(std::string key_id, std::unique_ptr<AwsJsonClient> client,
                                                     std::shared_ptr<KeyVersionRepository> versions,
                                                     const Clock& clock);

// The KeyId sent to KMS for a configured ENCRYPTION_KEY_ID.
std::string KmsKeyReference(const std::string& key_id);

}  // namespace dyad
