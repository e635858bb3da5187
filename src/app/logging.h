// Logging: the process's log lines on stderr (NewLineSink), as text (spdlog's
// default pattern) or as JSON (GATEWAY_LOG_FORMAT=json): one object per line,
// {"ts","level","logger","thread","msg"} and "attrs" holding the message's
// key=value words (a debug line's op, secret, status, duration_ms, …), every
// string escaped by a JSON serialiser (a message's quotes, control
// characters and invalid UTF-8 cannot break a line). Nothing here decides
// what is logged: no call site logs a credential value. Thread-safe once set.
#pragma once

#include <memory>
#include <string>

#include <spdlog/formatter.h>
#include <spdlog/sinks/sink.h>

namespace dyad {

// `format`: "text" or "json" (Config::log_format); `level`: spdlog's name.
void ConfigureLogging(const std::string& level, const std::string& format);

std::unique_ptr<spdlog::formatter> NewJsonLogFormatter();

// A sink that writes each line to `fd` with one write(2), formatted on the
// calling thread by that thread's own copy of the formatter. Where the
// kernel keeps concurrent writes whole (a regular file, whose offset Linux
// moves atomically; a character device such as /dev/null or a terminal) no
// lock is shared by the threads that log: the access log line of every
// request would otherwise queue them on one mutex held across a write
// (spdlog's stderr sink). A pipe or socket (journald's stream, a
// container runtime's) takes a mutex around the write, as lines longer than
// PIPE_BUF could interleave. Nothing is buffered: a crash loses no line.
// A write cut short (a full disk, a signal on a terminal) is finished by a
// second write, which another thread's line may precede there.
// `fd` is not closed.
std::shared_ptr<spdlog::sinks::sink> NewLineSink(int fd);

}  // namespace dyad
