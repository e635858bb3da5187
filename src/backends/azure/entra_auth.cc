#include "backends/azure/entra_auth.h"

#include <openssl/evp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <spdlog/spdlog.h>

#include <cctype>
#include <algorithm>
#include <charconv>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>

#include "backends/azure/base64url.h"
#include "core/encoding.h"
#include "core/environment.h"
#include "core/mutex.h"

namespace dyad {
namespace {

using nlohmann::json;
using std::chrono::seconds;

constexpr long long kMaxLifetimeSeconds = 366LL * 24 * 3600;

// "https://vault.azure.net/.default" → "https://vault.azure.net" (IMDS takes a resource).
std::string ResourceOf(const std::string& scope) {
  std::string r = scope;
  if (r.ends_with("/.default")) r.resize(r.size() - 9);
  return r;
}

// A whole number in a JSON number or string ("3599"); nullopt otherwise.
std::optional<long long> WholeNumber(const json& j) {
  if (j.is_number_unsigned()) {  // before is_number_integer, which is true for it too
    const auto u = j.get<unsigned long long>();
    if (u > static_cast<unsigned long long>(std::numeric_limits<long long>::max())) return std::nullopt;
    return static_cast<long long>(u);
  }
  if (j.is_number_integer()) return j.get<long long>();
  if (!j.is_string()) return std::nullopt;
  const std::string& s = j.get_ref<const std::string&>();
  long long n = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (s.empty() || ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return n;
}

// One bounded line of an identity endpoint's refusal: "error: error_description".
std::string RefusalText(const std::string& body) {
  auto j = json::parse(body, nullptr, false);
  std::string out;
  if (j.is_object()) {
    if (j.contains("error") && j["error"].is_string()) out = j["error"].get<std::string>();
    if (j.contains("error") && j["error"].is_object() && j["error"].contains("message") &&
        j["error"]["message"].is_string()) {
      out = j["error"]["message"].get<std::string>();  // App Service's form
    }
    if (out.empty() && j.contains("message") && j["message"].is_string()) out = j["message"].get<std::string>();
    if (j.contains("error_description") && j["error_description"].is_string()) {
      out += (out.empty() ? "" : ": ") + j["error_description"].get<std::string>();
    }
  }
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  }
  if (out.size() > 300) out.resize(300);
  return out;
}

// The access token and its expiry from a token answer (Entra, IMDS, App
// Service): access_token, and expires_on (epoch seconds) or expires_in.
Result<Expiring<SecretBytes>> ParseTokenAnswer(const std::string& what, HttpReply& reply, Clock::WallTime now) {
  if (reply.status != 200) {
    const int s = reply.status;
    // 404 and 410 are the managed-identity endpoint's "not yet" (an identity
    // still being assigned, IMDS updating): tried again, never a refusal.
    const ErrorCode code =
        s == 429 || s >= 500 || s == 404 || s == 410 ? ErrorCode::kUnavailable : ErrorCode::kUnauthenticated;
    std::string text = what + ": HTTP " + std::to_string(s);
    if (std::string m = RefusalText(reply.body); !m.empty()) text += ": " + m;
    Cleanse(reply.body);
    return MakeError(code, std::move(text));
  }
  json j = json::parse(reply.body, nullptr, false);
  Cleanse(reply.body);
  auto malformed = [&](const std::string& why) {
    if (j.is_object() && j.contains("access_token") && j["access_token"].is_string()) {
      Cleanse(j["access_token"].get_ref<std::string&>());
    }
    return MakeError(ErrorCode::kUnavailable, what + ": malformed token answer: " + why);
  };
  if (!j.is_object()) return malformed("not a JSON object");
  if (!j.contains("access_token") || !j["access_token"].is_string()) return malformed("no access_token");
  std::string& token = j["access_token"].get_ref<std::string&>();
  bool printable = !token.empty() && token.size() <= 64 * 1024;
  for (char c : token) printable = printable && c > 0x20 && c < 0x7f;
  if (!printable) return malformed("access_token is not a token");
  if (j.contains("token_type") && j["token_type"].is_string()) {
    const std::string type = AsciiLower(j["token_type"].get<std::string>());
    if (type != "bearer") return malformed("token_type is not Bearer");
  }
  const long long now_s = std::chrono::duration_cast<seconds>(now.time_since_epoch()).count();
  std::optional<long long> expires;
  if (j.contains("expires_on")) {
    auto on = WholeNumber(j["expires_on"]);
    if (!on) return malformed("expires_on is not a number of seconds");
    expires = *on;
  } else if (j.contains("expires_in")) {
    auto in = WholeNumber(j["expires_in"]);
    if (!in || *in < 0 || *in > kMaxLifetimeSeconds) return malformed("expires_in is not a lifetime in seconds");
    expires = now_s + *in;
  } else {
    return malformed("neither expires_in nor expires_on");
  }
  if (*expires <= now_s || *expires > now_s + kMaxLifetimeSeconds) {
    return malformed("the token expires at " + std::to_string(*expires) + ", not within a year from now");
  }
  Expiring<SecretBytes> out{SecretBytes(std::string_view(token)), Clock::WallTime(seconds(*expires))};
  // Fetch ahead 5 minutes before expiry, but never before half the lifetime
  // has passed: a 30 s token is refetched after 15 s, not on every call.
  const long long half = now_s + (*expires - now_s) / 2, ahead = *expires - 5 * 60;
  out.refresh_at = Clock::WallTime(seconds(std::max(half, ahead)));
  Cleanse(token);
  return out;
}

Result<HttpReply> SendFor(const std::string& what, HttpTransport& http, HttpCall& call) {
  auto reply = http.Send(call);
  Cleanse(call.body);
  for (auto& [name, value] : call.headers) Cleanse(value);
  if (!reply.ok()) return MakeError(reply.error().code, what + ": " + reply.error().message);
  return reply;
}

// ---- client credentials: secret, certificate, workload identity ----

struct Certificate {
  std::string thumbprint;  // base64url SHA-256 of the DER
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key{nullptr, EVP_PKEY_free};
};

Result<Certificate> LoadCertificate(const std::string& path) {
  auto bad = [&](const std::string& why) {
    return MakeError(ErrorCode::kInvalidArgument, "AZURE_CLIENT_CERTIFICATE_PATH: '" + path + "' " + why);
  };
  auto pem = ReadSmallFile(path);
  if (!pem.ok()) return bad("cannot be read: " + pem.error().message);
  Certificate out;
  std::unique_ptr<X509, decltype(&X509_free)> cert(nullptr, X509_free);
  {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pem->data(), static_cast<int>(pem->size())), BIO_free);
    cert.reset(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!cert) {
      Cleanse(*pem);
      return bad("holds no PEM certificate");
    }
    unsigned char* der = nullptr;
    const int n = i2d_X509(cert.get(), &der);
    if (n <= 0) {
      Cleanse(*pem);
      return bad("holds a certificate that cannot be encoded");
    }
    out.thumbprint = Base64UrlEncode(Sha256(std::string_view(reinterpret_cast<const char*>(der), static_cast<size_t>(n))));
    OPENSSL_free(der);
  }
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pem->data(), static_cast<int>(pem->size())), BIO_free);
  out.key.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  Cleanse(*pem);
  if (!out.key) return bad("holds no unencrypted PEM private key");
  if (EVP_PKEY_base_id(out.key.get()) != EVP_PKEY_RSA) return bad("holds a private key that is not RSA (RS256)");
  if (X509_check_private_key(cert.get(), out.key.get()) != 1) {
    ERR_clear_error();
    return bad("holds a private key that does not match its certificate");
  }
  return out;
}

