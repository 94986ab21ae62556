#include "kvwire/format/messages.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "tests/format/test_util.h"

namespace kvwire::format {
namespace {

using testing::Poke;

Manifest SampleManifest() {
  Manifest m;
  m.model_fingerprint = 0xfeedbeef;
  m.n_layers = 30;
  m.n_kv_heads = 3;
  m.n_query_heads = 9;
  m.head_dim = 64;
  m.kv_dtype = DType::kF16;
  m.vote_dtype = DType::kF32;
  m.original_length = 2048;
  m.budget = 0.2f;
  m.entry_budget = 30 * 3 * 410;
  m.method = "snapkv/adaptive/merge";
  return m;
}

TEST(ManifestCodec, RoundTrips) {
  const Manifest m = SampleManifest();
  auto back = DecodeManifest(EncodeManifest(m), Limits{});
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, m);
}

TEST(ManifestCodec, RejectsTruncationTrailingBytesAndBadFields) {
  const std::vector<uint8_t> good = EncodeManifest(SampleManifest());
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_EQ(DecodeManifest(absl::MakeConstSpan(good.data(), n), Limits{}).status().code(),
              absl::StatusCode::kDataLoss) << n;
  }
  std::vector<uint8_t> trailing = good;
  trailing.push_back(1);
  EXPECT_EQ(DecodeManifest(trailing, Limits{}).status().code(), absl::StatusCode::kDataLoss);

  auto expect_bad = [](Manifest m, const char* why) {
    EXPECT_EQ(DecodeManifest(EncodeManifest(m), Limits{}).status().code(),
              absl::StatusCode::kDataLoss) << why;
  };
  Manifest m = SampleManifest();
  m.n_layers = 0; expect_bad(m, "zero layers");
  m = SampleManifest(); m.n_layers = 5000; expect_bad(m, "too many layers");
  m = SampleManifest(); m.n_query_heads = 10; expect_bad(m, "query heads not a multiple");
  m = SampleManifest(); m.budget = 0.0f; expect_bad(m, "zero budget");
  m = SampleManifest(); m.budget = std::nanf(""); expect_bad(m, "NaN budget");
  m = SampleManifest(); m.budget = 1.5f; expect_bad(m, "budget over 1");
  m = SampleManifest(); m.vote_dtype = DType::kBF16; expect_bad(m, "bf16 votes");
  m = SampleManifest(); m.kv_dtype = DType::kI8; expect_bad(m, "int8 without group");
  m = SampleManifest(); m.original_length = 0; expect_bad(m, "empty prompt");
  m = SampleManifest(); m.method = std::string(300, 'x'); expect_bad(m, "long method");
  std::vector<uint8_t> bad_dtype = good;
  bad_dtype[18] = 9;  // kv_dtype byte
  EXPECT_EQ(DecodeManifest(bad_dtype, Limits{}).status().code(), absl::StatusCode::kDataLoss);
}

TEST(CommitCodec, RoundTripsAndRejectsWrongSize) {
  const Commit c{30, 12345, 0xabcdef};
  auto back = DecodeCommit(EncodeCommit(c));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, c);
  std::vector<uint8_t> bytes = EncodeCommit(c);
  bytes.pop_back();
  EXPECT_EQ(DecodeCommit(bytes).status().code(), absl::StatusCode::kDataLoss);
}

TEST(AbortCodec, RoundTripsAndRejectsOkCodeAndLongMessages) {
  const Abort a{absl::StatusCode::kUnavailable, "prefill node shutting down"};
  auto back = DecodeAbort(EncodeAbort(a), Limits{});
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, a);
  std::vector<uint8_t> ok_code = EncodeAbort(a);
  Poke<uint32_t>(ok_code, 0, 0);
  EXPECT_EQ(DecodeAbort(ok_code, Limits{}).status().code(), absl::StatusCode::kDataLoss);
  Limits tight;
  tight.max_message_length = 4;
  EXPECT_EQ(DecodeAbort(EncodeAbort(a), tight).status().code(), absl::StatusCode::kDataLoss);
}

// A layer with random data, the arrays backing HeadInput kept alive alongside.
struct LayerData {
  LayerLayout layout;
  std::vector<std::vector<int32_t>> positions;
  std::vector<std::vector<float>> votes, keys, values;
  std::vector<HeadInput> inputs;
};

