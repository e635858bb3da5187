// Base64url without padding (RFC 4648 §5), as Key Vault writes key material
// and wrapped keys (JSON Web Key). Pure functions over core/encoding.h's
// standard base64; the decoder takes only the url-safe alphabet, no padding.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "core/encoding.h"
#include "core/secret_bytes.h"

namespace dyad {

inline std::string Base64UrlEncode(std::string_view bytes) {
  std::string out = Base64Encode(bytes);
  while (!out.empty() && out.back() == '=') out.pop_back();
  for (char& c : out) {
    if (c == '+') c = '-';
    else if (c == '/') c = '_';
  }
  return out;
}

inline std::optional<std::string> Base64UrlDecode(std::string_view text) {
  if (text.size() % 4 == 1) return std::nullopt;
  std::string standard(text);
  for (char& c : standard) {
    if (c == '-') c = '+';
    else if (c == '_') c = '/';
    else if (c == '+' || c == '/' || c == '=') {
      Cleanse(standard);
      return std::nullopt;
    }
  }
  standard.append((4 - standard.size() % 4) % 4, '=');
  auto out = Base64Decode(standard);
  Cleanse(standard);
  return out;
}

}  // namespace dyad
