#include "backends/aws/aws_credentials.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <cctype>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "backends/aws/xml_text.h"
#include "cloud/refreshing_credential.h"
#include "core/encoding.h"
#include "core/ini.h"
#include "core/time_format.h"

namespace dyad {
namespace {

using WallTime = Clock::WallTime;

struct Fetched {
  AwsCredentials credentials;
  std::optional<WallTime> expires;  // nullopt: long-term keys
};

// A source returns kNotFound when it is not configured (the chain moves on).
struct Source {
  std::string name;
  std::function<Result<Fetched>()> fetch;
  // Tried without being configured (instance metadata): off EC2 it is just
  // not there, so being unreachable means "nothing configured", not an outage.
  bool implicit = false;
};

Error NotConfigured() { return MakeError(ErrorCode::kNotFound, "not configured"); }


std::string EnvValue(const EnvMap& env, const std::string& name) {
  auto it = env.find(name);
  return it == env.end() ? "" : std::string(TrimSpace(it->second));
}

std::string HomeFile(const EnvMap& env, const std::string& override_var, const std::string& rel) {
  std::string path = EnvValue(env, override_var);
  if (!path.empty()) return path;
  std::string home = EnvValue(env, "HOME");
  return home.empty() ? "" : home + "/.aws/" + rel;
}

// The JSON answer of the container and instance metadata endpoints.
Result<Fetched> FromMetadataJson(const std::string& body, const std::string& source) {
  auto j = nlohmann::json::parse(body, nullptr, false);
  auto field = [&](const char* name) -> std::string {
    if (!j.is_object() || !j.contains(name) || !j[name].is_string()) return "";
    return j[name].get<std::string>();
  };
  if (j.is_object() && j.contains("Code") && field("Code") != "Success") {
    return MakeError(ErrorCode::kPermissionDenied, source + ": answered Code " + field("Code") + ": " + field("Message"));
  }
  Fetched f;
  f.credentials.access_key_id = field("AccessKeyId");
  f.credentials.secret_access_key = SecretBytes(field("SecretAccessKey"));
  f.credentials.session_token = field("Token");
  std::string expiration = field("Expiration");
  if (f.credentials.access_key_id.empty() || f.credentials.secret_access_key.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, source + ": answer lacks AccessKeyId or SecretAccessKey");
  }
  if (!expiration.empty()) {
    f.expires = ParseIso8601(expiration);
    if (!f.expires) return MakeError(ErrorCode::kInvalidArgument, source + ": unreadable Expiration '" + expiration + "'");
  }
  return f;
}

Error HttpFailure(const std::string& source, const HttpReply& reply) {
  ErrorCode code = reply.status >= 500 || reply.status == 429 ? ErrorCode::kUnavailable
                   : (reply.status == 401 || reply.status == 403) ? ErrorCode::kPermissionDenied
                                                                   : ErrorCode::kInvalidArgument;
  return MakeError(code, source + ": HTTP " + std::to_string(reply.status));
}


class Chain final : public AwsCredentialSource {
 public:
  Chain(AwsChainOptions options, HttpTransport& http, const Clock& clock)
      : options_(std::move(options)),
        http_(http),
        current_([this] { return Fetch(); }, clock,
                 RefreshOptions{"AWS credentials", options_.refresh_before, std::chrono::seconds(30)}) {
    // Secret values are kept as SecretBytes only, never in the plain map.
    for (auto [name, slot] : {std::pair{"AWS_SECRET_ACCESS_KEY", &options_.secret_access_key},
                              std::pair{"AWS_SESSION_TOKEN", &options_.session_token}}) {
      auto it = options_.env.find(name);
      if (it == options_.env.end()) continue;
      if (slot->empty()) *slot = SecretBytes(TrimSpace(it->second));
      Cleanse(it->second);
      options_.env.erase(it);
    }
    sources_ = {{"environment", [this] { return FromEnvironment(); }},
                {"profile", [this] { return FromProfile(); }},
                {"web identity", [this] { return FromWebIdentity(); }},
                {"container", [this] { return FromContainer(); }},
                {"instance metadata", [this] { return FromInstanceMetadata(); }, true}};
  }

  Result<AwsCredentials> Get() override { return current_.Get(); }

  std::string SourceName() override {
    const Source* chosen = chosen_.load();
    if (!chosen) return "";
    return chosen->name == "profile" ? "profile " + Profile() : chosen->name;
  }

 private:
  // Called by current_, one call at a time: the source chosen first, from
  // then on.
  Result<Expiring<AwsCredentials>> Fetch() {
    Source* chosen = chosen_.load();
    DYAD_ASSIGN_OR_RETURN(Fetched f, chosen ? chosen->fetch() : Resolve());
    return Expiring<AwsCredentials>{std::move(f.credentials), f.expires};
  }

