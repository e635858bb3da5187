// libFuzzer: the curl transport's answer reader (AnswerReader, Beast's parser)
// on whatever a server sends. Byte 0 picks the body limit and HEAD, byte 1 how
// the rest arrives (in pieces of 1 to 8 bytes, or at once); the answer is read
// both ways and must come out the same — both complete, with the same status,
// fields, body and keep-alive, or both failed (for what reason may differ) — with every field name lower-cased, no 1xx status
// as the final one, the body within its limit, and never more bytes used
// than given. The streaming mode (the /v1 client's) reads it in the same
// pieces and must agree with the buffered one: the same outcome, the head
// heard once with the same status and fields, the pieces making the body.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "transport/http_answer.h"

namespace {

// Feeds `in` to the reader `step` bytes at a time, keeping what it did not
// use, then the end of the stream unless it finished before.
void FeedInPieces(dyad::AnswerReader& reader, std::string_view in, size_t step) {
  std::string pending;
  size_t pos = 0;
  while (pos < in.size() && !reader.done() && !reader.failed()) {
    const size_t take = std::min(step, in.size() - pos);
    pending.append(in.substr(pos, take));
    pos += take;
    const size_t used = reader.Feed(pending.data(), pending.size());
    if (used > pending.size()) std::abort();
    pending.erase(0, used);
  }
  if (!reader.done() && !reader.failed()) reader.FeedEof();
}

struct Read {
  dyad::HttpReply reply;
  bool done = false, failed = false, too_big = false, keep_alive = false;
};

Read ReadIn(std::string_view in, size_t max_body, bool head, size_t step) {
  Read r;
  dyad::AnswerReader reader;
  reader.Start(&r.reply, max_body, head);
  FeedInPieces(reader, in, step);
  r.done = reader.done();
  r.failed = reader.failed();
  r.too_big = reader.too_big();
  r.keep_alive = reader.keep_alive();
  if (r.done == r.failed) std::abort();  // exactly one after the end of the stream
  if (r.failed && reader.error().empty()) std::abort();
  return r;
}

struct Streamed final : dyad::AnswerListener {
  dyad::HttpHeaders headers;
  int heads = 0, status = 0;
  std::string body;
  bool done = false, failed = false;
  bool OnAnswerHead(int s) override {
    ++heads;
    status = s;
    return true;
  }
  bool OnAnswerBody(std::string_view piece) override {
    if (heads != 1 || piece.empty()) std::abort();
    body.append(piece);
    return true;
  }
};

void StreamIn(std::string_view in, bool head, size_t step, Streamed& s) {
  dyad::AnswerReader reader;
  reader.StartStreaming(&s.headers, &s, head);
  FeedInPieces(reader, in, step);
  s.done = reader.done();
  s.failed = reader.failed();
  if (s.done == s.failed || reader.cancelled()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const size_t max_body = 16 + static_cast<size_t>(data[0] >> 1) * 16;
  const bool head = data[0] & 1;
  const size_t step = data[1] % 9 == 0 ? size : 1 + data[1] % 9;
  std::string_view in(reinterpret_cast<const char*>(data) + 2, size - 2);
  const Read whole = ReadIn(in, max_body, head, in.size() + 1);
  const Read pieces = ReadIn(in, max_body, head, step);
  if (whole.done != pieces.done) std::abort();
  Streamed streamed;
  StreamIn(in, head, step, streamed);
  if (!whole.too_big && streamed.done != whole.done) std::abort();  // no body limit when streamed
  if (whole.done && (streamed.heads != 1 || streamed.status != whole.reply.status ||
                     streamed.headers != whole.reply.headers || streamed.body != whole.reply.body)) {
    std::abort();
  }
  if (!whole.done) return 0;
  if (whole.keep_alive != pieces.keep_alive || whole.too_big || pieces.too_big) std::abort();
  if (whole.reply.status != pieces.reply.status || whole.reply.headers != pieces.reply.headers ||
      whole.reply.body != pieces.reply.body) {
    std::abort();
  }
  if (whole.reply.status >= 100 && whole.reply.status < 200) std::abort();
  if (whole.reply.body.size() > max_body || (head && !whole.reply.body.empty())) std::abort();
  for (const auto& [name, value] : whole.reply.headers) {
    for (char c : name) {
      if (c >= 'A' && c <= 'Z') std::abort();
    }
  }
  return 0;
}
