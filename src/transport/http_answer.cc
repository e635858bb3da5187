#include "transport/http_answer.h"

#include <boost/asio/error.hpp>
#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/error.hpp>

#include <algorithm>
#include <optional>
#include <utility>

#include "core/encoding.h"
#include "core/secret_bytes.h"

namespace dyad {

namespace {

namespace http = boost::beast::http;
using boost::beast::error_code;
using boost::beast::string_view;

// The most a Content-Length reserves before the body arrives: AWS secrets are
// at most 64 KiB (other stores' are smaller).
constexpr size_t kMaxUpFrontReserve = 64 * 1024;
// Header block of one answer (curl allowed 100 KiB per line; AWS, Vault and
// Azure send well under 8 KiB).
constexpr uint32_t kHeaderLimit = 64 * 1024;
// Why an answer failed whose listener stopped it.
constexpr const char* kReaderStopped = "the answer's reader stopped reading it";

// Where a parsed answer goes: a whole reply (status, fields, body held to
// max_body), or, streaming, fields into `headers` and the rest to `listener`.
struct Destination {
  HttpReply* reply = nullptr;  // buffering
  HttpHeaders* headers = nullptr;
  AnswerListener* listener = nullptr;  // streaming
  size_t max_body = 0;
};

class Parser final : public http::basic_parser<false> {
 public:
  explicit Parser(const Destination& to) : to_(to) {}
  int status() const { return status_; }
  bool too_big() const { return too_big_; }
  bool cancelled() const { return cancelled_; }
  // The listener was called since the last TakeHeard().
  bool TakeHeard() { return std::exchange(heard_, false); }

 private:
  void on_request_impl(http::verb, string_view, string_view, int, error_code& ec) override {
    ec = http::error::bad_method;  // never called for a response parser
  }
  void on_response_impl(int code, string_view, int, error_code& ec) override {
    if (code < 100 || code > 599) ec = http::error::bad_status;  // three digits, but not a status (RFC 9110 §15)
    status_ = code;
    if (to_.reply) to_.reply->status = code;
  }
  void on_field_impl(http::field f, string_view name, string_view value, error_code&) override {
    if (header_done_) return;  // a trailer: not a field of the answer
    if (f == http::field::transfer_encoding) codings_.Add(std::string_view(value.data(), value.size()));
    to_.headers->emplace_back(AsciiLower(std::string_view(name.data(), name.size())),
                              std::string(value.data(), value.size()));
  }
  void on_header_impl(error_code& ec) override {
    header_done_ = true;
    // A transfer coding other than chunked alone: none we asked for
    // (TransferCodings), and one not ending in chunked leaves the body's end
    // to the close while Beast would let a Content-Length after it frame
    // the body (it refuses one only after chunked): a body two readers can
    // frame differently. An error, as RFC 9112 §6.3 allows.
    if (!codings_.ok()) {
      ec = http::error::bad_transfer_encoding;
      return;
    }
    if (!to_.listener || status_ < 200) return;
    heard_ = true;
    if (!to_.listener->OnAnswerHead(status_)) Cancel(ec);
  }
  // Without a length (chunked, read to the end) the up-front reserve too:
  // a secret fits it, and Append() grows past it without leaving copies.
  void on_body_init_impl(const boost::optional<std::uint64_t>& length, error_code&) override {
    if (to_.reply && status_ >= 200 && to_.reply->body.empty()) {
      const std::uint64_t want = length ? *length : kMaxUpFrontReserve;
      to_.reply->body.reserve(
          static_cast<size_t>(std::min<std::uint64_t>({want, to_.max_body, kMaxUpFrontReserve})));
    }
  }
  size_t on_body_impl(string_view body, error_code& ec) override { return Take(body, ec); }
  void on_chunk_header_impl(std::uint64_t, string_view, error_code&) override {}
  size_t on_chunk_body_impl(std::uint64_t, string_view body, error_code& ec) override { return Take(body, ec); }
  void on_finish_impl(error_code&) override {}

  size_t Take(string_view body, error_code& ec) {
    if (!to_.listener) return Append(body, ec);
    if (body.empty()) return 0;
    heard_ = true;
    if (!to_.listener->OnAnswerBody(std::string_view(body.data(), body.size()))) Cancel(ec);
    return body.size();
  }

  void Cancel(error_code& ec) {
    cancelled_ = true;
    ec = boost::asio::error::operation_aborted;
  }

  size_t Append(string_view body, error_code& ec) {
    if (to_.reply->body.size() + body.size() > to_.max_body) {
      too_big_ = true;
      ec = http::error::body_limit;
      return 0;
    }
    std::string& out = to_.reply->body;
    if (out.size() + body.size() > out.capacity()) {
      // Grown by hand: the old buffer, a copy of what was received, is wiped
      // before it is freed.
      std::string bigger;
      bigger.reserve(std::min(to_.max_body, std::max(out.capacity() * 2, out.size() + body.size())));
      bigger.assign(out);
      Cleanse(out);
      out.swap(bigger);
    }
    out.append(body.data(), body.size());
    return body.size();
  }

