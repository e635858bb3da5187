#include "server/answer_head.h"

#include <charconv>
#include <ostream>  // before Beast's headers: boost::core::string_view's operator<< needs it

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/status.hpp>

namespace dyad {

namespace {

namespace http = boost::beast::http;

// The fields the server frames itself: a handler's are dropped, so that no
// answer's framing is a handler's to break.
bool SetByServer(std::string_view name) {
  using boost::beast::iequals;
  return iequals(name, "content-length") || iequals(name, "transfer-encoding") || iequals(name, "connection") ||
         iequals(name, "x-request-id") || iequals(name, "server") || iequals(name, "content-type");
}

void AppendField(std::string& out, std::string_view name, std::string_view value) {
  out.append(name).append(": ").append(value).append("\r\n");
}

}  // namespace

bool AnswerHasNoBody(int status) { return (status >= 100 && status < 200) || status == 204 || status == 304; }

std::string AnswerHead(int status, std::string_view content_type,
                       const std::vector<std::pair<std::string, std::string>>& headers, std::string_view request_id,
                       const AnswerFraming& framing) {
  const auto reason = http::obsolete_reason(static_cast<http::status>(status));
  size_t size = 128 + reason.size() + content_type.size() + request_id.size();
  for (const auto& [name, value] : headers) size += name.size() + value.size() + 4;
  std::string out;
  out.reserve(size);
  const bool http11 = framing.version >= 11;
  out.append(http11 ? "HTTP/1.1 " : "HTTP/1.0 ");
  char digits[24];
  auto end = std::to_chars(digits, digits + sizeof digits, status).ptr;
  out.append(digits, end).append(" ").append(reason.data(), reason.size()).append("\r\n");
  AppendField(out, "Server", "dyad-gateway");
  if (!content_type.empty()) AppendField(out, "Content-Type", content_type);
  AppendField(out, "X-Request-Id", request_id);
  for (const auto& [name, value] : headers) {
    if (!SetByServer(name)) AppendField(out, name, value);
  }
  const bool bodiless = AnswerHasNoBody(status);
  if (!framing.body_size && http11 && !bodiless) AppendField(out, "Transfer-Encoding", "chunked");
  // HTTP/1.1 keeps the connection unless told; HTTP/1.0 closes it unless told.
  if (!http11 && framing.keep_alive) AppendField(out, "Connection", "keep-alive");
  if (http11 && !framing.keep_alive) AppendField(out, "Connection", "close");
  if (framing.body_size && !bodiless) {
    end = std::to_chars(digits, digits + sizeof digits, *framing.body_size).ptr;
    AppendField(out, "Content-Length", std::string_view(digits, end - digits));
  }
  out.append("\r\n");
  return out;
}

}  // namespace dyad
