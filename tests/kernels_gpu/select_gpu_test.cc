// Top-k selection on the device against kvwire::compress::SelectHead: the kept index lists must be
// identical (selection is exact: same scores, same tie rule).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "kernels/cuda/select.h"
#include "kvwire/compress/select.h"
#include "tests/kernels_gpu/gpu_test_util.h"

namespace kvwire::kernels::cuda {
namespace {

struct SelectCase {
  const char* name;
  int64_t length;
  int heads;
  bool critical;
  bool ties;  // scores rounded to a coarse grid (many exact ties, +0 and -0 among them)
};

void PrintTo(const SelectCase& c, std::ostream* os) { *os << c.name; }

class SelectParity : public testing::GpuParamTest<SelectCase> {};

TEST_P(SelectParity, KeepsExactlyWhatSelectHeadKeeps) {
  const SelectCase& c = GetParam();
  std::mt19937 rng(static_cast<unsigned>(c.length * 31 + c.heads));
  const int64_t L = c.length;
  compress::CompressionSpec spec;
  spec.critical = c.critical;
  std::vector<compress::HeadScores> scores(c.heads);
  std::vector<float> all_scores, all_norms;
  for (auto& s : scores) {
    s.score = testing::RandomNormal(L, rng);
    if (c.ties) {
      // std::round keeps the sign, so small negative scores become -0.
      for (float& x : s.score) x = std::round(x * 4.0f) / 4.0f;
    }
    s.value_norm = testing::RandomUniform(L, rng, 0.0f, 3.0f);
    all_scores.insert(all_scores.end(), s.score.begin(), s.score.end());
    all_norms.insert(all_norms.end(), s.value_norm.begin(), s.value_norm.end());
  }
  // Budgets from tiny to everything, one per head, cycling.
  const int64_t budgets[] = {1, 4, 36, (L + 9) / 10, L / 2, L - 1, L, L + 5};
  std::vector<HeadSelectPlan> plans;
  std::vector<int32_t> want_keep, want_evicted;
  for (int h = 0; h < c.heads; ++h) {
    const int64_t budget = std::max<int64_t>(1, budgets[h % 8]);
    const compress::ForcedRange forced = compress::Forced(spec, L, std::min(budget, L));
    HeadSelectPlan plan{budget, forced.sinks, forced.window, -1};
    if (c.critical && budget < L) {
      const int64_t free = budget - forced.count();
      plan.stage1 =
          std::clamp<int64_t>(std::llround(spec.critical_alpha * budget) - forced.count(), 0, free);
    }
    plans.push_back(plan);
    const std::vector<int32_t> keep = compress::SelectHead(spec, scores[h], L, budget);
    want_keep.insert(want_keep.end(), keep.begin(), keep.end());
    std::vector<bool> kept(L, false);
    for (int32_t i : keep) kept[i] = true;
    for (int64_t i = 0; i < L; ++i) {
      if (!kept[i]) want_evicted.push_back(static_cast<int32_t>(i));
    }
  }
  DeviceBuffer d_scores = Up(all_scores), d_norms = Up(all_norms);
  DeviceBuffer keep = Zeros<int32_t>(want_keep.size() + 1);
  DeviceBuffer evicted = Zeros<int32_t>(want_evicted.size() + 1);
  ASSERT_TRUE(SelectTopK(ctx(), d_scores.as<float>(), c.critical ? d_norms.as<float>() : nullptr, L,
                         plans, keep.as<int32_t>(), evicted.as<int32_t>())
                  .ok());
  std::vector<int32_t> got_keep = Down<int32_t>(keep, want_keep.size() + 1);
  std::vector<int32_t> got_evicted = Down<int32_t>(evicted, want_evicted.size() + 1);
  got_keep.pop_back();
  got_evicted.pop_back();
  EXPECT_EQ(got_keep, want_keep);
  EXPECT_EQ(got_evicted, want_evicted);
}

const SelectCase kSelectCases[] = {
    {"short_prompt", 40, 3, false, false},       {"smollm2_1k_ties", 1000, 3, false, true},
    {"llama_4k_8_heads", 4099, 8, false, false}, {"critical_two_stage", 2047, 8, true, false},
    {"critical_with_ties", 777, 5, true, true},  {"many_heads_two_launches", 300, 70, false, true},
};

INSTANTIATE_TEST_SUITE_P(Shapes, SelectParity, ::testing::ValuesIn(kSelectCases),
                         [](const auto& info) { return std::string(info.param.name); });

class SelectArgs : public testing::GpuTest {};

TEST_F(SelectArgs, RejectsPlansThatDoNotFit) {
  DeviceBuffer s = Zeros<float>(100);
  DeviceBuffer out = Zeros<int32_t>(100);
  const HeadSelectPlan too_many_forced{10, 8, 8, -1};
  EXPECT_EQ(SelectTopK(ctx(), s.as<float>(), nullptr, 100, {&too_many_forced, 1}, out.as<int32_t>(),
                       nullptr)
                .code(),
            absl::StatusCode::kInvalidArgument);
  const HeadSelectPlan stage1_without_norms{50, 4, 8, 10};
  EXPECT_EQ(SelectTopK(ctx(), s.as<float>(), nullptr, 100, {&stage1_without_norms, 1},
                       out.as<int32_t>(), nullptr)
                .code(),
            absl::StatusCode::kInvalidArgument);
}

// Indices are int32: a length past INT32_MAX would write negative indices.
TEST_F(SelectArgs, RejectsLengthsPastInt32Indices) {
  DeviceBuffer s = Zeros<float>(4);
  DeviceBuffer out = Zeros<int32_t>(4);
  const HeadSelectPlan plan{4, 0, 0, -1};
  EXPECT_EQ(SelectTopK(ctx(), s.as<float>(), nullptr, int64_t{1} << 31, {&plan, 1},
                       out.as<int32_t>(), nullptr)
                .code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvwire::kernels::cuda
