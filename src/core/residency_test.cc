#include "core/residency.h"

#include <gtest/gtest.h>

namespace dyad {
namespace {

AllowedRegions Parse(std::string_view value) {
  auto r = ParseAllowedRegions(value);
  EXPECT_TRUE(r.ok()) << value << ": " << (r.ok() ? "" : r.error().message);
  return r.ok() ? *r : AllowedRegions{};
}

std::string ErrorOf(std::string_view value) {
  auto r = ParseAllowedRegions(value);
  EXPECT_FALSE(r.ok()) << value;
  return r.ok() ? "" : r.error().message;
}

TEST(Residency, RegionsMatchExactly) {
  auto a = Parse("eu-central-1, eu-west-1");
  EXPECT_TRUE(a.AllowsRegion("eu-central-1"));
  EXPECT_TRUE(a.AllowsRegion("eu-west-1"));
  EXPECT_FALSE(a.AllowsRegion("eu-central-2"));
  EXPECT_FALSE(a.AllowsRegion("EU-CENTRAL-1"));
  EXPECT_FALSE(a.AllowsRegion("eu-central-1 "));
  EXPECT_FALSE(a.AllowsRegion("eu-central"));
  EXPECT_FALSE(a.AllowsUrl("https://eu-central-1"));
}

TEST(Residency, HostsMatchWholeAndCaseInsensitively) {
  auto a = Parse("MyVault.Vault.Azure.NET.");
  EXPECT_TRUE(a.AllowsUrl("https://myvault.vault.azure.net"));
  EXPECT_TRUE(a.AllowsUrl("https://MYVAULT.vault.azure.net.:443"));
  EXPECT_TRUE(a.AllowsUrl("https://myvault.vault.azure.net:8443/"));  // a host entry: any port
  EXPECT_FALSE(a.AllowsUrl("https://myvault.vault.azure.net.evil.com"));
  EXPECT_FALSE(a.AllowsUrl("https://evil-myvault.vault.azure.net"));
  EXPECT_FALSE(a.AllowsUrl("https://x.myvault.vault.azure.net"));
  EXPECT_FALSE(a.AllowsUrl("https://user@myvault.vault.azure.net"));
  EXPECT_FALSE(a.AllowsUrl("https://myvault.vault.azure.net@evil.com"));
  EXPECT_FALSE(a.AllowsUrl("https://myvault.vault.azure.net/../evil"));
  EXPECT_FALSE(a.AllowsUrl("myvault.vault.azure.net"));  // not a URL
  auto suffix = Parse("vault.azure.net");
  EXPECT_FALSE(suffix.AllowsUrl("https://myvault.vault.azure.net"));
  EXPECT_FALSE(suffix.AllowsUrl("https://vault.azure.net.evil.com"));
  EXPECT_TRUE(suffix.AllowsUrl("https://vault.azure.net"));
}

TEST(Residency, UrlsMatchSchemeHostAndPort) {
  auto a = Parse("https://vault.example.com:8200,http://127.0.0.1:8200,https://[::1]:8200");
  EXPECT_TRUE(a.AllowsUrl("https://vault.example.com:8200"));
  EXPECT_TRUE(a.AllowsUrl("https://Vault.Example.COM.:8200/"));
  EXPECT_FALSE(a.AllowsUrl("http://vault.example.com:8200"));
  EXPECT_FALSE(a.AllowsUrl("https://vault.example.com:8201"));
  EXPECT_FALSE(a.AllowsUrl("https://vault.example.com"));
  EXPECT_FALSE(a.AllowsUrl("https://vault.example.com:8200.evil.com"));
  EXPECT_TRUE(a.AllowsUrl("http://127.0.0.1:8200"));
  EXPECT_FALSE(a.AllowsUrl("http://127.0.0.2:8200"));
  EXPECT_TRUE(a.AllowsUrl("https://[::1]:8200"));
  auto defaults = Parse("https://vault.example.com");
  EXPECT_TRUE(defaults.AllowsUrl("https://vault.example.com:443"));
  EXPECT_FALSE(defaults.AllowsUrl("https://vault.example.com:8200"));
}

TEST(Residency, PunycodeIsTheOnlySpellingOfAnIdnHost) {
  auto a = Parse("xn--mnchen-3ya.example");
  EXPECT_TRUE(a.AllowsUrl("https://xn--mnchen-3ya.example"));
  EXPECT_FALSE(a.AllowsUrl("https://m\xC3\xBCnchen.example"));
  EXPECT_NE(ErrorOf("m\xC3\xBCnchen.example").find("punycode"), std::string::npos);
}

TEST(Residency, HostileEntriesAreRefusedNamingTheVariable) {
  for (std::string_view bad : {"", ",", "eu-west-1,,us-east-1", "user@vault.example.com", "https://u:p@vault.example.com",
                               "vault.example.com:8200", "vault.example.com/path", "https://vault.example.com/v1",
                               "ftp://vault.example.com", "US-EAST-1", "a..b", "eu west 1", "-", "https://",
                               "https://vault.example.com:0", "https://vault.example.com:99999", "*.vault.azure.net", "-bad.example", "bad-.example"}) {
    std::string e = ErrorOf(bad);
    EXPECT_EQ(e.rfind("SECRETS_ALLOWED_REGIONS", 0), 0u) << bad << ": " << e;
  }
  // The user info of a refused entry is never repeated (it may hold a password).
  EXPECT_EQ(ErrorOf("https://admin:hunter2@vault.example.com").find("hunter2"), std::string::npos);
  EXPECT_NE(ErrorOf("US-EAST-1").find("us-east-1"), std::string::npos);
}

TEST(Residency, ReadFromTheEnvironment) {
  auto unset = ReadAllowedRegions({});
  ASSERT_TRUE(unset.ok());
  EXPECT_FALSE(unset->has_value());
  EXPECT_TRUE(CheckRegionAllowed(*unset, "AWS_REGION", "the store", "anywhere-1").ok());
  auto set = ReadAllowedRegions({{"SECRETS_ALLOWED_REGIONS", "eu-west-1"}});
  ASSERT_TRUE(set.ok());
  Status s = CheckRegionAllowed(*set, "AWS_REGION", "the Secrets Manager store", "us-east-1");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(s.error().message.find("SECRETS_ALLOWED_REGIONS"), std::string::npos);
  EXPECT_NE(s.error().message.find("AWS_REGION"), std::string::npos);
  EXPECT_NE(s.error().message.find("us-east-1"), std::string::npos);
  Status u = CheckUrlAllowed(*set, "VAULT_ADDR", "the Vault server", "https://Vault.Example.com");
  ASSERT_FALSE(u.ok());
  EXPECT_NE(u.error().message.find("vault.example.com"), std::string::npos);
}

// Every partition's regions, the European Sovereign Cloud's among them.
constexpr std::string_view kRegions[] = {"us-east-1",     "eu-central-2",   "us-gov-west-1",  "ap-southeast-4",
                                         "ap-southeast-5", "il-central-1",   "cn-north-1",     "cn-northwest-1",
                                         "us-iso-east-1",  "us-isob-east-1", "eusc-de-east-1", "us-isof-south-1",
                                         "eu-isoe-west-1", "mx-central-1",   "ap-east-2",      "us-west-10"};
constexpr std::string_view kNotRegions[] = {
    "",  "us-east", "us-east-1a", "US-EAST-1", "Eusc-de-east-1", "useast-1", "us--1", "us-east-1-", "u-east-1",
    "us-east-123", "us_east_1", "-us-east-1", "us-east--1", "us-east-01", "us-east-0", "euscx-de-east-1",
    "us-e-1", "us-east-x", "us-east-1 ", " us-east-1", "us.east.1", "us-ea5t-1", "us-gov-iso-b-east-1",
    "us-averyveryverylongname-1", "1-us-east", "us-east-\xC2\xB9", "us-east-1\n"};

TEST(Residency, RegionNames) {
  for (std::string_view ok : kRegions) EXPECT_TRUE(IsAwsRegionName(ok)) << ok;
  for (std::string_view bad : kNotRegions) EXPECT_FALSE(IsAwsRegionName(bad)) << bad;
}

TEST(Residency, EveryPartitionsRegionsAreListableAndGarbageIsRefused) {
  std::string all;
  for (std::string_view r : kRegions) all += std::string(r) + ",";
  auto set = ParseAllowedRegions(all);
  ASSERT_TRUE(set.ok()) << set.error().message;
  for (std::string_view r : kRegions) EXPECT_TRUE(set->AllowsRegion(r)) << r;
  EXPECT_FALSE(set->AllowsRegion("eusc-de-east-2"));
  EXPECT_EQ(AwsEndpointRegion("https://secretsmanager.eusc-de-east-1.amazonaws.eu"), "eusc-de-east-1");
  EXPECT_EQ(AwsEndpointRegion("https://kms.us-gov-west-1.amazonaws.com"), "us-gov-west-1");
  // Garbage is refused naming the entry, or taken as a host name, never as a region.
  for (std::string_view bad : kNotRegions) {
    if (bad.empty() || bad.find_first_of(" \n\xC2") != std::string_view::npos) continue;  // refused elsewhere
    auto parsed = ParseAllowedRegions(bad);
    if (parsed.ok()) {
      ASSERT_EQ(parsed->places.size(), 1u) << bad;
      EXPECT_NE(parsed->places[0].kind, AllowedPlace::Kind::kRegion) << bad;
    } else {
      EXPECT_NE(parsed.error().message.find(std::string(bad)), std::string::npos) << parsed.error().message;
    }
  }
  auto wrong_case = ParseAllowedRegions("EUSC-DE-EAST-1");
  ASSERT_FALSE(wrong_case.ok());
  EXPECT_NE(wrong_case.error().message.find("wrong case; region names are lower case (eusc-de-east-1)"),
            std::string::npos) << wrong_case.error().message;
}

TEST(Residency, RegionsOfEndpointsAndArns) {
  EXPECT_EQ(AwsEndpointRegion("https://kms.eu-west-1.amazonaws.com"), "eu-west-1");
  EXPECT_EQ(AwsEndpointRegion("https://kms-fips.us-east-2.amazonaws.com"), "us-east-2");
  EXPECT_EQ(AwsEndpointRegion("https://secretsmanager.cn-north-1.amazonaws.com.cn"), "cn-north-1");
  EXPECT_EQ(AwsEndpointRegion("https://KMS.EU-WEST-1.AMAZONAWS.COM."), "eu-west-1");
  EXPECT_EQ(AwsEndpointRegion("https://vpce-0a1b-x2y3.kms.ap-south-1.vpce.amazonaws.com"), "ap-south-1");
  EXPECT_EQ(AwsEndpointRegion("https://vpce.amazonaws.com"), std::nullopt);
  EXPECT_EQ(AwsEndpointRegion("http://127.0.0.1:5000"), std::nullopt);
  EXPECT_EQ(AwsEndpointRegion("https://kms.eu-west-1.amazonaws.com.evil.com"), std::nullopt);
  EXPECT_EQ(AwsEndpointRegion("https://amazonaws.com"), std::nullopt);
  EXPECT_EQ(ArnRegion("arn:aws:kms:eu-west-1:123456789012:key/abcd"), "eu-west-1");
  EXPECT_EQ(ArnRegion("alias/dyad"), std::nullopt);
  EXPECT_EQ(ArnRegion("arn:aws:kms"), std::nullopt);
}

}  // namespace
}  // namespace dyad

namespace dyad {
namespace {

TEST(Residency, CanonicalUrlsOfOnePlaceAreEqual) {
  EXPECT_EQ(CanonicalUrl("https://KV.Example.com./"), "https://kv.example.com:443");
  EXPECT_EQ(CanonicalUrl("https://kv.example.com:443"), "https://kv.example.com:443");
  EXPECT_EQ(CanonicalUrl("http://127.0.0.1"), "http://127.0.0.1:80");
  EXPECT_NE(CanonicalUrl("http://127.0.0.1:8200"), CanonicalUrl("http://127.0.0.1:8201"));
  EXPECT_EQ(CanonicalUrl("not a url"), std::nullopt);
  EXPECT_EQ(CanonicalUrl("https://host:99999"), std::nullopt);
}

}  // namespace
}  // namespace dyad
