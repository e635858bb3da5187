#include "core/cron.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <ctime>
#include <vector>

namespace dyad {
namespace {

struct FieldSpec {
  const char* name;
  int min, max;
  std::array<const char*, 12> names;  // names[i] stands for min + i
};

constexpr FieldSpec kFields[5] = {
    {"minute", 0, 59, {}},
    {"hour", 0, 23, {}},
    {"day-of-month", 1, 31, {}},
    {"month", 1, 12, {"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"}},
    {"day-of-week", 0, 7, {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"}},
};

Error FieldError(const FieldSpec& f, std::string_view text, const std::string& why) {
  return MakeError(ErrorCode::kInvalidArgument,
                   std::string(f.name) + " field '" + std::string(text) + "': " + why);
}

Result<int> Value(const FieldSpec& f, std::string_view field, std::string_view s) {
  if (s.empty()) return FieldError(f, field, "empty value");
  if (std::isalpha(static_cast<unsigned char>(s[0]))) {
    std::string upper;
    for (char c : s) upper.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
    for (size_t i = 0; i < f.names.size() && f.names[i]; ++i) {
      if (upper == f.names[i]) return f.min + static_cast<int>(i);
    }
    // Appended, not `"'" + std::string(s) + …`: GCC 12 warns falsely (-Wrestrict) on that form.
    return FieldError(f, field, std::string("'").append(s).append("' is not a ").append(f.name).append(" name"));
  }
  int v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) {
    return FieldError(f, field, std::string("'").append(s).append("' is not a number"));
  }
  if (v < f.min || v > f.max) {
    return FieldError(f, field, std::to_string(v) + " is out of range " + std::to_string(f.min) + "-" +
                                    std::to_string(f.max));
  }
  return v;
}

// Parses one field into `bits` (indexed by value); returns whether it was
// restricted (anything but a bare '*').
Result<bool> ParseField(const FieldSpec& f, std::string_view field, std::vector<bool>& bits) {
  bits.assign(static_cast<size_t>(f.max) + 1, false);
  bool restricted = field != "*";
  size_t start = 0;
  while (start <= field.size()) {
    size_t comma = field.find(',', start);
    if (comma == std::string_view::npos) comma = field.size();
    std::string_view item = field.substr(start, comma - start);
    if (item.empty()) return FieldError(f, field, "empty list item");
    int step = 1;
    const bool has_step = item.find('/') != std::string_view::npos;
    if (auto slash = item.find('/'); slash != std::string_view::npos) {
      std::string_view s = item.substr(slash + 1);
      auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), step);
      if (s.empty() || ec != std::errc() || p != s.data() + s.size() || step <= 0) {
        return FieldError(f, field, "step '" + std::string(s) + "' must be a positive number");
      }
      item = item.substr(0, slash);
    }
    int lo, hi;
    if (item == "*") {
      lo = f.min;
      hi = f.max == 7 ? 6 : f.max;
    } else if (auto dash = item.find('-'); dash != std::string_view::npos) {
      DYAD_ASSIGN_OR_RETURN(lo, Value(f, field, item.substr(0, dash)));
      DYAD_ASSIGN_OR_RETURN(hi, Value(f, field, item.substr(dash + 1)));
      if (lo > hi) return FieldError(f, field, "range " + std::string(item) + " runs backwards");
    } else {
      DYAD_ASSIGN_OR_RETURN(lo, Value(f, field, item));
      hi = has_step ? (f.max == 7 ? 6 : f.max) : lo;  // "a/n" runs from a to the end
    }
    for (int v = lo; v <= hi; v += step) bits[static_cast<size_t>(v)] = true;
    start = comma + 1;
  }
  return restricted;
}

std::tm ToTm(std::chrono::system_clock::time_point t) {
  std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  return tm;
}

}  // namespace

