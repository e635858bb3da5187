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

Result<const LeasedSecrets::Lease*> LeasedSecrets::LeaseFor(Slot& slot, const std::string& path, Lease& read_once,
                                                            std::vector<std::string>& dropped) {
  const Clock::Instant now = clock_.Now();
  if (auto it = slot.by_path.find(path); it != slot.by_path.end()) {
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
    slot.by_path.erase(it);
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
  return &(slot.by_path[path] = std::move(fresh));
}

std::shared_ptr<LeasedSecrets::Slot> LeasedSecrets::SlotOf(const std::string& provider_id) {
  MutexLock lock(&mu_);
  Entry& e = slots_[provider_id];
  if (!e.slot) e.slot = std::make_shared<Slot>();
  return e.slot;
}

void LeasedSecrets::Settle(const std::string& provider_id, Slot& slot, bool just_ended) {
  MutexLock lock(&mu_);
  auto it = slots_.find(provider_id);
  if (it == slots_.end() || it->second.slot.get() != &slot) return;  // forgotten meanwhile: it held nothing
  Entry& e = it->second;
  e.leases = slot.by_path.size();
  if (just_ended) {
    e.ended = true;
    e.ended_seq = ++ended_seq_;
  }
  // Nothing to remember (never a version: a resolve that failed still
  // marks its version for RevokeAll), and nobody else waits on it (the
  // caller's reference and the map's).
  if (e.leases == 0 && !e.ended && slot.version == 0 && e.slot.use_count() <= 2) {
    slots_.erase(it);
    return;
  }
  if (!just_ended) return;
  size_t marks = 0;
  for (const auto& [id, other] : slots_) marks += other.leases == 0 && other.ended;
  while (marks > kMaxEnded) {  // forget the oldest marks nobody is using
    auto oldest = slots_.end();
    for (auto o = slots_.begin(); o != slots_.end(); ++o) {
      if (o->second.leases == 0 && o->second.ended && o->second.slot.use_count() == 1 &&
          (oldest == slots_.end() || o->second.ended_seq < oldest->second.ended_seq)) {
        oldest = o;
      }
    }
    if (oldest == slots_.end()) break;
    slots_.erase(oldest);
    --marks;
  }
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
  std::shared_ptr<Slot> slot = SlotOf(provider_id);
  {
    MutexLock lock(&slot->mu);  // this provider's resolves one at a time; no other provider waits
    if ((slot->ended > 0 && creds.version <= slot->ended) || creds.version < slot->version) {
      // A loader that read the store before an update or delete: these
      // credentials are no longer the provider's. Nothing read, nothing
      // revoked, nothing cached.
      const int64_t newer = std::max(slot->ended, slot->version);
      status = MakeError(ErrorCode::kConflict,
                         "the credentials of provider '" + provider_id + "' (version " +
                             std::to_string(creds.version) + ") were " +
                             (creds.version <= slot->ended ? "replaced or deleted" : "replaced by version " +
                                                                                         std::to_string(newer)) +
                             " while they were loaded; read them again");
    } else {
      for (auto it = slot->by_path.begin(); it != slot->by_path.end();) {
        if (slot->version != creds.version || !paths.count(it->first)) {  // a newer version, or a path dropped
          stale.push_back(it->second.lease_id);
          it = slot->by_path.erase(it);
        } else {
          ++it;
        }
      }
      slot->version = creds.version;
      std::map<std::string, Lease> once;  // per path, for secrets without a lease
      for (const auto& path : paths) {
        auto lease = LeaseFor(*slot, path, once[path], stale);
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
    }
    Settle(provider_id, *slot, false);
  }
  RevokeQuietly(stale);
  return status;
}

LeasedSecrets::Revoked LeasedSecrets::RevokeAll(const std::string& provider_id) {
  std::vector<std::string> ids;
  std::shared_ptr<Slot> slot = SlotOf(provider_id);
  {
    // Waits for a resolve of this provider that is running (it may be
    // caching a lease), so nothing it caches outlives this.
    MutexLock lock(&slot->mu);
    for (const auto& [path, lease] : slot->by_path) ids.push_back(lease.lease_id);
    slot->by_path.clear();
    const bool mark = slot->version > slot->ended;
    slot->ended = std::max(slot->ended, slot->version);
    Settle(provider_id, *slot, mark);
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

void LeasedSecrets::Reopen(const std::string& provider_id, int64_t version) {
  std::vector<std::string> stale;
  std::shared_ptr<Slot> slot = SlotOf(provider_id);
  {
    MutexLock lock(&slot->mu);
    if (slot->version != version) {
      for (const auto& [path, lease] : slot->by_path) stale.push_back(lease.lease_id);
      slot->by_path.clear();
    }
    slot->version = std::min(slot->version, version);
    slot->ended = std::min(slot->ended, std::max<int64_t>(version - 1, 0));
    Settle(provider_id, *slot, false);
  }
  RevokeQuietly(stale);
}

void LeasedSecrets::RevokeQuietly(const std::vector<std::string>& lease_ids) {
  for (const auto& id : lease_ids) {
    Status s = source_.Revoke(id);
    if (!s.ok()) spdlog::warn("a lease no longer used was not revoked (it runs out at its TTL): {}", s.error().message);
  }
}

size_t LeasedSecrets::LeaseCount(const std::string& provider_id) const {
  std::shared_ptr<Slot> slot;
  {
    MutexLock lock(&mu_);
    auto it = slots_.find(provider_id);
    if (it == slots_.end()) return 0;
    slot = it->second.slot;
  }
  MutexLock lock(&slot->mu);
  return slot->by_path.size();
}

}  // namespace dyad
