// The synthetic-KV mode's pieces: the shape both nodes parse, its fingerprint, and the prefill
// stand-in that generates, compresses and sinks a layer at a time.
#include "kvwire/control/synthetic_kv.h"

#include <vector>

#include "gtest/gtest.h"
#include "kvwire/base/status.h"
#include "kvwire/compress/compressor.h"
#include "kvwire/compress/select.h"
#include "kvwire/compress/spec.h"
#include "kvwire/control/kv_budget.h"
#include "prefill_node/synthetic_prefill.h"

namespace kvwire {
namespace {

using control::ParseSyntheticKv;
using control::SyntheticKv;

TEST(SyntheticKv, ParsesThreeOrFourNumbers) {
  absl::StatusOr<SyntheticKv> llama = ParseSyntheticKv("32x8x128x32");
  ASSERT_TRUE(llama.ok()) << llama.status();
  EXPECT_EQ(llama->shape, (cache::CacheShape{32, 8, 128}));
  EXPECT_EQ(llama->n_query_heads, 32);
  EXPECT_EQ(llama->ToString(), "32x8x128x32");
  EXPECT_EQ(llama->ModelName(), "synthetic-32x8x128x32");
  EXPECT_EQ(llama->Fp16BytesPerToken(), 128u * 1024);  // Llama-3-8B: 128 KiB per token

  absl::StatusOr<SyntheticKv> mha = ParseSyntheticKv("2x4x16");
  ASSERT_TRUE(mha.ok()) << mha.status();
  EXPECT_EQ(mha->n_query_heads, 4);
}

TEST(SyntheticKv, RejectsMalformedSpecs) {
  for (const char* spec : {"", "32x8", "32x8x128x32x1", "32x8x0", "32x-8x128", "axbxc",
                           "32x8x128x12", "2000x8x128", "32x8x128x2048", "32X8X128"}) {
    absl::StatusOr<SyntheticKv> kv = ParseSyntheticKv(spec);
    EXPECT_TRUE(absl::IsInvalidArgument(kv.status())) << spec << ": " << kv.status();
    if (!kv.ok()) {
      EXPECT_NE(kv.status().message().find(spec), absl::string_view::npos) << kv.status();
    }
  }
}

TEST(SyntheticKv, FingerprintNamesShapeAndNeverMatchesARealModel) {
  const SyntheticKv a = *ParseSyntheticKv("4x2x16x4");
  const SyntheticKv b = *ParseSyntheticKv("4x2x32x4");
  EXPECT_EQ(control::SyntheticFingerprint(a, 100), control::SyntheticFingerprint(a, 100));
  EXPECT_NE(control::SyntheticFingerprint(a, 100), control::SyntheticFingerprint(b, 100));
  EXPECT_NE(control::SyntheticFingerprint(a, 100), control::SyntheticFingerprint(a, 101));
  EXPECT_NE(control::SyntheticFingerprint(a, 100),
            control::ModelFingerprint(a.shape, a.n_query_heads, 100));
}

struct Sunk {
  std::vector<int> order;
  std::vector<cache::LayerCache> layers;
};

absl::StatusOr<prefill::PrefillResult> RunLayers(const SyntheticKv& kv, int tokens, float budget,
                                                 const std::string& method, Sunk* sunk,
                                                 kernels::ThreadPool* pool = nullptr) {
  KVWIRE_ASSIGN_OR_RETURN(const compress::CompressionSpec spec,
                          compress::CompressionSpec::Parse(method));
  KVWIRE_ASSIGN_OR_RETURN(const compress::Compressor compressor,
                          compress::Compressor::Create(spec, budget));
  const std::vector<int32_t> prompt(static_cast<size_t>(tokens), 7);
  return prefill::RunSyntheticPrefill(
      kv, prompt, compressor, pool,
      [sunk](int layer, cache::LayerCache c, const compress::LayerStats&) {
        sunk->order.push_back(layer);
        sunk->layers.push_back(std::move(c));
        return absl::OkStatus();
      });
}

TEST(SyntheticPrefill, StreamsEveryLayerInOrderWithTheWholeCacheAtBudgetOne) {
  const SyntheticKv kv = *ParseSyntheticKv("3x2x16x4");
  Sunk sunk;
  absl::StatusOr<prefill::PrefillResult> r =
      RunLayers(kv, 100, 1.0f, compress::kDefaultMethod, &sunk);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(sunk.order, (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(r->original_length, 100);
  EXPECT_EQ(r->kept_entries, 3 * 2 * 100);
  for (const cache::LayerCache& layer : sunk.layers) {
    ASSERT_EQ(layer.heads.size(), 2u);
    for (const cache::HeadSegment& head : layer.heads) {
      ASSERT_EQ(head.size(), 100u);
      EXPECT_EQ(head.keys.size(), 100u * 16);
      for (float x : head.keys) ASSERT_TRUE(x >= -1.0f && x < 1.0f) << x;
    }
  }
  EXPECT_NE(sunk.layers[0], sunk.layers[1]);  // each layer its own numbers
}

TEST(SyntheticPrefill, SamePromptLengthGivesTheSameCacheWithOrWithoutThreads) {
  const SyntheticKv kv = *ParseSyntheticKv("2x2x32x4");
  kernels::ThreadPool pool(2);
  Sunk a, b, c;
  ASSERT_TRUE(RunLayers(kv, 300, 0.2f, compress::kDefaultMethod, &a).ok());
  ASSERT_TRUE(RunLayers(kv, 300, 0.2f, compress::kDefaultMethod, &b, &pool).ok());
  ASSERT_TRUE(RunLayers(kv, 301, 0.2f, compress::kDefaultMethod, &c).ok());
  EXPECT_EQ(a.layers, b.layers);
  EXPECT_NE(a.layers[0].heads[0].keys, c.layers[0].heads[0].keys);
}

TEST(SyntheticPrefill, CompressesToTheBudget) {
  const SyntheticKv kv = *ParseSyntheticKv("2x2x16x4");
  Sunk sunk;
  absl::StatusOr<prefill::PrefillResult> r =
      RunLayers(kv, 1000, 0.1f, compress::kDefaultMethod, &sunk);
  ASSERT_TRUE(r.ok()) << r.status();
  // The default allocator may make heads ragged; each layer keeps exactly its heads' total.
  for (const cache::LayerCache& layer : sunk.layers) {
    int64_t kept = 0;
    for (const cache::HeadSegment& head : layer.heads) kept += static_cast<int64_t>(head.size());
    EXPECT_EQ(kept, static_cast<int64_t>(layer.heads.size()) * compress::HeadBudget(0.1f, 1000));
  }
}

TEST(SyntheticPrefill, RefusesWhatItCannotStream) {
  const SyntheticKv kv = *ParseSyntheticKv("2x2x16x4");
  Sunk sunk;
  EXPECT_TRUE(absl::IsInvalidArgument(RunLayers(kv, 50, 0.5f, "snapkv/global", &sunk).status()));
  EXPECT_TRUE(
      absl::IsInvalidArgument(RunLayers(kv, 50, 0.5f, "snapkv+critical/uniform", &sunk).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(RunLayers(kv, 0, 0.5f, "snapkv/uniform", &sunk).status()));
  EXPECT_TRUE(sunk.order.empty());
}

TEST(SyntheticPrefill, PassesTheSinksErrorOn) {
  const SyntheticKv kv = *ParseSyntheticKv("2x2x16x4");
  const compress::Compressor compressor =
      *compress::Compressor::Create(*compress::CompressionSpec::Parse("snapkv/uniform"), 0.5f);
  const std::vector<int32_t> prompt(50, 1);
  absl::StatusOr<prefill::PrefillResult> r = prefill::RunSyntheticPrefill(
      kv, prompt, compressor, nullptr, [](int, cache::LayerCache, const compress::LayerStats&) {
        return absl::UnavailableError("peer gone");
      });
  EXPECT_TRUE(absl::IsUnavailable(r.status())) << r.status();
}

}  // namespace
}  // namespace kvwire
