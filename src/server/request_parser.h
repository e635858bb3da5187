// RequestParser: one client request parsed by Beast's basic_parser straight
// into the HttpRequest its handler sees: the method, the target split into
// path and query, every header field in the order they came (names as the
// client spelled them), the first Authorization, Content-Type and
// X-Request-Id, the body (Content-Length or chunked, its framing removed).
// No Beast message is built and copied after: the fields go once from the
// read buffer into the request. A chunked body's trailer is not a field of
// the request: nothing here reads it.
//
// Besides, what the header says that the session decides on before any
// handler runs: the version, HEAD, keep-alive as the header asked (a
// trailer's Connection does not count), Expect: 100-continue, and whether
// the framing or identity is refused (refusal()).
//
// Fed by Beast's read functions or put() like any basic_parser; one per
// request (the session makes a new one for the next).
#pragma once

#include <boost/beast/http/basic_parser.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "server/http_types.h"

namespace dyad {

// Why a parsed request's header is refused before any handler sees it.
struct Refusal {
  int status;
  std::string_view code;
  std::string message;
};

class RequestParser final : public boost::beast::http::basic_parser<true> {
 public:
  RequestParser(uint64_t body_limit, uint32_t header_limit);

  // The request as parsed so far; whole once is_done(). The session moves
  // it out and adds what the connection knows (peer, certificate, id).
  HttpRequest& request() { return request_; }

  // Once is_header_done():
  unsigned version() const { return version_; }
  bool head() const { return head_; }
  // What the header asked: the connection may carry another request
  // (RFC 9112 §9.3; a trailer's Connection does not count).
  bool header_keep_alive() const { return header_keep_alive_; }
  // An HTTP/1.1 request that waits for leave to send its body.
  bool expects_continue() const { return expects_continue_ && version_ >= 11; }
  // The header's framing or identity, refused (RFC 9112 §6.1, §6.3): a
  // Transfer-Encoding other than chunked alone (Beast reads a request whose
  // last coding is not chunked as one without a body, and what the client
  // sent as its body as the next request, smuggled past a proxy that framed
  // it otherwise; another coding beside chunked would reach the handler
  // undecoded); any in an HTTP/1.0 request, whose framing is then faulty;
  // a second Authorization (which one counts would differ between a proxy
  // in front and the gateway); an HTTP/1.1 request without a Host, or any
  // with two or with one that is no host and port (RFC 9112 §3.2).
  std::optional<Refusal> refusal() const;

 private:
  void on_request_impl(boost::beast::http::verb method, boost::beast::string_view method_string,
                       boost::beast::string_view target, int version, boost::beast::error_code& ec) override;
  void on_response_impl(int, boost::beast::string_view, int, boost::beast::error_code& ec) override;
  void on_field_impl(boost::beast::http::field name, boost::beast::string_view name_string,
                     boost::beast::string_view value, boost::beast::error_code& ec) override;
  void on_header_impl(boost::beast::error_code& ec) override;
  void on_body_init_impl(const boost::optional<std::uint64_t>& content_length, boost::beast::error_code& ec) override;
  std::size_t on_body_impl(boost::beast::string_view body, boost::beast::error_code& ec) override;
  void on_chunk_header_impl(std::uint64_t size, boost::beast::string_view extensions,
                            boost::beast::error_code& ec) override;
  std::size_t on_chunk_body_impl(std::uint64_t remain, boost::beast::string_view body,
                                 boost::beast::error_code& ec) override;
  void on_finish_impl(boost::beast::error_code& ec) override;

  HttpRequest request_;
  unsigned version_ = 11;
  bool head_ = false;
  bool header_done_ = false;
  bool header_keep_alive_ = false;
  bool expects_continue_ = false;
  bool has_authorization_ = false, has_content_type_ = false, has_request_id_ = false, has_expect_ = false;
  int authorizations_ = 0;
  int hosts_ = 0;
  bool bad_host_ = false;
  bool connection_close_ = false, connection_keep_alive_ = false;  // tokens of the Connection fields
  int codings_ = 0;
  std::optional<Refusal> coding_refusal_;  // the first Transfer-Encoding refused
};

}  // namespace dyad
