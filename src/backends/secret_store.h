// SecretStore: the secrets manager that holds each provider's credentials.
//
// Naming belongs to the store: SecretName() maps a provider id to the
// backend's name for its secret (AWS `<prefix>/providers/<id>`, Azure
// `<prefix>--providers--<id>`), ProviderIdOf() maps it back, and List()
// returns the provider secrets under the store's prefix only.
//
// Values are what the service hands it: an envelope document in envelope
// mode, the credentials JSON in provider mode. Each stored value has an
// opaque version token (AWS the VersionId, Vault KV the version, SQLite a
// row revision); Create() and Replace() return the token of what they wrote.
//
// Conditional writes: Replace(name, value, version) writes only if `version`
// is still the stored one, atomically. A store without a conditional write
// (HasConditionalWrites() false) answers kUnimplemented and writes nothing;
// so does one that learns at run time that it cannot (a permission it
// lacks), from then on. Its writers hold the provider's lease in the
// registry database around their read and Overwrite() (SecretsService::
// ReplaceHeld), so a writer without the lease can never overwrite.
//
// Implementations are thread-safe. Errors: kNotFound, kAlreadyExists (Create
// of a taken name), kConflict (Replace of a version that is no longer the
// stored one), kPermissionDenied (never falls back), kUnavailable
// (connection failure, timeout, 5xx, throttling after retries: may fall
// back), each with the backend's own message.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace dyad {

struct StoredSecret {
  std::string value;
  std::string version;  // opaque; only for Replace() of the same name
};

class SecretStore {
 public:
  virtual ~SecretStore() = default;
  virtual const std::string& Name() const = 0;  // the SECRETS_PROVIDER name, for display

  virtual std::string SecretName(std::string_view provider_id) const = 0;
  // The provider id a secret of this store's prefix belongs to; nullopt for
  // any other name.
  virtual std::optional<std::string> ProviderIdOf(std::string_view secret_name) const = 0;
  // A name outside every provider's, for probes that read, write and
  // delete (`tag`: letters, digits and '-').
  virtual std::string ProbeName(std::string_view tag) const = 0;

  virtual bool HasConditionalWrites() const = 0;

  virtual Result<StoredSecret> Get(const std::string& name) = 0;
  // As Get, once a write of the secret still running elsewhere has ended
  // (committed or rolled back), waiting a bounded time for it (kUnavailable
  // after): what reads back a write whose answer was lost, since on a
  // network database its statement may still run on a connection that was
  // cut. Get where a write ends with its call (or the store cannot tell).
  virtual Result<StoredSecret> GetSettled(const std::string& name) { return Get(name); }
  virtual Result<std::string> Create(const std::string& name, std::string_view value) = 0;
  virtual Result<std::string> Replace(const std::string& name, std::string_view value,
                                      const std::string& version) = 0;
  // Replaces whatever is stored (kNotFound when nothing is): only under the
  // provider's lease, after reading the version it replaces.
  virtual Result<std::string> Overwrite(const std::string& name, std::string_view value) = 0;
  // Creates or replaces whatever is stored: for tools and tests, never for
  // a credential write (which goes through Create or Replace).
  virtual Status Put(const std::string& name, std::string_view value) = 0;
  virtual Status Delete(const std::string& name) = 0;
  // Deletes at once, skipping any recovery window the store keeps deleted
  // secrets in: for undoing a failed create and for probes (never for
  // orphans, which `secrets gc` removes through Delete()).
  virtual Status DeleteNow(const std::string& name) { return Delete(name); }
  // Deletes `name` only while `version` is stored, atomically (kConflict
  // otherwise); kUnimplemented where the store cannot (then the caller
  // deletes under the lease).
  virtual Status DeleteIfVersion(const std::string& name, const std::string& version) {
    (void)name, (void)version;
    return MakeError(ErrorCode::kUnimplemented, "no conditional delete");
  }

  // Copies the store keeps of each secret in other places (AWS replica
  // regions). CheckReplication() reports them for one sample secret (one
  // call or two: callers space their checks out, never one per provider);
  // a place configured but missing from the sample is "Missing".
  struct ReplicaStatus {
    std::string place, status, message;  // status: the store's word (AWS InSync | InProgress | Failed) or Missing
  };
  struct ReplicationReport {
    std::string sample;  // the secret looked at; empty when there is none yet
    std::vector<ReplicaStatus> replicas;
  };
  virtual bool KeepsReplicas() const { return false; }
  virtual Result<ReplicationReport> CheckReplication() {
    return MakeError(ErrorCode::kUnimplemented, "this store keeps no replicas");
  }

  // Every provider secret under the store's prefix, with the time it was
  // created or last changed where the store records one (empty where it does
  // not: such a secret never counts as old, see `secrets gc`).
  struct Listed {
    std::string name;
    std::optional<std::chrono::system_clock::time_point> changed_at;
  };
  virtual Result<std::vector<Listed>> List() = 0;

  // Values of many names at once (one round trip or transaction where the
  // backend can); a missing name gives kNotFound in its slot.
  virtual Result<std::vector<Result<StoredSecret>>> GetMany(const std::vector<std::string>& names) {
    std::vector<Result<StoredSecret>> out;
    for (const auto& name : names) out.push_back(Get(name));
    return out;
  }

  // Replace() of many: `replaced[i]` says whether item i was (false for a
  // version no longer stored or a deleted secret). Any other failure
  // (kUnimplemented included) fails the call; items before it may have been
  // written.
  struct Swap {
    std::string name, version, value;
  };
  virtual Result<std::vector<bool>> ReplaceMany(const std::vector<Swap>& items) {
    std::vector<bool> replaced;
    for (const auto& item : items) {
      auto r = Replace(item.name, item.value, item.version);
      if (!r.ok() && r.code() != ErrorCode::kConflict && r.code() != ErrorCode::kNotFound) return r.error();
      replaced.push_back(r.ok());
    }
    return replaced;
  }
};

// The `<prefix><sep>providers<sep><id>` naming most stores use; probes
// are `<prefix><sep>probe<sep><tag>`.
class PrefixNaming {
 public:
  PrefixNaming(std::string prefix, std::string_view sep)
      : providers_(prefix + std::string(sep) + "providers" + std::string(sep)),
        probes_(prefix + std::string(sep) + "probe" + std::string(sep)) {}
  std::string Name(std::string_view id) const { return providers_ + std::string(id); }
  std::optional<std::string> IdOf(std::string_view name) const {
    if (!name.starts_with(providers_) || name.size() == providers_.size()) return std::nullopt;
    return std::string(name.substr(providers_.size()));
  }
  std::string Probe(std::string_view tag) const { return probes_ + std::string(tag); }
  const std::string& providers_prefix() const { return providers_; }

 private:
  std::string providers_, probes_;
};

}  // namespace dyad
