// Data residency: SECRETS_ALLOWED_REGIONS, the places a configuration's
// secret store, KMS and replicas may lie in (seed "Data Residency").
//
// The variable is a comma list; each entry is one of
//   - an AWS region name (`eu-central-1`, `eusc-de-east-1`: lower-case
//     letters, '-' and a number, see IsAwsRegionName), matched exactly;
//   - a host name (`myvault.vault.azure.net`), matched as a whole, ASCII
//     case-insensitively, one trailing dot ignored: `vault.azure.net` never
//     matches `x.vault.azure.net`, nor `vault.azure.net.evil.com` it; it
//     matches a URL of that host on any port;
//   - a URL `http(s)://host[:port]` (a Vault address), matched by scheme,
//     host (as above) and port (the scheme's default when left out).
// Entries with user info, a path, a query, spaces or bytes outside ASCII
// (an IDN host is given in its punycode `xn--` form) are refused; so is an
// empty list. Unset: everything is allowed. Pure functions; thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/environment.h"
#include "core/result.h"

namespace dyad {

inline constexpr std::string_view kAllowedRegionsVariable = "SECRETS_ALLOWED_REGIONS";

struct AllowedPlace {
  enum class Kind { kRegion, kHost, kUrl } kind = Kind::kRegion;
  std::string region;  // kRegion
  std::string host;    // kHost, kUrl: lower case, no trailing dot
  std::string scheme;  // kUrl
  int port = 0;        // kUrl
};

struct AllowedRegions {
  std::vector<AllowedPlace> places;
  // Whether `region` (an AWS region name) is listed.
  bool AllowsRegion(std::string_view region) const;
  // Whether the URL `url` (scheme://host[:port]) lies in a listed place;
  // false for anything that is not such a URL.
  bool AllowsUrl(std::string_view url) const;
};

// The place of a URL `http(s)://host[:port]` as the URL entries above are
// matched: the scheme and host in lower case, the host without a trailing
// dot, the port a number (the scheme's default, 80 or 443, when left out);
// nullopt for anything else (a path, user info, a host that is not a DNS
// name or a bracketed IPv6 literal, a port outside 1-65535).
struct UrlPlace {
  std::string scheme, host;
  int port = 0;
};
std::optional<UrlPlace> ParseUrlPlace(std::string_view url);

// True for a well-formed AWS region name of any partition (`us-east-1`,
// `us-gov-west-1`, `cn-north-1`, `us-isob-east-1`, `eusc-de-east-1`).
bool IsAwsRegionName(std::string_view text);

// Parses the value of SECRETS_ALLOWED_REGIONS; errors name the variable
// and the entry at fault.
Result<AllowedRegions> ParseAllowedRegions(std::string_view value);
// The variable of `env`; nullopt when unset.
Result<std::optional<AllowedRegions>> ReadAllowedRegions(const EnvMap& env);

// kFailedPrecondition "SECRETS_ALLOWED_REGIONS: <what> (<variable>) is in
// <place>, which is not listed" when `allowed` is set and `region` (or the
// URL's host) is not in it; OK otherwise.
Status CheckRegionAllowed(const std::optional<AllowedRegions>& allowed, std::string_view variable,
                          std::string_view what, std::string_view region);
Status CheckUrlAllowed(const std::optional<AllowedRegions>& allowed, std::string_view variable, std::string_view what,
                       std::string_view url);

// `url` (http(s)://host[:port]) as `scheme://host:port`: scheme and host
// lower case, no trailing dot, the port always given; nullopt for anything
// else. Two URLs of one place compare equal so.
std::optional<std::string> CanonicalUrl(std::string_view url);

// The region of an AWS endpoint host `service[-fips].REGION.amazonaws.com`
// (or `.amazonaws.com.cn`, `.amazonaws.eu`, `.api.aws`); nullopt for any other host (a
// private or test endpoint, whose region is the signing region's).
std::optional<std::string> AwsEndpointRegion(std::string_view url);
// The region of an ARN `arn:PARTITION:SERVICE:REGION:…`; nullopt otherwise.
std::optional<std::string> ArnRegion(std::string_view arn);

}  // namespace dyad
