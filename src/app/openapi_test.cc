// The OpenAPI document (src/api/openapi.json) against the routes the App
// really serves: a route added, removed or renamed without the document
// (or the other way round) fails here.
#include "api/openapi.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "testing/test_app.h"

namespace dyad {
namespace {

using nlohmann::json;
using RouteSet = std::set<std::pair<std::string, std::string>>;

const json& Document() {
  static const json doc = json::parse(OpenApiDocument());
  return doc;
}

std::string Upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// Every operation of the document: (METHOD, path template) -> operation.
std::map<std::pair<std::string, std::string>, json> Operations() {
  static const std::set<std::string> kMethods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"};
  std::map<std::pair<std::string, std::string>, json> out;
  for (const auto& [path, item] : Document().at("paths").items()) {
    for (const auto& [key, op] : item.items()) {
      if (kMethods.count(key)) out[{Upper(key), path}] = op;
    }
  }
  return out;
}

std::string Describe(const RouteSet& s) {
  std::string out;
  for (const auto& [m, p] : s) out += "  " + m + " " + p + "\n";
  return out;
}

TEST(OpenApi, IsAnOpenApi31Document) {
  ASSERT_FALSE(Document().is_discarded());
  EXPECT_EQ(Document().at("openapi"), "3.1.0");
  EXPECT_EQ(Document().at("components").at("securitySchemes").at("bearerAuth").at("scheme"), "bearer");
}

TEST(OpenApi, DescribesExactlyTheRoutesTheRouterServes) {
  testing::TestApp t;
  RouteSet served, described;
  for (const auto& r : t.app().Routes()) {
    EXPECT_TRUE(served.insert(r).second) << "registered twice: " << r.first << " " << r.second;
  }
  for (const auto& [key, op] : Operations()) described.insert(key);
  RouteSet undocumented, gone;
  std::set_difference(served.begin(), served.end(), described.begin(), described.end(),
                      std::inserter(undocumented, undocumented.end()));
  std::set_difference(described.begin(), described.end(), served.begin(), served.end(),
                      std::inserter(gone, gone.end()));
  EXPECT_TRUE(undocumented.empty()) << "routes missing from src/api/openapi.json:\n" << Describe(undocumented);
  EXPECT_TRUE(gone.empty()) << "src/api/openapi.json describes routes the router does not have:\n" << Describe(gone);
  EXPECT_GE(served.size(), 18u);
}

// The auth rules of the router, as the document must say them.
TEST(OpenApi, EachOperationStatesItsAuthParametersAndAnswers) {
  std::set<std::string> ids;
  for (const auto& [key, op] : Operations()) {
    const auto& [method, path] = key;
    SCOPED_TRACE(method + " " + path);
    ASSERT_TRUE(op.contains("operationId"));
    EXPECT_TRUE(ids.insert(op["operationId"].get<std::string>()).second) << "operationId used twice";
    const json& responses = op.at("responses");
    bool success = false;
    for (const auto& [status, r] : responses.items()) success = success || status[0] == '2';
    EXPECT_TRUE(success) << "no 2xx answer";
    const bool admin = path.rfind("/admin/", 0) == 0;
    const bool v1 = path.rfind("/v1/", 0) == 0;
    if (v1) {
      EXPECT_EQ(op.value("security", json()), json::parse(R"([{"clientBearer":[]}])")) << "client tokens only";
      EXPECT_TRUE(responses.contains("401"));
      EXPECT_TRUE(responses.contains("403")) << "an admin or viewer token";
    } else if (admin) {
      EXPECT_FALSE(op.contains("security")) << "admin routes take the document's bearer security";
      EXPECT_TRUE(responses.contains("401"));
      if (method != "GET") {
        EXPECT_TRUE(responses.contains("403")) << "a viewer may only GET";
        EXPECT_TRUE(responses.contains("503")) << "writes wait for the audit log";
      }
    } else {
      EXPECT_EQ(op.value("security", json()), json::array()) << "public route";
    }
    if (op.contains("requestBody")) {
      EXPECT_TRUE(responses.contains("400"));
      EXPECT_TRUE(responses.contains("413"));
    }
    // Each {name} of the path is a declared path parameter, and no other.
    std::set<std::string> in_path, declared;
    static const std::regex kParam(R"(\{([^}]+)\})");
    for (std::sregex_iterator it(path.begin(), path.end(), kParam), end; it != end; ++it) in_path.insert((*it)[1]);
    for (const auto& p : op.value("parameters", json::array())) {
      if (p.at("in") == "path") {
        EXPECT_TRUE(p.at("required").get<bool>());
        declared.insert(p.at("name").get<std::string>());
      }
    }
    EXPECT_EQ(in_path, declared);
    if (!in_path.empty()) {
      EXPECT_TRUE(responses.contains("400")) << "a parameter may make the target non-canonical";
    }
  }
}

void CheckRefs(const json& j, const std::string& where) {
  if (j.is_object()) {
    if (auto it = j.find("$ref"); it != j.end()) {
      std::string ref = it->get<std::string>();
      ASSERT_EQ(ref.rfind("#/", 0), 0u) << where;
      EXPECT_NO_THROW((void)Document().at(json::json_pointer(ref.substr(1)))) << "dangling " << ref << " at " << where;
    }
    for (const auto& [k, v] : j.items()) CheckRefs(v, where + "/" + k);
  } else if (j.is_array()) {
    for (size_t i = 0; i < j.size(); ++i) CheckRefs(j[i], where + "/" + std::to_string(i));
  }
}

TEST(OpenApi, EveryReferenceResolves) { CheckRefs(Document(), ""); }

TEST(OpenApi, IsServedToViewersAsItIs) {
  testing::TestApp t;
  HttpResponse r = t.Call("GET", "/admin/openapi.json", "", "", testing::kViewerToken);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_EQ(r.body, OpenApiDocument());
  EXPECT_EQ(t.Call("GET", "/admin/openapi.json", "", "", "").status, 401);
  EXPECT_EQ(t.Call("GET", "/admin/openapi.json", "", "", "wrong-token-0123456789").status, 401);
}

}  // namespace
}  // namespace dyad
