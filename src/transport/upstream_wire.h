// What the /v1 upstream clients write and say alike: UpstreamClient (curl
// connects, we write the request) and the server's evented client
// (server/evented_upstream.h). Defined in upstream_client.cc.
#pragma once

#include <string>
#include <string_view>

#include "core/result.h"
#include "core/secret_bytes.h"
#include "transport/upstream_client.h"
#include "transport/upstream_target.h"

namespace dyad {

// How errors name a call: its method and target (never the query or user
// information).
std::string UpstreamCallName(const std::string& method, const UpstreamTarget& target);

// The query of request.url, '?' included; empty for none or '?' alone.
// kInvalidArgument when it has a space or a control character (it goes into
// the request line).
Result<std::string_view> UpstreamQuery(const UpstreamRequest& request, const UpstreamTarget& target);

// The request line, Host, the caller's headers (less those the client sets:
// Host, Content-Length, Expect, hop-by-hop), Content-Length and the blank
// line, then the body when `inline_body`; into `out`, sized first (no
// growth: no copy of the credential left in freed memory).
void SerialiseUpstreamRequest(const UpstreamRequest& request, const UpstreamTarget& target, std::string_view query,
                              bool inline_body, WipedString& out);

// A header the client sets on every request (names lower-cased): Host,
// Content-Length, Expect and the hop-by-hop ones (Connection and those of
// RFC 9110 §7.6.1, every proxy-*). A caller's field of such a name is never
// sent upstream.
bool IsSetByClient(std::string_view lower);

// Removes hop-by-hop headers (names lower-cased), and those the answer's
// Connection header names.
void RemoveHopByHop(HttpHeaders& headers);

// The errors: `which` timeout ("connect", "first-byte", "idle" or "total")
// passed (kDeadlineExceeded); the client hung up (kCancelled); the answer's
// head too large (kUnavailable).
// The kind of failure the timeout `which` (as above) is.
UpstreamFailure TimeoutFailure(std::string_view which);
Status UpstreamTimedOut(const std::string& what, const char* which, const UpstreamTimeouts& t, bool head_done);
Status UpstreamClientHungUp(const std::string& what);
Status UpstreamHeadTooLarge(const std::string& what);

}  // namespace dyad
