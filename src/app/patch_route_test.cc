// PATCH /admin/providers/{id} end to end through the App: JSON Merge Patch
// of the row and of the stored credentials, under the provider's lock.
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "service/secrets_service.h"
#include "testing/test_app.h"

namespace dyad {
namespace {

using nlohmann::json;
constexpr char kMergePatch[] = "application/merge-patch+json";

class PatchRoute : public ::testing::Test {
 protected:
  json Data(const HttpResponse& r, int status = 200) {
    EXPECT_EQ(r.status, status) << r.body;
    json j = json::parse(r.body, nullptr, false);
    return j.is_object() && j.contains("data") ? j["data"] : json();
  }
  std::string Create(const std::string& slug, const json& credentials) {
    json body = {{"name", "OpenAI"}, {"slug", slug}, {"type", "http-sdk"},
                 {"adapterConfig", {{"baseUrl", "https://192.0.2.1"}, {"headers", {{"a", "1"}, {"b", "2"}}}}},
                 {"credentials", credentials}};
    return Data(t_.Call("POST", "/admin/providers", body.dump()), 201).value("id", "");
  }
  HttpResponse Patch(const std::string& id, const std::string& patch, const std::string& type = kMergePatch) {
    return t_.Call("PATCH", "/admin/providers/" + id, patch, type);
  }
  // The stored credentials in clear, as the read path serves them.
  std::map<std::string, std::string> Stored(const std::string& id) {
    t_.app().secrets().cache().Invalidate(id);
    auto r = t_.app().secrets().Get(id, Caller{});
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    std::map<std::string, std::string> out;
    if (r.ok()) {
      for (const auto& [k, v] : r->credentials->fields) out[k] = std::string(v.view());
    }
    return out;
  }
  std::string ErrorMessage(const HttpResponse& r) {
    json j = json::parse(r.body, nullptr, false);
    return j.is_object() ? j["error"].value("message", "") : "";
  }

