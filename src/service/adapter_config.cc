#include "service/adapter_config.h"

#include <arpa/inet.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/encoding.h"
#include "core/parse_int.h"
#include "transport/upstream_address.h"

namespace dyad {
namespace {

using nlohmann::json;

constexpr size_t kMaxUrl = 2048;
constexpr size_t kMaxHeaderName = 128;
constexpr size_t kMaxTemplate = 1024;
constexpr size_t kMaxPath = 1024;
constexpr size_t kMaxCredentialHeaders = 16;
constexpr size_t kMaxFieldName = 64;

Error Invalid(std::string_view member, std::string_view what) {
  return MakeError(ErrorCode::kInvalidArgument, "adapterConfig." + std::string(member) + ": " + std::string(what));
}

bool IsAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }
bool IsHex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// A credential field name as the provider API takes it.
bool IsFieldName(std::string_view s) {
  if (s.empty() || s.size() > kMaxFieldName) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return IsAlnum(c) || c == '_' || c == '-' || c == '.'; });
}

// RFC 3986 pchar but '%' (checked apart), plus '/'.
bool IsPathChar(char c) {
  return IsAlnum(c) || std::string_view("-._~!$&'()*+,;=:@/").find(c) != std::string_view::npos;
}

// Path characters, each '%' followed by two hex digits; `query` allows '?'.
bool IsCleanPath(std::string_view s, bool query) {
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '%') {
      if (i + 2 >= s.size() || !IsHex(s[i + 1]) || !IsHex(s[i + 2])) return false;
      i += 2;
    } else if (!IsPathChar(c) && !(query && c == '?')) {
      return false;
    }
  }
  return true;
}

// Headers a credential must never be sent as: the connection's and the
// message framing's, which the transport owns.
bool IsReservedHeader(std::string_view name) {
  static constexpr std::string_view kReserved[] = {
      "host",    "content-length",      "transfer-encoding",  "connection", "keep-alive", "proxy-connection",
      "te",      "trailer",             "upgrade",            "expect",     "proxy-authorization",
      "proxy-authenticate", "content-encoding", "http2-settings"};
  std::string lower = AsciiLower(name);
  return std::find(std::begin(kReserved), std::end(kReserved), lower) != std::end(kReserved);
}

Status CheckHeaderName(std::string_view member, const json& j) {
  if (!j.is_string()) return Invalid(member, "must be a string");
  const auto& s = j.get_ref<const std::string&>();
  if (s.empty() || s.size() > kMaxHeaderName) {
    return Invalid(member, "must be a header name of 1 to " + std::to_string(kMaxHeaderName) + " characters");
  }
  if (!IsHttpToken(s)) {
    return Invalid(member, "is not a header name (letters, digits and !#$%&'*+-.^_`|~ only)");
  }
  if (IsReservedHeader(s)) return Invalid(member, "names a connection or framing header ('" + s + "'), which the gateway sets itself");
  return OkStatus();
}

// "Bearer {api_key}": text without control characters and at least one
// {field} naming a credential field; no other braces.
Status CheckTemplate(std::string_view member, const json& j) {
  if (!j.is_string()) return Invalid(member, "must be a string");
  std::string_view s = j.get_ref<const std::string&>();
  if (s.empty() || s.size() > kMaxTemplate) {
    return Invalid(member, "must be 1 to " + std::to_string(kMaxTemplate) + " characters");
  }
  if (!IsHttpFieldValue(s)) {
    return Invalid(member, "holds a control character (CR, LF, NUL, …), which would split the header");
  }
  size_t placeholders = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c == '}') return Invalid(member, "has a '}' that closes no {field}");
    if (c != '{') continue;
    size_t close = s.find('}', i);
    if (close == std::string_view::npos) return Invalid(member, "has a '{' that is never closed");
    std::string_view field = s.substr(i + 1, close - i - 1);
    if (!IsFieldName(field)) {
      return Invalid(member, "has a placeholder that is not {field} with a credential field name ([A-Za-z0-9._-], 1 to 64)");
    }
    ++placeholders;
    i = close;
  }
  if (placeholders == 0) return Invalid(member, "must name a credential field as {field}, e.g. \"Bearer {api_key}\"");
  return OkStatus();
}

struct UrlParts {
  std::string scheme;  // lower-cased
  std::string authority;  // host[:port] as written
  std::string host;    // as written, brackets kept for IPv6
  std::string path;    // without trailing '/'
};

