// libFuzzer: the server's request parser (RequestParser, on Beast's
// basic_parser) on whatever a client sends. Byte 0 picks how the rest
// arrives (in pieces of 1 to 8 bytes, or at once). Beast's own request
// parser reads the same bytes the same way and is the oracle: both must end
// alike (done, wanting more, or failed with the same error) and, when done,
// agree on the method, the target, every field of the header (each name's
// in order), the body and the version; without a trailer, what the header
// decides is worked out again from Beast's message. Besides: the request's
// Authorization, Content-Type and X-Request-Id are the first of their
// fields, a chunked body's trailer is no field of the request, and never
// more bytes are used than given.
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/rfc7230.hpp>
#include <boost/beast/http/string_body.hpp>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "server/request_parser.h"

namespace {

namespace http = boost::beast::http;
using boost::beast::error_code;

constexpr uint64_t kBodyLimit = 4096;
constexpr uint32_t kHeaderLimit = 2048;

// Feeds `in` `step` bytes at a time, keeping what the parser did not use;
// its error, or need_more when the bytes ran out first. Past the header the
// parser is given at least 5 bytes at a time (all that is left at the end):
// Boost 1.81's parser asserts that a final chunk's head continued is 5 bytes
// at least, wrongly when no chunk came before (boostorg/beast#2861, fixed in
// 1.86); the code after the assertion is right, and release builds have none.
template <class Parser>
error_code Feed(Parser& parser, std::string_view in, size_t step) {
  std::string pending;
  error_code ec = http::error::need_more;
  for (size_t pos = 0; !parser.is_done() && pos < in.size();) {
    const size_t take = std::min(step, in.size() - pos);
    pending.append(in.substr(pos, take));
    pos += take;
    if (parser.is_header_done() && pending.size() < 5 && pos < in.size()) continue;
    ec = {};
    const size_t used = parser.put(boost::asio::buffer(pending), ec);
    if (used > pending.size()) std::abort();
    pending.erase(0, used);
    if (ec && ec != http::error::need_more) return ec;
  }
  return parser.is_done() ? error_code{} : error_code{http::error::need_more};
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// What the header decides, worked out again from Beast's message (whole
// when no trailer could add to it): keep-alive (RFC 9112 §9.3, every
// Connection field), the refusal's status, Expect: 100-continue, HEAD.
void CheckDecisions(const dyad::RequestParser& ours, const http::request_parser<http::string_body>& beast) {
  const auto& m = beast.get();
  bool close = false, keep_alive = false, bad_host = false;
  int codings = 0, authorizations = 0, hosts = 0;
  std::string_view first_coding;
  for (const auto& f : m) {
    if (f.name() == http::field::connection) {
      for (const auto& token : http::token_list{f.value()}) {
        close = close || boost::beast::iequals(token, "close");
        keep_alive = keep_alive || boost::beast::iequals(token, "keep-alive");
      }
    }
    if (f.name() == http::field::transfer_encoding && codings++ == 0) first_coding = f.value();
    authorizations += f.name() == http::field::authorization;
    if (f.name() == http::field::host) {
      ++hosts;
      for (char c : f.value()) {
        bad_host = bad_host || !(std::isalnum(static_cast<unsigned char>(c)) ||
                                 std::string_view("-._~%!$&'()*+,;=:[]").find(c) != std::string_view::npos);
      }
    }
  }
  if (ours.header_keep_alive() != (!close && (m.version() >= 11 || keep_alive))) std::abort();
  int status = 0;
  if (codings > 0 && m.version() < 11) status = 400;
  else if (codings > 1 || (codings == 1 && !boost::beast::iequals(first_coding, "chunked"))) status = 501;
  else if (authorizations > 1 || hosts > 1 || bad_host || (hosts == 0 && m.version() >= 11)) status = 400;
  const auto refused = ours.refusal();
  if ((refused ? refused->status : 0) != status) std::abort();
  const auto expect = m.find(http::field::expect);
  const bool continues = m.version() >= 11 && expect != m.end() && boost::beast::iequals(expect->value(), "100-continue");
  if (ours.expects_continue() != continues) std::abort();
  if (ours.head() != (m.method() == http::verb::head)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const size_t step = data[0] % 9 == 0 ? size : data[0] % 9;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);

  dyad::RequestParser ours(kBodyLimit, kHeaderLimit);
  const error_code our_ec = Feed(ours, in, step);
  http::request_parser<http::string_body> beast;
  beast.body_limit(kBodyLimit);
  beast.header_limit(kHeaderLimit);
  const error_code beast_ec = Feed(beast, in, step);
  if (our_ec != beast_ec) std::abort();
  if (our_ec) return 0;

  const dyad::HttpRequest& r = ours.request();
  const auto& m = beast.get();
  dyad::HttpRequest split;
  dyad::SetTarget(split, m.target());
  if (r.method != m.method_string() || r.path != split.path || r.query != split.query) std::abort();
  if (r.body != m.body() || ours.version() != m.version()) std::abort();
  // Beast's message groups fields of one name together (each group in the
  // order they came) and holds the trailer's too; ours are in the order
  // they came, the header's only. Compared by name: each of our groups is
  // Beast's, or without a chunked body (no trailer) the same.
  std::map<std::string, std::vector<std::pair<std::string, std::string>>> ours_by_name, beasts_by_name;
  for (const auto& [n, v] : r.headers) ours_by_name[Lower(n)].emplace_back(n, v);
  for (const auto& f : m) beasts_by_name[Lower(f.name_string())].emplace_back(f.name_string(), f.value());
  for (const auto& [name, fields] : ours_by_name) {
    const auto& theirs = beasts_by_name[name];
    if (fields.size() > theirs.size() || !std::equal(fields.begin(), fields.end(), theirs.begin())) std::abort();
    if (!beast.chunked() && fields.size() != theirs.size()) std::abort();
  }
  if (!beast.chunked() && r.headers.size() != static_cast<size_t>(std::distance(m.begin(), m.end()))) std::abort();
  auto first = [&](std::string_view name) {
    for (const auto& [n, v] : r.headers) {
      if (boost::beast::iequals(n, name)) return v;
    }
    return std::string();
  };
  if (r.authorization != first("Authorization") || r.content_type != first("Content-Type") ||
      r.request_id != first("X-Request-Id")) {
    std::abort();
  }
  // Without a trailer, the header's keep-alive is Beast's.
  if (!beast.chunked()) CheckDecisions(ours, beast);
  return 0;
}
