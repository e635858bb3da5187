#include "core/residency.h"

#include <algorithm>
#include <cctype>

#include "core/encoding.h"
#include "core/endpoint.h"
#include "core/env_vars.h"
#include "core/parse_int.h"

namespace dyad {
namespace {

bool IsLower(char c) { return c >= 'a' && c <= 'z'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// A host as compared: lower case, one trailing dot dropped; nullopt when it
// is not a DNS name (labels of letters, digits, '-' and '_') or a bracketed
// IPv6 literal.
std::optional<std::string> NormalHost(std::string_view host) {
  if (!host.empty() && host.back() == '.') host.remove_suffix(1);
  if (host.empty() || host.size() > 253) return std::nullopt;
  if (host.front() == '[') {
    if (host.back() != ']' || host.size() < 4) return std::nullopt;
    for (char c : host.substr(1, host.size() - 2)) {
      if (!std::isxdigit(static_cast<unsigned char>(c)) && c != ':' && c != '.') return std::nullopt;
    }
    return AsciiLower(host);
  }
  // Labels of 1 to 63 characters, neither starting nor ending with '-'.
  size_t start = 0;
  while (start <= host.size()) {
    size_t dot = std::min(host.find('.', start), host.size());
    std::string_view label = host.substr(start, dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') return std::nullopt;
    for (char c : label) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') return std::nullopt;
    }
    start = dot + 1;
  }
  return AsciiLower(host);
}

using UrlParts = UrlPlace;

std::optional<UrlParts> SplitUrl(std::string_view url) {
  auto e = ParseEndpoint(url);
  if (!e) return std::nullopt;
  UrlParts out;
  out.scheme = AsciiLower(url.substr(0, url.find("://")));
  std::string_view hostport = e->host;
  std::string_view host = hostport, port;
  size_t colon = hostport.rfind(':');
  size_t bracket = hostport.rfind(']');
  if (colon != std::string_view::npos && (bracket == std::string_view::npos || colon > bracket)) {
    host = hostport.substr(0, colon);
    port = hostport.substr(colon + 1);
  }
  auto h = NormalHost(host);
  if (!h) return std::nullopt;
  out.host = *h;
  if (port.empty()) {
    out.port = out.scheme == "https" ? 443 : 80;
  } else {
    auto n = port.front() == '-' ? std::nullopt : ParseInt<int>(port);
    if (!n || *n < 1 || *n > 65535) return std::nullopt;
    out.port = *n;
  }
  return out;
}

Error BadEntry(std::string_view entry, std::string_view what) {
  return BadVariable(kAllowedRegionsVariable, "entry '" + std::string(entry) + "' " + std::string(what));
}

Error NotListed(std::string_view variable, std::string_view what, std::string_view place) {
  return MakeError(ErrorCode::kFailedPrecondition,
                   std::string(kAllowedRegionsVariable) + ": " + std::string(what) + " (" + std::string(variable) +
                       ") is in '" + std::string(place) + "', which is not listed");
}

}  // namespace

std::optional<UrlPlace> ParseUrlPlace(std::string_view url) { return SplitUrl(url); }

bool IsAwsRegionName(std::string_view text) {
  // AREA(-WORD){1,3}-N, lower case: the area 2 to 4 letters (us, cn, eusc),
  // each word 2 to 12 letters (gov, iso, isob, de, southeast), N a number
  // of one or two digits without a leading zero. Every partition's regions
  // take this shape (us-east-1, us-gov-west-1, cn-north-1, us-isob-east-1,
  // eusc-de-east-1); an availability zone (us-east-1a) does not.
  if (text.size() > 32) return false;
  std::vector<std::string_view> parts;
  size_t start = 0;
  for (size_t i = 0; i <= text.size(); ++i) {
    if (i == text.size() || text[i] == '-') {
      parts.push_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  if (parts.size() < 3 || parts.size() > 5) return false;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    if (parts[i].size() < 2 || parts[i].size() > (i == 0 ? 4u : 12u)) return false;
    for (char c : parts[i]) if (!IsLower(c)) return false;
  }
  std::string_view n = parts.back();
  if (n.empty() || n.size() > 2 || n.front() == '0') return false;
  for (char c : n) if (!IsDigit(c)) return false;
  return true;
}

bool AllowedRegions::AllowsRegion(std::string_view region) const {
  for (const auto& p : places) {
    if (p.kind == AllowedPlace::Kind::kRegion && p.region == region) return true;
  }
  return false;
}

bool AllowedRegions::AllowsUrl(std::string_view url) const {
  auto u = SplitUrl(url);
  if (!u) return false;
  for (const auto& p : places) {
    if (p.kind == AllowedPlace::Kind::kHost && p.host == u->host) return true;
    if (p.kind == AllowedPlace::Kind::kUrl && p.host == u->host && p.scheme == u->scheme && p.port == u->port) {
      return true;
    }
  }
  return false;
}

Result<AllowedRegions> ParseAllowedRegions(std::string_view value) {
  AllowedRegions out;
  size_t start = 0;
  while (start <= value.size()) {
    size_t comma = value.find(',', start);
    if (comma == std::string_view::npos) comma = value.size();
    const std::string_view entry = TrimOws(value.substr(start, comma - start));
    start = comma + 1;
    if (entry.empty()) {
      if (comma == value.size() && !out.places.empty() && value.back() == ',') break;  // a trailing comma
      return BadVariable(kAllowedRegionsVariable, "holds an empty entry; list AWS regions, hosts or http(s) URLs "
                                                  "separated by commas");
    }
    for (char c : entry) {
      if (static_cast<unsigned char>(c) >= 0x80 || static_cast<unsigned char>(c) < 0x21) {
        return BadEntry(entry, "holds a space, a control character or non-ASCII text; give an international "
                               "host name in its punycode (xn--) form");
      }
    }
    AllowedPlace place;
    if (entry.find("://") != std::string_view::npos) {
      if (entry.find('@') != std::string_view::npos) return BadEntry(entry.substr(entry.find('@')), "has user info; use http(s)://host[:port]");
      auto u = SplitUrl(entry);
      if (!u) return BadEntry(entry, "is not a URL; use http(s)://host[:port] (no path, no user)");
      place.kind = AllowedPlace::Kind::kUrl;
      place.scheme = u->scheme;
      place.host = u->host;
      place.port = u->port;
    } else if (IsAwsRegionName(entry)) {
      place.kind = AllowedPlace::Kind::kRegion;
      place.region = std::string(entry);
    } else if (IsAwsRegionName(AsciiLower(entry))) {
      return BadEntry(entry, "is an AWS region in the wrong case; region names are lower case (" + AsciiLower(entry) + ")");
    } else {
      if (entry.find('@') != std::string_view::npos) return BadEntry(entry.substr(entry.find('@')), "has user info; give the host alone");
      if (entry.find_first_of(":/?#") != std::string_view::npos) {
        return BadEntry(entry, "is not a host name; a host takes no port or path (use http(s)://host:port for one port)");
      }
      auto h = NormalHost(entry);
      if (!h) return BadEntry(entry, "is neither an AWS region (e.g. eu-central-1), a host name nor an http(s) URL");
      place.kind = AllowedPlace::Kind::kHost;
      place.host = *h;
    }
    out.places.push_back(std::move(place));
    if (comma == value.size()) break;
  }
  if (out.places.empty()) {
    return BadVariable(kAllowedRegionsVariable, "is empty; list AWS regions, hosts or http(s) URLs, or leave it unset");
  }
  return out;
}

Result<std::optional<AllowedRegions>> ReadAllowedRegions(const EnvMap& env) {
  const std::string* v = FindVariable(env, std::string(kAllowedRegionsVariable));
  if (!v) return std::optional<AllowedRegions>();
  DYAD_ASSIGN_OR_RETURN(AllowedRegions allowed, ParseAllowedRegions(*v));
  return std::optional<AllowedRegions>(std::move(allowed));
}

Status CheckRegionAllowed(const std::optional<AllowedRegions>& allowed, std::string_view variable,
                          std::string_view what, std::string_view region) {
  if (!allowed || allowed->AllowsRegion(region)) return OkStatus();
  return NotListed(variable, what, region);
}

Status CheckUrlAllowed(const std::optional<AllowedRegions>& allowed, std::string_view variable, std::string_view what,
                       std::string_view url) {
  if (!allowed || allowed->AllowsUrl(url)) return OkStatus();
  return NotListed(variable, what, CanonicalUrl(url).value_or("an unparsable URL"));
}

std::optional<std::string> CanonicalUrl(std::string_view url) {
  auto u = SplitUrl(url);
  if (!u) return std::nullopt;
  return u->scheme + "://" + u->host + ":" + std::to_string(u->port);
}

std::optional<std::string> AwsEndpointRegion(std::string_view url) {
  auto u = SplitUrl(url);
  if (!u) return std::nullopt;
  std::string_view host = u->host;
  for (std::string_view suffix : {".amazonaws.com", ".amazonaws.com.cn", ".amazonaws.eu", ".api.aws"}) {
    if (host.size() <= suffix.size() || !host.ends_with(suffix)) continue;
    std::string_view rest = host.substr(0, host.size() - suffix.size());  // service[-fips].region
    // An interface VPC endpoint: vpce-ID.service.region.vpce.amazonaws.com.
    if (suffix == ".amazonaws.com" && rest.ends_with(".vpce")) rest.remove_suffix(5);
    size_t dot = rest.rfind('.');
    if (dot == std::string_view::npos) return std::nullopt;
    std::string_view region = rest.substr(dot + 1);
    if (IsAwsRegionName(region)) return std::string(region);
    return std::nullopt;
  }
  return std::nullopt;
}

std::optional<std::string> ArnRegion(std::string_view arn) {
  if (!arn.starts_with("arn:")) return std::nullopt;
  size_t a = arn.find(':', 4);                                        // after partition
  size_t b = a == std::string_view::npos ? a : arn.find(':', a + 1);  // after service
  size_t c = b == std::string_view::npos ? b : arn.find(':', b + 1);  // after region
  if (c == std::string_view::npos) return std::nullopt;
  std::string_view region = arn.substr(b + 1, c - b - 1);
  if (region.empty()) return std::nullopt;
  return std::string(region);
}

}  // namespace dyad
