#include "backends/aws/secrets_manager_store.h"

#include <gtest/gtest.h>

#include "testing/fakes.h"

namespace dyad {
namespace {

class StaticCredentials final : public AwsCredentialSource {
 public:
  Result<AwsCredentials> Get() override { return AwsCredentials{"AKID", SecretBytes(std::string_view("s")), ""}; }
  std::string SourceName() override { return "static"; }
};

TEST(SecretsManagerStore, ListTakesTheLaterOfCreatedAndLastChanged) {
  FakeClock clock;
  testing::ConstantRandom random{7};
  StaticCredentials creds;
  auto t = std::make_unique<testing::ScriptedTransport>();
  testing::ScriptedTransport* http = t.get();
  auto client = std::move(AwsJsonClient::Create({"secretsmanager", "secretsmanager", "http://127.0.0.1:1", "us-east-1", {}},
                                                creds, std::move(t), clock, random))
                    .value();
  auto store = NewSecretsManagerStore({}, std::move(client));
  http->Then(200, R"({"SecretList":[{"Name":"dyad-gateway/providers/a","CreatedDate":1700000000.5,
                      "LastChangedDate":1700000100},{"Name":"DYAD-GATEWAY/providers/b","CreatedDate":1}],
                      "NextToken":"n1"})");
  http->Then(200, R"({"SecretList":[{"Name":"dyad-gateway/providers/c"}]})");
  auto listed = store->List();
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  ASSERT_EQ(listed->size(), 2u);  // the service's filter is not case-sensitive; ours is
  EXPECT_EQ((*listed)[0].name, "dyad-gateway/providers/a");
  ASSERT_TRUE((*listed)[0].changed_at);
  EXPECT_EQ(std::chrono::duration_cast<std::chrono::seconds>((*listed)[0].changed_at->time_since_epoch()).count(),
            1700000100);
  EXPECT_EQ((*listed)[1].name, "dyad-gateway/providers/c");
  EXPECT_FALSE((*listed)[1].changed_at);
  ASSERT_EQ(http->calls.size(), 2u);
  EXPECT_NE(http->calls[1].body.find("\"NextToken\":\"n1\""), std::string::npos);
}

}  // namespace
}  // namespace dyad