  Destination to_;
  int status_ = 0;
  bool header_done_ = false;
  TransferCodings codings_;  // of the head's Transfer-Encoding fields
  bool too_big_ = false;
  bool cancelled_ = false;
  bool heard_ = false;
};

}  // namespace

void TransferCodings::Add(std::string_view field_value) {
  seen_ = true;
  ForEachListElement(field_value, [this](std::string_view coding) {
    // (A coding may have parameters, "chunked;x=y" is not chunked: RFC 9112 §7.)
    if (coding.size() == 7 && AsciiLower(coding) == "chunked") {
      ++chunked_;
    } else {
      other_ = true;
    }
  });
}

struct AnswerReader::Impl {
  std::optional<Parser> parser;
  Destination to;
  bool head = false;
  size_t head_bytes = 0;  // of the heads parsed so far (a final head's may count body bytes too)

  void Begin() {
    parser.emplace(to);
    parser->eager(true);
    parser->header_limit(kHeaderLimit);
    if (to.listener) {
      parser->body_limit(boost::none);
    } else {
      parser->body_limit(to.max_body);
    }
    if (head) parser->skip(true);
  }
};

AnswerReader::AnswerReader() : impl_(std::make_unique<Impl>()) {}
AnswerReader::~AnswerReader() = default;

void AnswerReader::Start(HttpReply* reply, size_t max_body, bool head) {
  reply->status = 0;
  reply->headers.clear();
  reply->body.clear();
  impl_->to = Destination{reply, &reply->headers, nullptr, max_body};
  impl_->head = head;
  impl_->head_bytes = 0;
  impl_->Begin();
  done_ = too_big_ = head_too_large_ = cancelled_ = cut_by_close_ = keep_alive_ = false;
  error_.clear();
}

void AnswerReader::StartStreaming(HttpHeaders* headers, AnswerListener* listener, bool head) {
  headers->clear();
  impl_->to = Destination{nullptr, headers, listener, 0};
  impl_->head = head;
  impl_->head_bytes = 0;
  impl_->Begin();
  done_ = too_big_ = head_too_large_ = cancelled_ = cut_by_close_ = keep_alive_ = false;
  error_.clear();
}

size_t AnswerReader::Feed(const char* data, size_t n) {
  const bool was_done = done_;
  size_t used = 0;
  while (!done_ && error_.empty() && used < n) {
    Parser& p = *impl_->parser;
    error_code ec;
    // Beast takes a head's fields as they come and bounds only what is left
    // in the buffer by header_limit: the limit of all heads together (1xx
    // ones too, as curl counted) is kept here, by handing the parser no more
    // of a head than what is left of it.
    const bool in_head = !p.is_header_done();
    const size_t budget = in_head ? kHeaderLimit - std::min<size_t>(kHeaderLimit, impl_->head_bytes) : n - used;
    const size_t offered = std::min(n - used, budget);
    const size_t k = offered == 0 ? 0 : p.put(boost::asio::const_buffer(data + used, offered), ec);
    used += k;
    if (in_head) impl_->head_bytes += k;
    if (offered == 0 || (ec == http::error::need_more && in_head && offered == budget && !p.is_header_done())) {
      ec = http::error::header_limit;  // the head goes on past what is left of the limit
    }
    if (ec == http::error::need_more) break;
    if (ec) {
      too_big_ = p.too_big() || ec == http::error::body_limit;
      head_too_large_ = ec == http::error::header_limit;
      cancelled_ = p.cancelled();
      error_ = cancelled_ ? kReaderStopped
               : too_big_ ? "answer larger than the limit"
                          : "malformed answer: " + ec.message();
      break;
    }
    if (!p.is_done()) {
      if (k == 0) break;
      continue;
    }
    if (p.status() == 101) {  // we never ask for an upgrade: what follows is not HTTP
      error_ = "the upstream switched protocols (101) unasked";
      break;
    }
    if (p.status() >= 100 && p.status() < 200) {  // 100 Continue and the like: the answer follows
      impl_->to.headers->clear();
      impl_->Begin();
      continue;
    }
    done_ = true;
    keep_alive_ = p.keep_alive();
  }
  AnswerListener* listener = impl_->to.listener;
  if (listener && error_.empty() && (impl_->parser->TakeHeard() || done_ != was_done) &&
      !listener->OnAnswerFlush(done_) && !done_) {
    cancelled_ = true;
    error_ = kReaderStopped;
  }
  return used;
}

int AnswerReader::final_status() const {
  const Parser& p = *impl_->parser;
  return p.is_header_done() && p.status() >= 200 ? p.status() : 0;
}

void AnswerReader::FeedEof() {
  if (done_ || !error_.empty()) return;
  Parser& p = *impl_->parser;
  error_code ec;
  if (p.got_some()) p.put_eof(ec);  // put_eof wants a started answer (none yet, or none after a 1xx)
  if (!p.got_some() || ec || !p.is_done()) {
    error_ = "connection closed before the end of the answer";
    cut_by_close_ = true;
    return;
  }
  done_ = true;
  keep_alive_ = false;
  if (impl_->to.listener) impl_->to.listener->OnAnswerFlush(true);
}

}  // namespace dyad
