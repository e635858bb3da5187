// A DynamicSecretSource of the tests: every Read of a path makes a new
// "database credential" (username u<N>, password p<N> with a canary, lease
// <path>/<N>), with the TTL and renewability set; renewals answer as told;
// every call is counted and recorded (before_read may block a Read); CheckPath refuses refused_prefix. Thread-safe.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "backends/dynamic_secrets.h"
#include "core/mutex.h"

namespace dyad::testing {

inline constexpr char kDynamicCanary[] = "pw-CANARY-91c2";

class FakeDynamicSecrets final : public DynamicSecretSource {
 public:
  // Paths starting with refused_prefix are refused (as an allowlist would).
  Status CheckPath(std::string_view path) const override {
    if (!refused_prefix.empty() && path.starts_with(refused_prefix)) {
      return MakeError(ErrorCode::kInvalidArgument, "references a Vault secret outside VAULT_DYNAMIC_PATHS");
    }
    return OkStatus();
  }
  Result<DynamicSecret> Read(const std::string& path) override {
    if (before_read) before_read(path);  // outside the lock: it may block (a slow backend)
    MutexLock lock(&mu_);
    reads_.push_back(path);
    if (read_error) return *read_error;
    const std::string n = std::to_string(reads_.size());
    DynamicSecret s;
    s.fields.emplace("username", SecretBytes("u" + n));
    s.fields.emplace("password", SecretBytes(std::string(kDynamicCanary) + "-p" + n));
    s.lease_id = leased ? path + "/" + n : "";
    s.lease_ttl = leased ? ttl : std::chrono::seconds(0);
    s.renewable = renewable;
    return s;
  }
  Result<std::chrono::seconds> Renew(const std::string& lease_id, std::chrono::seconds increment) override {
    MutexLock lock(&mu_);
    renewals_.push_back(lease_id);
    if (renew_error) return *renew_error;
    return renew_grant ? *renew_grant : increment;
  }
  Status Revoke(const std::string& lease_id) override {
    MutexLock lock(&mu_);
    revoked_.push_back(lease_id);
    if (revoke_error) return *revoke_error;
    return OkStatus();
  }

  std::vector<std::string> reads() const {
    MutexLock lock(&mu_);
    return reads_;
  }
  std::vector<std::string> renewals() const {
    MutexLock lock(&mu_);
    return renewals_;
  }
  std::vector<std::string> revoked() const {
    MutexLock lock(&mu_);
    return revoked_;
  }

  // Set before the calls they shape (not while a call runs).
  std::chrono::seconds ttl{60};
  bool renewable = true;
  bool leased = true;
  std::optional<Error> read_error, renew_error, revoke_error;
  std::optional<std::chrono::seconds> renew_grant;  // nullopt: the increment asked for
  std::string refused_prefix;                       // "": every path allowed
  std::function<void(const std::string& path)> before_read;  // called first by Read, e.g. to block it

 private:
  mutable Mutex mu_;
  std::vector<std::string> reads_ DYAD_GUARDED_BY(mu_), renewals_ DYAD_GUARDED_BY(mu_),
      revoked_ DYAD_GUARDED_BY(mu_);
};

}  // namespace dyad::testing
