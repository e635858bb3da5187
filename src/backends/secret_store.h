// SecretStore: named secret values in a secrets manager.
//
// Values are what the service hands it: an envelope document in envelope
// mode, the credentials JSON in provider mode. Implementations are
// thread-safe. Errors: kNotFound, kAlreadyExists (Create of a taken name),
// kPermissionDenied (never falls back), kUnavailable (connection failure,
// timeout, 5xx, throttling after retries: may fall back), each with the
// backend's own message.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace dyad {

class SecretStore {
 public:
  virtual ~SecretStore() = default;
  virtual const std::string& Name() const = 0;  // "environment", "aws", …
  virtual Result<std::string> Get(const std::string& name) = 0;
  virtual Status Create(const std::string& name, std::string_view value) = 0;
  virtual Status Put(const std::string& name, std::string_view value) = 0;  // create or replace
  virtual Status Delete(const std::string& name) = 0;
  // Deletes at once, skipping any recovery window the store keeps deleted
  // secrets in: for undoing a failed create and for probes (never for
  // orphans, which `secrets gc` removes through Delete()).
  virtual Status DeleteNow(const std::string& name) { return Delete(name); }
  virtual Result<std::vector<std::string>> List(std::string_view prefix) = 0;

  // List() with the time each secret was created or last changed, where the
  // store records one (`changed_at` empty where it does not: such a secret
  // never counts as old). For age-gated clean-up (`secrets gc`).
  struct Listed {
    std::string name;
    std::optional<std::chrono::system_clock::time_point> changed_at;
  };
  virtual Result<std::vector<Listed>> ListWithTimes(std::string_view prefix) {
    DYAD_ASSIGN_OR_RETURN(std::vector<std::string> names, List(prefix));
    std::vector<Listed> out;
    for (auto& n : names) out.push_back({std::move(n), std::nullopt});
    return out;
  }

  // Values of many names at once (one round trip or transaction where the
  // backend can); a missing name gives kNotFound in its slot.
  virtual Result<std::vector<Result<std::string>>> GetMany(const std::vector<std::string>& names) {
    std::vector<Result<std::string>> out;
    for (const auto& name : names) out.push_back(Get(name));
    return out;
  }

  // Replaces each value that still equals `expected`; `replaced[i]` says
  // whether item i was. Used by re-encryption so that a credential written
  // meanwhile is never overwritten by an older one. This default is not
  // atomic between read and write: a backend with a conditional write (or a
  // transaction, like SQLite's) overrides it.
  struct Swap {
    std::string name, expected, replacement;
  };
  virtual Result<std::vector<bool>> ReplaceIfUnchanged(const std::vector<Swap>& items) {
    std::vector<bool> replaced;
    for (const auto& item : items) {
      auto current = Get(item.name);
      if (!current.ok() && current.code() != ErrorCode::kNotFound) return current.error();
      bool same = current.ok() && *current == item.expected;
      if (same) DYAD_RETURN_IF_ERROR(Put(item.name, item.replacement));
      replaced.push_back(same);
    }
    return replaced;
  }

  // A provider write fenced by what its writer read: replaces the value
  // only if it is still `expected`; false when it is not. This default reads,
  // compares and puts (a plain Put, so the stored value looks like any other
  // write's): a write landing between its read and its put is not seen. A
  // store with a cheap conditional write (SQLite) overrides it.
  virtual Result<bool> PutIfUnchanged(const std::string& name, std::string_view expected, std::string_view value) {
    auto current = Get(name);
    if (!current.ok()) {
      if (current.code() == ErrorCode::kNotFound) return false;
      return current.error();
    }
    if (*current != expected) return false;
    DYAD_RETURN_IF_ERROR(Put(name, value));
    return true;
  }
};

}  // namespace dyad
