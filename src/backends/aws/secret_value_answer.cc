#include "backends/aws/secret_value_answer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>

#include "core/encoding.h"
#include "core/secret_bytes.h"

namespace dyad {
namespace {

constexpr int kMaxDepth = 32;
// A number below 10^300 is a finite double (the largest is 1.8e308): read
// in one pass without a range check.
constexpr size_t kMaxDecimalDigits = 300;
constexpr long long kExponentClamp = 1'000'000;  // an exponent's digits counted without overflow

// The bytes a string holds as they are: printable ASCII but '"' and '\\'.
constexpr auto kPlainAscii = [] {
  std::array<bool, 256> plain{};
  for (int c = 0x20; c < 0x80; ++c) plain[c] = c != '"' && c != '\\';
  return plain;
}();

Error NotAnObject() {
  return MakeError(ErrorCode::kUnavailable, "GetSecretValue: the answer is not a JSON object");
}

// One pass over the text; every method returns false to leave the text to
// the general parser (an error, or something it does not handle itself).
class Scanner {
 public:
  explicit Scanner(std::string_view t) : t_(t) {}

  bool Document(SecretValueAnswer& out) {
    SkipSpace();
    if (!Eat('{')) return false;
    SkipSpace();
    if (!Eat('}')) {
      bool seen_value = false, seen_version = false;
      while (true) {
        if (!String(&key_)) return false;
        SkipSpace();
        if (!Eat(':')) return false;
        SkipSpace();
        if (key_ == "SecretString") {
          if (seen_value) return false;  // the general parser keeps the last one
          seen_value = true;
          if (Peek() == '"') {
            std::string& value = out.secret_string.emplace();
            value.reserve(t_.size() - i_);  // never grown: no unwiped copy left in freed memory
            if (!String(&value)) return false;
          } else if (!Value(1)) {
            return false;
          }
        } else if (key_ == "VersionId") {
          if (seen_version) return false;
          seen_version = true;
          if (Peek() == '"' ? !String(&out.version_id) : !Value(1)) return false;
        } else if (!Value(1)) {
          return false;
        }
        SkipSpace();
        if (Eat(',')) {
          SkipSpace();
          continue;
        }
        if (!Eat('}')) return false;
        break;
      }
    }
    SkipSpace();
    return i_ == t_.size();
  }