  testing::TestApp t_;
};

TEST_F(PatchRoute, MergesTheRowAndKeepsWhatItLeavesOut) {
  std::string id = Create("openai", {{"api_key", "sk-1"}, {"org", "o-1"}});
  json p = Data(Patch(id, R"({"description":"second","adapterConfig":{"headers":{"a":null,"c":"3"}}})"));
  EXPECT_EQ(p["description"], "second");
  EXPECT_EQ(p["name"], "OpenAI");
  EXPECT_EQ(p["adapterConfig"], json::parse(R"({"baseUrl":"https://192.0.2.1","headers":{"b":"2","c":"3"}})"));
  EXPECT_EQ(p["credentials"], json::parse(R"({"api_key":"[STORED_EXTERNALLY]","org":"[STORED_EXTERNALLY]"})"));
  EXPECT_EQ(p["credentialsVersion"], 1) << "credentials left alone are not rewritten";
  EXPECT_EQ(Data(t_.Call("GET", "/admin/providers/" + id)), p);
  EXPECT_EQ(Stored(id), (std::map<std::string, std::string>{{"api_key", "sk-1"}, {"org", "o-1"}}));
}

TEST_F(PatchRoute, MergesCredentialsWithTheStoredValues) {
  std::string id = Create("openai", {{"api_key", "sk-1"}, {"org", "o-1"}});
  json p = Data(Patch(id, R"({"credentials":{"org":null,"project":"pr-1"}})"));
  EXPECT_EQ(p["credentials"], json::parse(R"({"api_key":"[STORED_EXTERNALLY]","project":"[STORED_EXTERNALLY]"})"));
  EXPECT_EQ(p["credentialsVersion"], 2);
  EXPECT_EQ(p.dump().find("sk-1"), std::string::npos);
  EXPECT_EQ(Stored(id), (std::map<std::string, std::string>{{"api_key", "sk-1"}, {"project", "pr-1"}}));
  // The fingerprint validate shows is that of the merged set.
  std::string twin = Create("twin", {{"api_key", "sk-1"}, {"project", "pr-1"}});
  auto fingerprint = [&](const std::string& pid) {
    return Data(t_.Call("POST", "/admin/secrets/providers/" + pid + "/credentials/validate"))["fingerprint"];
  };
  EXPECT_EQ(fingerprint(id), fingerprint(twin));
  // Removing a field that is not there changes nothing stored: no new version.
  EXPECT_EQ(Data(Patch(id, R"({"credentials":{"org":null}})"))["credentialsVersion"], 2);
  p = Data(Patch(id, R"({"credentials":null})"));
  EXPECT_EQ(p["credentials"], json::object());
  EXPECT_FALSE(t_.app().secrets().Get(id, Caller{}).ok());
}

TEST_F(PatchRoute, AnInvalidResultIsRefusedNamingTheFieldAndChangesNothing) {
  std::string id = Create("openai", {{"api_key", "sk-1"}});
  json before = Data(t_.Call("GET", "/admin/providers/" + id));
  HttpResponse r = Patch(id, R"({"description":"x","models":[{"dyadModelId":"m"}],"credentials":{"org":"o"}})");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(ErrorMessage(r), "field 'models[0].adapterModelId' is required");
  r = Patch(id, R"({"credentials":{"API-KEY":"sk-2"}})");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(ErrorMessage(r).rfind("field 'credentials.api_key' clashes with credentials.API-KEY", 0), 0u);
  EXPECT_EQ(ErrorMessage(r).find("sk-"), std::string::npos);
  EXPECT_EQ(Data(t_.Call("GET", "/admin/providers/" + id)), before);
  EXPECT_EQ(Stored(id), (std::map<std::string, std::string>{{"api_key", "sk-1"}}));
  std::string other = Create("other", {{"api_key", "sk-9"}});
  r = Patch(other, R"({"slug":"openai"})");
  EXPECT_EQ(r.status, 409) << r.body;
}

TEST_F(PatchRoute, BadRequestsAndUnknownIds) {
  std::string id = Create("openai", {{"api_key", "sk-1"}});
  EXPECT_EQ(Patch(id, "{\"name\":").status, 400);
  EXPECT_EQ(ErrorMessage(Patch(id, "{\"name\":")), "malformed JSON in the request body (at byte 9)");
  EXPECT_EQ(Patch(id, "[1]").status, 400);
  EXPECT_EQ(Patch(id, "{}", "text/plain").status, 415);
  EXPECT_EQ(Patch(id, "{}", "").status, 415);
  EXPECT_EQ(Data(Patch(id, "{}", "application/json; charset=utf-8"))["id"], id);
  HttpResponse r = Patch("no-such-id", R"({"description":"x"})");
  EXPECT_EQ(r.status, 404) << r.body;
  EXPECT_EQ(t_.Call("PATCH", "/admin/providers/" + id, "{}", kMergePatch, testing::kViewerToken).status, 403);
  EXPECT_EQ(t_.Call("PATCH", "/admin/providers/" + id, "{}", kMergePatch, "").status, 401);
}

// Each PATCH reads and writes under the provider's lock: patches of
// different fields made at once all land.
TEST_F(PatchRoute, ConcurrentPatchesOfDifferentFieldsAllLand) {
  std::string id = Create("openai", {{"api_key", "sk-1"}});
  constexpr int kWriters = 8;
  std::vector<std::thread> writers;
  std::vector<int> statuses(kWriters);
  for (int i = 0; i < kWriters; ++i) {
    writers.emplace_back([&, i] {
      json patch = {{"credentials", {{"f" + std::to_string(i), "v" + std::to_string(i)}}}};
      statuses[i] = Patch(id, patch.dump()).status;
    });
  }
  for (auto& w : writers) w.join();
  std::map<std::string, std::string> want = {{"api_key", "sk-1"}};
  for (int i = 0; i < kWriters; ++i) {
    EXPECT_EQ(statuses[i], 200) << i;
    want["f" + std::to_string(i)] = "v" + std::to_string(i);
  }
  EXPECT_EQ(Stored(id), want);
  EXPECT_EQ(Data(t_.Call("GET", "/admin/providers/" + id))["credentialsVersion"], 1 + kWriters);
}

}  // namespace
}  // namespace dyad
