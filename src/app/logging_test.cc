#include "app/logging.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <spdlog/details/log_msg.h>

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

}  // namespace
}  // namespace dyad
