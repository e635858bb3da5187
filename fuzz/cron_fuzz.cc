// libFuzzer: the cron parser accepts or rejects any text without crashing,
// and an accepted schedule's next run, if any, matches the schedule.
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/cron.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 256) return 0;
  auto c = dyad::CronSchedule::Parse(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!c.ok()) return 0;
  auto start = std::chrono::system_clock::time_point(std::chrono::seconds(1767225600));
  auto next = c->Next(start);
  if (next && (!c->Matches(*next) || *next <= start)) std::abort();
  return 0;
}
