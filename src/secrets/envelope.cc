#include "secrets/envelope.h"

#include <array>
#include <boost/json.hpp>
#include <charconv>
#include <cstring>

#include "core/encoding.h"

// Two parsers, one set of checks. The document this build writes (no
// whitespace, no escapes, known keys once each, non-negative integers) is
// scanned in place by ScanCanonical, which declines anything else; whatever
// it declines goes through Boost.JSON as before. Both fill the same Fields
// table, and FromFields applies every check and names the field at fault, so
// an envelope opens, or fails with the same message, whichever path read it
// (fuzz/envelope_fuzz.cc checks exactly that on every input).
namespace dyad {
namespace json = boost::json;
namespace {

enum FieldIndex { kV, kKms, kKid, kKver, kCv, kDek, kIv, kCt, kCtx, kFieldCount };
constexpr std::array<std::string_view, kFieldCount> kNames = {"v", "kms", "kid", "kver", "cv",
                                                               "dek", "iv", "ct", "ctx"};

// One member as found in the document; `str` points into the input (or into
// the Boost document, which outlives FromFields).
struct Field {
  enum Kind : uint8_t { kMissing, kString, kInt, kOther } kind = kMissing;
  std::string_view str;
  int64_t num = 0;
};
using Fields = std::array<Field, kFieldCount>;

// Base64 decoding as core/encoding.h's Base64Decode does it (padded, the
// standard alphabet, no whitespace; trailing bits not checked), written into
// `out` without an intermediate string.
using Decoder = bool (*)(std::string_view text, std::string& out);

constexpr char kB64Alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr std::array<uint8_t, 256> kB64Value = [] {
  std::array<uint8_t, 256> t{};
  for (auto& v : t) v = 64;
  for (size_t i = 0; i < 64; ++i) t[static_cast<unsigned char>(kB64Alphabet[i])] = static_cast<uint8_t>(i);
  return t;
}();

// kB64Shifted[k][c]: character c's six bits in place for position k of a
// group of four, or kB64Bad for a character outside the alphabet.
constexpr uint32_t kB64Bad = 0x80000000u;
constexpr auto kB64Shifted = [] {
  std::array<std::array<uint32_t, 256>, 4> t{};
  for (size_t k = 0; k < 4; ++k) {
    for (size_t c = 0; c < 256; ++c) t[k][c] = kB64Value[c] == 64 ? kB64Bad : uint32_t{kB64Value[c]} << (18 - 6 * k);
  }
  return t;
}();

bool FastBase64Decode(std::string_view text, std::string& out) {
  const size_t n = text.size();
  if (n % 4 != 0) return false;
  if (n == 0) {
    out.clear();
    return true;
  }
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t pad = p[n - 1] != '=' ? 0 : p[n - 2] != '=' ? 1 : 2;
  out.resize(3 * n / 4 - pad);
  auto* o = reinterpret_cast<unsigned char*>(out.data());
  uint32_t bad = 0;
  size_t i = 0;
  // Every group but the last is followed by at least one more output byte,
  // so each writes four bytes (the fourth is overwritten by the next group).
  for (; i + 4 < n; i += 4, o += 3) {
    const uint32_t v = kB64Shifted[0][p[i]] | kB64Shifted[1][p[i + 1]] | kB64Shifted[2][p[i + 2]] |
                       kB64Shifted[3][p[i + 3]];
    bad |= v;
    const uint32_t be = __builtin_bswap32(v << 8);
    std::memcpy(o, &be, 4);
  }
  const uint32_t v = kB64Shifted[0][p[i]] | kB64Shifted[1][p[i + 1]] | (pad >= 2 ? 0 : kB64Shifted[2][p[i + 2]]) |
                     (pad >= 1 ? 0 : kB64Shifted[3][p[i + 3]]);
  bad |= v;
  if (bad & kB64Bad) return false;
  o[0] = static_cast<unsigned char>(v >> 16);
  if (pad < 2) o[1] = static_cast<unsigned char>(v >> 8);
  if (pad < 1) o[2] = static_cast<unsigned char>(v);
  return true;
}

bool CoreBase64Decode(std::string_view text, std::string& out) {
  auto raw = Base64Decode(text);
  if (!raw) return false;
  out = std::move(*raw);
  return true;
}

// Base64 (standard alphabet, padded) appended in place: one table lookup
// per 12 bits, two characters at a time.
constexpr auto kB64Pairs = [] {
  std::array<std::array<char, 2>, 4096> t{};
  for (size_t i = 0; i < t.size(); ++i) t[i] = {kB64Alphabet[i >> 6], kB64Alphabet[i & 63]};
  return t;
}();

void AppendBase64(std::string& out, std::string_view bytes) {
  const size_t at = out.size();
  out.resize(at + 4 * ((bytes.size() + 2) / 3));
  char* o = out.data() + at;
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 0;
  for (; i + 3 <= n; i += 3, o += 4) {
    const uint32_t v = uint32_t{p[i]} << 16 | uint32_t{p[i + 1]} << 8 | p[i + 2];
    std::memcpy(o, kB64Pairs[v >> 12].data(), 2);
    std::memcpy(o + 2, kB64Pairs[v & 4095].data(), 2);
  }
  if (size_t rest = n - i; rest > 0) {
    const uint32_t v = uint32_t{p[i]} << 16 | (rest > 1 ? uint32_t{p[i + 1]} << 8 : 0);
    o[0] = kB64Alphabet[v >> 18];
    o[1] = kB64Alphabet[(v >> 12) & 63];
    o[2] = rest > 1 ? kB64Alphabet[(v >> 6) & 63] : '=';
    o[3] = '=';
  }
}

template <typename Int>
void AppendInt(std::string& out, Int n) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, n);
  out.append(buf, r.ptr);
}

