// SecretStore: named secret values in a secrets manager.
//
// Values are what the service hands it: an envelope document in envelope
// mode, the credentials JSON in provider mode. Implementations are
// thread-safe. Errors: kNotFound, kAlreadyExists (Create of a taken name),
// kPermissionDenied (never falls back), kUnavailable (connection failure,
// timeout, 5xx, throttling after retries: may fall back), each with the
// backend's own message.
#pragma once

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
  virtual Result<std::vector<std::string>> List(std::string_view prefix) = 0;
};

}  // namespace dyad