enum class AppCredential { kSecret, kCertificate, kWorkload };

class ClientCredentialSource final : public EntraTokenSource {
 public:
  ClientCredentialSource(AppCredential kind, const AzureSettings& s, Certificate cert, HttpTransport& http,
                         const Clock& clock, Random& random)
      : kind_(kind),
        name_(kind == AppCredential::kSecret        ? "client secret"
              : kind == AppCredential::kCertificate ? "client certificate"
                                                    : "workload identity"),
        token_url_(s.authority_host + "/" + s.tenant_id + "/oauth2/v2.0/token"),
        client_id_(s.client_id),
        secret_(s.client_secret),
        token_file_(s.federated_token_file),
        cert_(std::move(cert)),
        timeout_(s.timeout_ms),
        http_(http),
        clock_(clock),
        random_(random) {}

  const std::string& Name() const override { return name_; }

  Result<Expiring<SecretBytes>> Fetch(const std::string& scope) override {
    const std::string what = "Entra ID token (" + name_ + ")";
    HttpCall call;
    call.method = "POST";
    call.url = token_url_;
    call.timeout = timeout_;
    call.headers = {{"Content-Type", "application/x-www-form-urlencoded"}, {"Accept", "application/json"}};
    call.body = "grant_type=client_credentials&client_id=" + PercentEncode(client_id_, false) +
                "&scope=" + PercentEncode(scope, false);
    if (kind_ == AppCredential::kSecret) {
      std::string encoded = PercentEncode(secret_.view(), false);
      call.body += "&client_secret=" + encoded;
      Cleanse(encoded);
    } else {
      std::string assertion;
      if (kind_ == AppCredential::kCertificate) {
        DYAD_ASSIGN_OR_RETURN(assertion, SignedAssertion(what));
      } else {
        auto file = ReadSmallFile(token_file_, 64 * 1024);
        if (!file.ok()) {
          // A local file (projected at a pod's start, perhaps not yet): no
          // refusal of Entra's, so not backed off as one.
          return MakeError(ErrorCode::kFailedPrecondition,
                           what + ": AZURE_FEDERATED_TOKEN_FILE cannot be read: " + file.error().message);
        }
        assertion = std::string(TrimSpace(*file));
        Cleanse(*file);
        if (assertion.empty()) {
          return MakeError(ErrorCode::kFailedPrecondition, what + ": AZURE_FEDERATED_TOKEN_FILE is empty");
        }
      }
      call.body += "&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"
                   "&client_assertion=" + PercentEncode(assertion, false);
      Cleanse(assertion);
    }
    DYAD_ASSIGN_OR_RETURN(HttpReply reply, SendFor(what, http_, call));
    return ParseTokenAnswer(what, reply, clock_.WallNow());
  }

