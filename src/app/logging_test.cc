#include "app/logging.h"

#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <spdlog/details/log_msg.h>
#include <spdlog/pattern_formatter.h>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "testing/at_once.h"

namespace dyad {
namespace {

nlohmann::json Format(std::string_view text, spdlog::level::level_enum level = spdlog::level::debug) {
  auto f = NewJsonLogFormatter();
  spdlog::details::log_msg msg("dyad", level, spdlog::string_view_t(text.data(), text.size()));
  spdlog::memory_buf_t buf;
  f->format(msg, buf);
  std::string line(buf.data(), buf.size());
  EXPECT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1) << "one line per message: " << line;
  return nlohmann::json::parse(line);  // throws (fails the test) on anything but JSON
}

TEST(JsonLogFormatter, WritesOneObjectWithLevelMessageAndKeyValueAttributes) {
  auto j = Format("backend call: store.get secret=dyad/providers/p1 status=OK duration_ms=0.125");
  EXPECT_EQ(j["level"], "debug");
  EXPECT_EQ(j["logger"], "dyad");
  EXPECT_EQ(j["msg"], "backend call: store.get secret=dyad/providers/p1 status=OK duration_ms=0.125");
  EXPECT_EQ(j["attrs"]["secret"], "dyad/providers/p1");
  EXPECT_EQ(j["attrs"]["status"], "OK");
  EXPECT_EQ(j["attrs"]["duration_ms"], "0.125");
  EXPECT_TRUE(j["ts"].get<std::string>().ends_with("Z"));
}

TEST(JsonLogFormatter, EscapesQuotesNewlinesControlCharactersAndInvalidUtf8) {
  std::string nasty = "say \"hi\"\nnext line\t\x01 \\ end \xff\xfe";
  auto j = Format(nasty, spdlog::level::warn);
  EXPECT_EQ(j["level"], "warning");
  std::string msg = j["msg"];
  EXPECT_NE(msg.find("say \"hi\"\nnext line\t\x01 \\ end"), std::string::npos);
  EXPECT_EQ(msg.find('\xff'), std::string::npos);  // replaced, never passed through
}

TEST(JsonLogFormatter, LeavesOutWordsThatAreNotKeyValuePairs) {
  auto j = Format("GET /admin/providers 200 1.2ms id=admin =x Upper=y");
  EXPECT_EQ(j["attrs"].size(), 1u);
  EXPECT_EQ(j["attrs"]["id"], "admin");
  EXPECT_FALSE(Format("no pairs here").contains("attrs"));
}

void Log(spdlog::sinks::sink& sink, const std::string& text) {
  sink.log(spdlog::details::log_msg("dyad", spdlog::level::info, spdlog::string_view_t(text.data(), text.size())));
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// Each of `threads` threads logs `per_thread` lines "t<i> n<j> " + filler;
// every line read back must be one of them, whole, and each exactly once.
void ExpectWholeLines(const std::vector<std::string>& lines, int threads, int per_thread, size_t filler) {
  ASSERT_EQ(lines.size(), static_cast<size_t>(threads * per_thread));
  std::vector<std::vector<int>> seen(threads, std::vector<int>(per_thread, 0));
  for (const auto& line : lines) {
    int t = -1, n = -1;
    ASSERT_EQ(std::sscanf(line.c_str(), "t%d n%d ", &t, &n), 2) << line.substr(0, 80);
    ASSERT_TRUE(t >= 0 && t < threads && n >= 0 && n < per_thread) << line.substr(0, 80);
    EXPECT_EQ(line, "t" + std::to_string(t) + " n" + std::to_string(n) + " " + std::string(filler, 'x'));
    ++seen[t][n];
  }
  for (const auto& row : seen) {
    for (int count : row) EXPECT_EQ(count, 1);
  }
}

void LogFromThreads(spdlog::sinks::sink& sink, int threads, int per_thread, size_t filler) {
  testing::AtOnce(threads, [&](int t) {
    for (int n = 0; n < per_thread; ++n) {
      Log(sink, "t" + std::to_string(t) + " n" + std::to_string(n) + " " + std::string(filler, 'x'));
    }
  });
}

TEST(LineSink, KeepsEveryLineWholeInAFileWrittenByManyThreadsAtOnce) {
  char path[] = "/tmp/dyad-line-sink-XXXXXX";
  int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::unlink(path);
  auto sink = NewLineSink(fd);
  sink->set_pattern("%v");
  LogFromThreads(*sink, 8, 400, 300);
  std::string text;
  char buf[65536];
  ASSERT_EQ(::lseek(fd, 0, SEEK_SET), 0);
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) text.append(buf, static_cast<size_t>(n));
  ::close(fd);
  ExpectWholeLines(Lines(text), 8, 400, 300);
}

TEST(LineSink, KeepsLinesLongerThanAPipesAtomicWriteWholeInAPipe) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  std::string text;
  std::thread reader([&] {
    char buf[65536];
    for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) text.append(buf, static_cast<size_t>(n));
  });
  {
    auto sink = NewLineSink(fds[1]);
    sink->set_pattern("%v");
    LogFromThreads(*sink, 4, 50, 3 * PIPE_BUF);  // each line is written in parts
  }
  ::close(fds[1]);
  reader.join();
  ::close(fds[0]);
  ExpectWholeLines(Lines(text), 4, 50, 3 * PIPE_BUF);
}

TEST(LineSink, UsesANewFormatterOnEveryThreadOnceItIsSet) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  auto sink = NewLineSink(fds[1]);
  sink->set_pattern("old %v");
  Log(*sink, "a");
  std::thread([&] { Log(*sink, "b"); }).join();
  sink->set_pattern("new %v");
  Log(*sink, "c");
  std::thread([&] { Log(*sink, "d"); }).join();
  sink->set_formatter(NewJsonLogFormatter());
  Log(*sink, "e");
  // A second sink's formatter is its own, on a thread that used the first.
  auto other = NewLineSink(fds[1]);
  other->set_pattern("other %v");
  Log(*other, "f");
  ::close(fds[1]);
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) text.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  auto lines = Lines(text);
  ASSERT_EQ(lines.size(), 6u);
  EXPECT_EQ(lines[0], "old a");
  EXPECT_EQ(lines[1], "old b");
  EXPECT_EQ(lines[2], "new c");
  EXPECT_EQ(lines[3], "new d");
  EXPECT_EQ(nlohmann::json::parse(lines[4])["msg"], "e");
  EXPECT_EQ(lines[5], "other f");
}

struct LogsAtThreadEnd {
  spdlog::sinks::sink* sink = nullptr;
  ~LogsAtThreadEnd() {
    if (sink) Log(*sink, "at the end");
  }
};

TEST(LineSink, WritesALineLoggedAfterTheThreadsOwnFormatterIsGone) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  auto sink = NewLineSink(fds[1]);
  sink->set_pattern("%v");
  std::thread([&] {
    thread_local LogsAtThreadEnd last;  // made before the sink's copy for this thread: destroyed after it
    last.sink = sink.get();
    Log(*sink, "first");
  }).join();
  ::close(fds[1]);
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) text.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  EXPECT_EQ(Lines(text), (std::vector<std::string>{"first", "at the end"}));
}

}  // namespace
}  // namespace dyad
