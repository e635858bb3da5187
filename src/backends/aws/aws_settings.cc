#include "backends/aws/aws_settings.h"

#include <algorithm>
#include <cctype>
#include <optional>

#include "cloud/endpoint_policy.h"
#include "core/endpoint.h"
#include "core/env_vars.h"
#include "core/ini.h"
#include "core/residency.h"

namespace dyad {
namespace {

// `region` of the AWS_PROFILE (default) profile in AWS_CONFIG_FILE or ~/.aws/config.
std::optional<std::string> ProfileRegion(const EnvMap& env) {
  const std::string* file = FindVariable(env, "AWS_CONFIG_FILE");
  const std::string* home = FindVariable(env, "HOME");
  std::string path = file && !file->empty() ? *file : home && !home->empty() ? *home + "/.aws/config" : "";
  if (path.empty()) return std::nullopt;
  auto text = ReadSmallFile(path);
  if (!text.ok()) return std::nullopt;
  const std::string* p = FindVariable(env, "AWS_PROFILE");
  std::string profile = p && !p->empty() ? *p : "default";
  return IniValue(*text, profile == "default" ? profile : "profile " + profile, "region");
}

Status ReadEndpoint(const EnvMap& env, const std::string& specific, const std::string& service,
                    const std::string& region, std::string& out) {
  const std::string* v = FindVariable(env, specific);
  std::string name = specific;
  if (!v || v->empty()) {
    v = FindVariable(env, "AWS_ENDPOINT_URL");
    name = "AWS_ENDPOINT_URL";
  }
  if (!v || v->empty()) {
    out = "https://" + service + "." + region + ".amazonaws.com";
    return OkStatus();
  }
  auto endpoint = ParseEndpoint(*v);
  if (!endpoint) {
    // Never echo a password given as user:password@ in the URL.
    std::string shown = *v;
    if (auto at = shown.find('@'); at != std::string::npos) shown = "…" + shown.substr(at);
    return BadVariable(name, "'" + shown + "' is not an endpoint URL; use https://host[:port] (no path, no user)");
  }
  DYAD_RETURN_IF_ERROR(CheckEndpointTransport(env, name, *endpoint, "signed requests and data keys"));
  out = endpoint->url;
  return OkStatus();
}

Status ReadReplicaRegions(const EnvMap& env, AwsSettings& aws) {
  const std::string* v = FindVariable(env, "AWS_SECRETS_REPLICA_REGIONS");
  if (!v || v->empty()) return OkStatus();
  size_t start = 0;
  while (start <= v->size()) {
    size_t comma = std::min(v->find(',', start), v->size());
    std::string region = v->substr(start, comma - start);
    while (!region.empty() && region.front() == ' ') region.erase(0, 1);
    while (!region.empty() && region.back() == ' ') region.pop_back();
    if (!IsAwsRegionName(region)) {
      return BadVariable("AWS_SECRETS_REPLICA_REGIONS", "'" + region + "' is not a region name such as eu-west-1; "
                                                        "list regions separated by commas");
    }
    if (region == aws.region) {
      return BadVariable("AWS_SECRETS_REPLICA_REGIONS", "'" + region + "' is AWS_REGION, where the secret itself "
                                                        "lives; list only other regions");
    }
    if (std::find(aws.replica_regions.begin(), aws.replica_regions.end(), region) != aws.replica_regions.end()) {
      return BadVariable("AWS_SECRETS_REPLICA_REGIONS", "'" + region + "' is listed twice");
    }
    aws.replica_regions.push_back(region);
    start = comma + 1;
  }
  return OkStatus();
}

// The variable an endpoint came from (the specific one, AWS_ENDPOINT_URL,
// or none: AWS's own endpoint in AWS_REGION).
std::string EndpointVariable(const EnvMap& env, const std::string& specific) {
  for (const std::string& name : {specific, std::string("AWS_ENDPOINT_URL")}) {
    if (const std::string* v = FindVariable(env, name); v && !v->empty()) return name;
  }
  return "AWS_REGION";
}

}  // namespace

Status CheckAwsResidency(const AwsSettings& aws, const Config& config) {
  const auto& allowed = config.allowed_regions;
  if (!allowed) return OkStatus();
  DYAD_RETURN_IF_ERROR(CheckRegionAllowed(allowed, "AWS_REGION", "the Secrets Manager store", aws.region));
  struct Service {
    const char* specific;
    const char* what;
    const std::string& endpoint;
  };
  for (const Service& s : {Service{"AWS_ENDPOINT_URL_SECRETS_MANAGER", "the Secrets Manager endpoint",
                                   aws.endpoint_secrets_manager},
                           Service{"AWS_ENDPOINT_URL_KMS", "the KMS endpoint", aws.endpoint_kms}}) {
    if (auto region = AwsEndpointRegion(s.endpoint)) {
      DYAD_RETURN_IF_ERROR(CheckRegionAllowed(allowed, EndpointVariable(config.env, s.specific), s.what, *region));
    }
  }
  if (auto region = ArnRegion(config.encryption_key_id)) {
    DYAD_RETURN_IF_ERROR(CheckRegionAllowed(allowed, "ENCRYPTION_KEY_ID", "the KMS key", *region));
  }
  for (const auto& region : aws.replica_regions) {
    DYAD_RETURN_IF_ERROR(CheckRegionAllowed(allowed, "AWS_SECRETS_REPLICA_REGIONS", "a replica", region));
  }
  return OkStatus();
}

Result<AwsSettings> ReadAwsSettings(const EnvMap& env, const SecretEnv& secrets) {
  AwsSettings aws;
  if (auto it = secrets.find("AWS_SECRET_ACCESS_KEY"); it != secrets.end()) aws.secret_access_key = it->second;
  if (auto it = secrets.find("AWS_SESSION_TOKEN"); it != secrets.end()) aws.session_token = it->second;
  for (const char* name : {"AWS_REGION", "AWS_DEFAULT_REGION"}) {
    if (const std::string* v = FindVariable(env, name); v && !v->empty() && aws.region.empty()) aws.region = *v;
  }
  if (aws.region.empty()) {
    if (auto r = ProfileRegion(env)) aws.region = *r;
  }
  if (aws.region.empty()) {
    return BadVariable("AWS_REGION", "is required when SECRETS_PROVIDER=aws (or AWS_DEFAULT_REGION, or region in the "
                                     "profile of ~/.aws/config), e.g. us-east-1");
  }
  bool region_ok = aws.region.size() <= 64;
  for (char ch : aws.region) region_ok = region_ok && (std::isalnum(static_cast<unsigned char>(ch)) || ch == '-');
  if (!region_ok) return BadVariable("AWS_REGION", "'" + aws.region + "' is not a region name such as us-east-1");
  DYAD_RETURN_IF_ERROR(ReadEndpoint(env, "AWS_ENDPOINT_URL_SECRETS_MANAGER", "secretsmanager", aws.region,
                                    aws.endpoint_secrets_manager));
  DYAD_RETURN_IF_ERROR(ReadEndpoint(env, "AWS_ENDPOINT_URL_KMS", "kms", aws.region, aws.endpoint_kms));
  DYAD_RETURN_IF_ERROR(ReadEndpoint(env, "AWS_ENDPOINT_URL_STS", "sts", aws.region, aws.endpoint_sts));
  if (const std::string* v = FindVariable(env, "AWS_CA_BUNDLE")) aws.ca_bundle = *v;
  DYAD_RETURN_IF_ERROR(ReadIntVariable(env, "AWS_MAX_ATTEMPTS", 1, 10, aws.max_attempts));
  DYAD_RETURN_IF_ERROR(ReadIntVariable(env, "AWS_SECRETS_RECOVERY_WINDOW_DAYS", 7, 30, aws.recovery_window_days));
  DYAD_RETURN_IF_ERROR(ReadIntVariable(env, "AWS_REQUEST_TIMEOUT_MS", 100, 120000, aws.timeout_ms));
  DYAD_RETURN_IF_ERROR(ReadIntVariable(env, "AWS_CONCURRENCY", 1, 64, aws.concurrency));
  DYAD_RETURN_IF_ERROR(ReadReplicaRegions(env, aws));
  return aws;
}

Status CheckAwsSecretsPrefix(const std::string& prefix) {
  // Secrets Manager names: 1 to 512 of letters, digits and /_+=.@-; the
  // gateway's are `<prefix>/providers/<36-character id>`.
  constexpr size_t kMaxName = 512, kSuffix = std::string_view("/providers/").size() + 36;
  bool ok = !prefix.empty();
  for (char ch : prefix) {
    ok = ok && (std::isalnum(static_cast<unsigned char>(ch)) || std::string_view("/_+=.@-").find(ch) != std::string_view::npos);
  }
  if (!ok) return BadVariable("SECRETS_PREFIX", "use letters, digits and /_+=.@- (the characters of AWS secret names)");
  if (prefix.size() + kSuffix > kMaxName) {
    return BadVariable("SECRETS_PREFIX", "use at most " + std::to_string(kMaxName - kSuffix) +
                                             " characters: an AWS secret name is at most 512");
  }
  return OkStatus();
}

}  // namespace dyad
