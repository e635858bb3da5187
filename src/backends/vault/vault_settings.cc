#include "backends/vault/vault_settings.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <string_view>
#include <vector>

#include "cloud/endpoint_policy.h"
#include "core/endpoint.h"
#include "core/env_vars.h"
#include "core/residency.h"

namespace dyad {
namespace {

bool PathChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
}

// Segments of [A-Za-z0-9._-] separated by single '/', none '.' or '..'.
bool PathSafe(std::string_view p) {
  if (p.empty() || p.size() > 200) return false;
  size_t start = 0;
  for (;;) {
    size_t slash = p.find('/', start);
    std::string_view seg = p.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (seg.empty() || seg == "." || seg == "..") return false;
    for (char c : seg) {
      if (!PathChar(c)) return false;
    }
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

Status ReadPath(const EnvMap& env, const std::string& name, std::string& out) {
  const std::string* v = FindVariable(env, name);
  if (!v) return OkStatus();
  if (!PathSafe(*v)) {
    return BadVariable(name, "'" + *v + "' is not a mount path; use letters, digits and ._- in segments "
                                        "separated by '/', without a leading or trailing '/' or '..'");
  }
  out = *v;
  return OkStatus();
}

Status ReadNamespace(const EnvMap& env, const std::string& name, std::string& out) {
  const std::string* v = FindVariable(env, name);
  if (!v || v->empty()) return OkStatus();
  std::string ns = *v;
  if (ns.ends_with('/')) ns.pop_back();  // the CLI accepts "team/"
  if (!PathSafe(ns)) {
    return BadVariable(name, "'" + *v + "' is not a namespace; use letters, digits and ._- in segments "
                                        "separated by '/' (e.g. admin/team), without '..'");
  }
  out = ns;
  return OkStatus();
}

// VAULT_DYNAMIC_PATHS: comma-separated path prefixes, spaces around each
// ignored; each a safe path, stored with one trailing '/' (a whole-segment
// prefix). An empty entry ("a,,b", a trailing comma) is an error.
Status ReadDynamicPaths(const EnvMap& env, std::vector<std::string>& out) {
  const std::string* v = FindVariable(env, "VAULT_DYNAMIC_PATHS");
  if (!v) return OkStatus();
  std::string_view all = *v;
  while (!all.empty() && std::isspace(static_cast<unsigned char>(all.front()))) all.remove_prefix(1);
  if (all.empty()) return OkStatus();
  for (size_t start = 0;;) {
    size_t comma = v->find(',', start);
    std::string_view item = std::string_view(*v).substr(start, comma == std::string::npos ? std::string::npos
                                                                                          : comma - start);
    while (!item.empty() && std::isspace(static_cast<unsigned char>(item.front()))) item.remove_prefix(1);
    while (!item.empty() && std::isspace(static_cast<unsigned char>(item.back()))) item.remove_suffix(1);
    std::string_view path = item;
    if (path.ends_with('/')) path.remove_suffix(1);
    if (!PathSafe(path)) {
      return BadVariable("VAULT_DYNAMIC_PATHS", "'" + std::string(item) + "' is not a path prefix; give comma-separated "
                                                "prefixes of letters, digits and ._- in segments separated by '/', "
                                                "without a leading '/' or '..' (e.g. database/creds/,aws/creds/)");
    }
    out.push_back(std::string(path) + "/");
    if (comma == std::string::npos) return OkStatus();
    start = comma + 1;
  }
}

std::string Plain(const EnvMap& env, const std::string& name) {
  const std::string* v = FindVariable(env, name);
  return v ? *v : "";
}

// VAULT_CLIENT_TIMEOUT: whole seconds, "30" or "30s" as the CLI takes.
Status ReadTimeout(const EnvMap& env, int& out_ms) {
  const std::string* v = FindVariable(env, "VAULT_CLIENT_TIMEOUT");
  if (!v) return OkStatus();
  std::string digits = *v;
  if (digits.ends_with('s')) digits.pop_back();
  int seconds = 0;
  EnvMap one = {{"VAULT_CLIENT_TIMEOUT", digits}};
  if (!ReadIntVariable(one, "VAULT_CLIENT_TIMEOUT", 1, 300, seconds).ok()) {
    return BadVariable("VAULT_CLIENT_TIMEOUT", "'" + *v + "' is not valid; use whole seconds from 1 to 300 (e.g. 30)");
  }
  out_ms = seconds * 1000;
  return OkStatus();
}

Status ReadTls(const EnvMap& env, VaultSettings& v) {
  v.ca_cert = Plain(env, "VAULT_CACERT");
  v.ca_path = Plain(env, "VAULT_CAPATH");
  v.client_cert = Plain(env, "VAULT_CLIENT_CERT");
  v.client_key = Plain(env, "VAULT_CLIENT_KEY");
  if (!v.client_cert.empty() && v.client_key.empty()) {
    return BadVariable("VAULT_CLIENT_KEY", "is required with VAULT_CLIENT_CERT (the PEM file of its private key)");
  }
  if (v.client_cert.empty() && !v.client_key.empty()) {
    return BadVariable("VAULT_CLIENT_CERT", "is required with VAULT_CLIENT_KEY (the PEM file of the certificate)");
  }
  v.tls_server_name = Plain(env, "VAULT_TLS_SERVER_NAME");
  bool name_ok = v.tls_server_name.size() <= 253;
  for (char c : v.tls_server_name) {
    name_ok = name_ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-');
  }
  if (!name_ok) {
    return BadVariable("VAULT_TLS_SERVER_NAME", "'" + v.tls_server_name + "' is not a host name (letters, digits, . and -)");
  }
  bool skip = false;
  DYAD_RETURN_IF_ERROR(ReadBoolVariable(env, "VAULT_SKIP_VERIFY", skip));
  if (skip) {
    return BadVariable("VAULT_SKIP_VERIFY", "is not supported: TLS verification is always on; give the server's CA "
                                            "with VAULT_CACERT or VAULT_CAPATH");
  }
  return OkStatus();
}

// One VAULT_REDIRECT_HOSTS entry: a host name or IPv4 address ([A-Za-z0-9.-]),
// or an IPv6 one in brackets, then optionally ':' and a port 1-65535.
bool IsRedirectHost(const std::string& entry) {
  std::string_view host = entry, port;
  if (entry.starts_with('[')) {
    const size_t close = entry.find(']');
    if (close == std::string::npos || close < 3) return false;
    for (char c : entry.substr(1, close - 1)) {
      if (!std::isxdigit(static_cast<unsigned char>(c)) && c != ':' && c != '.') return false;
    }
    host = std::string_view(entry).substr(0, close + 1);
    std::string_view rest = std::string_view(entry).substr(close + 1);
    if (!rest.empty() && (rest.front() != ':' || rest.size() == 1)) return false;
    if (!rest.empty()) port = rest.substr(1);
  } else {
    const size_t colon = entry.find(':');
    if (colon != std::string::npos) {
      host = std::string_view(entry).substr(0, colon);
      port = std::string_view(entry).substr(colon + 1);
      if (port.empty()) return false;
    }
    if (host.empty() || host.size() > 253 || host.front() == '.' || host.front() == '-') return false;
    for (char c : host) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-') return false;
    }
  }
  if (port.empty()) return true;
  if (port.size() > 5) return false;
  int n = 0;
  for (char c : port) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
    n = n * 10 + (c - '0');
  }
  return n >= 1 && n <= 65535;
}

Status ReadRedirectHosts(const EnvMap& env, VaultSettings& v) {
  const std::string list = Plain(env, "VAULT_REDIRECT_HOSTS");
  const std::string scheme = v.address.substr(0, v.address.find("://"));
  size_t start = 0;
  while (start <= list.size() && !list.empty()) {
    size_t comma = list.find(',', start);
    if (comma == std::string::npos) comma = list.size();
    std::string entry = list.substr(start, comma - start);
    while (!entry.empty() && entry.front() == ' ') entry.erase(entry.begin());
    while (!entry.empty() && entry.back() == ' ') entry.pop_back();
    // host[:port] as VAULT_ADDR's own: the port its scheme's default when
    // left out, and matched (residency.h's URL places: lower case, no
    // trailing dot, the port a plain number).
    auto place = IsRedirectHost(entry) ? ParseUrlPlace(scheme + "://" + entry) : std::nullopt;
    if (!place) {
      return BadVariable("VAULT_REDIRECT_HOSTS", "'" + entry.substr(0, 300) +
                                                     "' is not a host or host:port (comma-separated, e.g. "
                                                     "vault-b.internal,10.0.0.7:8200)");
    }
    v.redirect_hosts.push_back(place->host + ":" + std::to_string(place->port));
    start = comma + 1;
  }
  return OkStatus();
}

// Which login method the variables configure, and the variable that says so.
struct Chosen {
  VaultAuthMethod method;
  const char* variable;
};

Status ChooseAuth(const EnvMap& env, VaultSettings& v) {
  const std::string method_var = Plain(env, "VAULT_AUTH_METHOD");
  std::vector<Chosen> logins;
  if (!Plain(env, "VAULT_ROLE_ID").empty()) logins.push_back({VaultAuthMethod::kAppRole, "VAULT_ROLE_ID"});
  if (!Plain(env, "VAULT_K8S_ROLE").empty()) logins.push_back({VaultAuthMethod::kKubernetes, "VAULT_K8S_ROLE"});
  if (!Plain(env, "VAULT_JWT_ROLE").empty()) logins.push_back({VaultAuthMethod::kJwt, "VAULT_JWT_ROLE"});
  if (method_var == "cert") logins.push_back({VaultAuthMethod::kCert, "VAULT_AUTH_METHOD=cert"});
  if (logins.size() > 1) {
    return BadVariable(logins[0].variable, std::string("and ") + logins[1].variable +
                                               " configure two login methods; set the variables of one only");
  }
  if (!method_var.empty()) {
    static constexpr std::string_view kNames[] = {"token", "approle", "kubernetes", "jwt", "cert"};
    bool known = false;
    for (auto n : kNames) known = known || method_var == n;
    if (!known) {
      return BadVariable("VAULT_AUTH_METHOD", "'" + method_var + "' is not one of: token, approle, kubernetes, jwt, cert");
    }
    const std::string configured = VaultAuthMethodName(logins.empty() ? VaultAuthMethod::kToken : logins[0].method);
    if (method_var != configured) {
      return BadVariable("VAULT_AUTH_METHOD", "is '" + method_var + "' but the variables set configure '" +
                                                  configured + "' (" +
                                                  (logins.empty() ? std::string("no login variable")
                                                                  : std::string(logins[0].variable)) +
                                                  ")");
    }
  }
  v.auth = logins.empty() ? VaultAuthMethod::kToken : logins[0].method;
  return OkStatus();
}

// A settings error (kInvalidArgument) when the token file is missing or empty.
Status CheckTokenFile(const std::string& path, const std::string& what) {
  auto token = ReadSecretFile(path, what);
  if (token.ok()) return OkStatus();
  Error e = token.error();
  e.code = ErrorCode::kInvalidArgument;
  return e;
}

Status ReadLogin(const EnvMap& env, const SecretEnv& secrets, VaultSettings& v) {
  switch (v.auth) {
    case VaultAuthMethod::kAppRole: {
      v.role_id = Plain(env, "VAULT_ROLE_ID");
      if (auto it = secrets.find("VAULT_SECRET_ID"); it != secrets.end()) v.secret_id = it->second;
      v.secret_id_file = Plain(env, "VAULT_SECRET_ID_FILE");
      if (!v.secret_id.empty() && !v.secret_id_file.empty()) {
        return BadVariable("VAULT_SECRET_ID", "and VAULT_SECRET_ID_FILE are both set; set one");
      }
      if (v.secret_id.empty() && v.secret_id_file.empty()) {
        return BadVariable("VAULT_SECRET_ID", "is required with VAULT_ROLE_ID (AppRole), or VAULT_SECRET_ID_FILE "
                                              "naming a file that holds it");
      }
      return ReadPath(env, "VAULT_APPROLE_MOUNT", v.approle_mount);
    }
    case VaultAuthMethod::kKubernetes:
      v.k8s_role = Plain(env, "VAULT_K8S_ROLE");
      if (auto f = Plain(env, "VAULT_K8S_TOKEN_FILE"); !f.empty()) v.k8s_token_file = f;
      return ReadPath(env, "VAULT_K8S_MOUNT", v.k8s_mount);
    case VaultAuthMethod::kJwt:
      v.jwt_role = Plain(env, "VAULT_JWT_ROLE");
      v.jwt_file = Plain(env, "VAULT_JWT_FILE");
      if (v.jwt_file.empty()) {
        return BadVariable("VAULT_JWT_FILE", "is required with VAULT_JWT_ROLE (the file holding the JWT to log in with)");
      }
      return ReadPath(env, "VAULT_JWT_MOUNT", v.jwt_mount);
    case VaultAuthMethod::kCert:
      if (v.client_cert.empty()) {
        return BadVariable("VAULT_CLIENT_CERT", "is required with VAULT_AUTH_METHOD=cert (with VAULT_CLIENT_KEY)");
      }
      v.cert_role = Plain(env, "VAULT_CERT_ROLE");
      return ReadPath(env, "VAULT_CERT_MOUNT", v.cert_mount);
    case VaultAuthMethod::kToken:
      break;
  }
  if (auto it = secrets.find("VAULT_TOKEN"); it != secrets.end() && !it->second.empty()) {
    v.token = it->second;
    return OkStatus();
  }
  if (std::string f = Plain(env, "VAULT_TOKEN_FILE"); !f.empty()) {
    DYAD_RETURN_IF_ERROR(CheckTokenFile(f, "VAULT_TOKEN_FILE"));
    v.token_file = f;
    return OkStatus();
  }
  if (std::string home = Plain(env, "HOME"); !home.empty()) {
    std::error_code ec;
    const std::string f = home + "/.vault-token";
    if (std::filesystem::exists(f, ec)) {
      DYAD_RETURN_IF_ERROR(CheckTokenFile(f, "~/.vault-token"));
      v.token_file = f;
      return OkStatus();
    }
  }
  return BadVariable("VAULT_TOKEN", "is required when SECRETS_PROVIDER=vault, unless VAULT_TOKEN_FILE names a file "
                                    "holding the token, ~/.vault-token exists, or a login method is configured "
                                    "(VAULT_ROLE_ID, VAULT_K8S_ROLE, VAULT_JWT_ROLE or VAULT_AUTH_METHOD=cert)");
}

}  // namespace

