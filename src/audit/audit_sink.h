// AuditSink: where audit events go (DESIGN.md §9). One event per secret
// operation and admin action; never a secret value, never a token.
// Implementations are thread-safe; Record() does not fail the operation it
// describes (a sink that cannot write reports it through Healthy()). Ready()
// is asked before an operation that changes or reveals a secret: false means
// the operation must be refused (503), since it could not be audited.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/result.h"

namespace dyad {

struct AuditEvent {
  std::string actor;        // identity, or "system"
  std::string action;       // secret.get, provider.create, …
  std::string resource;     // provider id, secret name, …
  std::vector<std::string> fields;  // credential field names (never values)
  std::string source;       // cache | store | fallback | stale | environment
  std::string outcome = "success";  // success | failure | denied
  double duration_ms = 0;
  std::string error_code;
  std::string request_id;
  std::string detail;
};

// Marks an event as failed with the error's code and message.
void SetFailure(AuditEvent& event, const Error& error);

class AuditSink {
 public:
  virtual ~AuditSink() = default;
  virtual void Record(const AuditEvent& event) = 0;
  virtual bool Healthy() const = 0;
  // Whether an event recorded now would be written; may try to recover a
  // sink that failed (so a sink that can write again starts accepting).
  virtual bool Ready() { return Healthy(); }
};

}  // namespace dyad
