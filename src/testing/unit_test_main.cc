// The unit tests' main: gtest's own, with SIGPIPE ignored for the whole
// binary first, as the gateway's main does (src/cli/main.cc). A TLS peer in
// a test (LoopbackHttpServer's SSL_write and SSL_shutdown) writes with
// write(2), not send(MSG_NOSIGNAL): a client that closed its connection
// first (one that retires it) would otherwise end the binary. A failed write
// is the writer's to see.
#include <gtest/gtest.h>

#include <csignal>

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
