// Hex and base64 (standard alphabet, padded) text encodings, and SHA-256.
// Pure functions; thread-safe. Decoders reject malformed input.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace dyad {

std::string HexEncode(std::string_view bytes);
std::optional<std::string> HexDecode(std::string_view hex);

std::string Base64Encode(std::string_view bytes);
std::optional<std::string> Base64Decode(std::string_view text);

// Without leading and trailing whitespace (isspace).
std::string_view TrimSpace(std::string_view s);
// Without leading and trailing spaces and tabs: HTTP's optional whitespace
// (RFC 9110 §5.6.3), where TrimSpace would also drop \v \f \r \n.
std::string_view TrimOws(std::string_view s);
// A-Z as a-z, every other byte as it is (whatever the C locale says): host
// names, schemes, header names, keywords.
std::string AsciiLower(std::string_view s);
// A header name lowered into a buffer of its own, without an allocation, for
// comparisons with lower-case names (==): the hot path's header filters. A
// name longer than the buffer keeps only its first kSize bytes, lowered, and
// full() says so (it equals no name of kSize bytes or fewer).
class LowerName {
 public:
  static constexpr size_t kSize = 32;
  explicit LowerName(std::string_view name);
  std::string_view view() const { return {buf_, size_}; }
  bool full() const { return full_; }

 private:
  char buf_[kSize];
  size_t size_;
  bool full_;
};
// Calls f(element) for each element of an RFC 9110 §5.6.1 list (a
// Connection or Transfer-Encoding value): split at commas, spaces and tabs
// around each trimmed, empty elements skipped. Nothing is allocated.
template <typename F>
void ForEachListElement(std::string_view list, F&& f) {
  while (!list.empty()) {
    const size_t comma = list.find(',');
    const std::string_view element = TrimOws(list.substr(0, comma));
    if (!element.empty()) f(element);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
}
// Whether a Content-Type names the media type `type` (lower case): its part
// before any parameter, without surrounding whitespace, compared without case.
bool MediaTypeIs(std::string_view content_type, std::string_view type);
// An RFC 9110 token (a header name, a method): one or more of A-Z a-z 0-9
// and !#$%&'*+-.^_`|~.
bool IsHttpToken(std::string_view s);
// A header field value that cannot end its header early or start another:
// no control character but HTAB (obs-text, 0x80 and above, is allowed).
bool IsHttpFieldValue(std::string_view s);

// Decodes %XX escapes (a malformed escape stays as it is); '+' becomes a
// space only when asked (form encoding).
std::string PercentDecode(std::string_view s, bool plus_as_space);
// RFC 3986: every byte but A-Z a-z 0-9 - _ . ~ (and '/' if kept) as %XX.
std::string PercentEncode(std::string_view s, bool keep_slash);

// SHA-256 digest, raw 32 bytes.
std::string Sha256(std::string_view data);

// Well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing
// above U+10FFFF): what a JSON string or a cloud API's text field takes.
bool IsValidUtf8(std::string_view s);

// Equality in time that depends only on the lengths.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

}  // namespace dyad
