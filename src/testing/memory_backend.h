// A backend that exists only in the test tree: "memory", a
// dyad::testing::MemoryStore without conditional writes and an in-memory KeyManager (versions with
// random masters, AES-256-GCM wraps bound to the version and the context).
// It proves the seam: a backend is its folder, one registration and CMake.
// Nothing in src/ registers it; a test does, on its own registry, and then
// SECRETS_PROVIDER=memory opens through BackendRegistry::Open and App as a
// built-in backend does. Refuses SECRETS_ENCRYPTION_MODE=provider (no
// encryption of its own) and an empty SECRETS_PREFIX. Thread-safe.
#pragma once

#include <atomic>
#include <memory>

#include "backends/registry.h"
#include "testing/fakes.h"

namespace dyad::testing {

// What a test can see of the backends the factory opened.
struct MemoryBackendLog {
  std::atomic<int> opened{0};
  std::atomic<MemoryStore*> last_store{nullptr};  // owned by the Backend opened last
};

Status RegisterMemoryBackend(BackendRegistry& registry, std::shared_ptr<MemoryBackendLog> log = nullptr);

// The in-memory KeyManager alone (kind "memory"); `random` must outlive it.
Result<std::unique_ptr<KeyManager>> NewMemoryKeyManager(std::string key_id, Random& random);

}  // namespace dyad::testing
