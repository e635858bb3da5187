#include "backends/vault/vault_auth.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <nlohmann/json.hpp>

namespace dyad {
namespace {

using nlohmann::json;

// No lease is believed longer than ten years (a hostile answer cannot
// overflow the clock).
constexpr long long kMaxSeconds = 10LL * 365 * 86400;

// A whole number of seconds >= 0 (clamped), or nullopt when `j` is not one.
std::optional<long long> Seconds(const json& j) {
  if (j.is_number_unsigned()) return static_cast<long long>(std::min<uint64_t>(j.get<uint64_t>(), kMaxSeconds));
  if (j.is_number_integer()) {
    long long v = j.get<long long>();
    if (v < 0) return std::nullopt;
    return std::min(v, kMaxSeconds);
  }
  if (j.is_number_float()) {
    double v = j.get<double>();
    if (!std::isfinite(v) || v < 0) return std::nullopt;
    return static_cast<long long>(std::min(v, static_cast<double>(kMaxSeconds)));
  }
  return std::nullopt;
}

const json& Member(const json& j, const char* name) {
  static const json kNull;
  if (!j.is_object()) return kNull;
  auto it = j.find(name);
  return it == j.end() ? kNull : *it;
}

// Zeroes a string member (a token in an answer, a secret in a body).
void WipeMember(json& j, const char* name) {
  if (!j.is_object()) return;
  auto it = j.find(name);
  if (it != j.end() && it->is_string()) Cleanse(it->get_ref<std::string&>());
}

Error Unexpected(const std::string& op, const std::string& what) {
  return MakeError(ErrorCode::kUnavailable, op + ": unexpected answer from Vault: " + what);
}

std::string MountOf(const VaultSettings& s) {
  switch (s.auth) {
    case VaultAuthMethod::kAppRole: return s.approle_mount;
    case VaultAuthMethod::kKubernetes: return s.k8s_mount;
    case VaultAuthMethod::kJwt: return s.jwt_mount;
    case VaultAuthMethod::kCert: return s.cert_mount;
    case VaultAuthMethod::kToken: break;
  }
  return "token";
}

std::string RoleOf(const VaultSettings& s) {
  switch (s.auth) {
    case VaultAuthMethod::kKubernetes: return s.k8s_role;
    case VaultAuthMethod::kJwt: return s.jwt_role;
    case VaultAuthMethod::kCert: return s.cert_role;
    default: return "";
  }
}

}  // namespace

VaultTokenAuth::VaultTokenAuth(const VaultSettings& s, VaultClient& login, const Clock& clock)
    : method_(s.auth),
      static_token_(s.auth == VaultAuthMethod::kToken ? s.token : SecretBytes()),
      token_file_(s.auth == VaultAuthMethod::kToken && s.token.empty() ? s.token_file : ""),
      role_id_(s.role_id),
      secret_id_(s.secret_id),
      secret_id_file_(s.secret_id_file),
      mount_(MountOf(s)),
      role_(RoleOf(s)),
      jwt_file_(s.auth == VaultAuthMethod::kKubernetes ? s.k8s_token_file : s.jwt_file),
      jwt_file_variable_(s.auth == VaultAuthMethod::kKubernetes ? "VAULT_K8S_TOKEN_FILE" : "VAULT_JWT_FILE"),
      login_(login),
      clock_(clock),
      current_([this] { return Fetch(); }, clock,
               RefreshOptions{"Vault token", std::chrono::minutes(5), std::chrono::seconds(30)}) {}

Status VaultTokenAuth::Authorize(CloudRequest& request) {
  DYAD_ASSIGN_OR_RETURN(SecretBytes token, current_.Get());
  request.headers.emplace_back("X-Vault-Token", std::string(token.view()));
  return OkStatus();
}

bool VaultTokenAuth::OnRejected(std::string_view op, const HttpReply& reply) {
  // VAULT_TOKEN is the only token there is: asking again cannot help.
  if (method_ == VaultAuthMethod::kToken && token_file_.empty()) return false;
  if (Probe(op) != Liveness::kDead) return false;  // the policy's answer (or Vault is away): fail closed
  const bool retry = current_.Invalidate();
  if (retry) rejected_ = true;
  if (retry) spdlog::info("{}: Vault refused the token (HTTP {}); obtaining a new one", op, reply.status);
  return retry;
}

VaultTokenAuth::Liveness VaultTokenAuth::Probe(std::string_view op) {
  SecretBytes token;
  {
    MutexLock lock(&mu_);
    if (!held_) return Liveness::kDead;
    token = held_->token;
  }
  VaultCall call;
  call.op = "auth.token.lookup-self";
  call.path = "auth/token/lookup-self";
  call.policy_hint = false;
  call.headers.emplace_back("X-Vault-Token", std::string(token.view()));
  auto answer = login_.Call(call);
  Cleanse(call.headers.back().second);
  if (answer.ok()) {
    WipeMember((*answer)["data"], "id");
    MutexLock lock(&mu_);
    // It may look itself up: a later refused lookup means it is dead.
    if (held_ && held_->token == token) held_->after_dead = false;
    return Liveness::kAlive;
  }
  const ErrorCode code = answer.error().code;
  if (code != ErrorCode::kPermissionDenied && code != ErrorCode::kInvalidArgument) return Liveness::kUnknown;
  MutexLock lock(&mu_);
  if (!held_ || held_->token != token) return Liveness::kAlive;  // replaced meanwhile: the new one is tried next
  if (code == ErrorCode::kPermissionDenied && (held_->lookup_denied || held_->after_dead)) {
    // This token may not look itself up (no default policy): its lookup
    // cannot tell a dead token from a denied path; taken as alive.
    held_->lookup_denied = true;
    if (!probe_denied_logged_) {
      probe_denied_logged_ = true;
      spdlog::warn("{}: refused, and the Vault token may not look itself up to tell whether it is still valid ({}); "
                   "taking the refusal as the policy's",
                   op, answer.error().message);
    }
    return Liveness::kAlive;
  }
  // Under the lock that found it still held, before the fetch that reads
  // the file again may run: that token is never taken again, whatever its
  // lookup says (Acquire).
  if (!LoginBased()) refused_token_ = token;
  return Liveness::kDead;
}

void VaultTokenAuth::Revoke(const SecretBytes& token) {
  VaultCall call;
  call.op = "auth.token.revoke-self";
  call.method = "POST";
  call.path = "auth/token/revoke-self";
  const json body = json::object();
  call.body = &body;
  call.headers.emplace_back("X-Vault-Token", std::string(token.view()));
  auto answer = login_.Call(call);  // best effort: a token already dead or expired is refused
  Cleanse(call.headers.back().second);
  if (!answer.ok()) spdlog::debug("Vault: revoking the replaced token: {}", answer.error().message);
}

bool VaultTokenAuth::LoginBased() const { return method_ != VaultAuthMethod::kToken; }

Result<Expiring<SecretBytes>> VaultTokenAuth::Fetch() {
  MutexLock lock(&mu_);
  const bool rejected = rejected_.exchange(false);
  bool renewal_refused = false;
  if (held_ && held_->renewable && !held_->capped && held_->ttl > 0 && !rejected) {
    auto renewed = Renew(*held_);
    if (renewed.ok()) {
      held_ = std::move(renewed).value();
      if (held_->capped && !capped_logged_) {
        capped_logged_ = true;
        spdlog::info("Vault token reached its max TTL (renewed for {} s of the {} s asked); {}", held_->ttl,
                     held_->increment, LoginBased() ? "logging in again before it ends" : "it cannot be renewed further");
      }
      return ToExpiring(*held_);
    }
    if (renewed.error().code == ErrorCode::kUnavailable) return renewed.error();
    if (method_ == VaultAuthMethod::kToken && token_file_.empty()) {
      // VAULT_TOKEN has no successor: used as it is until Vault refuses it.
      spdlog::warn("Vault token renewal refused ({}); the token is used until it expires", renewed.error().message);
      held_->renewable = false;
      return ToExpiring(*held_);
    }
    spdlog::info("Vault token renewal refused ({}); obtaining a new token", renewed.error().message);
    renewal_refused = true;
  }
  auto fresh = Acquire();
  if (!fresh.ok()) return fresh.error();
  // A renewal refused, and the file holds the same token, whose lookup is
  // refused too: dead, not one that never expires (it would be held for
  // good). Remembered, as a data call's refusal is (OnRejected).
  if (renewal_refused && !LoginBased() && held_ && fresh->token == held_->token && fresh->lookup_denied) {
    refused_token_ = fresh->token;
    return RefusedTokenInFile();
  }
  if (!LoginBased()) refused_token_.reset();  // the file holds another token
  fresh->after_dead = rejected && LoginBased();
  // A login replaced a token that may still be valid (at its max TTL, a
  // refused renewal, a refusal): it is revoked rather than left to expire.
  if (LoginBased() && held_ && held_->token != fresh->token) Revoke(held_->token);
  // The token file still holds the token whose renewal was refused: not
  // asked again (each try would come sooner, at 2/3 of what is left).
  if (renewal_refused && fresh->token == held_->token) fresh->renewable = false;
  held_ = std::move(fresh).value();
  capped_logged_ = false;
  return ToExpiring(*held_);
}

Expiring<SecretBytes> VaultTokenAuth::ToExpiring(const Held& held) const {
  if (held.ttl <= 0) return Expiring<SecretBytes>{held.token, std::nullopt};
  const bool static_token = method_ == VaultAuthMethod::kToken && token_file_.empty();
  // Nothing can replace VAULT_TOKEN: Vault's 403 will say when it has ended.
  if (static_token && (!held.renewable || held.capped)) return Expiring<SecretBytes>{held.token, std::nullopt};
  return Expiring<SecretBytes>{held.token, held.learned + std::chrono::seconds(held.ttl),
                               held.learned + std::chrono::seconds(held.ttl * 2 / 3)};
}

Result<VaultTokenAuth::Held> VaultTokenAuth::Acquire() {
  if (LoginBased()) return Login();
  if (!static_token_.empty()) return Describe(static_token_);
  auto token = ReadSecretFile(token_file_, "VAULT_TOKEN_FILE");
  if (!token.ok()) return MakeError(ErrorCode::kFailedPrecondition, token.error().message);
  if (refused_token_ && *token == *refused_token_) return RefusedTokenInFile();
  return Describe(std::move(token).value());
}

// Not a refusal of Vault's (kFailedPrecondition): the file is read again
// at the next call, with no lookup while it holds that token, and the
// agent's next token is taken at once.
Error VaultTokenAuth::RefusedTokenInFile() const {
  return MakeError(ErrorCode::kFailedPrecondition,
                   "Vault refused the token in " + token_file_ + ", which holds it still; waiting for a new token there");
}

Result<VaultTokenAuth::Held> VaultTokenAuth::Describe(SecretBytes token) {
  VaultCall call;
  call.op = "auth.token.lookup-self";
  call.path = "auth/token/lookup-self";
  call.policy_hint = false;
  call.headers.emplace_back("X-Vault-Token", std::string(token.view()));
  auto answer = login_.Call(call);
  Cleanse(call.headers.back().second);
  Held held;
  held.token = std::move(token);
  held.learned = clock_.WallNow();
  if (!answer.ok()) {
    if (answer.error().code != ErrorCode::kPermissionDenied) return answer.error();
    held.lookup_denied = true;
    if (!lookup_denied_logged_) {
      lookup_denied_logged_ = true;
      spdlog::warn("Vault refused the token's lookup of itself ({}): the token is not valid (check VAULT_TOKEN or "
                   "the token file), or its policy lacks the default policy's lookup-self; using it as a token that "
                   "never expires",
                   answer.error().message);
    }
    return held;
  }
  json& data = (*answer)["data"];
  WipeMember(data, "id");
  auto ttl = Seconds(Member(data, "ttl"));
  if (!ttl) return Unexpected(call.op, "data.ttl is not a number of seconds");
  held.ttl = *ttl;
  held.renewable = Member(data, "renewable").is_boolean() && Member(data, "renewable").get<bool>();
  auto creation = Seconds(Member(data, "creation_ttl"));
  held.increment = creation && *creation > 0 ? *creation : *ttl;
  return held;
}

Result<VaultTokenAuth::Held> VaultTokenAuth::Renew(const Held& held) {
  VaultCall call;
  call.op = "auth.token.renew-self";
  call.method = "POST";
  call.path = "auth/token/renew-self";
  const json body = {{"increment", held.increment}};
  call.body = &body;
  call.headers.emplace_back("X-Vault-Token", std::string(held.token.view()));
  auto answer = login_.Call(call);
  Cleanse(call.headers.back().second);
  if (!answer.ok()) return answer.error();
  json& auth = (*answer)["auth"];
  WipeMember(auth, "client_token");
  auto lease = Seconds(Member(auth, "lease_duration"));
  if (!lease) return Unexpected(call.op, "auth.lease_duration is not a number of seconds");
  Held out;
  out.token = held.token;
  out.learned = clock_.WallNow();
  out.ttl = *lease;
  out.increment = held.increment;
  out.renewable = Member(auth, "renewable").is_boolean() && Member(auth, "renewable").get<bool>();
  out.capped = *lease < held.increment;
  return out;
}

Result<VaultTokenAuth::Held> VaultTokenAuth::Login() {
  const std::string name = VaultAuthMethodName(method_);
  json body = json::object();
  switch (method_) {
    case VaultAuthMethod::kAppRole: {
      SecretBytes secret = secret_id_;
      if (!secret_id_file_.empty()) {
        auto read = ReadSecretFile(secret_id_file_, "VAULT_SECRET_ID_FILE");
        if (!read.ok()) return MakeError(ErrorCode::kFailedPrecondition, read.error().message);
        secret = std::move(read).value();
      }
      body["role_id"] = role_id_;
      body["secret_id"] = std::string(secret.view());
      break;
    }
    case VaultAuthMethod::kKubernetes:
    case VaultAuthMethod::kJwt: {
      auto jwt = ReadSecretFile(jwt_file_, jwt_file_variable_);
      if (!jwt.ok()) return MakeError(ErrorCode::kFailedPrecondition, jwt.error().message);
      body["role"] = role_;
      body["jwt"] = std::string(jwt->view());
      break;
    }
    case VaultAuthMethod::kCert:
      if (!role_.empty()) body["name"] = role_;
      break;
    case VaultAuthMethod::kToken:
      return MakeError(ErrorCode::kInternal, "no login method configured");
  }
  VaultCall call;
  call.op = "auth." + name + ".login";
  call.method = "POST";
  call.path = "auth/" + mount_ + "/login";
  call.body = &body;
  call.policy_hint = false;
  auto answer = login_.Call(call);
  WipeMember(body, "secret_id");
  WipeMember(body, "jwt");
  if (!answer.ok()) {
    Error e = answer.error();
    if (e.code != ErrorCode::kUnavailable) e.code = ErrorCode::kPermissionDenied;
    e.message = "Vault login (" + name + " at auth/" + mount_ + ") failed: " + e.message;
    return e;
  }
  json& auth = (*answer)["auth"];
  const json& token = Member(auth, "client_token");
  if (!token.is_string() || token.get_ref<const std::string&>().empty()) {
    return Unexpected(call.op, "auth.client_token is missing");
  }
  Held held;
  held.token = SecretBytes(token.get_ref<const std::string&>());
  WipeMember(auth, "client_token");
  auto lease = Seconds(Member(auth, "lease_duration"));
  if (!lease) return Unexpected(call.op, "auth.lease_duration is not a number of seconds");
  held.learned = clock_.WallNow();
  held.ttl = *lease;
  held.increment = *lease;
  held.renewable = Member(auth, "renewable").is_boolean() && Member(auth, "renewable").get<bool>();
  return held;
}

}  // namespace dyad
