#include "control_plane/budget_policy.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "control_plane/policy_yaml.h"
#include "kvwire/base/ids.h"
#include "kvwire/config.h"

namespace kvwire::control_plane {
namespace {

class TempDir {
 public:
  TempDir() {
    std::string templ = "/tmp/kvwire-policy-XXXXXX";
    path_ = ::mkdtemp(templ.data());
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  std::string File(absl::string_view name) const { return absl::StrCat(path_, "/", name); }

 private:
  std::string path_;
};

void WriteText(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

BudgetPolicy TenantPolicy(const std::string& tenant, float kept) {
  BudgetPolicy p;
  p.tenant = tenant;
  p.model = "*";
  p.default_budget = Budget::KeptFraction(kept);
  p.min_kept_fraction = 0.1f;
  p.max_kept_fraction = 0.9f;
  p.method = "snapkv/uniform";
  return p;
}

TEST(BudgetPolicy, ValidateRejectsOutOfRangeValues) {
  BudgetPolicy p = TenantPolicy("a", 0.5f);
  EXPECT_TRUE(ValidatePolicy(p).ok());
  p.default_budget = Budget::KeptFraction(1.5f);
  EXPECT_TRUE(absl::StrContains(ValidatePolicy(p).message(), "got 1.5"));
  p.default_budget = Budget::KeptFraction(0.05f);
  EXPECT_TRUE(absl::StrContains(ValidatePolicy(p).message(), "outside the policy limits"));
  p = TenantPolicy("a", 0.5f);
  p.min_kept_fraction = 0.95f;
  EXPECT_EQ(ValidatePolicy(p).code(), absl::StatusCode::kInvalidArgument);
  p = TenantPolicy("a", 0.5f);
  p.method = "nosuch/uniform";
  EXPECT_TRUE(absl::StrContains(ValidatePolicy(p).message(), "nosuch"));
  p = TenantPolicy("a", 0.5f);
  p.kv_dtype = "f8";
  EXPECT_TRUE(absl::StrContains(ValidatePolicy(p).message(), "'f8'"));
  p = TenantPolicy("", 0.5f);
  EXPECT_EQ(ValidatePolicy(p).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateBudget(Budget::Auto(0), "b").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateBudget(Budget::BytesPerToken(0), "b").code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(PolicyYaml, RoundTripsEveryBudgetKind) {
  std::vector<BudgetPolicy> in = {TenantPolicy("a", 0.5f), TenantPolicy("b", 0.25f),
                                  TenantPolicy("c", 0.5f)};
  in[1].default_budget = Budget::BytesPerToken(4096);
  in[2].default_budget = Budget::Auto(250, 0.2f);
  in[2].kv_dtype = "bf16";
  in[2].method = "";
  auto out = ParsePolicies(SerializePolicies(in), "mem");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, in);
}

TEST(PolicyYaml, RejectsMalformedFilesWithClearMessages) {
  const std::pair<const char*, const char*> cases[] = {
      {"policies: [", "not valid YAML: line"},
      {"policy: []", "unknown key 'policy'"},
      {"policies: 3", "'policies' must be a list"},
      {"policies:\n  - {tenant: a, model: '*'}", "policies[0]: missing 'budget'"},
      {"policies:\n  - {tenant: a, budget: {kept_fraction: x}}", "invalid value 'x'"},
      {"policies:\n  - {tenant: a, budget: {kept_fraction: 2}}", "got 2"},
      {"policies:\n  - {tenant: a, budget: {kept_fraction: 0.5, bytes_per_token: 9}}",
       "exactly one"},
      {"policies:\n  - {tenant: a, budget: {auto: {min_kept_fraction: 0.1}}}", "missing 'ttft_ms'"},
      {"policies:\n  - {tenant: a, budgets: {kept_fraction: 0.5}}", "unknown key 'budgets'"},
      {"policies:\n  - {tenant: a, budget: {kept_fraction: 0.5}}\n"
       "  - {tenant: a, budget: {kept_fraction: 0.6}}",
       "policies[1]: duplicate policy for tenant 'a'"},
  };
  for (const auto& [text, expected] : cases) {
    auto out = ParsePolicies(text, "p.yaml");
    ASSERT_FALSE(out.ok()) << text;
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_TRUE(absl::StrContains(out.status().message(), expected))
        << text << " -> " << out.status();
    EXPECT_TRUE(absl::StartsWith(out.status().message(), "p.yaml")) << out.status();
  }
}

TEST(PolicyYaml, ShippedExampleIsValid) {
  const std::string path = std::string(KVWIRE_SOURCE_DIR) + "/control_plane/budgets.example.yaml";
  auto policies = ParsePolicies(ReadText(path), path);
  ASSERT_TRUE(policies.ok()) << policies.status();
  ASSERT_EQ(policies->size(), 3u);
  EXPECT_EQ((*policies)[2].default_budget, Budget::Auto(200, 0.1f));
}

TEST(PolicyStore, MissingFileMeansEmbeddedDefault) {
  TempDir dir;
  auto store = PolicyStore::Open(dir.File("policy.yaml"));
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_EQ((*store)->All().size(), 1u);
  EXPECT_EQ((*store)->All()[0], EmbeddedDefaultPolicy());
  EXPECT_FALSE(std::ifstream(dir.File("policy.yaml")).good()) << "nothing written before a change";
}

TEST(PolicyStore, SetPersistsAndSurvivesReopen) {
  TempDir dir;
  const std::string path = dir.File("policy.yaml");
  {
    auto store = PolicyStore::Open(path);
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->Set(TenantPolicy("acme", 0.3f)).ok());
    ASSERT_TRUE((*store)->Set(TenantPolicy("acme", 0.4f)).ok());  // replaces
  }
  auto reopened = PolicyStore::Open(path);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  ASSERT_EQ((*reopened)->All().size(), 2u);
  auto p = (*reopened)->Lookup("acme", "smollm");
  ASSERT_TRUE(p.ok());
  EXPECT_FLOAT_EQ(p->default_budget.kept_fraction, 0.4f);
}

TEST(PolicyStore, InvalidSetChangesNothing) {
  TempDir dir;
  const std::string path = dir.File("policy.yaml");
  auto store = PolicyStore::Open(path);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->Set(TenantPolicy("acme", 0.3f)).ok());
  const std::string before = ReadText(path);
  BudgetPolicy bad = TenantPolicy("acme", 0.3f);
  bad.max_kept_fraction = 2;
  EXPECT_EQ((*store)->Set(bad).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadText(path), before);
  EXPECT_FLOAT_EQ((*store)->Lookup("acme", "m")->max_kept_fraction, 0.9f);
}

TEST(PolicyStore, UnwritableFileKeepsOldPolicy) {
  auto store = PolicyStore::Open("/nonexistent-dir-kvwire/policy.yaml");
  ASSERT_TRUE(store.ok());
  auto set = (*store)->Set(TenantPolicy("acme", 0.3f));
  EXPECT_EQ(set.status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ((*store)->All().size(), 1u);
}

TEST(PolicyStore, MalformedFileOnOpenIsInvalidArgument) {
  TempDir dir;
  WriteText(dir.File("p.yaml"), "policies: [");
  auto store = PolicyStore::Open(dir.File("p.yaml"));
  EXPECT_EQ(store.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(store.status().message(), "p.yaml"));
}

TEST(PolicyStore, MalformedReloadKeepsOldPolicy) {
  TempDir dir;
  const std::string path = dir.File("p.yaml");
  auto store = PolicyStore::Open(path);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->Set(TenantPolicy("acme", 0.3f)).ok());
  WriteText(path, "policies:\n  - {tenant: acme, budget: {kept_fraction: -1}}\n");
  absl::Status reload = (*store)->ReloadIfChanged();
  EXPECT_EQ(reload.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(reload.message(), "got -1")) << reload;
  EXPECT_FLOAT_EQ((*store)->Lookup("acme", "m")->default_budget.kept_fraction, 0.3f);
  EXPECT_TRUE((*store)->ReloadIfChanged().ok()) << "an unchanged bad file is reported once";

  WriteText(path, "policies:\n  - {tenant: acme, model: '*', budget: {kept_fraction: 0.7}}\n");
  ASSERT_TRUE((*store)->Reload().ok());
  EXPECT_FLOAT_EQ((*store)->Lookup("acme", "m")->default_budget.kept_fraction, 0.7f);
}

TEST(PolicyStore, LookupPrefersExactThenWildcards) {
  TempDir dir;
  auto store = PolicyStore::Open(dir.File("p.yaml"));
  ASSERT_TRUE(store.ok());
  PolicyStore& s = **store;
  BudgetPolicy exact = TenantPolicy("a", 0.2f);
  exact.model = "m1";
  BudgetPolicy any_tenant_m2 = TenantPolicy("*", 0.3f);
  any_tenant_m2.model = "m2";
  ASSERT_TRUE(s.Set(exact).ok());
  ASSERT_TRUE(s.Set(TenantPolicy("a", 0.4f)).ok());
  ASSERT_TRUE(s.Set(any_tenant_m2).ok());
  EXPECT_FLOAT_EQ(s.Lookup("a", "m1")->default_budget.kept_fraction, 0.2f);
  EXPECT_FLOAT_EQ(s.Lookup("a", "m2")->default_budget.kept_fraction, 0.4f);
  EXPECT_FLOAT_EQ(s.Lookup("b", "m2")->default_budget.kept_fraction, 0.3f);
  EXPECT_FLOAT_EQ(s.Lookup("b", "m3")->default_budget.kept_fraction, 0.2f);  // embedded default
}

TEST(PolicyStore, UnknownTenantWithoutWildcardIsInvalidArgument) {
  TempDir dir;
  const std::string path = dir.File("p.yaml");
  WriteText(path, "policies:\n  - {tenant: acme, model: '*', budget: {kept_fraction: 0.5}}\n");
  auto store = PolicyStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status();
  auto r = (*store)->Resolve("evil", "m", std::nullopt, "", {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "unknown tenant 'evil'")) << r.status();
}

TEST(PolicyStore, ResolveChecksOverridesAgainstLimits) {
  TempDir dir;
  auto store = PolicyStore::Open(dir.File("p.yaml"));
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->Set(TenantPolicy("a", 0.5f)).ok());  // limits [0.1, 0.9]
  const BudgetContext ctx{100, 1000, 100};
  auto d = (*store)->Resolve("a", "m", std::nullopt, "", ctx);
  ASSERT_TRUE(d.ok());
  EXPECT_FLOAT_EQ(d->kept_fraction, 0.5f);
  EXPECT_EQ(d->method, "snapkv/uniform");
  EXPECT_EQ(d->policy_key, "a/*");
  auto ok = (*store)->Resolve("a", "m", Budget::KeptFraction(0.2f), "h2o/global", ctx);
  ASSERT_TRUE(ok.ok());
  EXPECT_FLOAT_EQ(ok->kept_fraction, 0.2f);
  EXPECT_EQ(ok->method, "h2o/global");
  auto low = (*store)->Resolve("a", "m", Budget::KeptFraction(0.05f), "", ctx);
  EXPECT_EQ(low.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(low.status().message(), "outside the limits [0.1, 0.9]"))
      << low.status();
  // 300 bytes of 1000 raw bytes per token -> 0.3.
  auto bytes = (*store)->Resolve("a", "m", Budget::BytesPerToken(300), "", ctx);
  ASSERT_TRUE(bytes.ok());
  EXPECT_NEAR(bytes->kept_fraction, 0.3f, 1e-6);
  auto bad_method = (*store)->Resolve("a", "m", std::nullopt, "snapkv/bogus", ctx);
  EXPECT_EQ(bad_method.status().code(), absl::StatusCode::kInvalidArgument);
  auto bad_budget = (*store)->Resolve("a", "m", Budget::KeptFraction(0), "", ctx);
  EXPECT_EQ(bad_budget.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(BudgetAuto, PicksLargestFractionThatFitsTheTarget) {
  // 1000 tokens x 1000 bytes = 1 MB raw; 2000 bytes/ms for 100 ms moves 200 KB -> 0.2.
  const BudgetContext ctx{1000, 1000, 2000};
  EXPECT_NEAR(KeptFractionFor(Budget::Auto(100), ctx), 0.2f, 1e-6);
  EXPECT_FLOAT_EQ(KeptFractionFor(Budget::Auto(10000), ctx), 1.0f);
  EXPECT_FLOAT_EQ(KeptFractionFor(Budget::Auto(1, 0.07f), ctx), 0.07f);
  const BudgetContext faster{1000, 1000, 4000};
  EXPECT_NEAR(KeptFractionFor(Budget::Auto(100), faster), 0.4f, 1e-6);
}

TEST(BandwidthEstimator, StartsFromDefaultAndLearnsFromTransfers) {
  BandwidthEstimator bw(1000);
  EXPECT_DOUBLE_EQ(bw.bytes_per_ms(), 1000);
  bw.Observe(0, 5);
  bw.Observe(100, 0);
  EXPECT_EQ(bw.samples(), 0u);
  bw.Observe(50000, 10);  // 5000 bytes/ms replaces the assumption
  EXPECT_DOUBLE_EQ(bw.bytes_per_ms(), 5000);
  bw.Observe(10000, 10);  // then an exponentially weighted mean
  EXPECT_NEAR(bw.bytes_per_ms(), 0.8 * 5000 + 0.2 * 1000, 1e-9);
}

TEST(WriteFileAtomically, ReplacesContentsAndLeavesNoTemporaries) {
  TempDir dir;
  const std::string path = dir.File("f.yaml");
  ASSERT_TRUE(WriteFileAtomically(path, "one").ok());
  ASSERT_TRUE(WriteFileAtomically(path, "two").ok());
  EXPECT_EQ(ReadText(path), "two");
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.File(""))) {
    EXPECT_EQ(entry.path().filename(), "f.yaml");
    ++count;
  }
  EXPECT_EQ(count, 1);
}

}  // namespace
}  // namespace kvwire::control_plane
