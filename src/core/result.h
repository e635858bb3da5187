// Result<T> and Error: errors as values.
//
// An Error carries a canonical code (what callers branch on: retry, fall back,
// map to an HTTP status) and a message that keeps the backend's own words. It
// never carries secret material. Result<T> is either a T or an Error; it is a
// plain value type with no thread-safety of its own. value() on an error (or
// Result<T>::error() on a success) is a bug: it aborts with the error's code and message
// in every build type, never reads the wrong alternative or throws.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace dyad {

enum class ErrorCode {
  kInvalidArgument,    // bad input: the caller must change something
  kNotFound,           // the thing does not exist
  kAlreadyExists,      // a unique constraint (slug, secret name) was hit
  kConflict,           // the operation collides with one in progress
  kUnauthenticated,    // no or wrong credentials
  kPermissionDenied,   // authenticated, but not allowed (never falls back)
  kUnavailable,        // backend down, timeout, 5xx, throttled after retries
  kFailedPrecondition, // state does not allow it (e.g. key version retired)
  kDataLoss,           // stored data is corrupt or fails authentication
  kUnimplemented,
  kInternal,
  kDeadlineExceeded,  // a deadline passed before the answer (an upstream timeout)
  kCancelled,          // the caller gave up (a client went away)
};

std::string_view ErrorCodeName(ErrorCode code);

struct Error {
  ErrorCode code;
  std::string message;
};

inline Error MakeError(ErrorCode code, std::string message) {
  return Error{code, std::move(message)};
}

namespace result_internal {
// Out of line and cold, so the checks cost one predictable branch.
[[noreturn, gnu::cold, gnu::noinline]] inline void DieOnMisuse(const char* what, const Error* error) {
  if (error) {
    std::fprintf(stderr, "fatal: %s on an error: %.*s: %s\n", what, static_cast<int>(ErrorCodeName(error->code).size()),
                 ErrorCodeName(error->code).data(), error->message.c_str());
  } else {
    std::fprintf(stderr, "fatal: %s on a success\n", what);
  }
  std::fflush(stderr);
  std::abort();
}
}  // namespace result_internal

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}          // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}      // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { CheckOk(); return *std::get_if<0>(&v_); }
  const T& value() const& { CheckOk(); return *std::get_if<0>(&v_); }
  T&& value() && { CheckOk(); return std::move(*std::get_if<0>(&v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const {
    if (ok()) [[unlikely]] result_internal::DieOnMisuse("Result::error()", nullptr);
    return *std::get_if<1>(&v_);
  }
  ErrorCode code() const { return error().code; }

 private:
  void CheckOk() const {
    if (!ok()) [[unlikely]] result_internal::DieOnMisuse("Result::value()", std::get_if<1>(&v_));
  }
  std::variant<T, Error> v_;
};

// Result<void>: success or an Error.
template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  // On a success: an kInternal error with no message.
  const Error& error() const { return error_; }
  ErrorCode code() const { return error_.code; }

 private:
  Error error_{ErrorCode::kInternal, {}};
  bool ok_ = true;
};

using Status = Result<void>;

inline Status OkStatus() { return {}; }

}  // namespace dyad

// Propagates the error of a Result/Status expression from the current function.
#define DYAD_RETURN_IF_ERROR(expr)                 \
  do {                                             \
    auto dyad_status_ = (expr);                    \
    if (!dyad_status_.ok()) return dyad_status_.error(); \
  } while (0)

#define DYAD_CONCAT_INNER_(a, b) a##b
#define DYAD_CONCAT_(a, b) DYAD_CONCAT_INNER_(a, b)
// Declares `lhs` from a Result expression or returns its error.
#define DYAD_ASSIGN_OR_RETURN(lhs, expr)                       \
  auto DYAD_CONCAT_(dyad_r_, __LINE__) = (expr);               \
  if (!DYAD_CONCAT_(dyad_r_, __LINE__).ok())                   \
    return DYAD_CONCAT_(dyad_r_, __LINE__).error();            \
  lhs = std::move(DYAD_CONCAT_(dyad_r_, __LINE__)).value()