Result<UrlParts> SplitUrl(std::string_view url) {
  constexpr std::string_view m = "baseUrl";
  if (url.empty() || url.size() > kMaxUrl) return Invalid(m, "must be an http(s) URL of at most " + std::to_string(kMaxUrl) + " characters");
  for (char c : url) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) return Invalid(m, "holds a space, a control character or a non-ASCII byte");
    if (c == '\\') return Invalid(m, "holds a backslash");
  }
  if (url.find('#') != std::string_view::npos) return Invalid(m, "must not have a fragment ('#')");
  if (url.find('?') != std::string_view::npos) return Invalid(m, "must not have a query ('?')");
  size_t sep = url.find("://");
  if (sep == std::string_view::npos) return Invalid(m, "must be an absolute URL: https://host[:port][/path]");
  UrlParts parts;
  parts.scheme = AsciiLower(url.substr(0, sep));
  if (parts.scheme != "https" && parts.scheme != "http") return Invalid(m, "must use https:// (or http:// to a loopback host)");
  std::string_view rest = url.substr(sep + 3);
  size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
  if (authority.find('@') != std::string_view::npos) return Invalid(m, "must not carry user info ('user@'); credentials go in the credentials");
  std::string_view host = authority, port;
  if (!authority.empty() && authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return Invalid(m, "has a '[' without ']'");
    host = authority.substr(0, close + 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty() && after.front() != ':') return Invalid(m, "has characters after ']' that are not a port");
    if (!after.empty()) port = after.substr(1);
    std::string inner(host.substr(1, host.size() - 2));
    unsigned char buf[16];
    if (inet_pton(AF_INET6, inner.c_str(), buf) != 1) return Invalid(m, "has a bracketed host that is not an IPv6 address (zones are not taken)");
  } else {
    size_t colon = authority.find(':');
    if (colon != std::string_view::npos) {
      host = authority.substr(0, colon);
      port = authority.substr(colon + 1);
      if (port.empty()) return Invalid(m, "has an empty port");
    }
    if (host.empty()) return Invalid(m, "has no host");
    if (host.size() > 254) return Invalid(m, "has a host longer than 253 characters");
    if (!std::all_of(host.begin(), host.end(), [](char c) { return IsAlnum(c) || c == '.' || c == '-' || c == '_'; })) {
      return Invalid(m, "has a host with a character other than letters, digits, '.', '-' and '_'");
    }
  }
  if (authority.size() > host.size() || !port.empty()) {
    auto p = ParseInt<int>(port);
    if (!p || *p < 1 || *p > 65535 || port.size() > 5) return Invalid(m, "has a port that is not 1 to 65535");
  }
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  if (!IsCleanPath(path, false)) return Invalid(m, "has a path with a character a URL path does not take (or a bad %-escape)");
  parts.authority = std::string(authority);
  parts.host = std::string(host);
  parts.path = std::string(path);
  return parts;
}

bool IsMetadataName(std::string_view host) {
  std::string lower = AsciiLower(host);
  if (!lower.empty() && lower.back() == '.') lower.pop_back();
  return lower == "metadata.google.internal" || lower == "metadata.goog" || lower == "instance-data" ||
         lower == "instance-data.ec2.internal";
}

Result<std::string> ParseBaseUrl(const json& j, const UpstreamPolicy& policy) {
  if (!j.is_string()) return Invalid("baseUrl", "must be a string");
  DYAD_ASSIGN_OR_RETURN(UrlParts parts, SplitUrl(j.get_ref<const std::string&>()));
  auto ip = ParseIpLiteral(parts.host);
  if ((ip && IsForbiddenIp(*ip)) || IsMetadataName(parts.host)) {
    return Invalid("baseUrl", "host is a link-local or cloud metadata address, which the gateway never calls");
  }
  if (parts.scheme == "http" && !policy.allow_plaintext && !IsLoopbackHost(parts.host)) {
    return Invalid("baseUrl", "must use https:// (plain http:// only to a loopback host, or with "
                              "GATEWAY_ALLOW_PLAINTEXT_UPSTREAM=true): the credential would cross the network in clear");
  }
  return parts.scheme + "://" + parts.authority + parts.path;
}

