// GpuRunner against runtime::Runner on tiny random models: prefill on each side, then decode
// steps, and decode over an installed compressed-looking cache (ragged heads, log-votes).
//
// Tolerance: the device multiplies 16-bit weights and activations (fp32 accumulation), so logits
// agree within 3 % of the largest |logit| (a wrong RoPE, transpose or cache append moves them by
// O(1)); the argmax must agree wherever the CPU's top two differ by more than that.
#include "runtime/gpu_runner.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "runtime/gguf.h"
#include "runtime/model.h"
#include "runtime/runner.h"
#include "runtime/tiny_model.h"
#include "tests/kernels_gpu/gpu_test_util.h"

namespace kvwire::runtime {
namespace {

struct RunnerCase {
  const char* name;
  std::string arch;
  kernels::QuantType weights;
};

void PrintTo(const RunnerCase& c, std::ostream* os) { *os << c.name; }

std::unique_ptr<Model> TinyModel(const RunnerCase& c) {
  TinyModelOptions o;
  o.arch = c.arch;
  o.weight_type = c.weights;
  o.n_heads = 6;
  o.n_kv_heads = 2;
  o.hidden = 384;
  absl::StatusOr<std::string> bytes = MakeTinyModel(o);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  absl::StatusOr<std::unique_ptr<GgufFile>> gguf = GgufFile::FromBytes(*std::move(bytes));
  EXPECT_TRUE(gguf.ok()) << gguf.status();
  absl::StatusOr<std::unique_ptr<Model>> model = Model::FromGguf(*std::move(gguf));
  EXPECT_TRUE(model.ok()) << model.status();
  return model.ok() ? *std::move(model) : nullptr;
}

void ExpectClose(const std::vector<float>& gpu, const std::vector<float>& cpu, const char* what) {
  ASSERT_EQ(gpu.size(), cpu.size());
  float scale = 0;
  for (float v : cpu) scale = std::max(scale, std::fabs(v));
  const float tol = 0.03f * scale + 1e-3f;
  for (size_t i = 0; i < cpu.size(); ++i) ASSERT_NEAR(gpu[i], cpu[i], tol) << what << " " << i;
  std::vector<float> sorted = cpu;
  std::sort(sorted.rbegin(), sorted.rend());
  if (sorted[0] - sorted[1] > 2 * tol) {
    EXPECT_EQ(std::max_element(gpu.begin(), gpu.end()) - gpu.begin(),
              std::max_element(cpu.begin(), cpu.end()) - cpu.begin())
        << what;
  }
}

class GpuRunnerParity : public kernels::cuda::testing::GpuParamTest<RunnerCase> {};

TEST_P(GpuRunnerParity, PrefillAndDecodeMatchTheCpuRunner) {
  std::unique_ptr<Model> model = TinyModel(GetParam());
  ASSERT_NE(model, nullptr);
  Runner cpu(*model, 1);
  absl::StatusOr<std::unique_ptr<GpuRunner>> gpu = GpuRunner::Create(*model, {});
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  std::vector<int32_t> prompt;
  for (int i = 0; i < 45; ++i) prompt.push_back(3 + (i * 37 + 11) % 256);
  cache::KvCache cache;
  absl::StatusOr<std::vector<float>> want = cpu.Prefill(prompt, {}, &cache);
  absl::StatusOr<std::vector<float>> got = (*gpu)->Prefill(prompt);
  ASSERT_TRUE(want.ok() && got.ok()) << want.status() << got.status();
  ExpectClose(*got, *want, "prefill");
  for (int g = 0; g < 4; ++g) {
    const int32_t token = 3 + 17 * g;
    want = cpu.Decode(token, DecodePosition(cache, g), &cache);
    got = (*gpu)->Decode(token, DecodePosition(cache, g));
    ASSERT_TRUE(want.ok() && got.ok()) << want.status() << got.status();
    ExpectClose(*got, *want, "decode");
  }
  EXPECT_EQ((*gpu)->entries(0, 0), static_cast<int64_t>(cache.layers[0].heads[0].size()));
}

TEST_P(GpuRunnerParity, DecodesOverAnInstalledRaggedVotedCache) {
  std::unique_ptr<Model> model = TinyModel(GetParam());
  ASSERT_NE(model, nullptr);
  Runner cpu(*model, 1);
  std::vector<int32_t> prompt;
  for (int i = 0; i < 60; ++i) prompt.push_back(3 + (i * 53 + 7) % 256);
  cache::KvCache cache;
  ASSERT_TRUE(cpu.Prefill(prompt, {}, &cache).ok());
  const int d = model->config().head_dim;
  for (auto& layer : cache.layers) {
    for (size_t h = 0; h < layer.heads.size(); ++h) {
      cache::HeadSegment kept;
      const cache::HeadSegment& seg = layer.heads[h];
      for (size_t i = 0; i < seg.size(); ++i) {
        if (i % (h + 2) == 1) continue;  // ragged: each head drops a different share
        kept.Append(seg.positions[i], i % 3 == 0 ? std::log(3.0f) : (i % 7 == 0 ? -30.0f : 0.0f),
                    seg.key(i, d), seg.value(i, d), d);
      }
      layer.heads[h] = kept;
    }
  }
  absl::StatusOr<std::unique_ptr<GpuRunner>> gpu = GpuRunner::Create(*model, {});
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  ASSERT_TRUE((*gpu)->Install(cache).ok());
  for (int g = 0; g < 3; ++g) {
    const int32_t token = 5 + 29 * g;
    absl::StatusOr<std::vector<float>> want = cpu.Decode(token, DecodePosition(cache, g), &cache);
    absl::StatusOr<std::vector<float>> got = (*gpu)->Decode(token, DecodePosition(cache, g));
    ASSERT_TRUE(want.ok() && got.ok()) << want.status() << got.status();
    ExpectClose(*got, *want, "decode over installed cache");
  }
}

const RunnerCase kRunnerCases[] = {
    {"llama_q8_0", "llama", kernels::QuantType::kQ8_0},
    {"llama_q4_1", "llama", kernels::QuantType::kQ4_1},
    {"qwen2_biases_f16", "qwen2", kernels::QuantType::kF16},
};

INSTANTIATE_TEST_SUITE_P(TinyModels, GpuRunnerParity, ::testing::ValuesIn(kRunnerCases),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace kvwire::runtime
