// The JSON envelope of every response (DESIGN.md §8):
//   {"status":"success","data":…}
//   {"status":"error","error":{"code":"NOT_FOUND","message":"…"}}
// and the one mapping from ErrorCode to HTTP status and error code. The /v1
// path (OpenAI-compatible, DESIGN.md §12) answers errors in OpenAI's shape
// instead: {"error":{"message":"…","type":"…","param":…,"code":…}} (param
// and code null when empty).
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string_view>

#include "core/result.h"
#include "server/http_types.h"

namespace dyad {

HttpResponse JsonSuccess(const nlohmann::json& data, int status = 200);
HttpResponse JsonError(int status, std::string_view code, std::string_view message);
// With more members in the error object beside code and message (an
// object; e.g. {"upstreamStatus":401}).
HttpResponse JsonError(int status, std::string_view code, std::string_view message, const nlohmann::json& details);
// Maps an Error to its HTTP status and envelope, keeping its message.
HttpResponse JsonError(const Error& error);

int HttpStatusFor(ErrorCode code);

HttpResponse OpenAiError(int status, std::string_view type, std::string_view message, std::string_view code = {},
                         std::string_view param = {});

// Whether a path, canonical or not, was meant for /v1: its first segment,
// skipping empty and "." ones, is "v1" as written (nothing decoded).
bool AimsAtV1(std::string_view path);
// An error in the shape the client of `path` reads: OpenAI's for /v1 (type
// "server_error" for a 500, else "invalid_request_error", as the /v1
// routes answer; `code` lower-cased), the envelope's otherwise.
HttpResponse ErrorFor(std::string_view path, int status, std::string_view code, std::string_view message);

}  // namespace dyad