Status ParseAuth(const json& j, UpstreamAuth& auth) {
  if (!j.is_object()) return Invalid("auth", "must be an object: {\"header\": \"x-api-key\", \"template\": \"{api_key}\"}");
  for (const auto& [k, v] : j.items()) {
    if (k == "header") {
      DYAD_RETURN_IF_ERROR(CheckHeaderName("auth.header", v));
      auth.header = v.get<std::string>();
    } else if (k == "template") {
      DYAD_RETURN_IF_ERROR(CheckTemplate("auth.template", v));
      auth.value_template = v.get<std::string>();
    } else {
      return Invalid("auth", "takes only header and template");
    }
  }
  return OkStatus();
}

Result<std::vector<std::pair<std::string, std::string>>> ParseCredentialHeaders(const json& j) {
  if (!j.is_object()) return Invalid("credentialHeaders", "must be an object of credential field to header name");
  if (j.size() > kMaxCredentialHeaders) return Invalid("credentialHeaders", "has more than " + std::to_string(kMaxCredentialHeaders) + " entries");
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [field, header] : j.items()) {
    if (!IsFieldName(field)) return Invalid("credentialHeaders", "has a key that is not a credential field name ([A-Za-z0-9._-], 1 to 64)");
    DYAD_RETURN_IF_ERROR(CheckHeaderName("credentialHeaders." + field, header));
    out.emplace_back(field, header.get<std::string>());
  }
  return out;
}

Result<std::string> ParseValidatePath(const json& j) {
  if (!j.is_string()) return Invalid("validatePath", "must be a string");
  const auto& s = j.get_ref<const std::string&>();
  if (s.empty() || s.size() > kMaxPath || s.front() != '/' || s.starts_with("//")) {
    return Invalid("validatePath", "must be a path that starts with a single '/', at most " + std::to_string(kMaxPath) + " characters");
  }
  if (!IsCleanPath(s, true)) return Invalid("validatePath", "has a character a URL path does not take (or a bad %-escape)");
  return s;
}

Error BadField(std::string_view member, std::string_view field, std::string_view what) {
  return MakeError(ErrorCode::kFailedPrecondition,
                   "adapterConfig." + std::string(member) + ": credential field '" + std::string(field) + "' " + std::string(what));
}

}  // namespace

