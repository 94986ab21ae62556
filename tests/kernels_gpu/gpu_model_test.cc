// GpuRunner against runtime::Runner on the real SmolLM2-135M-Instruct (labels gpu, model). The
// model comes from $KVWIRE_MODEL or ~/.cache/kvwire/models/SmolLM2-135M-Instruct.Q4_1.gguf
// (scripts/fetch-model); without it, or without a device, every test skips and says why.
//
// Tolerances: the device rounds weights (the Q4_1 blocks dequantize to values fp16 cannot always
// hold), activations before each product and embedding rows to 16 bits (2^-11 relative) and
// accumulates in fp32 in another order, through 30 layers. So we ask, for the last prompt logits:
//   * max |gpu - cpu| <= 2 % of the CPU's logit range (max - min): a wrong layer, offset or RoPE
//     moves logits by a sizeable share of the range;
//   * the same top-1 token;
//   * KL(softmax(cpu) || softmax(gpu)) < 1e-3 nats: the distributions are the same to sampling.
// Greedy decoding: the device decodes the CPU's own greedy continuation (16 steps, teacher
// forced, so both see the same context) and must pick the CPU's token at every step, with the same
// KL bound per step. The one allowed exception is a near tie: a step whose CPU top-2 margin is
// below twice that step's max |gpu - cpu| may pick the runner-up; at most 2 such steps (more would
// mean the error is not small), and a mismatch at a clear margin fails.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/gpu_runner.h"
#include "runtime/model.h"
#include "runtime/runner.h"
#include "runtime/sampling.h"
#include "runtime/tokenizer_gguf.h"
#include "tests/kernels_gpu/gpu_test_util.h"

namespace kvwire::runtime {
namespace {

constexpr char kText[] =
    "The lighthouse keeper climbed the spiral stairs every evening at dusk. From the lamp room "
    "he could see the fishing boats returning to the harbour, their lanterns swaying with the "
    "swell. One winter night a storm rolled in from the north, and the keeper noticed a small "
    "boat drifting towards the rocks without any light at all. He";
constexpr int kDecodeSteps = 16;
constexpr double kMaxDiffOfRange = 0.02;
constexpr double kMaxKl = 1e-3;
constexpr int kMaxNearTies = 2;

std::string ModelPath() {
  if (const char* m = std::getenv("KVWIRE_MODEL"); m != nullptr && *m != '\0') return m;
  const char* home = std::getenv("HOME");
  return absl::StrCat(home ? home : "", "/.cache/kvwire/models/SmolLM2-135M-Instruct.Q4_1.gguf");
}

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(double{a[i]} - double{b[i]}));
  return d;
}

// KL(softmax(p) || softmax(q)) of two logit vectors, in nats.
double Kl(const std::vector<float>& p, const std::vector<float>& q) {
  auto log_softmax = [](const std::vector<float>& x) {
    const double m = *std::max_element(x.begin(), x.end());
    double s = 0;
    for (float v : x) s += std::exp(double{v} - m);
    std::vector<double> out(x.size());
    for (size_t i = 0; i < x.size(); ++i) out[i] = double{x[i]} - m - std::log(s);
    return out;
  };
  const std::vector<double> lp = log_softmax(p), lq = log_softmax(q);
  double kl = 0;
  for (size_t i = 0; i < lp.size(); ++i) kl += std::exp(lp[i]) * (lp[i] - lq[i]);
  return kl;
}

// Top-1 minus top-2 logit.
double Margin(const std::vector<float>& x) {
  std::vector<float> s = x;
  std::partial_sort(s.begin(), s.begin() + 2, s.end(), std::greater<float>());
  return double{s[0]} - double{s[1]};
}

