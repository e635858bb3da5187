#include "transport/upstream_address.h"

#include <cctype>

#include <arpa/inet.h>

#include <string>
#include <vector>


namespace dyad {
namespace {

constexpr std::array<uint8_t, 12> kMappedPrefix = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

// One part of an inet_aton address: decimal, 0-led octal or 0x-led hex.
std::optional<uint64_t> ParsePart(std::string_view s) {
  if (s.empty()) return std::nullopt;
  unsigned base = 10;
  if (s.size() > 1 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    base = 16;
    s.remove_prefix(2);
    if (s.empty()) return uint64_t{0};  // "0x" reads as 0, as inet_aton does
  } else if (s.size() > 1 && s[0] == '0') {
    base = 8;
    s.remove_prefix(1);
  }
  uint64_t v = 0;
  for (char c : s) {
    unsigned d;
    if (c >= '0' && c <= '9') {
      d = static_cast<unsigned>(c - '0');
    } else if (base == 16 && c >= 'a' && c <= 'f') {
      d = static_cast<unsigned>(c - 'a' + 10);
    } else if (base == 16 && c >= 'A' && c <= 'F') {
      d = static_cast<unsigned>(c - 'A' + 10);
    } else {
      return std::nullopt;
    }
    if (d >= base) return std::nullopt;
    v = v * base + d;
    if (v > 0xffffffffULL) return std::nullopt;
  }
  return v;
}

std::optional<uint32_t> ParseLooseIpv4(std::string_view s) {
  std::vector<uint64_t> parts;
  while (true) {
    size_t dot = s.find('.');
    auto part = ParsePart(s.substr(0, dot));
    if (!part || parts.size() == 4) return std::nullopt;
    parts.push_back(*part);
    if (dot == std::string_view::npos) break;
    s.remove_prefix(dot + 1);
  }
  // The last part fills the bytes the earlier ones leave (a.b.c.d, a.b.cd, a.bcd, abcd).
  uint64_t value = 0;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    if (parts[i] > 0xff) return std::nullopt;
    value |= parts[i] << (24 - 8 * i);
  }
  unsigned last_bits = 32 - 8 * static_cast<unsigned>(parts.size() - 1);
  if (last_bits < 32 && parts.back() >= (uint64_t{1} << last_bits)) return std::nullopt;
  return static_cast<uint32_t>(value | parts.back());
}

IpAddress FromIpv4(uint32_t v) {
  IpAddress ip;
  std::copy(kMappedPrefix.begin(), kMappedPrefix.end(), ip.bytes.begin());
  for (int i = 0; i < 4; ++i) ip.bytes[12 + i] = static_cast<uint8_t>(v >> (24 - 8 * i));
  return ip;
}

// Link-local 169.254.0.0/16 (AWS, GCP, Azure, OpenStack metadata) and
// Alibaba Cloud's metadata address 100.100.100.200.
bool ForbiddenIpv4(const uint8_t* b) {
  return (b[0] == 169 && b[1] == 254) || (b[0] == 100 && b[1] == 100 && b[2] == 100 && b[3] == 200);
}

bool StartsWith(const IpAddress& ip, std::initializer_list<uint8_t> prefix) {
  size_t i = 0;
  for (uint8_t b : prefix) {
    if (ip.bytes[i++] != b) return false;
  }
  return true;
}

}  // namespace

std::optional<IpAddress> ParseIpLiteral(std::string_view host) {
  bool bracketed = host.size() > 2 && host.front() == '[' && host.back() == ']';
  if (bracketed) {
    host = host.substr(1, host.size() - 2);
  } else if (!host.empty() && host.back() == '.') {
    host.remove_suffix(1);
  }
  if (host.empty() || host.size() > 64) return std::nullopt;
  if (host.find(':') != std::string_view::npos) {
    // A zone ("%eth0", "%25eth0" in a URL) names the interface, not the address.
    std::string text(host.substr(0, host.find('%')));
    IpAddress ip;
    if (inet_pton(AF_INET6, text.c_str(), ip.bytes.data()) != 1) return std::nullopt;
    return ip;
  }
  if (bracketed) return std::nullopt;  // brackets hold only IPv6
  auto v4 = ParseLooseIpv4(host);
  if (!v4) return std::nullopt;
  return FromIpv4(*v4);
}

bool IsForbiddenIp(const IpAddress& ip) {
  const auto& b = ip.bytes;
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return true;  // fe80::/10
  static constexpr std::array<uint8_t, 16> kAwsV6Metadata = {0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0,
                                                             0,    0,    0,    0,    0, 0, 0x02, 0x54};
  if (b == kAwsV6Metadata) return true;
  bool mapped = std::equal(kMappedPrefix.begin(), kMappedPrefix.end(), b.begin());
  bool compatible = StartsWith(ip, {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});
  bool nat64 = StartsWith(ip, {0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0});
  if ((mapped || compatible || nat64) && ForbiddenIpv4(&b[12])) return true;
  if (b[0] == 0x20 && b[1] == 0x02 && ForbiddenIpv4(&b[2])) return true;  // 6to4 2002:a9fe:…
  return false;
}

bool IsLoopbackIp(const IpAddress& ip) {
  static constexpr std::array<uint8_t, 16> kV6Loopback = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  if (ip.bytes == kV6Loopback) return true;
  return std::equal(kMappedPrefix.begin(), kMappedPrefix.end(), ip.bytes.begin()) && ip.bytes[12] == 127;
}

// Fails closed: what is not a numeric address is never connected to.
bool IsForbiddenUpstreamAddress(std::string_view address) {
  auto ip = ParseIpLiteral(address);
  return !ip || IsForbiddenIp(*ip);
}

bool IsLoopbackHost(std::string_view host) {
  // "localhost." and "127.0.0.1." are names a resolver answers for, not
  // /etc/hosts nor an IP literal: DNS would choose where they go.
  if (host.ends_with('.')) return false;
  std::string lower;
  for (char c : host) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower == "localhost") return true;
  auto ip = ParseIpLiteral(host);
  return ip && IsLoopbackIp(*ip);
}

}  // namespace dyad
