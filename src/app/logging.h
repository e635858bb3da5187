// Logging: the process's log lines on stderr, as text (spdlog's default
// pattern) or as JSON (GATEWAY_LOG_FORMAT=json): one object per line,
// {"ts","level","logger","thread","msg"} and "attrs" holding the message's
// key=value words (a debug line's op, secret, status, duration_ms, …), every
// string escaped by a JSON serialiser (a message's quotes, control
// characters and invalid UTF-8 cannot break a line). Nothing here decides
// what is logged: no call site logs a credential value. Thread-safe once set.
#pragma once

#include <memory>
#include <string>

#include <spdlog/formatter.h>

namespace dyad {

// `format`: "text" or "json" (Config::log_format); `level`: spdlog's name.
void ConfigureLogging(const std::string& level, const std::string& format);

std::unique_ptr<spdlog::formatter> NewJsonLogFormatter();

}  // namespace dyad
