#include "transport/http_answer.h"

#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/error.hpp>

#include <algorithm>
#include <optional>

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

class Parser final : public http::basic_parser<false> {
 public:
  Parser(HttpReply* reply, size_t max_body) : reply_(reply), max_body_(max_body) {}
  int status() const { return status_; }
  bool too_big() const { return too_big_; }

 private:
  void on_request_impl(http::verb, string_view, string_view, int, error_code& ec) override {
    ec = http::error::bad_method;  // never called for a response parser
  }
  void on_response_impl(int code, string_view, int, error_code&) override {
    status_ = code;
    reply_->status = code;
  }
  void on_field_impl(http::field, string_view name, string_view value, error_code&) override {
    if (header_done_) return;  // a trailer: not a field of the answer
    reply_->headers.emplace_back(AsciiLower(std::string_view(name.data(), name.size())),
                                 std::string(value.data(), value.size()));
  }
  void on_header_impl(error_code&) override { header_done_ = true; }
  // Without a length (chunked, read to the end) the up-front reserve too:
  // a secret fits it, and Append() grows past it without leaving copies.
  void on_body_init_impl(const boost::optional<std::uint64_t>& length, error_code&) override {
    if (status_ >= 200 && reply_->body.empty()) {
      const std::uint64_t want = length ? *length : kMaxUpFrontReserve;
      reply_->body.reserve(static_cast<size_t>(std::min<std::uint64_t>({want, max_body_, kMaxUpFrontReserve})));
    }
  }
  size_t on_body_impl(string_view body, error_code& ec) override { return Append(body, ec); }
  void on_chunk_header_impl(std::uint64_t, string_view, error_code&) override {}
  size_t on_chunk_body_impl(std::uint64_t, string_view body, error_code& ec) override { return Append(body, ec); }
  void on_finish_impl(error_code&) override {}

  size_t Append(string_view body, error_code& ec) {
    if (reply_->body.size() + body.size() > max_body_) {
      too_big_ = true;
      ec = http::error::body_limit;
      return 0;
    }
    std::string& out = reply_->body;
    if (out.size() + body.size() > out.capacity()) {
      // Grown by hand: the old buffer, a copy of what was received, is wiped
      // before it is freed.
      std::string bigger;
      bigger.reserve(std::min(max_body_, std::max(out.capacity() * 2, out.size() + body.size())));
      bigger.assign(out);
      Cleanse(out);
      out.swap(bigger);
    }
    out.append(body.data(), body.size());
    return body.size();
  }

  HttpReply* reply_;
  size_t max_body_;
  int status_ = 0;
  bool header_done_ = false;
  bool too_big_ = false;
};

}  // namespace

struct AnswerReader::Impl {
  std::optional<Parser> parser;
  HttpReply* reply = nullptr;
  size_t max_body = 0;
  bool head = false;

  void Begin() {
    parser.emplace(reply, max_body);
    parser->eager(true);
    parser->header_limit(kHeaderLimit);
    parser->body_limit(max_body);
    if (head) parser->skip(true);
  }
};

AnswerReader::AnswerReader() : impl_(std::make_unique<Impl>()) {}
AnswerReader::~AnswerReader() = default;

void AnswerReader::Start(HttpReply* reply, size_t max_body, bool head) {
  reply->status = 0;
  reply->headers.clear();
  reply->body.clear();
  impl_->reply = reply;
  impl_->max_body = max_body;
  impl_->head = head;
  impl_->Begin();
  done_ = too_big_ = keep_alive_ = false;
  error_.clear();
}

size_t AnswerReader::Feed(const char* data, size_t n) {
  size_t used = 0;
  while (!done_ && error_.empty() && used < n) {
    Parser& p = *impl_->parser;
    error_code ec;
    const size_t k = p.put(boost::asio::const_buffer(data + used, n - used), ec);
    used += k;
    if (ec == http::error::need_more) break;
    if (ec) {
      too_big_ = p.too_big() || ec == http::error::body_limit;
      error_ = too_big_ ? "answer larger than the limit" : "malformed answer: " + ec.message();
      break;
    }
    if (!p.is_done()) {
      if (k == 0) break;
      continue;
    }
    if (p.status() >= 100 && p.status() < 200) {  // 100 Continue and the like: the answer follows
      impl_->reply->headers.clear();
      impl_->Begin();
      continue;
    }
    done_ = true;
    keep_alive_ = p.keep_alive();
  }
  return used;
}

void AnswerReader::FeedEof() {
  if (done_ || !error_.empty()) return;
  Parser& p = *impl_->parser;
  error_code ec;
  if (p.got_some()) p.put_eof(ec);  // put_eof wants a started answer (none yet, or none after a 1xx)
  if (!p.got_some() || ec || !p.is_done()) {
    error_ = "connection closed before the end of the answer";
    return;
  }
  done_ = true;
  keep_alive_ = false;
}

}  // namespace dyad