 private:
  char Peek() const { return i_ < t_.size() ? t_[i_] : '\0'; }
  bool Eat(char c) {
    if (i_ < t_.size() && t_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  void SkipSpace() {
    while (i_ < t_.size() && (t_[i_] == ' ' || t_[i_] == '\t' || t_[i_] == '\n' || t_[i_] == '\r')) ++i_;
  }

  bool Value(int depth) {
    switch (Peek()) {
      case '"': return String(nullptr);
      case '{': return Container(depth + 1, '}');
      case '[': return Container(depth + 1, ']');
      case 't': return Word("true");
      case 'f': return Word("false");
      case 'n': return Word("null");
      default: return Number();
    }
  }

  bool Word(std::string_view w) {
    if (t_.substr(i_, w.size()) != w) return false;
    i_ += w.size();
    return true;
  }

  // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? (AWS writes its dates
  // as 1.523477145713E9), not converted: no value is used. The general
  // parser refuses a number whose double overflows, so one that might (more
  // than kMaxDecimalDigits whole digits once the exponent is counted) is
  // left to it.
  bool Number() {
    Eat('-');
    auto digits = [&] {
      const size_t d = i_;
      while (i_ < t_.size() && t_[i_] >= '0' && t_[i_] <= '9') ++i_;
      return i_ - d;
    };
    const size_t first = i_;
    const size_t whole = digits();
    if (whole == 0 || (whole > 1 && t_[first] == '0')) return false;
    if (Eat('.') && digits() == 0) return false;
    long long exponent = 0;
    if (Eat('e') || Eat('E')) {
      const bool negative = Eat('-');
      if (!negative) Eat('+');
      const size_t e = i_;
      if (digits() == 0) return false;
      for (size_t k = e; k < i_; ++k) exponent = std::min(exponent * 10 + (t_[k] - '0'), kExponentClamp);
      if (negative) exponent = -exponent;
    }
    // The value is below 10^(whole + exponent).
    return whole <= kMaxDecimalDigits &&
           static_cast<long long>(whole) + exponent <= static_cast<long long>(kMaxDecimalDigits);
  }

  // At '[' or '{': skips the array or object, whose closing character is
  // `close` (an object's members are "key": value, an array's value).
  bool Container(int depth, char close) {
    if (depth > kMaxDepth) return false;
    ++i_;  // '[' or '{'
    SkipSpace();
    if (Eat(close)) return true;
    while (true) {
      if (close == '}') {
        if (!String(nullptr)) return false;
        SkipSpace();
        if (!Eat(':')) return false;
        SkipSpace();
      }
      if (!Value(depth)) return false;
      SkipSpace();
      if (Eat(close)) return true;
      if (!Eat(',')) return false;
      SkipSpace();
    }
  }

  bool Hex4(uint32_t& cp) {
    if (t_.size() - i_ < 4) return false;
    cp = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = t_[i_++];
      const int v = c >= '0' && c <= '9'   ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                           : -1;
      if (v < 0) return false;
      cp = cp << 4 | static_cast<uint32_t>(v);
    }
    return true;
  }

  static void AppendUtf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | cp >> 6);
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | cp >> 12);
      out += static_cast<char>(0x80 | (cp >> 6 & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | cp >> 18);
      out += static_cast<char>(0x80 | (cp >> 12 & 0x3F));
      out += static_cast<char>(0x80 | (cp >> 6 & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  // At '"': the string, decoded into `out` (cleared first) when given.
  bool String(std::string* out) {
    if (!Eat('"')) return false;
    if (out) out->clear();
    while (true) {
      const size_t run = i_;
      while (i_ < t_.size()) {
        while (i_ < t_.size() && kPlainAscii[static_cast<unsigned char>(t_[i_])]) ++i_;
        if (i_ == t_.size()) break;
        const auto c = static_cast<unsigned char>(t_[i_]);
        if (c < 0x80) break;  // '"', '\\' or a control character
        // A multi-byte sequence, by its lead byte's length, checked whole.
        const size_t len = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (len == 0 || t_.size() - i_ < len || !IsValidUtf8(t_.substr(i_, len))) return false;
        i_ += len;
      }
      if (out) out->append(t_.data() + run, i_ - run);
      if (i_ == t_.size() || static_cast<unsigned char>(t_[i_]) < 0x20) return false;
      if (t_[i_++] == '"') return true;
      if (i_ == t_.size()) return false;
      const char e = t_[i_++];
      char plain_escape = 0;
      switch (e) {
        case '"': plain_escape = '"'; break;
        case '\\': plain_escape = '\\'; break;
        case '/': plain_escape = '/'; break;
        case 'b': plain_escape = '\b'; break;
        case 'f': plain_escape = '\f'; break;
        case 'n': plain_escape = '\n'; break;
        case 'r': plain_escape = '\r'; break;
        case 't': plain_escape = '\t'; break;
        case 'u': {
          uint32_t cp;
          if (!Hex4(cp)) return false;
          if (cp >= 0xDC00 && cp <= 0xDFFF) return false;  // a low surrogate first
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            uint32_t low;
            if (!Eat('\\') || !Eat('u') || !Hex4(low) || low < 0xDC00 || low > 0xDFFF) return false;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          if (out) AppendUtf8(*out, cp);
          continue;
        }
        default: return false;
      }
      if (out) *out += plain_escape;
    }
  }

  const std::string_view t_;
  size_t i_ = 0;
  std::string key_;
};

}  // namespace

std::optional<SecretValueAnswer> ScanSecretValueAnswerForTesting(std::string_view text) {
  std::optional<SecretValueAnswer> out(std::in_place);
  if (!Scanner(text).Document(*out)) {
    if (out->secret_string) Cleanse(*out->secret_string);
    return std::nullopt;
  }
  return out;
}

Result<SecretValueAnswer> ParseSecretValueAnswerGeneralForTesting(std::string_view text) {
  auto j = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
  if (!j.is_object()) return NotAnObject();
  SecretValueAnswer out;
  if (auto it = j.find("SecretString"); it != j.end() && it->is_string()) {
    out.secret_string = it->get<std::string>();
    Cleanse(it->get_ref<std::string&>());
  }
  if (auto it = j.find("VersionId"); it != j.end() && it->is_string()) out.version_id = it->get<std::string>();
  return out;
}

Result<SecretValueAnswer> ParseSecretValueAnswer(std::string_view text) {
  SecretValueAnswer fast;
  if (Scanner(text).Document(fast)) return fast;
  if (fast.secret_string) Cleanse(*fast.secret_string);
  return ParseSecretValueAnswerGeneralForTesting(text);
}

}  // namespace dyad
