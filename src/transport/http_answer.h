// AnswerReader: one HTTP/1.x answer parsed from bytes as they arrive, for the
// curl transport's own exchange (curl connects; we write the request and read
// the answer). Beast's basic_parser does the parsing; it stays in
// http_answer.cc, the one file of the client side that includes Beast.
//
// What it gives the transport: the status, the final answer's header fields
// (names lower-cased; 1xx answers are skipped, their fields dropped, but a
// 101 is a failure: no upgrade is ever asked for; so is a transfer coding
// other than chunked alone: none is ever asked for either; chunked
// trailers are not fields of the answer and are dropped too), the body
// (Content-Length, chunked, or read to the end of the stream), whether the
// connection may carry another request, and a failure without any byte of
// the answer in its message. The body is held to `max_body` bytes; at most
// 64 KiB are reserved up front (less for a smaller Content-Length), so a
// real secret is received into one buffer, a false figure does not make us
// hold megabytes, and a body that grows past it is moved by hand, the old
// buffer wiped (no copy left in freed memory).
//
// Streaming (StartStreaming, for the /v1 upstream client): nothing of the
// body is held. The final head's status is reported to the listener once its
// fields are complete (1xx heads skipped), then each decoded piece of the
// body (chunked framing removed), in order and never empty, as it is fed; a
// false return from either stops the answer (cancelled() and failed()). The
// head is limited to 64 KiB either way (head_too_large() and failed()).
//
// Reused: one reader per connection handle, Start() or StartStreaming()
// before each answer (the parser's storage is allocated once).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "transport/http_transport.h"

namespace dyad {

// Hears a streamed answer, on the thread that feeds it.
class AnswerListener {
 public:
  virtual ~AnswerListener() = default;
  // The final head is complete: its fields are in the vector StartStreaming
  // was given (the listener may change them). False stops the answer.
  virtual bool OnAnswerHead(int status) = 0;
  // A piece of the decoded body. False stops the answer.
  virtual bool OnAnswerBody(std::string_view piece) = 0;
  // After a Feed() that made calls above, or completed the answer: what
  // the listener holds goes on now (the feeder may wait next). `last`: the
  // answer is complete. False stops an answer that is not.
  virtual bool OnAnswerFlush(bool /*last*/) { return true; }
};

// An answer's transfer codings, from its Transfer-Encoding fields (each
// value Add()ed). We send no TE field, so chunked, once, is the only coding
// an answer may carry (RFC 9112 §6.1); any other would reach the caller
// still applied (a gzip'd body taken for the body), so ok() refuses it.
class TransferCodings {
 public:
  void Add(std::string_view field_value);
  // No Transfer-Encoding field, or chunked alone.
  bool ok() const { return !seen_ || (chunked_ == 1 && !other_); }
  // A Transfer-Encoding field came.
  bool any() const { return seen_; }

 private:
  bool seen_ = false;
  bool other_ = false;
  int chunked_ = 0;
};

class AnswerReader {
 public:
  AnswerReader();
  ~AnswerReader();
  AnswerReader(const AnswerReader&) = delete;
  AnswerReader& operator=(const AnswerReader&) = delete;

  // Begins an answer into `reply` (cleared); `head`: the request was HEAD
  // (no body whatever the header says).
  void Start(HttpReply* reply, size_t max_body, bool head);
  // Begins a streamed answer: its fields into `headers` (cleared), the rest
  // to `listener` (see above); no limit on the body.
  void StartStreaming(HttpHeaders* headers, AnswerListener* listener, bool head);

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
  // The head went past 64 KiB (failed() too).
  bool head_too_large() const { return head_too_large_; }
  // The listener returned false (failed() too).
  bool cancelled() const { return cancelled_; }
  // The connection closed before the answer's end (failed() too): the
  // connection was lost, not the answer malformed.
  bool cut_by_close() const { return cut_by_close_; }
  // The connection may carry another request (HTTP/1.1 without
  // "Connection: close", or HTTP/1.0 with keep-alive; not read to close).
  bool keep_alive() const { return keep_alive_; }
  // The final (not 1xx) head's status once that head is complete, else 0:
  // whether an answer that began early still wants the request's body.
  int final_status() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  bool done_ = false;
  bool too_big_ = false;
  bool head_too_large_ = false;
  bool cancelled_ = false;
  bool cut_by_close_ = false;
  bool keep_alive_ = false;
  std::string error_;
};

}  // namespace dyad