  Result<Fetched> Resolve() {
    std::string unreachable;
    for (auto& source : sources_) {
      auto r = source.fetch();
      if (r.ok()) {
        chosen_.store(&source);
        spdlog::info("AWS credentials: using {}", source.name == "profile" ? "profile " + Profile() : source.name);
        return r;
      }
      if (source.implicit && r.code() == ErrorCode::kUnavailable) {
        unreachable += " (" + source.name + ": " + r.error().message + ")";
        continue;
      }
      if (r.code() != ErrorCode::kNotFound) {
        return MakeError(r.code(), "AWS credentials (" + source.name + "): " + r.error().message);
      }
    }
    return MakeError(ErrorCode::kFailedPrecondition,
                     "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile in "
                     "~/.aws/credentials (AWS_PROFILE), AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN, or run where "
                     "container or instance credentials are served" + unreachable);
  }

  std::string Profile() const {
    std::string p = EnvValue(options_.env, "AWS_PROFILE");
    return p.empty() ? "default" : p;
  }

  Result<Fetched> FromEnvironment() {
    std::string id = EnvValue(options_.env, "AWS_ACCESS_KEY_ID");
    std::string_view secret = TrimSpace(options_.secret_access_key.view());
    if (id.empty() && secret.empty()) return NotConfigured();
    if (id.empty() || secret.empty()) {
      std::string missing = id.empty() ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY";
      return MakeError(ErrorCode::kInvalidArgument, missing + ": is required when the other is set");
    }
    Fetched f;
    f.credentials = {id, SecretBytes(secret), std::string(TrimSpace(options_.session_token.view()))};
    return f;
  }

  Result<Fetched> FromProfile() {
    const std::string profile = Profile();
    for (bool config : {false, true}) {
      std::string path = config ? HomeFile(options_.env, "AWS_CONFIG_FILE", "config")
                                : HomeFile(options_.env, "AWS_SHARED_CREDENTIALS_FILE", "credentials");
      if (path.empty()) continue;
      auto text = ReadSmallFile(path);
      if (!text.ok()) {
        if (text.code() == ErrorCode::kNotFound) continue;
        return text.error();
      }
      const std::string section = config && profile != "default" ? "profile " + profile : profile;
      auto id = IniValue(*text, section, "aws_access_key_id");
      auto secret = IniValue(*text, section, "aws_secret_access_key");
      auto token = IniValue(*text, section, "aws_session_token");
      Cleanse(*text);
      if (!id && !secret) continue;
      if (!id || !secret || id->empty() || secret->empty()) {
        return MakeError(ErrorCode::kInvalidArgument, path + ": profile '" + profile +
                                                          "' needs both aws_access_key_id and aws_secret_access_key");
      }
      Fetched f;
      f.credentials = {*id, SecretBytes(*secret), token.value_or("")};
      Cleanse(*secret);
      return f;
    }
    return NotConfigured();
  }

  Result<Fetched> FromWebIdentity() {
    std::string token_file = EnvValue(options_.env, "AWS_WEB_IDENTITY_TOKEN_FILE");
    std::string role = EnvValue(options_.env, "AWS_ROLE_ARN");
    if (token_file.empty() && role.empty()) return NotConfigured();
    if (token_file.empty() || role.empty()) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN must be set together");
    }
    auto token = ReadSmallFile(token_file, 64 << 10);
    if (!token.ok()) {
      return MakeError(ErrorCode::kInvalidArgument, "AWS_WEB_IDENTITY_TOKEN_FILE: " + token.error().message);
    }
    std::string session = EnvValue(options_.env, "AWS_ROLE_SESSION_NAME");
    if (session.empty()) session = "dyad-gateway";
    std::string endpoint = options_.sts_endpoint.empty() ? "https://sts." + options_.region + ".amazonaws.com"
                                                         : options_.sts_endpoint;
    HttpCall call;
    call.method = "POST";
    call.url = endpoint + "/";
    call.headers = {{"Content-Type", "application/x-www-form-urlencoded"}};
    call.body = "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=" + PercentEncode(role, false) +
                "&RoleSessionName=" + PercentEncode(session, false) +
                "&WebIdentityToken=" + PercentEncode(TrimSpace(*token), false);
    Cleanse(*token);
    auto reply = http_.Send(call);
    Cleanse(call.body);
    if (!reply.ok()) return reply.error();
    if (reply->status != 200) {
      std::string code = XmlElementText(reply->body, "Code"), message = XmlElementText(reply->body, "Message");
      Error e = HttpFailure("STS AssumeRoleWithWebIdentity", *reply);
      if (!code.empty()) e.message += " " + code + ": " + message;
      // Its throttling and an identity provider it cannot reach are passing
      // troubles. (Its refusals stay kInvalidArgument, asked again at each
      // call: STS locks nothing out, and it answers InvalidIdentityToken
      // for passing troubles too, a verification key it could not fetch.)
      if (code == "Throttling" || code == "IDPCommunicationError") e.code = ErrorCode::kUnavailable;
      return e;
    }
    Fetched f;
    f.credentials.access_key_id = XmlElementText(reply->body, "AccessKeyId");
    f.credentials.secret_access_key = SecretBytes(XmlElementText(reply->body, "SecretAccessKey"));
    f.credentials.session_token = XmlElementText(reply->body, "SessionToken");
    f.expires = ParseIso8601(XmlElementText(reply->body, "Expiration"));
    Cleanse(reply->body);
    if (f.credentials.access_key_id.empty() || f.credentials.secret_access_key.empty() || !f.expires) {
      return MakeError(ErrorCode::kInvalidArgument, "STS AssumeRoleWithWebIdentity: answer lacks credentials");
    }
    return f;
  }