// Printable ASCII other than the backslash: a JSON string body that means
// itself. Branch-free, so the compiler vectorises it.
bool PlainAscii(std::string_view s) {
  unsigned bad = 0;
  for (unsigned char c : s) bad |= static_cast<unsigned>(static_cast<unsigned char>(c - 0x20) > 0x5e) | (c == '\\');
  return bad == 0;
}

Error Bad(std::string_view field, std::string_view what) {
  return MakeError(ErrorCode::kDataLoss, "envelope: field \"" + std::string(field) + "\" " + std::string(what));
}

Result<std::string_view> StringField(const Fields& f, FieldIndex i, size_t max_len) {
  const Field& v = f[i];
  if (v.kind == Field::kMissing) return Bad(kNames[i], "is missing");
  if (v.kind != Field::kString) return Bad(kNames[i], "must be a string");
  if (v.str.empty() || v.str.size() > max_len) return Bad(kNames[i], "has a bad length");
  return v.str;
}

Result<int64_t> IntField(const Fields& f, FieldIndex i, int64_t min, int64_t max) {
  const Field& v = f[i];
  if (v.kind == Field::kMissing) return Bad(kNames[i], "is missing");
  if (v.kind != Field::kInt) return Bad(kNames[i], "must be an integer");
  if (v.num < min || v.num > max) return Bad(kNames[i], "is out of range");
  return v.num;
}

Status Base64Field(const Fields& f, FieldIndex i, size_t min_raw, size_t max_raw, Decoder decode, std::string& out) {
  DYAD_ASSIGN_OR_RETURN(std::string_view text, StringField(f, i, 4 * (max_raw / 3 + 1)));
  if (!decode(text, out)) return Bad(kNames[i], "is not valid base64");
  if (out.size() < min_raw || out.size() > max_raw) return Bad(kNames[i], "has a bad decoded length");
  return OkStatus();
}

