#include "kvwire/control/kv_budget.h"

#include <random>

#include "gtest/gtest.h"
#include "kvwire/cache/frames.h"
#include "kvwire/compress/select.h"

namespace kvwire::control {
namespace {

constexpr cache::CacheShape kShape{.n_layers = 5, .n_kv_heads = 3, .head_dim = 64};

// Every head keeps exactly HeadBudget(kept, length) entries, as uniform allocation does.
cache::KvCache CompressedCache(int32_t length, float kept) {
  cache::KvCache cache = cache::KvCache::Empty(kShape, length);
  const int64_t budget = compress::HeadBudget(kept, length);
  std::vector<float> k(kShape.head_dim, 0.5f), v(kShape.head_dim, -0.25f);
  for (auto& layer : cache.layers) {
    for (auto& head : layer.heads) {
      for (int32_t p = 0; p < budget; ++p)
        head.Append(p, 0.0f, k.data(), v.data(), kShape.head_dim);
    }
  }
  return cache;
}

uint64_t StreamBytes(const cache::KvCache& cache, float kept, format::DType dtype) {
  const format::Manifest manifest =
      StreamManifest(kShape, 9, 42, static_cast<uint32_t>(cache.original_length), kept, dtype,
                     "snapkv/adaptive/merge");
  auto frames = cache::EncodeCacheFrames(7, manifest, cache);
  EXPECT_TRUE(frames.ok()) << frames.status();
  uint64_t total = 0;
  for (const auto& f : *frames) total += f.size();
  return total;
}

TEST(EstimateWireBytes, BoundsTheEncodedStreamTightly) {
  for (int32_t length : {1, 17, 100, 1000}) {
    for (float kept : {0.05f, 0.2f, 0.5f, 1.0f}) {
      for (format::DType dtype : {format::DType::kF16, format::DType::kF32}) {
        const uint64_t actual = StreamBytes(CompressedCache(length, kept), kept, dtype);
        const uint64_t estimate = EstimateWireBytes(kShape, length, kept, dtype);
        EXPECT_GE(estimate, actual) << length << " " << kept;
        EXPECT_LE(estimate, actual + 2048) << length << " " << kept;
      }
    }
  }
}

TEST(ModelFingerprint, DiffersWithShapeAndIsNeverZero) {
  const uint64_t base = ModelFingerprint(kShape, 9, 49152);
  EXPECT_NE(base, 0u);
  EXPECT_EQ(base, ModelFingerprint(kShape, 9, 49152));
  EXPECT_NE(base, ModelFingerprint(kShape, 6, 49152));
  EXPECT_NE(base, ModelFingerprint(kShape, 9, 49153));
  EXPECT_NE(base, ModelFingerprint({5, 3, 32}, 9, 49152));
}

TEST(StreamManifest, DescribesTheUncompressedUpperBound) {
  const format::Manifest m =
      StreamManifest(kShape, 9, 42, 100, 0.25f, format::DType::kI8, "snapkv/uniform");
  EXPECT_EQ(m.entry_budget, 100u * 5 * 3);
  EXPECT_EQ(m.quant_group, 64);
  EXPECT_EQ(m.model_fingerprint, 42u);
  EXPECT_FLOAT_EQ(m.budget, 0.25f);
}

}  // namespace
}  // namespace kvwire::control