  Result<Fetched> FromContainer() {
    std::string relative = EnvValue(options_.env, "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    std::string full = EnvValue(options_.env, "AWS_CONTAINER_CREDENTIALS_FULL_URI");
    if (relative.empty() && full.empty()) return NotConfigured();
    HttpCall call;
    call.url = relative.empty() ? full : "http://169.254.170.2" + relative;
    call.timeout = std::chrono::seconds(2);
    std::string auth = EnvValue(options_.env, "AWS_CONTAINER_AUTHORIZATION_TOKEN");
    if (std::string file = EnvValue(options_.env, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"); !file.empty()) {
      auto t = ReadSmallFile(file, 16 << 10);
      if (!t.ok()) {
        return MakeError(ErrorCode::kInvalidArgument, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: " + t.error().message);
      }
      auth = std::string(TrimSpace(*t));
    }
    if (!auth.empty()) call.headers.emplace_back("Authorization", auth);
    auto reply = http_.Send(call);
    if (!reply.ok()) return reply.error();
    if (reply->status != 200) return HttpFailure("container credentials endpoint", *reply);
    auto f = FromMetadataJson(reply->body, "container credentials endpoint");
    Cleanse(reply->body);
    return f;
  }

  Result<Fetched> FromInstanceMetadata() {
    std::string disabled = EnvValue(options_.env, "AWS_EC2_METADATA_DISABLED");
    if (disabled == "true" || disabled == "TRUE" || disabled == "1") return NotConfigured();
    std::string base = EnvValue(options_.env, "AWS_EC2_METADATA_SERVICE_ENDPOINT");
    if (base.empty()) base = "http://169.254.169.254";
    while (!base.empty() && base.back() == '/') base.pop_back();
    const auto timeout = std::chrono::milliseconds(1000);

    HttpCall token_call{"PUT", base + "/latest/api/token", {{"X-aws-ec2-metadata-token-ttl-seconds", "21600"}}, "",
                        timeout};
    auto token = http_.Send(token_call);
    if (!token.ok()) return token.error();
    if (token->status != 200) return HttpFailure("instance metadata token (IMDSv2)", *token);
    const HttpHeaders auth = {{"X-aws-ec2-metadata-token", token->body}};
    const std::string roles_url = base + "/latest/meta-data/iam/security-credentials/";

    auto roles = http_.Send(HttpCall{"GET", roles_url, auth, "", timeout});
    if (!roles.ok()) return roles.error();
    if (roles->status == 404) return MakeError(ErrorCode::kFailedPrecondition, "the instance has no IAM role");
    if (roles->status != 200) return HttpFailure("instance metadata role list", *roles);
    std::string role(TrimSpace(std::string_view(roles->body).substr(0, roles->body.find('\n'))));
    if (role.empty()) return MakeError(ErrorCode::kFailedPrecondition, "the instance has no IAM role");

    auto creds = http_.Send(HttpCall{"GET", roles_url + role, auth, "", timeout});
    if (!creds.ok()) return creds.error();
    if (creds->status != 200) return HttpFailure("instance metadata credentials of role " + role, *creds);
    auto f = FromMetadataJson(creds->body, "instance metadata");
    Cleanse(creds->body);
    return f;
  }

  AwsChainOptions options_;
  HttpTransport& http_;
  std::vector<Source> sources_;  // fixed after construction
  std::atomic<Source*> chosen_{nullptr};
  RefreshingCredential<AwsCredentials> current_;
};

}  // namespace

std::unique_ptr<AwsCredentialSource> NewAwsCredentialChain(AwsChainOptions options, HttpTransport& http,
                                                           const Clock& clock) {
  return std::make_unique<Chain>(std::move(options), http, clock);
}

}  // namespace dyad