Result<CronSchedule> CronSchedule::Parse(std::string_view expression) {
  std::vector<std::string_view> fields;
  size_t i = 0;
  while (i < expression.size()) {
    while (i < expression.size() && (expression[i] == ' ' || expression[i] == '\t')) ++i;
    size_t start = i;
    while (i < expression.size() && expression[i] != ' ' && expression[i] != '\t') ++i;
    if (i > start) fields.push_back(expression.substr(start, i - start));
  }
  if (fields.size() != 5) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "expected 5 fields (minute hour day-of-month month day-of-week), got " +
                         std::to_string(fields.size()));
  }
  CronSchedule c;
  c.expression_ = std::string(expression);
  std::vector<bool> bits;
  DYAD_RETURN_IF_ERROR(ParseField(kFields[0], fields[0], bits));
  for (int v = 0; v < 60; ++v) c.minutes_[v] = bits[v];
  DYAD_RETURN_IF_ERROR(ParseField(kFields[1], fields[1], bits));
  for (int v = 0; v < 24; ++v) c.hours_[v] = bits[v];
  DYAD_ASSIGN_OR_RETURN(c.days_restricted_, ParseField(kFields[2], fields[2], bits));
  for (int v = 1; v <= 31; ++v) c.days_[v] = bits[v];
  DYAD_RETURN_IF_ERROR(ParseField(kFields[3], fields[3], bits));
  for (int v = 1; v <= 12; ++v) c.months_[v] = bits[v];
  DYAD_ASSIGN_OR_RETURN(c.weekdays_restricted_, ParseField(kFields[4], fields[4], bits));
  for (int v = 0; v <= 6; ++v) c.weekdays_[v] = bits[v];
  if (bits[7]) c.weekdays_[0] = true;  // 7 is Sunday too
  return c;
}

bool CronSchedule::Matches(std::chrono::system_clock::time_point t) const {
  std::tm tm = ToTm(t);
  return minutes_[tm.tm_min] && hours_[tm.tm_hour] && months_[tm.tm_mon + 1] && DayMatches(tm);
}

bool CronSchedule::DayMatches(const std::tm& tm) const {
  bool dom = days_[tm.tm_mday], dow = weekdays_[tm.tm_wday];
  return (days_restricted_ && weekdays_restricted_) ? (dom || dow) : (dom && dow);
}

std::optional<std::chrono::system_clock::time_point> CronSchedule::Next(
    std::chrono::system_clock::time_point after) const {
  using namespace std::chrono;
  auto t = floor<minutes>(after) + minutes(1);
  const auto limit = t + hours(24 * 366 * 8);
  while (t < limit) {
    std::tm tm = ToTm(t);
    if (!months_[tm.tm_mon + 1]) {  // skip to the first day of the next month
      tm.tm_mday = 1;
      tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
      tm.tm_mon += 1;
      t = floor<minutes>(system_clock::from_time_t(timegm(&tm)));
      continue;
    }
    if (!DayMatches(tm)) {
      t = floor<days>(t) + days(1);
      continue;
    }
    if (!hours_[tm.tm_hour]) {
      t = floor<hours>(t) + hours(1);
      continue;
    }
    if (!minutes_[tm.tm_min]) {
      t += minutes(1);
      continue;
    }
    return t;
  }
  return std::nullopt;
}

// Next's walk backwards: a field that does not match skips to the last
// minute of the month, day or hour before.
std::optional<std::chrono::system_clock::time_point> CronSchedule::Prev(
    std::chrono::system_clock::time_point at) const {
  using namespace std::chrono;
  auto t = floor<minutes>(at);
  const auto limit = t - hours(24 * 366 * 8);
  while (t > limit) {
    std::tm tm = ToTm(t);
    if (!months_[tm.tm_mon + 1]) {
      tm.tm_mday = 1;
      tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
      t = floor<minutes>(system_clock::from_time_t(timegm(&tm))) - minutes(1);
      continue;
    }
    if (!DayMatches(tm)) {
      t = floor<days>(t) - minutes(1);
      continue;
    }
    if (!hours_[tm.tm_hour]) {
      t = floor<hours>(t) - minutes(1);
      continue;
    }
    if (!minutes_[tm.tm_min]) {
      t -= minutes(1);
      continue;
    }
    return t;
  }
  return std::nullopt;
}

}  // namespace dyad
