#include "backends/aws/sigv4.h"

#include <openssl/hmac.h>

#include <algorithm>
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

std::string Trimmed(std::string_view v) {
  std::string out;
  bool space = false;
  for (char c : v) {
    if (c == ' ' || c == '\t') {
      space = !out.empty();
      continue;
    }
    if (space) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  return out;
}

std::string Format(std::chrono::system_clock::time_point t, const char* fmt) {
  std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, fmt, &tm);
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

SecretBytes SigV4Signer::SigningKey(const AwsCredentials& credentials, const std::string& date,
                                    const SigningParams& params) {
  std::string cache_key = credentials.access_key_id + '\n' + date + '\n' + params.region + '\n' + params.service;
  MutexLock lock(&mu_);
  auto it = keys_.find(cache_key);
  if (it != keys_.end()) return it->second;
  std::string k = "AWS4" + std::string(credentials.secret_access_key.view());
  std::string k_date = Hmac(k, date);
  Cleanse(k);
  std::string k_region = Hmac(k_date, params.region);
  std::string k_service = Hmac(k_region, params.service);
  SecretBytes signing(Hmac(k_service, "aws4_request"));
  Cleanse(k_date);
  Cleanse(k_region);
  Cleanse(k_service);
  if (keys_.size() > 64) keys_.clear();  // a day's keys for a few scopes; old days drop out
  keys_.emplace(cache_key, signing);
  return signing;
}

Result<SignedRequest> SigV4Signer::Sign(const SigningRequest& request, const AwsCredentials& credentials,
                                        const SigningParams& params) {
  if (credentials.access_key_id.empty() || credentials.secret_access_key.empty()) {
    return MakeError(ErrorCode::kUnauthenticated, "AWS credentials are missing an access key id or secret key");
  }
  const std::string amz_date = Format(params.time, "%Y%m%dT%H%M%SZ");
  const std::string date = amz_date.substr(0, 8);
  const std::string payload_hash = HexEncode(Sha256(request.body));
  SignedRequest out;
  out.headers.emplace_back("X-Amz-Date", amz_date);
  if (!credentials.session_token.empty()) out.headers.emplace_back("X-Amz-Security-Token", credentials.session_token);
  if (params.sign_body) out.headers.emplace_back("X-Amz-Content-Sha256", payload_hash);

  std::map<std::string, std::string> headers;  // lower-case name → joined values
  auto add = [&](const std::string& name, const std::string& value) {
    std::string lower;
    for (char c : name) lower.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    auto [it, inserted] = headers.emplace(lower, Trimmed(value));
    if (!inserted) it->second.append(",").append(Trimmed(value));
  };
  for (const auto& [k, v] : request.headers) add(k, v);
  for (const auto& [k, v] : out.headers) add(k, v);

  std::string canonical_headers, signed_headers;
  for (const auto& [k, v] : headers) {
    canonical_headers += k + ":" + v + "\n";
    signed_headers += (signed_headers.empty() ? "" : ";") + k;
  }
  out.canonical_request = request.method + "\n" + SigV4CanonicalUri(request.path, params.normalize_path) + "\n" +
                          SigV4CanonicalQuery(request.query) + "\n" + canonical_headers + "\n" + signed_headers +
                          "\n" + payload_hash;
  const std::string scope = date + "/" + params.region + "/" + params.service + "/aws4_request";
  out.string_to_sign = "AWS4-HMAC-SHA256\n" + amz_date + "\n" + scope + "\n" + HexEncode(Sha256(out.canonical_request));
  SecretBytes key = SigningKey(credentials, date, params);
  out.signature = HexEncode(Hmac(key.view(), out.string_to_sign));
  out.headers.emplace_back("Authorization", "AWS4-HMAC-SHA256 Credential=" + credentials.access_key_id + "/" + scope +
                                                ", SignedHeaders=" + signed_headers + ", Signature=" + out.signature);
  return out;
}

}  // namespace dyad