// Every check, in the order the fields are named in the error. Sets every
// member of `e`, reusing its buffers.
Status FromFields(const Fields& f, Decoder decode, Envelope& e) {
  DYAD_ASSIGN_OR_RETURN(int64_t v, IntField(f, kV, 0, INT32_MAX));
  if (v != 1) return Bad("v", "is " + std::to_string(v) + "; this build reads format 1");
  e.format_version = 1;
  DYAD_ASSIGN_OR_RETURN(std::string_view kms, StringField(f, kKms, 32));
  e.kms = kms;
  DYAD_ASSIGN_OR_RETURN(std::string_view kid, StringField(f, kKid, 2048));
  e.key_id = kid;
  DYAD_ASSIGN_OR_RETURN(int64_t kver, IntField(f, kKver, 1, UINT32_MAX));
  e.key_version = static_cast<uint32_t>(kver);
  DYAD_ASSIGN_OR_RETURN(e.credentials_version, IntField(f, kCv, 0, INT64_MAX));
  DYAD_RETURN_IF_ERROR(Base64Field(f, kDek, 1, kMaxWrappedKeyBytes, decode, e.wrapped_dek));
  DYAD_RETURN_IF_ERROR(Base64Field(f, kIv, 12, 12, decode, e.nonce));
  DYAD_RETURN_IF_ERROR(Base64Field(f, kCt, 16, kMaxEnvelopeBytes, decode, e.ciphertext));
  e.context_bound = false;
  if (f[kCtx].kind != Field::kMissing) {
    DYAD_ASSIGN_OR_RETURN(int64_t ctx, IntField(f, kCtx, 1, 1));
    e.context_bound = ctx == 1;
  }
  return OkStatus();
}

// The canonical document, in place. Returns false, having decided nothing,
// for anything else: whitespace, escapes or bytes outside printable ASCII
// in a string, an unknown or repeated key, a negative, fractional or long
// number, another kind of value, text after the closing brace.
bool ScanCanonical(std::string_view t, Fields& f) {
  const size_t n = t.size();
  if (n < 2 || t[0] != '{') return false;
  size_t i = 1;
  while (true) {
    if (i >= n || t[i] != '"') return false;
    const size_t k0 = ++i;
    while (i < n && t[i] >= 'a' && t[i] <= 'z') ++i;
    if (i + 1 >= n || t[i] != '"' || t[i + 1] != ':') return false;
    const std::string_view key = t.substr(k0, i - k0);
    i += 2;
    size_t idx = 0;
    while (idx < kFieldCount && kNames[idx] != key) ++idx;
    if (idx == kFieldCount || f[idx].kind != Field::kMissing) return false;
    Field& field = f[idx];
    if (i >= n) return false;
    if (t[i] == '"') {
      const size_t s0 = ++i;
      const void* end = std::memchr(t.data() + s0, '"', n - s0);
      if (!end) return false;
      i = static_cast<size_t>(static_cast<const char*>(end) - t.data());
      if (!PlainAscii(t.substr(s0, i - s0))) return false;
      field.kind = Field::kString;
      field.str = t.substr(s0, i - s0);
      ++i;
    } else {
      const size_t d0 = i;
      int64_t num = 0;
      while (i < n && t[i] >= '0' && t[i] <= '9') {
        if (i - d0 == 18) return false;  // more digits than an int64 surely holds: the general parser decides
        num = num * 10 + (t[i++] - '0');
      }
      const size_t digits = i - d0;
      if (digits == 0 || (digits > 1 && t[d0] == '0')) return false;
      field.kind = Field::kInt;
      field.num = num;
    }
    if (i >= n) return false;
    if (t[i] == ',') {
      ++i;
      continue;
    }
    return t[i] == '}' && i + 1 == n;
  }
}

Status ParseWithBoost(std::string_view text, Envelope& e) {
  unsigned char buf[4096];
  json::monotonic_resource mr(buf, sizeof buf);
  json::parse_options opt;
  opt.max_depth = 2;
  json::error_code ec;
  json::value doc = json::parse(json::string_view(text.data(), text.size()), ec, &mr, opt);
  if (ec) return MakeError(ErrorCode::kDataLoss, "envelope: not valid JSON (" + ec.message() + ")");
  auto* o = doc.if_object();
  if (!o) return MakeError(ErrorCode::kDataLoss, "envelope: not a JSON object");
  for (const auto& kv : *o) {
    bool known = false;
    for (auto k : kNames) known = known || kv.key() == k;
    if (!known) return Bad(std::string_view(kv.key().data(), std::min<size_t>(kv.key().size(), 32)), "is unknown");
  }
  Fields f;
  for (size_t i = 0; i < kFieldCount; ++i) {
    auto* v = o->if_contains(kNames[i]);
    if (!v) continue;
    if (auto* s = v->if_string()) {
      f[i].kind = Field::kString;
      f[i].str = std::string_view(*s);
    } else if (auto* n = v->if_int64()) {
      f[i].kind = Field::kInt;
      f[i].num = *n;
    } else if (auto* u = v->if_uint64(); u && *u <= static_cast<uint64_t>(INT64_MAX)) {
      f[i].kind = Field::kInt;
      f[i].num = static_cast<int64_t>(*u);
    } else {
      f[i].kind = Field::kOther;
    }
  }
  return FromFields(f, CoreBase64Decode, e);
}

