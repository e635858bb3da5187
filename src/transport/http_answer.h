// AnswerReader: one HTTP/1.x answer parsed from bytes as they arrive, for the
// curl transport's own exchange (curl connects; we write the request and read
// the answer). Beast's basic_parser does the parsing; it stays in
// http_answer.cc, the one file of the client side that includes Beast.
//
// What it gives the transport: the status, the final answer's header fields
// (names lower-cased; 1xx answers are skipped, their fields dropped; chunked
// trailers are not fields of the answer and are dropped too), the body
// (Content-Length, chunked, or read to the end of the stream), whether the
// connection may carry another request, and a failure without any byte of
// the answer in its message. The body is held to `max_body` bytes; at most
// 64 KiB are reserved up front (less for a smaller Content-Length), so a
// real secret is received into one buffer, a false figure does not make us
// hold megabytes, and a body that grows past it is moved by hand, the old
// buffer wiped (no copy left in freed memory).
//
// Reused: one reader per connection handle, Start() before each answer
// (the parser's storage is allocated once).
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "transport/http_transport.h"

namespace dyad {

class AnswerReader {
 public:
  AnswerReader();
  ~AnswerReader();
  AnswerReader(const AnswerReader&) = delete;
  AnswerReader& operator=(const AnswerReader&) = delete;

  // Begins an answer into `reply` (cleared); `head`: the request was HEAD
  // (no body whatever the header says).
  void Start(HttpReply* reply, size_t max_body, bool head);

  // Parses what it can of `data` and returns how many bytes it used; the
  // caller keeps the rest and brings it again with more. Uses nothing once
  // done() or failed().
  size_t Feed(const char* data, size_t n);
  // The stream ended: an answer read to close is complete, any other
  // unfinished one failed.
  void FeedEof();

  bool done() const { return done_; }
  bool failed() const { return !error_.empty(); }
  // Why it failed (the parser's words, never the answer's bytes).
  const std::string& error() const { return error_; }
  // The body went past max_body (failed() too).
  bool too_big() const { return too_big_; }
  // The connection may carry another request (HTTP/1.1 without
  // "Connection: close", or HTTP/1.0 with keep-alive; not read to close).
  bool keep_alive() const { return keep_alive_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  bool done_ = false;
  bool too_big_ = false;
  bool keep_alive_ = false;
  std::string error_;
};

}  // namespace dyad