 private:
  // header.claims.signature, RS256.
  Result<std::string> SignedAssertion(const std::string& what) {
    const long long now =
        std::chrono::duration_cast<seconds>(clock_.WallNow().time_since_epoch()).count();
    json header = {{"alg", "RS256"}, {"typ", "JWT"}, {"x5t#S256", cert_.thumbprint}};
    json claims = {{"aud", token_url_}, {"iss", client_id_}, {"sub", client_id_}, {"jti", NewUuid(random_)},
                   {"nbf", now}, {"iat", now}, {"exp", now + 600}};
    std::string input = Base64UrlEncode(header.dump()) + "." + Base64UrlEncode(claims.dump());
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    size_t n = 0;
    if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, cert_.key.get()) != 1 ||
        EVP_DigestSign(ctx.get(), nullptr, &n, reinterpret_cast<const unsigned char*>(input.data()), input.size()) != 1) {
      return MakeError(ErrorCode::kInternal, what + ": cannot sign the client assertion");
    }
    std::string sig(n, '\0');
    if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &n,
                       reinterpret_cast<const unsigned char*>(input.data()), input.size()) != 1) {
      return MakeError(ErrorCode::kInternal, what + ": cannot sign the client assertion");
    }
    sig.resize(n);
    return input + "." + Base64UrlEncode(sig);
  }

  const AppCredential kind_;
  const std::string name_;
  const std::string token_url_;
  const std::string client_id_;
  const SecretBytes secret_;
  const std::string token_file_;
  const Certificate cert_;
  const std::chrono::milliseconds timeout_;
  HttpTransport& http_;
  const Clock& clock_;
  Random& random_;
};

// ---- managed identity: App Service / Container Apps, or IMDS ----

class ManagedIdentitySource final : public EntraTokenSource {
 public:
  ManagedIdentitySource(const AzureSettings& s, HttpTransport& http, const Clock& clock)
      : app_service_(!s.identity_endpoint.empty()),
        name_(app_service_ ? "managed identity (App Service)" : "managed identity (IMDS)"),
        endpoint_(app_service_ ? s.identity_endpoint : s.imds_endpoint + "/metadata/identity/oauth2/token"),
        client_id_(s.client_id),
        header_(s.identity_header),
        timeout_(s.timeout_ms),
        http_(http),
        clock_(clock) {}

  const std::string& Name() const override { return name_; }

