// AUDIT_LOG_ORIGIN (issue 14 review): the place an audit log's head says it
// was written, set explicitly, so that a container recreated under a new
// host name (the default origin's first part in cluster mode) keeps the
// check that a log deleted and begun again at its place is reported.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "app/audit_setup.h"
#include "testing/test_app.h"

namespace dyad {
namespace {

TEST(AuditLogOrigin, TheConfiguredOneIsUsedForTheConfiguredLogOnly) {
  Config c;
  c.audit_log_path = "/var/lib/dyad/audit.log";
  EXPECT_EQ(ConfiguredAuditLogOrigin(c, c.audit_log_path, true), AuditLogOrigin(c.audit_log_path, true));
  c.audit_log_origin = "gateway-a:/var/lib/dyad/audit.log";
  EXPECT_EQ(ConfiguredAuditLogOrigin(c, c.audit_log_path, true), "gateway-a:/var/lib/dyad/audit.log");
  EXPECT_EQ(ConfiguredAuditLogOrigin(c, c.audit_log_path, false), "gateway-a:/var/lib/dyad/audit.log");
  // `audit verify --path` of another file: that file's own place.
  EXPECT_EQ(ConfiguredAuditLogOrigin(c, "/tmp/copy.log", true), AuditLogOrigin("/tmp/copy.log", true));
}

// The log is deleted and the gateway started again (as a recreated container
// would be): the new log's verify names the earlier log's head, recorded at
// the configured origin rather than at a host name.
TEST(AuditLogOrigin, ALogBegunAgainAtTheConfiguredOriginIsReported) {
  testing::TempDir dir;
  const std::string data = dir.File("data");
  const EnvMap extra = {{"GATEWAY_DATA_DIR", data}, {"AUDIT_LOG_ORIGIN", "gateway-a:/audit"}};
  {
    testing::TestApp t(extra);
    EXPECT_EQ(t.Call("POST", "/admin/secrets/clear-cache").status, 200);
  }
  EnvMap env = {{"GATEWAY_DATA_DIR", data},
                {"GATEWAY_ADMIN_API_KEY", testing::kAdminToken},
                {"ENCRYPTION_KEY", std::string(64, 'a')},
                {"AUDIT_LOG_ORIGIN", "gateway-a:/audit"}};
  auto config = LoadConfig(env, false);
  ASSERT_TRUE(config.ok()) << config.error().message;
  SystemClock clock;
  std::string path;
  auto intact = VerifyConfiguredAuditLog(*config, path, clock);
  ASSERT_TRUE(intact.ok()) << intact.error().message;
  EXPECT_EQ(intact->problem, "");
  EXPECT_EQ(path, data + "/audit.log");

  std::filesystem::remove(path);
  {
    testing::TestApp t(extra);
    EXPECT_EQ(t.Call("POST", "/admin/secrets/clear-cache").status, 200);
  }
  path.clear();
  auto replaced = VerifyConfiguredAuditLog(*config, path, clock);
  ASSERT_TRUE(replaced.ok()) << replaced.error().message;
  EXPECT_NE(replaced->problem.find("written at gateway-a:/audit:"), std::string::npos) << replaced->problem;
}

}  // namespace
}  // namespace dyad