Status CheckSize(std::string_view text) {
  if (text.size() > kMaxEnvelopeBytes) {
    return MakeError(ErrorCode::kDataLoss, "envelope: larger than " + std::to_string(kMaxEnvelopeBytes) + " bytes");
  }
  return OkStatus();
}

// A JSON string literal; plain identifiers (the usual case) skip the escaper.
void AppendJsonString(std::string& out, std::string_view s) {
  if (!PlainAscii(s) || s.find('"') != std::string_view::npos) {
    out += json::serialize(json::string_view(s.data(), s.size()));
    return;
  }
  out += '"';
  out += s;
  out += '"';
}

}  // namespace

std::string SerializeEnvelope(const Envelope& e) {
  std::string out;
  out.reserve(96 + e.kms.size() + e.key_id.size() +
              4 * ((e.wrapped_dek.size() + 2) / 3 + (e.nonce.size() + 2) / 3 + (e.ciphertext.size() + 2) / 3));
  out += "{\"v\":";
  AppendInt(out, e.format_version);
  out += ",\"kms\":";
  AppendJsonString(out, e.kms);
  out += ",\"kid\":";
  AppendJsonString(out, e.key_id);
  out += ",\"kver\":";
  AppendInt(out, e.key_version);
  out += ",\"cv\":";
  AppendInt(out, e.credentials_version);
  out += ",\"dek\":\"";
  AppendBase64(out, e.wrapped_dek);
  out += "\",\"iv\":\"";
  AppendBase64(out, e.nonce);
  out += "\",\"ct\":\"";
  AppendBase64(out, e.ciphertext);
  out += '"';
  if (e.context_bound) out += ",\"ctx\":1";
  out += '}';
  return out;
}

Status ParseEnvelopeInto(std::string_view text, Envelope& e) {
  DYAD_RETURN_IF_ERROR(CheckSize(text));
  Fields f;
  // A failed check on the fast path is answered by the general one, so that
  // the message is the one it has always been.
  if (ScanCanonical(text, f) && FromFields(f, FastBase64Decode, e).ok()) return OkStatus();
  return ParseWithBoost(text, e);
}

Result<Envelope> ParseEnvelope(std::string_view text) {
  Envelope e;
  DYAD_RETURN_IF_ERROR(ParseEnvelopeInto(text, e));
  return e;
}

Result<Envelope> ParseEnvelopeGeneralForTesting(std::string_view text) {
  DYAD_RETURN_IF_ERROR(CheckSize(text));
  Envelope e;
  DYAD_RETURN_IF_ERROR(ParseWithBoost(text, e));
  return e;
}

std::string EnvelopeAad(std::string_view secret_name, int64_t credentials_version) {
  std::string aad;
  AppendEnvelopeAad(aad, secret_name, credentials_version);
  return aad;
}

void AppendEnvelopeAad(std::string& aad, std::string_view secret_name, int64_t credentials_version) {
  static constexpr std::string_view kLabel = "dyad-envelope-v1";
  aad.reserve(aad.size() + kLabel.size() + 4 + secret_name.size() + 8);
  aad.append(kLabel);
  uint32_t n = static_cast<uint32_t>(secret_name.size());
  for (int i = 3; i >= 0; --i) aad.push_back(static_cast<char>(n >> (8 * i)));
  aad.append(secret_name);
  auto cv = static_cast<uint64_t>(credentials_version);
  for (int i = 7; i >= 0; --i) aad.push_back(static_cast<char>(cv >> (8 * i)));
}

}  // namespace dyad
