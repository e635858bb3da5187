// The low-level SHA-256 interface (deprecated in OpenSSL 3, still there):
// no algorithm fetch per call, and a state that can be copied, so HMAC's
// padded key blocks are hashed once per signing key.
#define OPENSSL_SUPPRESS_DEPRECATED
#include "backends/aws/sigv4.h"

#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cstring>
#include <ctime>

#include "core/encoding.h"

namespace dyad {
namespace {

std::string Hmac(std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

// HMAC-SHA256 with its key's padded blocks already hashed (RFC 2104).
struct HmacState {
  SHA256_CTX inner, outer;
};

HmacState HmacStateOf(std::string_view key) {  // key: at most one block (a signing key is 32 bytes)
  unsigned char pad[SHA256_CBLOCK] = {};
  HmacState s;
  for (auto [ctx, x] : {std::pair{&s.inner, 0x36}, std::pair{&s.outer, 0x5c}}) {
    for (size_t i = 0; i < sizeof pad; ++i) pad[i] = static_cast<unsigned char>((i < key.size() ? key[i] : 0) ^ x);
    SHA256_Init(ctx);
    SHA256_Update(ctx, pad, sizeof pad);
  }
  OPENSSL_cleanse(pad, sizeof pad);
  return s;
}

void HmacFinish(const HmacState& key, std::string_view data, unsigned char out[SHA256_DIGEST_LENGTH]) {
  SHA256_CTX c = key.inner;
  SHA256_Update(&c, data.data(), data.size());
  unsigned char inner[SHA256_DIGEST_LENGTH];
  SHA256_Final(inner, &c);
  c = key.outer;
  SHA256_Update(&c, inner, sizeof inner);
  SHA256_Final(out, &c);
  OPENSSL_cleanse(&c, sizeof c);
}

void AppendHex(std::string& out, const unsigned char* bytes, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  const size_t at = out.size();
  out.resize(at + 2 * n);
  for (size_t i = 0; i < n; ++i) {
    out[at + 2 * i] = kDigits[bytes[i] >> 4];
    out[at + 2 * i + 1] = kDigits[bytes[i] & 0xf];
  }
}

void AppendSha256Hex(std::string& out, std::string_view data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256_CTX c;
  SHA256_Init(&c);
  SHA256_Update(&c, data.data(), data.size());
  SHA256_Final(digest, &c);
  AppendHex(out, digest, sizeof digest);
}

// The value with leading and trailing blanks removed and inner runs of them
// made one space, appended to `out`.
void AppendTrimmed(std::string& out, std::string_view v) {
  bool space = false, any = false;
  for (char c : v) {
    if (c == ' ' || c == '\t') {
      space = any;
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    any = true;
    out.push_back(c);
  }
}

// YYYYMMDDTHHMMSSZ
std::string AmzDate(std::chrono::system_clock::time_point t) {
  std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

}  // namespace

std::string SigV4CanonicalUri(std::string_view path, bool normalize) {
  if (path.empty()) return "/";
  if (!normalize) {  // always absolute
    std::string out = path.front() == '/' ? "" : "/";
    return out.append(PercentEncode(path, true));
  }
  std::vector<std::string_view> stack;
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    std::string_view seg = path.substr(start, slash - start);
    if (seg == "..") {
      if (!stack.empty()) stack.pop_back();
    } else if (!seg.empty() && seg != ".") {
      stack.push_back(seg);
    }
    start = slash + 1;
  }
  std::string out = "/";
  for (size_t i = 0; i < stack.size(); ++i) {
    if (i) out += '/';
    out += PercentEncode(stack[i], false);
  }
  if (!stack.empty() && path.back() == '/') out += '/';
  return out;
}

std::string SigV4CanonicalQuery(std::string_view query) {
  std::vector<std::pair<std::string, std::string>> params;
  size_t start = 0;
  while (start < query.size()) {
    size_t amp = query.find('&', start);
    if (amp == std::string_view::npos) amp = query.size();
    std::string_view pair = query.substr(start, amp - start);
    if (!pair.empty()) {
      size_t eq = pair.find('=');
      std::string key = PercentEncode(PercentDecode(pair.substr(0, eq), false), false);
      std::string value = eq == std::string_view::npos ? "" : PercentEncode(PercentDecode(pair.substr(eq + 1), false), false);
      params.emplace_back(std::move(key), std::move(value));
    }
    start = amp + 1;
  }
  std::sort(params.begin(), params.end());
  std::string out;
  for (const auto& [k, v] : params) out += (out.empty() ? "" : "&") + k + "=" + v;
  return out;
}

void SigV4Signer::SigningKey(const AwsCredentials& credentials, std::string_view date, const SigningParams& params,
                             unsigned char* state) {
  static_assert(sizeof(HmacState) == 2 * sizeof(SHA256_CTX));
  // The secret is part of the key's identity (one corrected or re-issued
  // under the same id signs at once with the new one); the cache holds its
  // digest, not the secret.
  unsigned char digest[SHA256_DIGEST_LENGTH];
  const std::string_view secret = credentials.secret_access_key.view();
  SHA256_CTX c;  // not SHA256(): in OpenSSL 3 that fetches the algorithm on every call
  SHA256_Init(&c);
  SHA256_Update(&c, secret.data(), secret.size());
  SHA256_Final(digest, &c);
  const std::string_view digest_view(reinterpret_cast<const char*>(digest), sizeof digest);
  MutexLock lock(&mu_);
  for (const CachedKey& k : keys_) {
    if (k.date == date && k.access_key_id == credentials.access_key_id && k.region == params.region &&
        k.service == params.service && ConstantTimeEquals(k.secret_digest.view(), digest_view)) {
      OPENSSL_cleanse(digest, sizeof digest);
      std::memcpy(state, k.hmac_state.view().data(), sizeof(HmacState));
      return;
    }
  }
  std::string k = "AWS4" + std::string(credentials.secret_access_key.view());
  std::string k_date = Hmac(k, date);
  Cleanse(k);
  std::string k_region = Hmac(k_date, params.region);
  std::string k_service = Hmac(k_region, params.service);
  std::string signing = Hmac(k_service, "aws4_request");
  Cleanse(k_date);
  Cleanse(k_region);
  Cleanse(k_service);
  HmacState derived = HmacStateOf(signing);
  Cleanse(signing);
  CachedKey entry{credentials.access_key_id, std::string(date), params.region, params.service,
                  SecretBytes(digest_view),
                  SecretBytes(std::string_view(reinterpret_cast<const char*>(&derived), sizeof derived))};
  std::memcpy(state, &derived, sizeof derived);
  OPENSSL_cleanse(&derived, sizeof derived);
  OPENSSL_cleanse(digest, sizeof digest);
  // A day's keys for a few scopes: the newest first, the oldest (an earlier day's) drops out.
  if (keys_.size() == kMaxCachedKeys) keys_.pop_back();
  keys_.insert(keys_.begin(), std::move(entry));
  derived_.fetch_add(1, std::memory_order_relaxed);
}

Result<SignedRequest> SigV4Signer::Sign(const SigningRequest& request, const AwsCredentials& credentials,
                                        const SigningParams& params) {
  return SignView(SigningView{request.method, request.path, request.query, request.headers, request.body}, credentials,
                  params);
}

Result<SignedRequest> SigV4Signer::SignView(const SigningView& request, const AwsCredentials& credentials,
                                            const SigningParams& params) {
  if (credentials.access_key_id.empty() || credentials.secret_access_key.empty()) {
    return MakeError(ErrorCode::kUnauthenticated, "AWS credentials are missing an access key id or secret key");
  }
  const std::string amz_date = AmzDate(params.time);
  const std::string_view date = std::string_view(amz_date).substr(0, 8);
  std::string payload_hash;
  AppendSha256Hex(payload_hash, request.body);
  SignedRequest out;
  out.headers.reserve(4);
  out.headers.emplace_back("X-Amz-Date", amz_date);
  if (!credentials.session_token.empty()) out.headers.emplace_back("X-Amz-Security-Token", credentials.session_token);
  if (params.sign_body) out.headers.emplace_back("X-Amz-Content-Sha256", payload_hash);

  // Lower-case names, trimmed values; sorted by name, a repeated name's
  // values joined with commas in the order given.
  struct Canonical {
    std::string name, value;
  };
  std::vector<Canonical> headers;
  headers.reserve(request.headers.size() + out.headers.size());
  auto add = [&](const std::string& name, const std::string& value) {
    Canonical& h = headers.emplace_back();
    h.name.resize(name.size());
    std::transform(name.begin(), name.end(), h.name.begin(),
                   [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; });
    AppendTrimmed(h.value, value);
  };
  for (const auto& [k, v] : request.headers) add(k, v);
  for (const auto& [k, v] : out.headers) add(k, v);
  std::stable_sort(headers.begin(), headers.end(),
                   [](const Canonical& a, const Canonical& b) { return a.name < b.name; });

  const std::string uri = SigV4CanonicalUri(request.path, params.normalize_path);
  const std::string query = SigV4CanonicalQuery(request.query);
  std::string signed_headers;
  std::string& canonical = out.canonical_request;
  size_t size = request.method.size() + uri.size() + query.size() + payload_hash.size() + 8;
  for (const Canonical& h : headers) size += 2 * h.name.size() + h.value.size() + 3;
  canonical.reserve(size);
  canonical.append(request.method).append(1, '\n').append(uri).append(1, '\n').append(query).append(1, '\n');
  for (size_t i = 0; i < headers.size(); ++i) {
    if (i > 0 && headers[i].name == headers[i - 1].name) {
      canonical.back() = ',';  // the previous value's line end
    } else {
      canonical.append(headers[i].name).append(1, ':');
      if (!signed_headers.empty()) signed_headers += ';';
      signed_headers += headers[i].name;
    }
    canonical.append(headers[i].value).append(1, '\n');
  }
  canonical.append(1, '\n').append(signed_headers).append(1, '\n').append(payload_hash);

  std::string scope;
  scope.reserve(date.size() + params.region.size() + params.service.size() + 16);
  scope.append(date).append(1, '/').append(params.region).append(1, '/').append(params.service).append("/aws4_request");
  std::string& to_sign = out.string_to_sign;
  to_sign.reserve(17 + amz_date.size() + scope.size() + 2 + 64 + 1);
  to_sign.append("AWS4-HMAC-SHA256\n").append(amz_date).append(1, '\n').append(scope).append(1, '\n');
  AppendSha256Hex(to_sign, canonical);

  unsigned char key[sizeof(HmacState)];
  SigningKey(credentials, date, params, key);
  HmacState state;
  std::memcpy(&state, key, sizeof state);
  OPENSSL_cleanse(key, sizeof key);
  unsigned char signature[SHA256_DIGEST_LENGTH];
  HmacFinish(state, to_sign, signature);
  OPENSSL_cleanse(&state, sizeof state);
  AppendHex(out.signature, signature, sizeof signature);

  std::string authorization;
  authorization.reserve(60 + credentials.access_key_id.size() + scope.size() + signed_headers.size() + 64);
  authorization.append("AWS4-HMAC-SHA256 Credential=")
      .append(credentials.access_key_id)
      .append(1, '/')
      .append(scope)
      .append(", SignedHeaders=")
      .append(signed_headers)
      .append(", Signature=")
      .append(out.signature);
  out.headers.emplace_back("Authorization", std::move(authorization));
  // The canonical values include x-amz-security-token's: wiped before the
  // vector frees them (the caller wipes out.canonical_request after use).
  for (Canonical& h : headers) Cleanse(h.value);
  return out;
}

}  // namespace dyad