LayerData MakeLayer(DType kv, std::vector<uint32_t> counts, uint32_t tail = 0, int d = 16,
                    DType vote = DType::kF32) {
  LayerData data;
  data.layout.layer = 7;
  data.layout.head_dim = static_cast<uint16_t>(d);
  data.layout.kv_dtype = kv;
  data.layout.vote_dtype = vote;
  data.layout.quant_group = kv == DType::kI8 ? 32 : 0;
  data.layout.counts = counts;
  std::mt19937 rng(counts.size() * 31 + d);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (uint32_t c : counts) {
    data.layout.tails.push_back(kv == DType::kI8 ? std::min(c, tail) : 0);
    std::vector<int32_t> pos(c);
    for (uint32_t i = 0; i < c; ++i) pos[i] = static_cast<int32_t>(3 * i + 1);
    std::vector<float> v(c), k(size_t{c} * d), x(size_t{c} * d);
    for (auto& f : v) f = std::log(1.0f + static_cast<float>(rng() % 4));
    for (auto& f : k) f = normal(rng);
    for (auto& f : x) f = normal(rng);
    data.positions.push_back(std::move(pos));
    data.votes.push_back(std::move(v));
    data.keys.push_back(std::move(k));
    data.values.push_back(std::move(x));
  }
  for (size_t h = 0; h < counts.size(); ++h) {
    data.inputs.push_back({data.positions[h].data(), data.votes[h].data(), data.keys[h].data(),
                           data.values[h].data()});
  }
  return data;
}

std::vector<uint8_t> Encode(const LayerData& data) {
  std::vector<uint8_t> payload;
  EXPECT_TRUE(EncodeLayer(data.layout, data.inputs, &payload).ok());
  return payload;
}

// Max |a-b| / max|a| over one head's keys or values.
float RelError(const std::vector<float>& want, const std::vector<float>& got) {
  float err = 0, scale = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    err = std::max(err, std::fabs(want[i] - got[i]));
    scale = std::max(scale, std::fabs(want[i]));
  }
  return scale > 0 ? err / scale : err;
}

class LayerCodecTest : public ::testing::TestWithParam<DType> {};

TEST_P(LayerCodecTest, RoundTripsWithinDTypePrecision) {
  const DType kv = GetParam();
  const LayerData data = MakeLayer(kv, {5, 0, 70}, /*tail=*/8);
  const std::vector<uint8_t> payload = Encode(data);
  EXPECT_EQ(payload.size(), *LayerPayloadSize(data.layout));
  auto view = DecodeLayer(payload, Limits{});
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ(view->layout.counts, data.layout.counts);
  const float tol = kv == DType::kF32 ? 0.0f : kv == DType::kF16 ? 1e-3f : kv == DType::kBF16 ? 8e-3f : 1.2e-2f;
  for (size_t h = 0; h < data.layout.counts.size(); ++h) {
    const uint32_t c = data.layout.counts[h];
    const int d = data.layout.head_dim;
    std::vector<int32_t> pos(c);
    std::vector<float> votes(c), keys(size_t{c} * d), values(size_t{c} * d);
    ASSERT_TRUE(ExpandHead(view->layout, view->heads[h], pos.data(), votes.data(), keys.data(),
                           values.data()).ok());
    EXPECT_EQ(pos, data.positions[h]);
    EXPECT_EQ(votes, data.votes[h]);  // f32 votes are exact.
    EXPECT_LE(RelError(data.keys[h], keys), tol) << DTypeName(kv) << " head " << h;
    EXPECT_LE(RelError(data.values[h], values), tol) << DTypeName(kv) << " head " << h;
  }
}

TEST_P(LayerCodecTest, RejectsTruncationAtEveryOffset) {
  const std::vector<uint8_t> payload = Encode(MakeLayer(GetParam(), {3, 4}, 2, 8));
  for (size_t n = 0; n < payload.size(); ++n) {
    auto view = DecodeLayer(absl::MakeConstSpan(payload.data(), n), Limits{});
    ASSERT_FALSE(view.ok()) << n;
    EXPECT_EQ(view.status().code(), absl::StatusCode::kDataLoss) << n;
  }
  std::vector<uint8_t> trailing = payload;
  trailing.push_back(0);
  EXPECT_EQ(DecodeLayer(trailing, Limits{}).status().code(), absl::StatusCode::kDataLoss);
}

INSTANTIATE_TEST_SUITE_P(AllDTypes, LayerCodecTest,
                         ::testing::Values(DType::kF32, DType::kF16, DType::kBF16, DType::kI8),
                         [](const auto& info) { return std::string(DTypeName(info.param)); });

