// Layer payloads packed on the device must equal format::EncodeLayer's bytes exactly, for every
// key/value and vote dtype, int8 with and without an fp16 tail, ragged and empty heads.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cuda/pack.h"
#include "kvwire/format/messages.h"
#include "tests/kernels_gpu/gpu_test_util.h"

namespace kvwire::kernels::cuda {
namespace {

using format::DType;

struct PackCase {
  const char* name;
  DType kv, vote;
  uint16_t quant_group;
  uint16_t head_dim;
  std::vector<uint32_t> counts, tails;
};

void PrintTo(const PackCase& c, std::ostream* os) { *os << c.name; }

class PackParity : public testing::GpuParamTest<PackCase> {};

// Normal values plus the awkward ones: fp16 overflow and subnormals, -0, exact zeros.
std::vector<float> Awkward(size_t n, std::mt19937& rng) {
  std::vector<float> v = testing::RandomNormal(n, rng, 3.0f);
  const float specials[] = {70000.0f, -65520.0f, 65519.0f, 1e-6f, -3e-8f, -0.0f, 0.0f, 1e-30f};
  for (size_t i = 0; i < n; i += 13) v[i] = specials[(i / 13) % 8];
  return v;
}

TEST_P(PackParity, BytesEqualTheHostEncoder) {
  const PackCase& c = GetParam();
  std::mt19937 rng(c.head_dim * 3 + c.counts.size());
  format::LayerLayout layout;
  layout.layer = 7;
  layout.head_dim = c.head_dim;
  layout.kv_dtype = c.kv;
  layout.vote_dtype = c.vote;
  layout.quant_group = c.quant_group;
  layout.counts = c.counts;
  layout.tails = c.tails;
  struct Host {
    std::vector<int32_t> pos;
    std::vector<float> votes, keys, values;
  };
  std::vector<Host> host(c.counts.size());
  std::vector<format::HeadInput> cpu_in;
  std::vector<DeviceBuffer> bufs;
  std::vector<DeviceHeadInput> gpu_in;
  for (size_t h = 0; h < c.counts.size(); ++h) {
    const size_t n = c.counts[h];
    Host& x = host[h];
    for (size_t i = 0; i < n; ++i) x.pos.push_back(static_cast<int32_t>(3 * i + h));
    x.votes = testing::RandomNormal(n, rng, 2.0f);
    for (size_t i = 0; i < n; i += 5) x.votes[i] = -1.0e4f;  // votes pushed far down
    x.keys = Awkward(n * c.head_dim, rng);
    x.values = Awkward(n * c.head_dim, rng);
    if (h == 1 && n > 0) std::fill(x.values.begin(), x.values.begin() + c.head_dim, 0.0f);
    cpu_in.push_back({x.pos.data(), x.votes.data(), x.keys.data(), x.values.data()});
    bufs.push_back(Up(x.pos.empty() ? std::vector<int32_t>(1) : x.pos));
    bufs.push_back(Up(x.votes.empty() ? std::vector<float>(1) : x.votes));
    bufs.push_back(Up(x.keys.empty() ? std::vector<float>(1) : x.keys));
    bufs.push_back(Up(x.values.empty() ? std::vector<float>(1) : x.values));
    const size_t b = 4 * h;
    gpu_in.push_back({bufs[b].as<int32_t>(), bufs[b + 1].as<float>(), bufs[b + 2].as<float>(),
                      bufs[b + 3].as<float>()});
  }
  std::vector<uint8_t> want;
  ASSERT_TRUE(format::EncodeLayer(layout, cpu_in, &want).ok());
  // One spare byte shifted in front makes every section start at an odd device address.
  for (size_t shift : {0, 1}) {
    DeviceBuffer payload = Zeros<uint8_t>(want.size() + 1);
    absl::StatusOr<uint64_t> size =
        EncodeLayer(ctx(), layout, gpu_in, payload.as<uint8_t>() + shift, want.size());
    ASSERT_TRUE(size.ok()) << size.status();
    ASSERT_EQ(*size, want.size());
    std::vector<uint8_t> got = Down<uint8_t>(payload, want.size() + 1);
    got.erase(got.begin(), got.begin() + shift);
    got.resize(want.size());
    size_t first_diff = 0;
    while (first_diff < want.size() && got[first_diff] == want[first_diff]) ++first_diff;
    EXPECT_EQ(first_diff, want.size()) << "first differing byte (shift " << shift << ")";
  }
}

const PackCase kPackCases[] = {
    {"f16_votes_f32", DType::kF16, DType::kF32, 0, 64, {100, 1, 0, 37}, {0, 0, 0, 0}},
    {"bf16_votes_f16", DType::kBF16, DType::kF16, 0, 128, {33, 300}, {0, 0}},
    {"f32_odd_votes", DType::kF32, DType::kF16, 0, 64, {3, 5, 7}, {0, 0, 0}},
    {"i8_group64_tail", DType::kI8, DType::kF32, 64, 64, {500, 40, 0}, {32, 32, 0}},
    {"i8_group16_no_tail", DType::kI8, DType::kF16, 16, 128, {77, 16, 1}, {0, 0, 0}},
    {"i8_all_tail", DType::kI8, DType::kF32, 32, 32, {20, 129}, {20, 1}},
};

INSTANTIATE_TEST_SUITE_P(Layouts, PackParity, ::testing::ValuesIn(kPackCases),
                         [](const auto& info) { return std::string(info.param.name); });

class PackArgs : public testing::GpuTest {};

TEST_F(PackArgs, RejectsSmallBuffersAndBadLayouts) {
  format::LayerLayout layout;
  layout.head_dim = 64;
  layout.kv_dtype = DType::kF16;
  layout.counts = {10};
  layout.tails = {0};
  DeviceBuffer data = Zeros<float>(640);
  const DeviceHeadInput in{reinterpret_cast<int32_t*>(data.as<float>()), data.as<float>(),
                           data.as<float>(), data.as<float>()};
  DeviceBuffer payload = Zeros<uint8_t>(64);
  EXPECT_EQ(EncodeLayer(ctx(), layout, {&in, 1}, payload.as<uint8_t>(), 64).status().code(),
            absl::StatusCode::kInvalidArgument);
  layout.tails = {3};  // a tail without int8
  EXPECT_EQ(EncodeLayer(ctx(), layout, {&in, 1}, payload.as<uint8_t>(), 1 << 20).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvwire::kernels::cuda
