#include "core/time_format.h"

#include <array>
#include <cstdio>
#include <ctime>

namespace dyad {

std::string FormatIso8601(std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  auto ms = duration_cast<milliseconds>(t.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  if (ms % 1000 < 0) --secs;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(((ms % 1000) + 1000) % 1000));
  return buf;
}

std::optional<std::chrono::system_clock::time_point> ParseIso8601(std::string_view text) {
  if (text.size() < 20 || text.size() > 40) return std::nullopt;
  std::string s(text);
  std::tm tm{};
  int consumed = 0;
  if (std::sscanf(s.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                  &tm.tm_min, &tm.tm_sec, &consumed) != 6 || consumed != 19) {
    return std::nullopt;
  }
  std::string_view rest = text.substr(19);
  if (!rest.empty() && rest.front() == '.') {
    size_t digits = rest.find_first_not_of("0123456789", 1);
    if (digits == 1 || digits == std::string_view::npos) return std::nullopt;
    rest.remove_prefix(digits);
  }
  if (rest != "Z" && rest != "+00:00") return std::nullopt;
  if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 ||
      tm.tm_sec > 60) {
    return std::nullopt;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  // system_clock counts nanoseconds in 64 bits: about 1678 to 2262.
  const std::chrono::sys_seconds t{std::chrono::seconds(timegm(&tm))};
  if (t < std::chrono::ceil<std::chrono::seconds>(std::chrono::system_clock::time_point::min()) ||
      t > std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::time_point::max())) {
    return std::nullopt;
  }
  return std::chrono::system_clock::time_point(t);
}

namespace {

constexpr std::array<std::string_view, 7> kDays = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
constexpr std::array<std::string_view, 7> kLongDays = {"Sunday",   "Monday", "Tuesday", "Wednesday",
                                                       "Thursday", "Friday", "Saturday"};
constexpr std::array<std::string_view, 12> kMonths = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

// A left-to-right reader of one fixed-layout date.
class Reader {
 public:
  explicit Reader(std::string_view s) : s_(s) {}
  bool Literal(std::string_view lit) {
    if (!s_.starts_with(lit)) return false;
    s_.remove_prefix(lit.size());
    return true;
  }
  // Exactly `n` digits.
  bool Digits(int n, int* out) {
    if (s_.size() < static_cast<size_t>(n)) return false;
    int v = 0;
    for (int i = 0; i < n; ++i) {
      if (s_[i] < '0' || s_[i] > '9') return false;
      v = v * 10 + (s_[i] - '0');
    }
    s_.remove_prefix(n);
    *out = v;
    return true;
  }
  // One of `names`; the index in *out.
  template <size_t N>
  bool OneOf(const std::array<std::string_view, N>& names, int* out) {
    for (size_t i = 0; i < N; ++i) {
      if (Literal(names[i])) {
        *out = static_cast<int>(i);
        return true;
      }
    }
    return false;
  }
  bool Done() const { return s_.empty(); }

 private:
  std::string_view s_;
};

struct Parts {
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
};

// "hh:mm:ss"
bool ReadTime(Reader& r, Parts& p) {
  return r.Digits(2, &p.hour) && r.Literal(":") && r.Digits(2, &p.minute) && r.Literal(":") &&
         r.Digits(2, &p.second);
}

std::optional<Parts> ReadImfFixdate(std::string_view text) {
  Reader r(text);
  Parts p;
  int ignored = 0;
  if (r.OneOf(kDays, &ignored) && r.Literal(", ") && r.Digits(2, &p.day) && r.Literal(" ") &&
      r.OneOf(kMonths, &p.month) && r.Literal(" ") && r.Digits(4, &p.year) && r.Literal(" ") && ReadTime(r, p) &&
      r.Literal(" GMT") && r.Done()) {
    return p;
  }
  return std::nullopt;
}

std::optional<Parts> ReadRfc850(std::string_view text) {
  Reader r(text);
  Parts p;
  int ignored = 0;
  if (r.OneOf(kLongDays, &ignored) && r.Literal(", ") && r.Digits(2, &p.day) && r.Literal("-") &&
      r.OneOf(kMonths, &p.month) && r.Literal("-") && r.Digits(2, &p.year) && r.Literal(" ") && ReadTime(r, p) &&
      r.Literal(" GMT") && r.Done()) {
    p.year += p.year < 70 ? 2000 : 1900;
    return p;
  }
  return std::nullopt;
}

std::optional<Parts> ReadAsctime(std::string_view text) {
  Reader r(text);
  Parts p;
  int ignored = 0;
  if (!r.OneOf(kDays, &ignored) || !r.Literal(" ") || !r.OneOf(kMonths, &p.month) || !r.Literal(" ")) {
    return std::nullopt;
  }
  // The day is two digits or a space and one digit.
  if (!(r.Literal(" ") ? r.Digits(1, &p.day) : r.Digits(2, &p.day))) return std::nullopt;
  if (r.Literal(" ") && ReadTime(r, p) && r.Literal(" ") && r.Digits(4, &p.year) && r.Done()) return p;
  return std::nullopt;
}

}  // namespace

std::string FormatHttpDate(std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  auto secs = floor<seconds>(t);
  auto days = floor<std::chrono::days>(secs);
  year_month_day ymd(days);
  hh_mm_ss hms(secs - days);
  weekday wd(days);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s, %02u %s %04d %02d:%02d:%02d GMT", kDays[wd.c_encoding()].data(),
                static_cast<unsigned>(ymd.day()), kMonths[static_cast<unsigned>(ymd.month()) - 1].data(),
                static_cast<int>(ymd.year()), static_cast<int>(hms.hours().count()),
                static_cast<int>(hms.minutes().count()), static_cast<int>(hms.seconds().count()));
  return buf;
}

std::optional<std::chrono::system_clock::time_point> ParseHttpDate(std::string_view text) {
  using namespace std::chrono;
  if (text.size() > 40) return std::nullopt;
  std::optional<Parts> p = ReadImfFixdate(text);
  if (!p) p = ReadRfc850(text);
  if (!p) p = ReadAsctime(text);
  if (!p) return std::nullopt;
  // kMonths indexes from 0.
  year_month_day ymd{year(p->year), month(static_cast<unsigned>(p->month + 1)), day(static_cast<unsigned>(p->day))};
  // Second 60: a leap second, as the grammar allows.
  if (!ymd.ok() || p->hour > 23 || p->minute > 59 || p->second > 60) return std::nullopt;
  const sys_seconds t = sys_days(ymd) + hours(p->hour) + minutes(p->minute) + seconds(p->second);
  // system_clock counts nanoseconds in 64 bits: about 1678 to 2262.
  if (t < ceil<seconds>(system_clock::time_point::min()) || t > floor<seconds>(system_clock::time_point::max())) {
    return std::nullopt;
  }
  return system_clock::time_point(t);
}

}  // namespace dyad
