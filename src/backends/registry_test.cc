#include "backends/registry.h"

#include <gtest/gtest.h>

namespace dyad {
namespace {

// A factory that records what it was asked; Check fails when told to.
class StubFactory final : public BackendFactory {
 public:
  StubFactory(std::string name, int* opened, bool refuse = false) : name_(std::move(name)), opened_(opened), refuse_(refuse) {}
  const std::string& Name() const override { return name_; }
  Status Check(const Config& config) const override {
    if (refuse_) return MakeError(ErrorCode::kInvalidArgument, "STUB_SETTING: refused");
    return OkStatus();
  }
  Result<Backend> Open(const BackendContext& context) const override {
    ++*opened_;
    Backend b;
    b.traits.rotation_parallelism = 3;
    return b;
  }

 private:
  std::string name_;
  int* opened_;
  bool refuse_;
};

Config WithProvider(const std::string& name) {
  Config c;
  c.secrets_provider = name;
  return c;
}

TEST(BackendRegistry, UnknownNameListsTheRegisteredNamesSorted) {
  int opened = 0;
  BackendRegistry registry;
  ASSERT_TRUE(registry.Register(std::make_unique<StubFactory>("zeta", &opened)).ok());
  ASSERT_TRUE(registry.Register(std::make_unique<StubFactory>("alpha", &opened)).ok());
  EXPECT_EQ(registry.Names(), (std::vector<std::string>{"alpha", "zeta"}));
  auto found = registry.Find("zeta");
  ASSERT_TRUE(found.ok());
  EXPECT_EQ((*found)->Name(), "zeta");
  auto missing = registry.Find("x");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(missing.error().message, "SECRETS_PROVIDER: 'x' is not a backend of this build; use one of: alpha, zeta");
  EXPECT_EQ(registry.Check(WithProvider("x")).error().message, missing.error().message);
}

TEST(BackendRegistry, DuplicateAndNamelessRegistrationsAreRefused) {
  int opened = 0;
  BackendRegistry registry;
  ASSERT_TRUE(registry.Register(std::make_unique<StubFactory>("memory", &opened)).ok());
  Status again = registry.Register(std::make_unique<StubFactory>("memory", &opened));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.code(), ErrorCode::kAlreadyExists);
  EXPECT_NE(again.error().message.find("'memory'"), std::string::npos);
  EXPECT_EQ(registry.Register(std::make_unique<StubFactory>("", &opened)).code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(registry.Register(nullptr).code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(registry.Names(), (std::vector<std::string>{"memory"}));
}

TEST(BackendRegistry, OpenChecksTheSettingsFirst) {
  int opened = 0;
  BackendRegistry registry;
  ASSERT_TRUE(registry.Register(std::make_unique<StubFactory>("good", &opened)).ok());
  ASSERT_TRUE(registry.Register(std::make_unique<StubFactory>("bad", &opened, true)).ok());
  FakeClock clock;
  Config good = WithProvider("good"), bad = WithProvider("bad");
  auto backend = registry.Open(BackendContext{good, nullptr, clock, DefaultRandom()});
  ASSERT_TRUE(backend.ok());
  EXPECT_EQ(backend->traits.rotation_parallelism, 3u);
  EXPECT_EQ(opened, 1);
  auto refused = registry.Open(BackendContext{bad, nullptr, clock, DefaultRandom()});
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().message, "STUB_SETTING: refused");
  EXPECT_EQ(opened, 1) << "opened although its settings were refused";
}

// Resources go in the reverse order of Add(): a later one may use an
// earlier one until it is gone.
TEST(BackendResources, AreDestroyedInReverseOrder) {
  std::vector<int> order;
  struct Noisy {
    Noisy(std::vector<int>* o, int i) : order(o), id(i) {}  // clang 14: no parenthesised aggregate init
    std::vector<int>* order;
    int id;
    ~Noisy() { order->push_back(id); }
  };
  {
    BackendResources resources;
    for (int i = 1; i <= 3; ++i) resources.Add(std::make_unique<Noisy>(&order, i));
  }
  EXPECT_EQ(order, (std::vector<int>{3, 2, 1}));
}

}  // namespace
}  // namespace dyad
