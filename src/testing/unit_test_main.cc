// The unit tests' main: gtest's own, with SIGPIPE ignored for the whole
// binary first, as the gateway's main does (src/cli/main.cc). A TLS peer in
// a test (LoopbackHttpServer's SSL_write and SSL_shutdown) writes with
// write(2), not send(MSG_NOSIGNAL): a client that closed its connection
// first (one that retires it) would otherwise end the binary. A failed write
// is the writer's to see.
//
// spdlog's registry (a function-local static inside libspdlog, which is not
// built with ThreadSanitizer) is made here, before any test starts a thread,
// as the gateway's start-up does: else a test whose first log line races
// with its own thread's is a data race to TSan, which cannot see the guard.
#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <csignal>

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  (void)spdlog::default_logger();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