TEST(LayerCodec, Fp16VotesRoundTripWithinHalfPrecision) {
  const LayerData data = MakeLayer(DType::kF16, {9}, 0, 8, DType::kF16);
  const std::vector<uint8_t> payload = Encode(data);  // The view points into it.
  auto view = DecodeLayer(payload, Limits{});
  ASSERT_TRUE(view.ok());
  std::vector<int32_t> pos(9);
  std::vector<float> votes(9), k(72), v(72);
  ASSERT_TRUE(ExpandHead(view->layout, view->heads[0], pos.data(), votes.data(), k.data(), v.data()).ok());
  for (int i = 0; i < 9; ++i) EXPECT_NEAR(votes[i], data.votes[0][i], 1e-3f);
}

TEST(LayerCodec, RejectsCountsOverLimitsBeforeAllocating) {
  std::vector<uint8_t> payload = Encode(MakeLayer(DType::kF16, {3, 4}, 0, 8));
  // count x dim overflow attempt: a count near 2^32 must be rejected by the limit check, not
  // multiplied into a wrapped size.
  Poke<uint32_t>(payload, 12, 0xffffffffu);
  auto view = DecodeLayer(payload, Limits{});
  EXPECT_EQ(view.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(view.status().message().find("limit"), absl::string_view::npos) << view.status();
  // A count within limits but inconsistent with the payload size.
  Poke<uint32_t>(payload, 12, 1000);
  EXPECT_EQ(DecodeLayer(payload, Limits{}).status().code(), absl::StatusCode::kDataLoss);
  // Head count over the configured limit.
  Limits tight;
  tight.max_kv_heads = 1;
  EXPECT_EQ(DecodeLayer(Encode(MakeLayer(DType::kF16, {1, 1}, 0, 8)), tight).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(LayerCodec, RejectsBadLayoutFields) {
  const std::vector<uint8_t> good = Encode(MakeLayer(DType::kI8, {40}, 4, 8));
  auto expect_bad = [&good](size_t offset, auto value, const char* why) {
    std::vector<uint8_t> bad = good;
    Poke(bad, offset, value);
    EXPECT_EQ(DecodeLayer(bad, Limits{}).status().code(), absl::StatusCode::kDataLoss) << why;
  };
  expect_bad(4, uint16_t{0}, "zero heads");
  expect_bad(6, uint16_t{0}, "zero head_dim");
  expect_bad(8, uint8_t{7}, "unknown kv dtype");
  expect_bad(9, uint8_t{2}, "bf16 votes");
  expect_bad(10, uint16_t{8}, "quant group too small");
  expect_bad(16, uint32_t{41}, "tail longer than count");
}

TEST(LayerCodec, EncoderRejectsInconsistentLayout) {
  LayerData data = MakeLayer(DType::kF16, {2, 2}, 0, 8);
  data.layout.tails = {0};
  std::vector<uint8_t> out;
  EXPECT_EQ(EncodeLayer(data.layout, data.inputs, &out).code(), absl::StatusCode::kInvalidArgument);
  data = MakeLayer(DType::kF16, {2, 2}, 0, 8);
  data.inputs.pop_back();
  EXPECT_EQ(EncodeLayer(data.layout, data.inputs, &out).code(), absl::StatusCode::kInvalidArgument);
}

TEST(LayerCodec, NonFiniteLogVoteIsDataLoss) {
  LayerData data = MakeLayer(DType::kF16, {3}, 0, 8);
  data.votes[0][1] = -INFINITY;
  const std::vector<uint8_t> payload = Encode(data);
  auto view = DecodeLayer(payload, Limits{});
  ASSERT_TRUE(view.ok());
  std::vector<int32_t> pos(3);
  std::vector<float> votes(3), k(24), v(24);
  EXPECT_EQ(ExpandHead(view->layout, view->heads[0], pos.data(), votes.data(), k.data(), v.data()).code(),
            absl::StatusCode::kDataLoss);
}

TEST(LayerCodec, Int8PayloadIsAboutHalfOfFp16) {
  const uint64_t f16 = *LayerPayloadSize(MakeLayer(DType::kF16, {512, 512}, 0, 64).layout);
  const uint64_t i8 = *LayerPayloadSize(MakeLayer(DType::kI8, {512, 512}, 0, 64).layout);
  EXPECT_LT(static_cast<double>(i8) / f16, 0.56);
  EXPECT_GT(static_cast<double>(i8) / f16, 0.5);
}

}  // namespace
}  // namespace kvwire::format
