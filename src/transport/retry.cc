#include "transport/retry.h"

#include <algorithm>

namespace dyad {

Clock::Duration FullJitterBackoff(const RetryPolicy& policy, int retry, Random& random) {
  using std::chrono::nanoseconds;
  auto ceiling = nanoseconds(policy.cap);
  if (retry < 30) ceiling = std::min(ceiling, nanoseconds(policy.base) * (int64_t{1} << retry));
  uint64_t r = 0;
  if (!random.Fill(reinterpret_cast<uint8_t*>(&r), sizeof r).ok()) return ceiling / 2;
  // r / 2^64 in [0, 1): a uniform point in [0, ceiling].
  auto scaled = static_cast<int64_t>(static_cast<long double>(r) / 18446744073709551616.0L *
                                     static_cast<long double>(ceiling.count()));
  return nanoseconds(scaled);
}

}  // namespace dyad
