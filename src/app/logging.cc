#include "app/logging.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <cctype>
#include <nlohmann/json.hpp>

#include "core/time_format.h"

namespace dyad {
namespace {

bool IsKey(std::string_view k) {
  if (k.empty() || k.size() > 32) return false;
  for (char c : k) {
    if (!(std::islower(static_cast<unsigned char>(c)) || c == '_')) return false;
  }
  return true;
}

class JsonLogFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const std::string_view text(msg.payload.data(), msg.payload.size());
    nlohmann::json line = {{"ts", FormatIso8601(msg.time)},
                           {"level", std::string_view(spdlog::level::to_string_view(msg.level).data(),
                                                      spdlog::level::to_string_view(msg.level).size())},
                           {"logger", std::string_view(msg.logger_name.data(), msg.logger_name.size())},
                           {"thread", msg.thread_id},
                           {"msg", text}};
    nlohmann::json attrs = nlohmann::json::object();
    size_t start = 0;
    while (start < text.size()) {
      size_t end = text.find(' ', start);
      if (end == std::string_view::npos) end = text.size();
      std::string_view word = text.substr(start, end - start);
      size_t eq = word.find('=');
      if (eq != std::string_view::npos && IsKey(word.substr(0, eq))) {
        attrs[std::string(word.substr(0, eq))] = std::string(word.substr(eq + 1));
      }
      start = end + 1;
    }
    if (!attrs.empty()) line["attrs"] = std::move(attrs);
    const std::string out = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    dest.append(out.data(), out.data() + out.size());
    dest.push_back('\n');
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonLogFormatter>(); }
};

}  // namespace

std::unique_ptr<spdlog::formatter> NewJsonLogFormatter() { return std::make_unique<JsonLogFormatter>(); }

void ConfigureLogging(const std::string& level, const std::string& format) {
  auto logger = spdlog::get("dyad");
  if (!logger) logger = spdlog::stderr_logger_mt("dyad");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level));
  if (format == "json") logger->set_formatter(NewJsonLogFormatter());
}

}  // namespace dyad