class GpuRealModelTest : public kernels::cuda::testing::GpuTest {
 protected:
  void SetUp() override {
    kernels::cuda::testing::GpuTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    const std::string path = ModelPath();
    if (!std::ifstream(path).good()) GTEST_SKIP() << "no model at " << path << " (KVWIRE_MODEL)";
    absl::StatusOr<std::unique_ptr<Model>> model = Model::Load(path);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    absl::StatusOr<std::unique_ptr<Tokenizer>> tok = LoadTokenizer(model_->gguf());
    ASSERT_TRUE(tok.ok()) << tok.status();
    prompt_ = (*tok)->Encode(kText, {.add_bos = (*tok)->add_bos()});
    ASSERT_GT(prompt_.size(), 50u);
  }
  std::unique_ptr<Model> model_;
  std::vector<int32_t> prompt_;
};

TEST_F(GpuRealModelTest, PrefillAndGreedyDecodeMatchTheCpu) {
  Runner cpu(*model_, 2);
  absl::StatusOr<std::shared_ptr<const GpuModel>> weights = GpuModel::Upload(*model_, {});
  ASSERT_TRUE(weights.ok()) << weights.status();
  absl::StatusOr<std::unique_ptr<GpuRunner>> gpu = GpuRunner::Create(*weights);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  absl::StatusOr<std::unique_ptr<GpuKvCache>> gcache =
      GpuKvCache::Create(**weights, static_cast<int64_t>(prompt_.size()) + kDecodeSteps);
  ASSERT_TRUE(gcache.ok()) << gcache.status();

  cache::KvCache cache;
  absl::StatusOr<std::vector<float>> want = cpu.Prefill(prompt_, {}, &cache);
  absl::StatusOr<std::vector<float>> got = (*gpu)->Prefill(prompt_, {}, gcache->get());
  ASSERT_TRUE(want.ok() && got.ok()) << want.status() << got.status();
  ASSERT_EQ(got->size(), want->size());
  const auto [lo, hi] = std::minmax_element(want->begin(), want->end());
  const double range = double{*hi} - double{*lo};
  const double diff = MaxAbsDiff(*got, *want);
  EXPECT_LE(diff, kMaxDiffOfRange * range) << "logit range " << range;
  EXPECT_EQ(ArgMax(*got), ArgMax(*want));
  EXPECT_LT(Kl(*want, *got), kMaxKl);
  std::cout << "prefill of " << prompt_.size() << " tokens: max |diff| " << diff << " of range "
            << range << ", KL " << Kl(*want, *got) << "\n";

  // The device's pick from the current logits (pick 0: the prefill's, pick g: decode step g - 1's)
  // must be the CPU's, except at a near tie.
  int near_ties = 0;
  auto check_pick = [&](int pick) {
    const int32_t token = ArgMax(*want), device_token = ArgMax(*got);
    if (device_token == token) return;
    const double margin = Margin(*want), step_diff = MaxAbsDiff(*got, *want);
    if (margin < 2 * step_diff) {
      ++near_ties;
      return;
    }
    ADD_FAILURE() << "pick " << pick << ": the device picked token " << device_token << " over "
                  << token << " at margin " << margin << " (max |diff| " << step_diff << ")";
  };
  for (int g = 0; g < kDecodeSteps; ++g) {
    check_pick(g);
    const int32_t token = ArgMax(*want);  // the CPU's greedy choice, fed to both
    want = cpu.Decode(token, DecodePosition(cache, g), &cache);
    got = (*gpu)->Decode(token, (*gcache)->original_length() + g, gcache->get());
    ASSERT_TRUE(want.ok() && got.ok()) << want.status() << got.status();
    EXPECT_LT(Kl(*want, *got), kMaxKl) << "decode step " << g;
  }
  check_pick(kDecodeSteps);  // the last decode step's logits, which no later step looks at
  EXPECT_LE(near_ties, kMaxNearTies);
  EXPECT_EQ((*gcache)->entries(0, 0), static_cast<int64_t>(prompt_.size()) + kDecodeSteps);
}

}  // namespace
}  // namespace kvwire::runtime
