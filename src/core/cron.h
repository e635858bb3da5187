// CronSchedule: a 5-field cron expression (minute hour day-of-month month
// day-of-week) evaluated in UTC.
//
// Fields take *, numbers, ranges (a-b), lists (a,b), steps (*/n, a-b/n,
// a/n) and, for month and day-of-week, names (JAN…DEC, SUN…SAT; 7 is also
// Sunday). When both day fields are restricted a day matches either one
// (the classic cron OR rule). Parse errors say which field and why.
// Immutable and thread-safe.
#pragma once

#include <bitset>
#include <chrono>
#include <ctime>
#include <optional>
#include <string>

#include "core/result.h"

namespace dyad {

class CronSchedule {
 public:
  static Result<CronSchedule> Parse(std::string_view expression);

  // The first matching minute strictly after `after`; nullopt if none within
  // eight years (e.g. "0 0 30 2 *").
  std::optional<std::chrono::system_clock::time_point> Next(std::chrono::system_clock::time_point after) const;
  // The last matching minute at or before `at`; nullopt if none within the
  // eight years before it. The slot a restarted scheduler last had.
  std::optional<std::chrono::system_clock::time_point> Prev(std::chrono::system_clock::time_point at) const;
  bool Matches(std::chrono::system_clock::time_point t) const;
  const std::string& expression() const { return expression_; }

 private:
  bool DayMatches(const std::tm& tm) const;  // the classic OR rule when both day fields are restricted

  std::string expression_;
  std::bitset<60> minutes_;
  std::bitset<24> hours_;
  std::bitset<32> days_;     // 1..31
  std::bitset<13> months_;   // 1..12
  std::bitset<7> weekdays_;  // 0..6, Sunday = 0
  bool days_restricted_ = false;
  bool weekdays_restricted_ = false;
};

}  // namespace dyad