  Result<Expiring<SecretBytes>> Fetch(const std::string& scope) override {
    const std::string what = "Entra ID token (" + name_ + ")";
    HttpCall call;
    call.method = "GET";
    call.timeout = timeout_;
    call.url = endpoint_ + (endpoint_.find('?') == std::string::npos ? "?" : "&") + "api-version=" +
               (app_service_ ? "2019-08-01" : "2018-02-01") + "&resource=" + PercentEncode(ResourceOf(scope), false);
    if (!client_id_.empty()) call.url += "&client_id=" + PercentEncode(client_id_, false);
    if (app_service_) {
      call.headers.emplace_back("X-IDENTITY-HEADER", std::string(header_.view()));
    } else {
      call.headers.emplace_back("Metadata", "true");
    }
    DYAD_ASSIGN_OR_RETURN(HttpReply reply, SendFor(what, http_, call));
    return ParseTokenAnswer(what, reply, clock_.WallNow());
  }

 private:
  const bool app_service_;
  const std::string name_;
  const std::string endpoint_;
  const std::string client_id_;
  const SecretBytes header_;
  const std::chrono::milliseconds timeout_;
  HttpTransport& http_;
  const Clock& clock_;
};

// ---- the auth step ----

// The last path segment of "https://login.microsoftonline.com/<tenant>[/]"
// (a tenant id or domain); "" when there is none.
std::string TenantOf(const std::string& authority) {
  std::string_view a = authority;
  if (const auto q = a.find_first_of("?#"); q != std::string_view::npos) a = a.substr(0, q);
  while (a.ends_with('/')) a.remove_suffix(1);
  const auto scheme = a.find("://");
  const auto slash = a.rfind('/');
  if (scheme == std::string_view::npos || slash == std::string_view::npos || slash < scheme + 3) return "";
  std::string tenant(a.substr(slash + 1));
  for (char c : tenant) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') return "";
  }
  return tenant.size() <= 128 ? tenant : "";
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  }
  return true;
}

class EntraAuth final : public RequestAuth {
 public:
  EntraAuth(std::string vault_host, bool verify, std::shared_ptr<EntraCredential> credential, std::string tenant_id)
      : vault_host_(std::move(vault_host)),
        verify_(verify),
        credential_(std::move(credential)),
        tenant_id_(std::move(tenant_id)) {}

  Status Authorize(CloudRequest& request) override DYAD_LOCKS_EXCLUDED(mu_) {
    if (request.host != vault_host_) {
      return MakeError(ErrorCode::kInternal, "Entra auth: a token for " + vault_host_ + " is not sent to " + request.host);
    }
    std::string scope;
    {
      MutexLock lock(&mu_);
      scope = scope_;
      if (scope.empty() && !refused_.empty()) return MakeError(ErrorCode::kUnauthenticated, refused_);
    }
    if (scope.empty()) {
      // The challenge probe: no token, no body (as the SDK sends it).
      Cleanse(request.body);
      request.body.clear();
      return OkStatus();
    }
    DYAD_ASSIGN_OR_RETURN(SecretBytes token, credential_->Get(scope));
    std::string value = "Bearer ";
    value.append(token.view());
    // JsonClient offers the reply to OnRejected on this thread, before this
    // thread authorizes anything else: what it sent is known there.
    sent_by_ = this;
    sent_ = std::move(token);
    request.headers.emplace_back("Authorization", std::move(value));
    return OkStatus();
  }

  bool OnRejected(std::string_view op, const HttpReply& reply) override DYAD_LOCKS_EXCLUDED(mu_) {
    if (reply.status != 401) return false;
    auto challenge = ParseEntraChallenge(reply.Header("www-authenticate"));
    std::string known, replaced;
    {
      MutexLock lock(&mu_);
      known = scope_;
      if (challenge && challenge->scope != scope_) {
        const std::string tenant = TenantOf(challenge->authority);
        if (!tenant_id_.empty() && !tenant.empty() && !EqualsIgnoreCase(tenant, tenant_id_)) {
          refused_ = "Key Vault " + vault_host_ + " belongs to tenant " + tenant + ", not AZURE_TENANT_ID " +
                     tenant_id_ + ": no token is sent";
          spdlog::warn("{} ({})", refused_, op);
          return false;
        }
        if (verify_ && !ChallengeResourceMatches(vault_host_, challenge->scope)) {
          spdlog::warn("Key Vault {} ({}): the 401 challenge is for {}, which this vault is not part of: no token is "
                       "sent (AZURE_VERIFY_CHALLENGE_RESOURCE=false accepts it, for a private endpoint)",
                       vault_host_, op, challenge->scope);
          return false;
        }
        replaced = std::move(scope_);
        scope_ = challenge->scope;
      }
    }
    if (!replaced.empty()) credential_->Forget(replaced);  // one token holder per vault
    if (challenge && challenge->scope != known) return true;
    if (known.empty()) return false;  // refused without a challenge: nothing to learn
    // The token this thread sent was refused (expired, revoked): one fresh one.
    bool retry = true;
    if (sent_by_ == this && !sent_.empty()) retry = credential_->Reject(known, sent_);
    sent_ = SecretBytes();
    sent_by_ = nullptr;
    if (!retry) {
      spdlog::warn("Key Vault {} ({}): a token fetched moments ago was refused; no other token is fetched", vault_host_,
                   op);
    }
    return retry;
  }

