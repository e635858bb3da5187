// The backend seam: what a secrets backend (SECRETS_PROVIDER) hands the
// service, what it is given to build it, and the factory that builds it.
//
// A backend is one folder under src/backends/ with a BackendFactory
// registered under its SECRETS_PROVIDER name (registry.h). Check() parses
// and validates the backend's own settings and opens nothing, so that a bad
// variable stops the start before any file or connection is made; Open()
// builds the SecretStore and KeyManager (and checks again: Open alone is
// enough). Errors are kInvalidArgument values whose message starts with the
// variable's name and never repeats a secret value. The services never ask
// which backend they run on: what differs is in BackendTraits (and in what
// the store and key manager say they can do). Factories are stateless and
// thread-safe; a Backend is owned by one caller.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "backends/dynamic_secrets.h"
#include "backends/key_manager.h"
#include "backends/secret_store.h"
#include "cloud/call_observer.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/random.h"
#include "core/result.h"
#include "registry/database.h"

namespace dyad {

// Objects the store and key manager use (an HTTP transport, a credential
// source, …), kept alive without naming their types; destroyed in the
// reverse order of Add(), so a later object may use an earlier one.
class BackendResources {
 public:
  BackendResources() = default;
  BackendResources(BackendResources&&) = default;
  BackendResources& operator=(BackendResources&& other) {
    Clear();
    items_ = std::move(other.items_);
    return *this;
  }
  ~BackendResources() { Clear(); }

  template <typename T>
  T& Add(std::unique_ptr<T> object) {
    T& ref = *object;
    items_.push_back(std::shared_ptr<T>(std::move(object)));
    return ref;
  }

 private:
  void Clear() {
    while (!items_.empty()) items_.pop_back();
  }
  std::vector<std::shared_ptr<void>> items_;
};

// What the services need to know of a backend, instead of its name.
struct BackendTraits {
  // Secrets a key rotation rewraps at once (a remote KMS: round trips add up).
  size_t rotation_parallelism = 1;
  // The longest one store write can take, retries included: `secrets gc`
  // never deletes a secret younger than this (a create in flight writes its
  // secret before its registry row).
  std::chrono::seconds longest_write{0};
  // The DYAD_PROVIDER_* variables are the read-only source of a provider
  // with no stored secret (not only its fallback when the store is down).
  bool env_is_source = false;
};

struct Backend {
  Backend() = default;
  Backend(Backend&&) = default;
  // The store, keys and dynamic source go before the resources they use.
  Backend& operator=(Backend&& other) {
    dynamic.reset();
    store.reset();
    keys.reset();
    resources = std::move(other.resources);
    keys = std::move(other.keys);
    store = std::move(other.store);
    dynamic = std::move(other.dynamic);
    traits = other.traits;
    return *this;
  }

  // Declared first, destroyed last: the store and keys use them.
  BackendResources resources;
  std::unique_ptr<KeyManager> keys;
  std::unique_ptr<SecretStore> store;
  // Secrets made on demand with a lease, which a credential field may refer
  // to; null for a backend without them (a reference is then refused).
  std::unique_ptr<DynamicSecretSource> dynamic;
  BackendTraits traits;
};

// What a factory builds from. The settings a backend reads are in `config`:
// the generic ones (encryption_key_id, encryption_mode, secrets_prefix, dev),
// the plain variables (`env`) and the secret ones (`secret_env`).
struct BackendContext {
  const Config& config;
  // The registry database (key-version state of keyrings and KMS key
  // managers; the environment backend's secrets), on either engine.
  std::shared_ptr<Database> db;
  const Clock& clock;
  Random& random;
  // Hears of every call a cloud backend makes (/metrics); may be null, must
  // outlive the backend.
  CloudCallObserver* observer = nullptr;
};

class BackendFactory {
 public:
  virtual ~BackendFactory() = default;
  // The SECRETS_PROVIDER value it is registered under, e.g. "aws".
  virtual const std::string& Name() const = 0;
  // Parses and validates the backend's settings; opens nothing.
  virtual Status Check(const Config& config) const = 0;
  // Where the store of `config` (its settings checked) keeps secrets, as a
  // text equal for two configurations exactly when their secret names land
  // in one place: the service, its region or address, SECRETS_PREFIX. Never
  // a secret; opens nothing. `migrate` refuses a target at the source's
  // location. This default (the backend and the prefix) takes every two
  // configurations of one backend with one prefix for one place.
  virtual Result<std::string> StoreLocation(const Config& config) const {
    return Name() + ", SECRETS_PREFIX '" + config.secrets_prefix + "'";
  }
  virtual Result<Backend> Open(const BackendContext& context) const = 0;
};

}  // namespace dyad
