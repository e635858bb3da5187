// libFuzzer: what the Vault and Azure backends read from outside before any
// store or key manager looks at it — Vault's {"errors":[…]} answers, Key
// Vault's {"error":{…}} answers and the WWW-Authenticate challenge of its 401
// — never crashes; an error always names the operation and stays one
// bounded line; a challenge's scope is accepted for a vault host only when
// that host is under the scope's own domain.
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "backends/azure/azure_client.h"
#include "backends/azure/entra_auth.h"
#include "backends/vault/vault_client.h"

namespace {

void CheckOneBoundedLine(const dyad::Error& e, std::string_view op) {
  if (e.message.rfind(std::string(op) + ": HTTP ", 0) != 0) std::abort();
  if (e.message.find('\n') != std::string::npos || e.message.size() > 1024) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  const int status = 300 + data[0] % 300;
  dyad::HttpReply reply{status, {}, std::string(in)};
  dyad::ReplyError vault = dyad::DecodeVaultReply("kv.read", reply);
  CheckOneBoundedLine(vault.error, "kv.read");
  if (vault.throttled != (status == 429)) std::abort();
  dyad::ReplyError azure = dyad::DecodeAzureReply("secrets.get", reply);
  CheckOneBoundedLine(azure.error, "secrets.get");
  (void)dyad::AzureInnerCodeIs(azure.error, "secrets.get", status, "SecretDisabled");
  if (auto challenge = dyad::ParseEntraChallenge(in)) {
    std::string scope = challenge->scope;
    for (char& c : scope) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    // Only a scope whose host is kv1.vault.azure.net's domain (or a parent of it) matches.
    if (dyad::ChallengeResourceMatches("kv1.vault.azure.net", challenge->scope) &&
        scope.find("azure.net") == std::string::npos && scope.find("//net") == std::string::npos) {
      std::abort();
    }
  }
  return 0;
}
