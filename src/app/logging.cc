#include "app/logging.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/spdlog.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <nlohmann/json.hpp>

#include "core/mutex.h"
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

// Whether concurrent write(2)s to `fd` each land whole (see NewLineSink).
bool WritesStayWhole(int fd) {
  struct stat st {};
  return ::fstat(fd, &st) == 0 && (S_ISREG(st.st_mode) || S_ISCHR(st.st_mode));
}

class LineSink final : public spdlog::sinks::sink {
 public:
  explicit LineSink(int fd) : fd_(fd), locked_(!WritesStayWhole(fd)) {
    set_formatter(std::make_unique<spdlog::pattern_formatter>());
  }

  void log(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t line;
    if (ThisThread* mine = Mine()) {
      mine->formatter->format(msg, line);
      if (!locked_) return Write(line);
      MutexLock lock(&mu_);
      return Write(line);
    }
    MutexLock lock(&mu_);  // a thread at its end: the shared formatter
    formatter_->format(msg, line);
    Write(line);
  }
  void flush() override {}  // nothing is buffered
  void set_pattern(const std::string& pattern) override {
    set_formatter(std::make_unique<spdlog::pattern_formatter>(pattern));
  }
  void set_formatter(std::unique_ptr<spdlog::formatter> formatter) override {
    static std::atomic<uint64_t> versions{0};
    MutexLock lock(&mu_);
    formatter_ = std::move(formatter);
    version_.store(++versions, std::memory_order_release);
  }

 private:
  // This thread's copy of the formatter (spdlog's keep per-second state, so
  // one is not shared unlocked), made on its first line and after every
  // set_formatter; versions are unique across sinks, so a copy made for
  // another sink is never used. Null once the thread's copy was destroyed
  // (a line logged by a later thread_local's destructor, or at exit).
  struct ThisThread {
    uint64_t version = 0;
    std::unique_ptr<spdlog::formatter> formatter;
    ~ThisThread() { ended = true; }
    static thread_local bool ended;  // trivially destructible: readable to the thread's very end
  };
  ThisThread* Mine() DYAD_LOCKS_EXCLUDED(mu_) {
    if (ThisThread::ended) return nullptr;
    thread_local ThisThread mine;
    const uint64_t version = version_.load(std::memory_order_acquire);
    if (mine.version != version) {
      MutexLock lock(&mu_);
      mine.formatter = formatter_->clone();
      mine.version = version_.load(std::memory_order_relaxed);
    }
    return &mine;
  }

  // A log line that cannot be written is dropped: there is nowhere to say so.
  // A non-blocking descriptor that is full is waited on for up to 100 ms; a
  // line given up part-way is ended, so the next one starts on a line of its own.
  void Write(const spdlog::memory_buf_t& line) {
    const char* p = line.data();
    size_t left = line.size();
    while (left > 0) {
      ssize_t n = ::write(fd_, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        pollfd room{fd_, POLLOUT, 0};
        if (::poll(&room, 1, 100) > 0) continue;
      }
      if (n <= 0) {
        if (p != line.data()) (void)!::write(fd_, "\n", 1);
        return;
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
  }

  const int fd_;
  const bool locked_;
  Mutex mu_;
  std::unique_ptr<spdlog::formatter> formatter_ DYAD_GUARDED_BY(mu_);
  std::atomic<uint64_t> version_{0};
};

thread_local bool LineSink::ThisThread::ended = false;

}  // namespace

std::unique_ptr<spdlog::formatter> NewJsonLogFormatter() { return std::make_unique<JsonLogFormatter>(); }

std::shared_ptr<spdlog::sinks::sink> NewLineSink(int fd) { return std::make_shared<LineSink>(fd); }

void ConfigureLogging(const std::string& level, const std::string& format) {
  auto logger = spdlog::get("dyad");
  if (!logger) {
    logger = std::make_shared<spdlog::logger>("dyad", NewLineSink(STDERR_FILENO));
    spdlog::register_logger(logger);
  }
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level));
  if (format == "json") logger->set_formatter(NewJsonLogFormatter());
}

}  // namespace dyad
