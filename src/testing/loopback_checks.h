// gtest helpers for the HTTP clients' tests against LoopbackHttpServer (the
// server itself stays free of gtest: bench/ uses it): a TLS server's
// context and the CA file its clients trust, the check that ends a test
// whose connection must not be kept, and the wait for the server's closes.
// Test code only.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <string_view>
#include <thread>

#include "core/result.h"
#include "server/tls_context.h"
#include "testing/loopback_http_server.h"
#include "testing/test_certificates.h"

namespace dyad {

// A loopback server's TLS context and the file a client verifies it with (a
// self-signed certificate for 127.0.0.1, its own CA).
struct LoopbackTls {
  SslCtxPtr ctx;  // null when it could not be made (the test has failed)
  std::string ca_file;
};

// `stem` names the certificate's files in the test's temporary directory.
inline LoopbackTls MakeLoopbackTls(const std::string& stem) {
  const TlsFiles files = MakeCertAndKey(stem);
  Result<SslCtxPtr> ctx = NewTlsServerContext(files);
  if (!ctx.ok()) {
    ADD_FAILURE() << ctx.error().message;
    return {nullptr, files.cert_file};
  }
  return {std::move(ctx).value(), files.cert_file};
}

// The call made again after one whose connection must not be kept got
// `body`: the answer `fresh` of a new connection, the server's
// `connections`-th.
inline void ExpectAnsweredOnANewConnection(const Result<std::string>& body, const LoopbackHttpServer& server,
                                           std::string_view fresh, int connections = 2) {
  ASSERT_TRUE(body.ok()) << body.error().message;
  EXPECT_EQ(*body, fresh);
  EXPECT_EQ(server.connections(), connections);
}

// Waits (bounded, without a timing assertion) until the server has closed
// its end of `n` connections (their scripts returned): it does so on its own
// thread, racing the client. True when it did within 10 s.
inline bool ServerClosed(const LoopbackHttpServer& server, int n) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (server.closed() < n) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::yield();
  }
  return true;
}

}  // namespace dyad