 private:
  // The token the current thread last sent through this step.
  static thread_local const EntraAuth* sent_by_;
  static thread_local SecretBytes sent_;

  const std::string vault_host_;
  const bool verify_;
  const std::shared_ptr<EntraCredential> credential_;
  Mutex mu_;
  std::string scope_ DYAD_GUARDED_BY(mu_);  // "" until the vault has challenged
  const std::string tenant_id_;              // AZURE_TENANT_ID; "" for managed identity
  std::string refused_ DYAD_GUARDED_BY(mu_);  // why no token is sent (another tenant)
};

thread_local const EntraAuth* EntraAuth::sent_by_ = nullptr;
thread_local SecretBytes EntraAuth::sent_;

}  // namespace

Result<std::unique_ptr<EntraTokenSource>> NewEntraTokenSource(const AzureSettings& s, HttpTransport& http,
                                                              const Clock& clock, Random& random) {
  std::string method = s.auth_method;
  if (method == "chain") {
    const bool app = !s.tenant_id.empty() && !s.client_id.empty();
    method = app && !s.client_secret.empty()             ? "secret"
             : app && !s.client_certificate_path.empty() ? "certificate"
             : app && !s.federated_token_file.empty()    ? "workload"
                                                         : "managed";
  }
  std::unique_ptr<EntraTokenSource> source;
  if (method == "managed") {
    source = std::make_unique<ManagedIdentitySource>(s, http, clock);
  } else if (method == "certificate") {
    DYAD_ASSIGN_OR_RETURN(Certificate cert, LoadCertificate(s.client_certificate_path));
    source = std::make_unique<ClientCredentialSource>(AppCredential::kCertificate, s, std::move(cert), http, clock, random);
  } else {
    source = std::make_unique<ClientCredentialSource>(
        method == "secret" ? AppCredential::kSecret : AppCredential::kWorkload, s, Certificate{}, http, clock, random);
  }
  return source;
}

struct EntraCredential::Scopes {
  Mutex mu;
  std::map<std::string, std::shared_ptr<RefreshingCredential<SecretBytes>>> by_scope DYAD_GUARDED_BY(mu);
};

EntraCredential::EntraCredential(std::unique_ptr<EntraTokenSource> source, const Clock& clock, RefreshOptions refresh)
    : source_(std::move(source)), clock_(clock), refresh_(std::move(refresh)), scopes_(std::make_unique<Scopes>()) {}

EntraCredential::~EntraCredential() = default;

const std::string& EntraCredential::SourceName() const { return source_->Name(); }

std::shared_ptr<RefreshingCredential<SecretBytes>> EntraCredential::NewHolder(const std::string& scope) const {
  RefreshOptions options = refresh_;
  if (options.name.empty()) options.name = "Entra ID token (" + source_->Name() + ")";
  EntraTokenSource* source = source_.get();
  return std::make_shared<RefreshingCredential<SecretBytes>>([source, scope] { return source->Fetch(scope); }, clock_,
                                                              std::move(options));
}

Result<SecretBytes> EntraCredential::Get(const std::string& scope) {
  std::shared_ptr<RefreshingCredential<SecretBytes>> holder;
  {
    MutexLock lock(&scopes_->mu);
    auto& slot = scopes_->by_scope[scope];
    if (!slot) slot = NewHolder(scope);
    holder = slot;
  }
  return holder->Get();  // a fetch runs without the lock
}

bool EntraCredential::Reject(const std::string& scope, const SecretBytes& rejected) {
  std::shared_ptr<RefreshingCredential<SecretBytes>> holder;
  {
    MutexLock lock(&scopes_->mu);
    auto it = scopes_->by_scope.find(scope);
    if (it == scopes_->by_scope.end()) return true;
    holder = it->second;
  }
  // Outside the lock: this may fetch (when a refresh is due anyway).
  auto current = holder->Get();
  if (!current.ok()) return false;
  if (!ConstantTimeEquals(current->view(), rejected.view())) return true;  // already replaced: retry with it
  // The holder's own guard: a token fetched less than min_retry_interval ago
  // and refused is a denial (another tenant, no access), not worth a fetch.
  return holder->Invalidate();
}