Result<AdapterConfig> ParseAdapterConfig(std::string_view adapter_config_json, const UpstreamPolicy& policy) {
  json j = json::parse(adapter_config_json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return MakeError(ErrorCode::kInvalidArgument, "adapterConfig: is not JSON");
  if (!j.is_object()) return MakeError(ErrorCode::kInvalidArgument, "adapterConfig: must be an object");
  AdapterConfig config;
  auto base = j.find("baseUrl");
  if (base == j.end()) return Invalid("baseUrl", "is required for http-sdk and proxy providers, e.g. \"https://api.openai.com/v1\"");
  DYAD_ASSIGN_OR_RETURN(config.base_url, ParseBaseUrl(*base, policy));
  if (auto it = j.find("auth"); it != j.end()) {
    DYAD_RETURN_IF_ERROR(ParseAuth(*it, config.auth));
  }
  if (auto it = j.find("credentialHeaders"); it != j.end()) {
    DYAD_ASSIGN_OR_RETURN(config.credential_headers, ParseCredentialHeaders(*it));
  }
  if (auto it = j.find("validatePath"); it != j.end()) {
    DYAD_ASSIGN_OR_RETURN(config.validate_path, ParseValidatePath(*it));
  }
  std::vector<std::string> names = {AsciiLower(config.auth.header)};
  for (const auto& [field, header] : config.credential_headers) {
    std::string lower = AsciiLower(header);
    if (std::find(names.begin(), names.end(), lower) != names.end()) {
      return Invalid("credentialHeaders." + field, "names header '" + header + "', which another entry or auth.header sends already");
    }
    names.push_back(std::move(lower));
  }
  return config;
}

Result<HttpHeaders> CredentialHeaders(const AdapterConfig& config, const CredentialFields& fields) {
  HttpHeaders out;
  std::string value;
  std::string_view t = config.auth.value_template;
  for (size_t i = 0; i < t.size(); ++i) {
    size_t close = t[i] == '{' ? t.find('}', i) : std::string_view::npos;
    if (close == std::string_view::npos) {
      value.push_back(t[i]);
      continue;
    }
    std::string field(t.substr(i + 1, close - i - 1));
    auto it = fields.find(field);
    if (it == fields.end()) {
      Cleanse(value);
      return BadField("auth.template", field, "is not among the provider's credentials");
    }
    if (!IsHttpFieldValue(it->second.view())) {
      Cleanse(value);
      return BadField("auth.template", field, "holds a control character (CR, LF, NUL, …) a header cannot carry");
    }
    value.append(it->second.view());
    i = close;
  }
  out.emplace_back(config.auth.header, std::move(value));
  for (const auto& [field, header] : config.credential_headers) {
    auto it = fields.find(field);
    if (it == fields.end()) continue;
    if (!IsHttpFieldValue(it->second.view())) {
      for (auto& h : out) Cleanse(h.second);
      return BadField("credentialHeaders." + field, field, "holds a control character (CR, LF, NUL, …) a header cannot carry");
    }
    out.emplace_back(header, std::string(it->second.view()));
  }
  return out;
}

Status CheckHeaderBoundFields(const AdapterConfig& config, const CredentialFields& fields) {
  auto check = [&](const std::string& field, const std::string& member) -> Status {
    auto it = fields.find(field);
    if (it == fields.end() || DecodeReference(it->second) || IsHttpFieldValue(it->second.view())) return OkStatus();
    return MakeError(ErrorCode::kInvalidArgument,
                     "field 'credentials." + field + "' holds a control character (CR, LF, NUL, …), which the header " +
                         "it is sent in (adapterConfig." + member + ") cannot carry");
  };
  for (const std::string& field : TemplateFields(config.auth.value_template)) {
    if (auto it = fields.find(field); it != fields.end() && it->second.empty()) {
      return MakeError(ErrorCode::kInvalidArgument, "field 'credentials." + field + "' is empty, and " +
                                                        "adapterConfig.auth.template sends it on every call");
    }
    DYAD_RETURN_IF_ERROR(check(field, "auth.template"));
  }
  for (const auto& [field, header] : config.credential_headers) {
    DYAD_RETURN_IF_ERROR(check(field, "credentialHeaders." + field));
  }
  return OkStatus();
}

std::vector<std::string> TemplateFields(std::string_view t) {
  std::vector<std::string> out;
  for (size_t open = t.find('{'); open != std::string_view::npos; open = t.find('{', open + 1)) {
    const size_t close = t.find('}', open);
    if (close == std::string_view::npos) break;
    std::string field(t.substr(open + 1, close - open - 1));
    if (std::find(out.begin(), out.end(), field) == out.end()) out.push_back(std::move(field));
    open = close;
  }
  return out;
}

bool UsesUpstream(std::string_view type) { return type == "http-sdk" || type == "proxy"; }

Status CheckCredentialsWrite(std::string_view type, std::string_view adapter_config_json,
                             const CredentialFields* fields, const std::vector<std::string>& names) {
  if (!UsesUpstream(type)) return OkStatus();
  auto config = ParseAdapterConfig(adapter_config_json, UpstreamPolicy{.allow_plaintext = true});
  if (!config.ok()) return OkStatus();
  if (fields) DYAD_RETURN_IF_ERROR(CheckHeaderBoundFields(*config, *fields));
  return CheckTemplateFields(*config, names);
}

std::vector<std::string> RequiredCredentialFields(std::string_view type, std::string_view adapter_config_json) {
  if (!UsesUpstream(type)) return {};
  // Only auth is read: where plain http may go is not this question's.
  auto config = ParseAdapterConfig(adapter_config_json, UpstreamPolicy{.allow_plaintext = true});
  return TemplateFields(config.ok() ? config->auth.value_template : UpstreamAuth{}.value_template);
}

Status CheckTemplateFields(const AdapterConfig& config, const std::vector<std::string>& names) {
  if (names.empty()) return OkStatus();
  for (const std::string& field : TemplateFields(config.auth.value_template)) {
    if (std::find(names.begin(), names.end(), field) != names.end()) continue;
    std::string held;
    for (const std::string& name : names) held += (held.empty() ? "'" : ", '") + name + "'";
    return Invalid("auth.template", "sends credential field '" + field + "', which the provider's credentials do " +
                                        "not have (they hold " + held + "): every call would fail");
  }
  return OkStatus();
}

std::string UpstreamHost(std::string_view base_url) {
  auto parts = SplitUrl(base_url);
  if (!parts.ok()) return "";
  std::string host = parts.value().host;
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  return host;
}

}  // namespace dyad