const char* VaultAuthMethodName(VaultAuthMethod method) {
  switch (method) {
    case VaultAuthMethod::kToken: return "token";
    case VaultAuthMethod::kAppRole: return "approle";
    case VaultAuthMethod::kKubernetes: return "kubernetes";
    case VaultAuthMethod::kJwt: return "jwt";
    case VaultAuthMethod::kCert: return "cert";
  }
  return "token";
}

Result<VaultSettings> ReadVaultSettings(const EnvMap& env, const SecretEnv& secrets) {
  VaultSettings v;
  const std::string addr = Plain(env, "VAULT_ADDR");
  if (addr.empty()) {
    return BadVariable("VAULT_ADDR", "is required when SECRETS_PROVIDER=vault, e.g. https://vault.example.com:8200");
  }
  auto endpoint = ParseEndpoint(addr);
  if (!endpoint) {
    std::string shown = addr;  // never echo a password given as user:password@
    if (auto at = shown.find('@'); at != std::string::npos) shown = "…" + shown.substr(at);
    return BadVariable("VAULT_ADDR", "'" + shown + "' is not a server address; use https://host[:port] (no path)");
  }
  DYAD_RETURN_IF_ERROR(CheckEndpointTransport(env, "VAULT_ADDR", *endpoint, "the Vault token and data keys"));
  v.address = endpoint->url;
  DYAD_RETURN_IF_ERROR(ReadNamespace(env, "VAULT_NAMESPACE", v.name_space));
  DYAD_RETURN_IF_ERROR(ReadNamespace(env, "VAULT_AUTH_NAMESPACE", v.auth_namespace));
  DYAD_RETURN_IF_ERROR(ReadPath(env, "VAULT_MOUNT_PATH", v.kv_mount));
  DYAD_RETURN_IF_ERROR(ReadPath(env, "VAULT_TRANSIT_MOUNT", v.transit_mount));
  DYAD_RETURN_IF_ERROR(ReadBoolVariable(env, "VAULT_TRANSIT_RETIRE", v.transit_retire));
  int retries = v.max_attempts - 1;
  DYAD_RETURN_IF_ERROR(ReadIntVariable(env, "VAULT_MAX_RETRIES", 0, 10, retries));
  v.max_attempts = retries + 1;
  DYAD_RETURN_IF_ERROR(ReadTimeout(env, v.timeout_ms));
  DYAD_RETURN_IF_ERROR(ReadIntVariable(env, "VAULT_CONCURRENCY", 1, 64, v.concurrency));
  DYAD_RETURN_IF_ERROR(ReadDynamicPaths(env, v.dynamic_paths));
  DYAD_RETURN_IF_ERROR(ReadTls(env, v));
  DYAD_RETURN_IF_ERROR(ReadRedirectHosts(env, v));
  DYAD_RETURN_IF_ERROR(ChooseAuth(env, v));
  DYAD_RETURN_IF_ERROR(ReadLogin(env, secrets, v));
  return v;
}

Status CheckVaultSecretsPrefix(const std::string& prefix) {
  if (!PathSafe(prefix)) {
    return BadVariable("SECRETS_PREFIX", "use letters, digits and ._- in segments separated by '/', without a "
                                         "leading or trailing '/' or '..', at most 200 characters (a Vault KV path)");
  }
  return OkStatus();
}

Result<SecretBytes> ReadSecretFile(const std::string& path, const std::string& what) {
  auto text = ReadSmallFile(path, 64 * 1024);
  if (!text.ok()) {
    Error e = text.error();
    e.message = what + ": cannot read '" + path + "'" +
                (e.code == ErrorCode::kInvalidArgument ? " (larger than 64 KiB)" : "");
    return e;
  }
  std::string_view s = *text;
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  SecretBytes out(s);
  Cleanse(*text);
  if (out.empty()) return MakeError(ErrorCode::kInvalidArgument, what + ": '" + path + "' is empty");
  return out;
}

}  // namespace dyad
