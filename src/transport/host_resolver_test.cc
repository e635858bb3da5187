#include "transport/host_resolver.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "testing/refusing_threads.h"

namespace dyad {
namespace {

// A lookup's thread refused by the system fails that lookup (kUnavailable,
// naming the host) and never the process; the next lookup tries again.
TEST(HostResolver, ALookupWhoseThreadCannotStartAnswersUnavailableNamingTheHost) {
  testing::RefusingThreads threads;
  auto resolver = NewSystemResolver(threads.starter());
  auto refused = resolver->Resolve("localhost");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.code(), ErrorCode::kUnavailable);
  EXPECT_EQ(refused.error().message,
            "cannot start a thread to resolve 'localhost': Resource temporarily unavailable");
  threads.Allow();
  auto resolved = resolver->Resolve("localhost");
  ASSERT_TRUE(resolved.ok()) << resolved.error().message;
  EXPECT_TRUE(std::count(resolved->begin(), resolved->end(), "127.0.0.1") ||
              std::count(resolved->begin(), resolved->end(), "::1"));
  EXPECT_EQ(threads.asked(), 2);
}

}  // namespace
}  // namespace dyad
