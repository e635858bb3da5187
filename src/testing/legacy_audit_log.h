// Audit log lines as the releases before per-log heads wrote them (keyed,
// without a "chain" member), and the head those releases saved: what an
// upgraded deployment finds on disk and in its registry. Written here from
// the format audit/audit_log.h documents, not by FileAuditLog. Also the
// event those lines record, for the tests' own FileAuditLog writes.
#pragma once

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "audit/audit_log.h"
#include "core/encoding.h"
#include "core/secret_bytes.h"

namespace dyad::testing {

// admin's secret.get of `resource`.
inline AuditEvent SecretGetEvent(const std::string& resource) {
  AuditEvent e;
  e.actor = "admin";
  e.action = "secret.get";
  e.resource = resource;
  return e;
}

inline std::string AuditMac(const SecretBytes& key, std::string_view text) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(text.data()),
       text.size(), out, &len);
  return HexEncode(std::string_view(reinterpret_cast<const char*>(out), len));
}

// One keyed line: `body` (a JSON object) with seq and prev, then its MAC.
inline std::string AuditLine(const SecretBytes& key, nlohmann::json body, uint64_t seq, const std::string& prev,
                             std::string* mac) {
  body["seq"] = seq;
  body["prev"] = prev;
  std::string text = body.dump();
  *mac = AuditMac(key, text);
  text.pop_back();
  return text + ",\"mac\":\"" + *mac + "\"}";
}

// Appends `n` lines of a log begun before heads were keyed to `path`
// (which must be new) and returns the head that release saved for it.
inline AuditHead WriteLegacyAuditLog(const std::string& path, const SecretBytes& key, int n) {
  std::ofstream out(path, std::ios::trunc);
  std::string prev = kAuditGenesis, mac;
  for (int i = 1; i <= n; ++i) {
    out << AuditLine(key, {{"action", "secret.get"}, {"actor", "admin"}, {"resource", "p" + std::to_string(i)}},
                     static_cast<uint64_t>(i), prev, &mac)
        << "\n";
    prev = mac;
  }
  return AuditHead{static_cast<uint64_t>(n), mac,
                   AuditMac(key, "dyad-audit-head:" + std::to_string(n) + ":" + mac)};
}

}  // namespace dyad::testing