void EntraCredential::Forget(const std::string& scope) {
  MutexLock lock(&scopes_->mu);
  scopes_->by_scope.erase(scope);
}

size_t EntraCredential::ScopeCount() const {
  MutexLock lock(&scopes_->mu);
  return scopes_->by_scope.size();
}

std::optional<EntraChallenge> ParseEntraChallenge(std::string_view header) {
  // Bearer k="v", k="v" (also unquoted values); other schemes are ignored.
  header = TrimSpace(header);
  if (header.size() < 7) return std::nullopt;
  const std::string scheme = AsciiLower(header.substr(0, 7));
  if (scheme != "bearer ") return std::nullopt;
  std::map<std::string, std::string> params;
  std::string_view rest = header.substr(7);
  while (!rest.empty()) {
    rest = TrimSpace(rest);
    while (!rest.empty() && rest.front() == ',') rest = TrimSpace(rest.substr(1));
    const auto eq = rest.find('=');
    if (eq == std::string_view::npos) break;
    const std::string key = AsciiLower(TrimSpace(rest.substr(0, eq)));
    rest = TrimSpace(rest.substr(eq + 1));
    std::string value;
    if (!rest.empty() && rest.front() == '"') {
      const auto close = rest.find('"', 1);
      if (close == std::string_view::npos) return std::nullopt;
      value = rest.substr(1, close - 1);
      rest = rest.substr(close + 1);
    } else {
      const auto comma = rest.find(',');
      value = TrimSpace(rest.substr(0, comma));
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
    }
    params.emplace(std::move(key), std::move(value));
  }
  EntraChallenge out;
  for (const char* k : {"authorization", "authorization_uri"}) {
    if (auto it = params.find(k); it != params.end() && out.authority.empty()) out.authority = it->second;
  }
  // Only "https://<host>/.default", or a resource "https://<host>" ("/"):
  // no other path, no query, no fragment.
  auto path_at = [](const std::string& url) { return url.find_first_of("/?#", 8); };
  if (auto it = params.find("scope"); it != params.end() && !it->second.empty()) {
    const std::string& scope = it->second;
    if (!scope.starts_with("https://") || path_at(scope) == std::string::npos ||
        scope.substr(path_at(scope)) != "/.default") {
      return std::nullopt;
    }
    out.scope = scope;
  } else if (auto r = params.find("resource"); r != params.end() && !r->second.empty()) {
    std::string resource = r->second;
    if (!resource.starts_with("https://")) return std::nullopt;
    const size_t at = path_at(resource);
    if (at != std::string::npos && resource.substr(at) != "/") return std::nullopt;
    if (at != std::string::npos) resource.resize(at);
    out.scope = resource + "/.default";
  }
  if (!out.scope.starts_with("https://") || out.scope.size() > 512 || path_at(out.scope) == 8) return std::nullopt;
  for (char c : out.scope) {
    if (c <= 0x20 || c >= 0x7f) return std::nullopt;
  }
  return out;
}

bool ChallengeResourceMatches(std::string_view vault_host, std::string_view scope) {
  if (!scope.starts_with("https://")) return false;
  std::string_view domain = scope.substr(8);
  domain = domain.substr(0, domain.find_first_of("/?#"));
  auto host_only = [](std::string_view h) {
    return AsciiLower(h.substr(0, h.rfind(':') == std::string_view::npos || h.find(']') != std::string_view::npos
                                      ? h.size()
                                      : h.rfind(':')));
  };
  const std::string host = host_only(vault_host), dom = host_only(domain);
  if (dom.empty() || dom.find('@') != std::string::npos) return false;
  return host.size() > dom.size() + 1 && host.ends_with("." + dom);
}

std::unique_ptr<RequestAuth> NewEntraAuth(std::string vault_host, bool verify_challenge_resource,
                                          std::shared_ptr<EntraCredential> credential, std::string tenant_id) {
  return std::make_unique<EntraAuth>(std::move(vault_host), verify_challenge_resource, std::move(credential),
                                     std::move(tenant_id));
}

}  // namespace dyad
