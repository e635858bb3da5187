// The answer of Secrets Manager's GetSecretValue, of which the store reads
// two fields: SecretString and VersionId.
//
// ParseSecretValueAnswer reads the answer in one pass without building a
// document: it checks the whole text is one JSON object (RFC 8259 as
// nlohmann/json reads it: UTF-8 strings, escapes, surrogate pairs) and
// decodes only the two fields. On anything it does not handle itself — a
// byte-order mark, a number with an exponent or more than 15 characters,
// nesting deeper than 32, a repeated SecretString or VersionId, or any
// error — it leaves the decision to nlohmann/json, so both paths answer
// alike (fuzz/secret_value_fuzz.cc checks this). Pure functions; thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "core/result.h"

namespace dyad {

struct SecretValueAnswer {
  std::optional<std::string> secret_string;  // absent, or not a string: nullopt
  std::string version_id;                    // absent, or not a string: ""
};

// kUnavailable "GetSecretValue: the answer is not a JSON object" for text
// that is not one. The caller wipes `text` and, once done, the answer's
// secret_string.
Result<SecretValueAnswer> ParseSecretValueAnswer(std::string_view text);
// The one-pass reader alone: nullopt where it leaves the decision to the
// general parser. For tests and fuzzing.
std::optional<SecretValueAnswer> ScanSecretValueAnswerForTesting(std::string_view text);
// The general parser alone (nlohmann/json), for the same.
Result<SecretValueAnswer> ParseSecretValueAnswerGeneralForTesting(std::string_view text);

}  // namespace dyad
