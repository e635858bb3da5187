// A whole App on the environment backend in a temporary data dir, and
// requests to it as the HTTP server makes them: for tests of the routes
// end to end without a socket. Not thread-safe to build; Call() is as
// thread-safe as App::Handle().
#pragma once

#include <atomic>
#include <fstream>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "app/app.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/encoding.h"
#include "testing/fakes.h"

namespace dyad::testing {

inline constexpr char kAdminToken[] = "admin-token-0123456789";
inline constexpr char kViewerToken[] = "viewer-token-0123456789";

class TestApp {
 public:
  // `extra` adds or overrides variables (GATEWAY_DATABASE_URL: another registry).
  explicit TestApp(const EnvMap& extra = {}) {
    std::ofstream(dir_.File("tokens.json"))
        << R"({"tokens":[{"name":"ci-viewer","role":"viewer","sha256":")" + Sha256Hex(kViewerToken) + "\"}]}";
    EnvMap env = {{"GATEWAY_DATA_DIR", dir_.File("data")},
                  {"GATEWAY_ADMIN_API_KEY", kAdminToken},
                  {"GATEWAY_ADMIN_TOKENS_FILE", dir_.File("tokens.json")},
                  {"ENCRYPTION_KEY", std::string(64, 'a')}};
    for (const auto& [k, v] : extra) env[k] = v;
    auto config = LoadConfig(env, false);
    EXPECT_TRUE(config.ok()) << config.error().message;
    EXPECT_TRUE(EnsureDataDir(config->data_dir).ok());
    auto app = App::Create(*config, clock_, false);
    EXPECT_TRUE(app.ok()) << app.error().message;
    app_ = std::move(app).value();
  }

  App& app() { return *app_; }

  HttpResponse Call(const std::string& method, const std::string& path, const std::string& body = "",
                    const std::string& content_type = "application/json", const std::string& token = kAdminToken) {
    HttpRequest r;
    r.method = method;
    SetTarget(r, path);
    r.body = body;
    r.content_type = content_type;
    if (!token.empty()) r.authorization = "Bearer " + token;
    r.request_id = "rid-" + std::to_string(++requests_);
    r.peer = "127.0.0.1";
    return app_->Handle(r);
  }

 private:
  static std::string Sha256Hex(std::string_view s) { return HexEncode(Sha256(s)); }

  TempDir dir_;
  SystemClock clock_;
  std::unique_ptr<App> app_;
  std::atomic<int> requests_{0};
};

}  // namespace dyad::testing
