// The local keyring KeyManager (environment backend): random 256-bit key
// versions kept in the registry database, each sealed with AES-256-GCM under
// the master ENCRYPTION_KEY.
//
// At open, every version is unsealed; a version sealed under a master listed
// in ENCRYPTION_KEY_PREVIOUS is re-sealed under the current master. DEKs are
// wrapped as nonce ‖ ciphertext ‖ tag with AAD binding key id, version and
// the context (when one is given).
// Every instance writes under the live primary: the states of all versions
// (the key epoch) are read again from the database at most every 500 ms on
// the write path (at once after MarkStale()) and on every CurrentState(), so a primary made by another
// process on the same database is used within a second, and a version
// unknown in memory is loaded when it is first met. What memory holds never
// goes back: a read of the database is applied only if no read begun after
// it, nor a Rotate or state change of this process, was applied first (two
// threads refreshing while a third rotated could otherwise set the primary
// back). A 'retiring' version still decrypts but is never primary. The versions live in a
// KeyVersionRepository (material: the sealed key). Thread-safe.
#pragma once

#include <memory>
#include <vector>

#include "backends/key_manager.h"
#include "core/clock.h"
#include "core/random.h"
#include "registry/key_version_repository.h"

namespace dyad {

struct LocalKeyringOptions {
  std::string key_id;
  SecretBytes master;
  std::vector<SecretBytes> previous_masters;
  // Encryptions recorded in the database at a time, ahead of use (the
  // recorded count is an upper bound, by up to a block per process): far
  // below the wear limit, which it would otherwise reach on its first
  // reservation (ReserveBlockFor).
  uint64_t reserve_block = 4096;
};

// The reserve block for a wear limit (KEY_ROTATION_MAX_ENCRYPTIONS): 1/256
// of it, from 1 to 4096, so the limit's last 1/16 (where a rotation starts)
// holds 16 blocks: that many processes' unused reservations do not start
// it early.
uint64_t ReserveBlockFor(uint64_t max_encryptions);

Result<std::unique_ptr<KeyManager>> NewLocalKeyring(LocalKeyringOptions options,
                                                    std::shared_ptr<KeyVersionRepository> versions, Random& random,
                                                    const Clock& clock);

}  // namespace dyad
