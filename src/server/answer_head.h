// AnswerHead: the head of an answer, framed in one string: what the server
// writes before the body, in the bytes Beast's serializer writes for the
// same message, without building one (its fields allocate per field, and
// its buffer sequence costs more to walk than the bytes cost to copy).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dyad {

struct AnswerFraming {
  unsigned version = 11;  // the request's: 10 or 11
  bool keep_alive = true;
  // The whole body's size; none: streamed, chunked over HTTP/1.1 and ended
  // by the close over HTTP/1.0.
  std::optional<size_t> body_size;
};

// Whether an answer of `status` carries no body and no Content-Length
// (1xx and 204: RFC 9110 §8.6, §15.3.5; 304: §15.4.5, its body none and a
// length there would describe another representation).
bool AnswerHasNoBody(int status);

// The status line; Server, Content-Type (when not empty) and X-Request-Id;
// then `headers` in their order, repeated names kept, less those the server
// sets (Content-Length, Transfer-Encoding, Connection and its own three);
// Content-Length: `body_size`, or for a stream Transfer-Encoding: chunked
// (HTTP/1.1), neither when AnswerHasNoBody; Connection when the version's
// default is not `keep_alive`; the blank line. (Beast's order: Connection
// before Content-Length, after Transfer-Encoding.)
std::string AnswerHead(int status, std::string_view content_type,
                       const std::vector<std::pair<std::string, std::string>>& headers, std::string_view request_id,
                       const AnswerFraming& framing);

}  // namespace dyad
