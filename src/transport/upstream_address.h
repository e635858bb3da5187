// Upstream addresses: an IP literal as a URL's host or a DNS answer spells
// it, and which ones the /v1 path never calls (DESIGN.md §12).
//
// ParseIpLiteral reads a host the way the C library's resolver and curl do,
// so that a spelling the check does not recognise cannot reach the address
// another way: IPv4 in every inet_aton form (dotted quad, fewer parts, each
// part decimal, octal with a leading 0 or hex with 0x: "2852039166",
// "0xA9FEA9FE", "0251.0376.0251.0376", "169.254.43518"), one trailing dot
// ("169.254.169.254."), IPv6 with or without brackets and with a zone
// ("[fe80::1%25eth0]"). Anything else (a DNS name, a malformed literal) is
// nullopt. (UpstreamClient's IsForbiddenUpstreamAddress is the check of the
// numeric address a connection reaches; this one reads what a URL may spell.)
// Pure functions; thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

namespace dyad {

// Always the 16 bytes of IPv6; an IPv4 address as ::ffff:a.b.c.d.
struct IpAddress {
  std::array<uint8_t, 16> bytes{};
};

std::optional<IpAddress> ParseIpLiteral(std::string_view host);

// 169.254.0.0/16, fe80::/10, fd00:ec2::254, and the IPv4 ones inside IPv6
// (mapped ::ffff:0:0/96, compatible ::/96, NAT64 64:ff9b::/96, 6to4 2002::/16).
bool IsForbiddenIp(const IpAddress& ip);
// 127.0.0.0/8 (also mapped) and ::1.
bool IsLoopbackIp(const IpAddress& ip);
// "localhost", or an IP literal (bracketed or not) of the loopback; no
// name with a trailing dot (a resolver's to answer).
bool IsLoopbackHost(std::string_view host);

}  // namespace dyad
