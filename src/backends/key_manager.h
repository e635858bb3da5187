// KeyManager: the KMS key that wraps data keys (DEKs), with versions.
//
// GenerateDataKey() returns a fresh 256-bit DEK in clear and wrapped under
// the primary key version; Decrypt() unwraps a DEK wrapped under any version
// not yet retired; ReEncrypt() moves a wrapped DEK to the primary version
// without handing it out; Rotate() makes a new primary version; Retire()
// stops a version from decrypting; Probe() asks the KMS itself (not a copy in
// memory) whether the key is reachable and usable, for health checks.
//
// `context` names what a data key protects (the secret's name). A KMS binds
// it to the wrapped key (AWS: the EncryptionContext), so a DEK wrapped for
// one secret does not unwrap under another's name; a keyring may bind it
// into its wrap AAD. An empty context binds nothing: keys wrapped before
// contexts were bound unwrap with an empty context, and ReEncrypt() moves
// them from one context to another. Implementations are thread-safe.
// Errors: kDataLoss for a wrapped key that fails authentication (a wrong
// context included), kNotFound for an unknown version, kFailedPrecondition
// for a retired one, kUnavailable when the KMS cannot be reached.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/parallel.h"
#include "core/random.h"
#include "core/result.h"
#include "core/secret_bytes.h"

namespace dyad {

struct DataKey {
  SecretBytes plaintext;
  std::string wrapped;
  uint32_t version = 0;
};

struct WrappedKey {
  std::string wrapped;
  uint32_t version = 0;
};

// One wrapped DEK to move (ReEncryptMany); the views must outlive the call.
struct ReEncryptItem {
  uint32_t version = 0;
  std::string_view wrapped;
  std::string_view from_context;
  std::string_view to_context;
};

// One wrapped DEK to unwrap (DecryptMany); the views must outlive the call.
struct DecryptItem {
  uint32_t version = 0;
  std::string_view wrapped;
  std::string_view context;
};

struct KeyVersionInfo {
  uint32_t version = 0;
  std::string state;  // active | retiring | retired
  std::string created_at;
  // Encryptions made under this version with random 96-bit nonces (key
  // wear; NIST SP 800-38D bounds them at 2^32). May over-count, never under.
  uint64_t encryptions = 0;
};

struct KeyState {
  std::string kind;    // "local", "aws-kms", …
  std::string key_id;
  uint32_t primary_version = 0;
  std::vector<KeyVersionInfo> versions;
};

class KeyManager {
 public:
  virtual ~KeyManager() = default;
  virtual const std::string& Kind() const = 0;
  virtual const std::string& KeyId() const = 0;
  virtual Result<DataKey> GenerateDataKey(std::string_view context) = 0;
  virtual Result<SecretBytes> Decrypt(uint32_t version, std::string_view wrapped, std::string_view context) = 0;
  virtual Result<WrappedKey> ReEncrypt(uint32_t version, std::string_view wrapped, std::string_view from_context,
                                       std::string_view to_context) = 0;
  // ReEncrypt of many wrapped keys: one result per item, in order (one
  // item's failure is its own). A KMS with a batch call makes one call for
  // them all; the default is ReEncrypt per item on up to `parallelism`
  // threads.
  virtual std::vector<Result<WrappedKey>> ReEncryptMany(const std::vector<ReEncryptItem>& items, size_t parallelism) {
    std::vector<Result<WrappedKey>> out(items.size(), Result<WrappedKey>(WrappedKey{}));
    ParallelFor(items.size(), parallelism, [&](size_t i) {
      out[i] = ReEncrypt(items[i].version, items[i].wrapped, items[i].from_context, items[i].to_context);
    });
    return out;
  }
  // Decrypt of many wrapped keys, the same way (one batch call, or Decrypt
  // per item on up to `parallelism` threads).
  virtual std::vector<Result<SecretBytes>> DecryptMany(const std::vector<DecryptItem>& items, size_t parallelism) {
    std::vector<Result<SecretBytes>> out(items.size(), Result<SecretBytes>(SecretBytes()));
    ParallelFor(items.size(), parallelism, [&](size_t i) {
      out[i] = Decrypt(items[i].version, items[i].wrapped, items[i].context);
    });
    return out;
  }
  // Wraps `key`, a data key this KeyManager did not make (the audit key
  // `migrate` moves from another KeyManager), under the primary version.
  // kUnimplemented where a KeyManager cannot.
  virtual Result<WrappedKey> WrapKey(const SecretBytes& key, std::string_view context) {
    (void)key, (void)context;
    return MakeError(ErrorCode::kUnimplemented, Kind() + " key manager: cannot wrap a given key");
  }
  virtual Result<uint32_t> Rotate() = 0;
  virtual Status Retire(uint32_t version) = 0;
  // Retire(), and where the KMS itself can stop decrypting a version for
  // every client of the key (Vault Transit's min_decryption_version), that
  // too. Called by a rotation only when its scan listed the store itself, so
  // no other instance's blob can still be on `version`.
  virtual Status RetireEverywhere(uint32_t version) { return Retire(version); }
  // Describe() may ask the KMS (e.g. for rotations it made on its own);
  // KnownState() never does: the versions as the registry or memory has
  // them, for callers that must not wait on the KMS (health). Probe()
  // reaches the KMS; one with nothing remote to reach answers OK.
  virtual Result<KeyState> Describe() = 0;
  virtual Result<KeyState> KnownState() { return Describe(); }
  virtual Status Probe() { return OkStatus(); }
  // The key epoch changed in another instance (ChangeFeed): the versions
  // are read from the registry again before the next write, not when the
  // periodic re-read falls due. Cheap, never blocks; no-op where nothing is
  // kept in memory.
  virtual void MarkStale() {}

  // Without a context (keys wrapped before contexts were bound).
  Result<DataKey> GenerateDataKey() { return GenerateDataKey(std::string_view()); }
  Result<SecretBytes> Decrypt(uint32_t version, std::string_view wrapped) { return Decrypt(version, wrapped, {}); }
  Result<WrappedKey> ReEncrypt(uint32_t version, std::string_view wrapped) { return ReEncrypt(version, wrapped, {}, {}); }

  // Two-step retirement, shared by every instance on one key record: a
  // version marked 'retiring' seals nothing new (it is never primary) but
  // still decrypts; Retire() follows once a recount finds no blob on it.
  virtual Status BeginRetire(uint32_t version) {
    (void)version;
    return OkStatus();
  }
  // The state of `version` (active | retiring | retired) as the shared key
  // record has it now, not as this process last saw it; also makes this
  // process learn a newer primary. A writer asks after its store write.
  virtual Result<std::string> CurrentState(uint32_t version) {
    DYAD_ASSIGN_OR_RETURN(KeyState state, Describe());
    for (const auto& v : state.versions) {
      if (v.version == version) return v.state;
    }
    return MakeError(ErrorCode::kNotFound, "no key version " + std::to_string(version));
  }

 protected:
  // GenerateDataKey() of a KeyManager that draws its data keys itself:
  // `size` random bytes, wrapped by WrapKey().
  Result<DataKey> FreshDataKey(Random& random, size_t size, std::string_view context) {
    DataKey dk;
    dk.plaintext = SecretBytes(size);
    DYAD_RETURN_IF_ERROR(random.Fill(dk.plaintext.data(), size));
    DYAD_ASSIGN_OR_RETURN(WrappedKey wrapped, WrapKey(dk.plaintext, context));
    dk.version = wrapped.version;
    dk.wrapped = std::move(wrapped.wrapped);
    return dk;
  }
};

}  // namespace dyad
