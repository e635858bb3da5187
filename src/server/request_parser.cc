#include "server/request_parser.h"

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/rfc7230.hpp>

#include <utility>

namespace dyad {

namespace http = boost::beast::http;
using boost::beast::error_code;
using boost::beast::string_view;

namespace {

std::string_view View(string_view s) { return {s.data(), s.size()}; }

// A Host value as RFC 9112 §3.2 allows: uri-host [":" port], here its
// characters (RFC 3986: unreserved, pct-encoded, sub-delims, ':' and an IP
// literal's brackets), or empty. Two Host fields merged by a proxy in front
// ("a, b") are not one.
bool IsHostValue(std::string_view v) {
  for (char c : v) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    std::string_view("-._~%!$&'()*+,;=:[]").find(c) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

}  // namespace

RequestParser::RequestParser(uint64_t body_limit, uint32_t header_limit) {
  this->body_limit(body_limit);
  this->header_limit(header_limit);
  request_.headers.reserve(16);
}

std::optional<Refusal> RequestParser::refusal() const {
  if (coding_refusal_) return coding_refusal_;
  if (authorizations_ > 1) return Refusal{400, "BAD_REQUEST", "more than one Authorization header"};
  if (hosts_ > 1) return Refusal{400, "BAD_REQUEST", "more than one Host header"};
  if (bad_host_) return Refusal{400, "BAD_REQUEST", "the Host header is not a host and port"};
  if (hosts_ == 0 && version_ >= 11) return Refusal{400, "BAD_REQUEST", "an HTTP/1.1 request without a Host header"};
  return std::nullopt;
}

void RequestParser::on_request_impl(http::verb method, string_view method_string, string_view target, int version,
                                    error_code&) {
  request_.method.assign(method_string.data(), method_string.size());
  head_ = method == http::verb::head;
  SetTarget(request_, View(target));
  version_ = static_cast<unsigned>(version);
}

void RequestParser::on_response_impl(int, string_view, int, error_code& ec) {
  ec = http::error::bad_version;  // never called for a request parser
}

void RequestParser::on_field_impl(http::field name, string_view name_string, string_view value, error_code&) {
  if (header_done_) return;  // the body's trailer: not a field of the request
  switch (name) {
    case http::field::authorization:
      ++authorizations_;
      if (!std::exchange(has_authorization_, true)) request_.authorization.assign(value.data(), value.size());
      break;
    case http::field::content_type:
      if (!std::exchange(has_content_type_, true)) request_.content_type.assign(value.data(), value.size());
      break;
    case http::field::host:
      ++hosts_;
      bad_host_ = bad_host_ || !IsHostValue(View(value));
      break;
    case http::field::connection:  // every one counts (RFC 9110 §7.6.1)
      for (const auto& token : http::token_list{value}) {
        connection_close_ = connection_close_ || boost::beast::iequals(token, "close");
        connection_keep_alive_ = connection_keep_alive_ || boost::beast::iequals(token, "keep-alive");
      }
      break;
    case http::field::expect:  // the first counts
      if (!std::exchange(has_expect_, true)) expects_continue_ = boost::beast::iequals(value, "100-continue");
      break;
    case http::field::transfer_encoding:
      if (!coding_refusal_) {
        if (version_ < 11) {
          coding_refusal_ = Refusal{400, "BAD_REQUEST", "Transfer-Encoding in an HTTP/1.0 request"};
        } else if (++codings_ > 1 || !boost::beast::iequals(value, "chunked")) {
          coding_refusal_ =
              Refusal{501, "NOT_IMPLEMENTED", "Transfer-Encoding: only chunked alone is supported (or a Content-Length)"};
        }
      }
      break;
    case http::field::unknown:  // Beast knows no X-Request-Id
      if (!has_request_id_ && boost::beast::iequals(name_string, "X-Request-Id")) {
        has_request_id_ = true;
        request_.request_id.assign(value.data(), value.size());
      }
      break;
    default:
      break;
  }
  request_.headers.emplace_back(std::piecewise_construct, std::forward_as_tuple(name_string.data(), name_string.size()),
                                std::forward_as_tuple(value.data(), value.size()));
}

// RFC 9112 §9.3: "close" in any Connection field ends the connection after
// the answer; else HTTP/1.1 keeps it, and HTTP/1.0 only with "keep-alive".
// (Beast's message looked at the first Connection field alone, and its
// parser counts Proxy-Connection too, a field no standard defines, and lets
// an HTTP/1.0 "keep-alive" outweigh a "close".)
void RequestParser::on_header_impl(error_code&) {
  header_done_ = true;
  header_keep_alive_ = !connection_close_ && (version_ >= 11 || connection_keep_alive_);
}

void RequestParser::on_body_init_impl(const boost::optional<std::uint64_t>& content_length, error_code&) {
  // (within the body limit: the parser refused a larger Content-Length)
  if (content_length) request_.body.reserve(static_cast<size_t>(*content_length));
}

std::size_t RequestParser::on_body_impl(string_view body, error_code&) {
  request_.body.append(body.data(), body.size());
  return body.size();
}

void RequestParser::on_chunk_header_impl(std::uint64_t, string_view, error_code&) {}

std::size_t RequestParser::on_chunk_body_impl(std::uint64_t, string_view body, error_code&) {
  request_.body.append(body.data(), body.size());
  return body.size();
}

void RequestParser::on_finish_impl(error_code&) {}

}  // namespace dyad
