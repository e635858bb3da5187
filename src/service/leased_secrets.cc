#include "service/leased_secrets.h"

#include <algorithm>
#include <set>

#include <spdlog/spdlog.h>

namespace dyad {
namespace {

Clock::Instant RenewAt(Clock::Instant now, std::chrono::seconds ttl) {
  return now + std::chrono::duration_cast<Clock::Duration>(ttl) * 2 / 3;  // the last third starts
}

}  // namespace

Result<const LeasedSecrets::Lease*> LeasedSecrets::LeaseFor(Held& held, const std::string& path, Lease& read_once,
                                                            std::vector<std::string>& dropped) {
  const Clock::Instant now = clock_.Now();
  if (auto it = held.by_path.find(path); it != held.by_path.end()) {
    Lease& lease = it->second;
    if (now < lease.renew_at) return &lease;
    if (now < lease.end && lease.renewable) {
      auto ttl = source_.Renew(lease.lease_id, lease.granted);
      if (ttl.ok() && *ttl * 2 >= lease.granted) {
        lease.end = now + *ttl;
        lease.renew_at = RenewAt(now, *ttl);
        return &lease;
      }
      if (!ttl.ok() && ttl.code() == ErrorCode::kUnavailable) {
        // Still valid until it ends: try again in a while, not on every read.
        lease.renew_at = now + std::max<Clock::Duration>(std::chrono::seconds(1), (lease.end - now) / 4);
        if (lease.renew_at > lease.end) lease.renew_at = lease.end;
        return &lease;
      }
      spdlog::info("dynamic secret {}: lease not renewed ({}); reading it again", path,
                   ttl.ok() ? "its max TTL is near" : ttl.error().message);
    }
    // Ended, not renewable, refused or cut short: revoked (best effort, after
    // the lock), so it does not stay live until its max TTL.
    if (now < lease.end) dropped.push_back(std::move(lease.lease_id));
    held.by_path.erase(it);
  }
  DYAD_ASSIGN_OR_RETURN(DynamicSecret secret, source_.Read(path));
  Lease fresh;
  fresh.lease_id = std::move(secret.lease_id);
  fresh.fields = std::move(secret.fields);
  fresh.granted = secret.lease_ttl;
  fresh.renewable = secret.renewable;
  if (fresh.lease_id.empty() || fresh.granted.count() <= 0) {
    fresh.renew_at = fresh.end = Clock::Instant::max();
    read_once = std::move(fresh);
    return &read_once;
  }
  fresh.end = now + fresh.granted;
  fresh.renew_at = RenewAt(now, fresh.granted);
  return &(held.by_path[path] = std::move(fresh));
}

Status LeasedSecrets::Resolve(const std::string& provider_id, Credentials& creds) {
  std::map<std::string, CredentialReference> refs;
  std::set<std::string> paths;
  for (const auto& [name, value] : creds.fields) {
    if (auto ref = DecodeReference(value)) {
      paths.insert(ref->path);
      refs.emplace(name, std::move(*ref));
    }
  }
  if (refs.empty()) return OkStatus();
  std::vector<std::string> stale;  // leases no longer referred to: revoked after the lock
  Status status;
  {
    MutexLock lock(&mu_);
    Held& held = held_[provider_id];
    for (auto it = held.by_path.begin(); it != held.by_path.end();) {
      if (held.version != creds.version || !paths.count(it->first)) {
        stale.push_back(it->second.lease_id);
        it = held.by_path.erase(it);
      } else {
        ++it;
      }
    }
    held.version = creds.version;
    std::map<std::string, Lease> once;  // per path, for secrets without a lease
    for (const auto& path : paths) {
      auto lease = LeaseFor(held, path, once[path], stale);
      if (!lease.ok()) {
        std::string name;
        for (const auto& [n, r] : refs) {
          if (r.path == path) name += (name.empty() ? "" : ", ") + ("credentials." + n);
        }
        status = MakeError(lease.code(), name + " (dynamic secret " + path + "): " + lease.error().message);
        break;
      }
      for (const auto& [name, ref] : refs) {
        if (ref.path != path) continue;
        auto f = (*lease)->fields.find(ref.field);
        if (f == (*lease)->fields.end()) {  // the field asked for only: the others are the secret's business
          status = MakeError(ErrorCode::kFailedPrecondition, "credentials." + name + ": the dynamic secret " + path +
                                                                 " has no string field '" + ref.field + "'");
          break;
        }
        creds.fields[name] = f->second;
        if ((*lease)->end != Clock::Instant::max()) {
          creds.lease_ends[name] = (*lease)->end;
          creds.refresh_by = std::min(creds.refresh_by, (*lease)->renew_at);
          creds.usable_until = std::min(creds.usable_until, (*lease)->end);
        }
      }
      if (!status.ok()) break;
    }
    if (held.by_path.empty()) held_.erase(provider_id);
  }
  RevokeQuietly(stale);
  return status;
}

LeasedSecrets::Revoked LeasedSecrets::RevokeAll(const std::string& provider_id) {
  std::vector<std::string> ids;
  {
    MutexLock lock(&mu_);
    auto it = held_.find(provider_id);
    if (it == held_.end()) return {};
    for (const auto& [path, lease] : it->second.by_path) ids.push_back(lease.lease_id);
    held_.erase(it);
  }
  Revoked out;
  for (const auto& id : ids) {
    Status s = source_.Revoke(id);
    if (s.ok()) {
      ++out.revoked;
    } else if (++out.failed == 1) {
      out.first_error = s.error().message;
    }
  }
  return out;
}

void LeasedSecrets::RevokeQuietly(const std::vector<std::string>& lease_ids) {
  for (const auto& id : lease_ids) {
    Status s = source_.Revoke(id);
    if (!s.ok()) spdlog::warn("a lease no longer used was not revoked (it runs out at its TTL): {}", s.error().message);
  }
}

size_t LeasedSecrets::LeaseCount(const std::string& provider_id) const {
  MutexLock lock(&mu_);
  auto it = held_.find(provider_id);
  return it == held_.end() ? 0 : it->second.by_path.size();
}

}  // namespace dyad
