// libFuzzer: SigV4 canonicalisation of any path and query yields only
// unreserved characters and percent escapes (plus '/', '=' and '&' where
// they belong), and signing any request does not crash.
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "backends/aws/sigv4.h"

namespace {
bool Allowed(char c, std::string_view extra) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == '~' || c == '%' ||
         extra.find(c) != std::string_view::npos;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto split = in.find('?');
  std::string_view path = in.substr(0, split);
  std::string_view query = split == std::string_view::npos ? std::string_view() : in.substr(split + 1);
  for (bool normalize : {true, false}) {
    std::string uri = dyad::SigV4CanonicalUri(path, normalize);
    if (uri.empty() || uri[0] != '/') std::abort();
    for (char c : uri) {
      if (!Allowed(c, "/")) std::abort();
    }
  }
  for (char c : dyad::SigV4CanonicalQuery(query)) {
    if (!Allowed(c, "=&")) std::abort();
  }
  static dyad::SigV4Signer signer;
  dyad::AwsCredentials creds{"AKIDEXAMPLE", dyad::SecretBytes(std::string("secret")), ""};
  dyad::SigningRequest req{"GET", std::string(path), std::string(query), {{"Host", std::string(query)}}, std::string(in)};
  (void)signer.Sign(req, creds, {"us-east-1", "kms", std::chrono::system_clock::time_point(), true, true});
  return 0;
}
