// Vote-biased attention on the device against kernels::Attention on the CPU.
//
// Tolerance: both sides compute in fp32 but sum in different orders (the device splits entries
// into slices and tiles) and use different exp implementations; outputs are convex combinations of
// N(0, 1) values, so we allow 1e-4 absolute + 1e-4 relative per element.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cuda/attention.h"
#include "kvwire/kernels/attention.h"
#include "tests/kernels_gpu/gpu_test_util.h"

namespace kvwire::kernels::cuda {
namespace {

using testing::GpuParamTest;
using testing::RandomNormal;

enum class Votes { kNone, kMixed, kLargeNegative };

struct AttnCase {
  const char* name;
  int n_heads, n_kv_heads, head_dim;
  std::vector<int64_t> lengths;  // per KV head (ragged)
  int64_t n_queries;
  Votes votes;
  int slices;  // 0: the kernel's own choice
};

void PrintTo(const AttnCase& c, std::ostream* os) { *os << c.name; }

// Log-votes ln p for merged entries, zeros, and entries pushed far down (large negatives).
std::vector<float> MakeVotes(int64_t n, Votes kind, std::mt19937& rng) {
  std::vector<float> v(n, 0.0f);
  std::uniform_int_distribution<int> pick(0, 9);
  for (float& x : v) {
    const int r = pick(rng);
    if (kind == Votes::kMixed) x = r < 3 ? std::log(1.0f + r) : (r == 9 ? -40.0f : 0.5f * (r - 5));
    if (kind == Votes::kLargeNegative) x = r < 8 ? -1.0e4f + r : -60.0f;
  }
  return v;
}

class AttentionParity : public GpuParamTest<AttnCase> {};

TEST_P(AttentionParity, MatchesCpu) {
  const AttnCase& c = GetParam();
  std::mt19937 rng(1234 + c.n_heads * 7 + c.head_dim);
  const int d = c.head_dim;
  AttentionShape shape{c.n_queries, c.n_heads, c.n_kv_heads, d, 1.0f / std::sqrt(float(d))};
  std::vector<std::vector<float>> keys, values, bias;
  std::vector<KvHeadView> cpu_kv, gpu_kv;
  std::vector<DeviceBuffer> bufs;
  for (int h = 0; h < c.n_kv_heads; ++h) {
    const int64_t n = c.lengths[h];
    keys.push_back(RandomNormal(n * d, rng));
    values.push_back(RandomNormal(n * d, rng));
    bias.push_back(MakeVotes(n, c.votes, rng));
    const bool with_bias = c.votes != Votes::kNone;
    cpu_kv.push_back({keys[h].data(), values[h].data(), with_bias ? bias[h].data() : nullptr, n});
    bufs.push_back(Up(keys[h]));
    bufs.push_back(Up(values[h]));
    bufs.push_back(Up(bias[h]));
    gpu_kv.push_back({bufs[3 * h].as<float>(), bufs[3 * h + 1].as<float>(),
                      with_bias ? bufs[3 * h + 2].as<float>() : nullptr, n});
  }
  const size_t out_n = static_cast<size_t>(c.n_queries) * c.n_heads * d;
  const std::vector<float> q = RandomNormal(out_n, rng);
  std::vector<float> want(out_n);
  kernels::Attention(shape, q.data(), cpu_kv.data(), want.data(), nullptr);

  DeviceBuffer q_dev = Up(q);
  DeviceBuffer out_dev = Zeros<float>(out_n);
  ASSERT_TRUE(
      Attention(ctx(), shape, q_dev.as<float>(), gpu_kv.data(), out_dev.as<float>(), {c.slices})
          .ok());
  const std::vector<float> got = Down<float>(out_dev, out_n);
  EXPECT_LE(testing::ToleranceRatio(got, want, 1e-4, 1e-4), 1.0);
}

const AttnCase kCases[] = {
    {"smollm2_ragged_votes", 9, 3, 64, {1000, 37, 513}, 1, Votes::kMixed, 0},
    {"smollm2_ragged_large_negative", 9, 3, 64, {2049, 1, 95}, 1, Votes::kLargeNegative, 0},
    {"g1_dim128_no_bias", 4, 4, 128, {4097, 4097, 1, 300}, 1, Votes::kNone, 0},
    {"g4_llama_shape", 32, 8, 128, {5000, 17, 4096, 1, 33, 2500, 64, 999}, 1, Votes::kMixed, 0},
    {"g4_several_queries", 8, 2, 64, {700, 45}, 5, Votes::kMixed, 0},
    {"prefill_causal_empty_cache", 6, 2, 32, {70, 70}, 70, Votes::kNone, 0},
    {"forced_slices_more_than_tiles", 9, 3, 64, {100, 3, 260}, 1, Votes::kMixed, 7},
    {"g12_more_than_one_chunk", 24, 2, 32, {333, 1200}, 2, Votes::kMixed, 0},
    {"dim256_opt_in_shared_memory", 4, 2, 256, {129, 1030}, 1, Votes::kMixed, 0},
    {"dim96_partial_slots", 6, 3, 96, {77, 1500, 31}, 1, Votes::kMixed, 3},
};

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionParity, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return std::string(info.param.name); });

class AttentionArgs : public testing::GpuTest {};

TEST_F(AttentionArgs, RejectsUnsupportedShapes) {
  float* fake = nullptr;
  std::vector<KvHeadView> kv(2, KvHeadView{nullptr, nullptr, nullptr, 4});
  AttentionShape s{1, 6, 2, 30, 0.2f};  // head_dim not a multiple of 4
  EXPECT_EQ(Attention(ctx(), s, fake, kv.data(), fake).code(), absl::StatusCode::kInvalidArgument);
  s = {1, 5, 2, 32, 0.2f};  // heads not a multiple of KV heads
  EXPECT_EQ(Attention(ctx(), s, fake, kv.data(), fake).code(), absl::StatusCode::kInvalidArgument);
  s = {8, 4, 2, 32, 0.2f};  // more queries than entries
  EXPECT_EQ(Attention(ctx(), s, fake, kv.data(), fake).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvwire::kernels::cuda
