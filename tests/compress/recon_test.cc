#include "kvwire/compress/recon.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <numeric>

#include "kvwire/compress/compressor.h"
#include "kvwire/kernels/attention.h"
#include "runtime/tokenizer_gguf.h"
#include "tests/compress/tiny_runner_fixture.h"

namespace kvwire::compress {
namespace {

std::vector<int32_t> Context(int n) { return testing::ByteTokens(n, 53); }

class ReconTest : public ::testing::Test {
 protected:
  void SetUp() override {
    runtime::TinyModelOptions o;
    o.n_heads = 4;
    o.n_kv_heads = 2;
    model_ = testing::LoadTinyModel(o);
    ASSERT_NE(model_, nullptr);
    runner_ = std::make_unique<runtime::Runner>(*model_, 1);
  }
  const runtime::ModelConfig& cfg() const { return model_->config(); }
  std::unique_ptr<runtime::Model> model_;
  std::unique_ptr<runtime::Runner> runner_;
};

TEST_F(ReconTest, ScoresHaveOneRowPerKvHeadOfEveryLayerWithinZeroOne) {
  const std::vector<int32_t> ctx = Context(70);
  ReconOptions o;
  o.chunk_tokens = 32;
  auto scores = ReconScores(*runner_, *model_, ctx, o, runner_->pool());
  ASSERT_TRUE(scores.ok()) << scores.status();
  ASSERT_EQ(scores->size(), static_cast<size_t>(cfg().n_layers));
  for (const std::vector<float>& layer : *scores) {
    ASSERT_EQ(layer.size(), static_cast<size_t>(cfg().n_kv_heads) * ctx.size());
    for (float s : layer) {
      EXPECT_GT(s, 0.0f);  // every query sees every context entry with a finite logit
      EXPECT_LE(s, 1.0f);
    }
  }
}

TEST_F(ReconTest, LeavesTheContextCacheAsItWas) {
  const std::vector<int32_t> ctx = Context(50);
  cache::KvCache cache;
  ASSERT_TRUE(runner_->Prefill(ctx, {}, &cache).ok());
  const cache::KvCache before = cache;
  ReconOptions o;
  o.chunk_tokens = 16;
  auto scores = ReconScoresForCache(*runner_, *model_, ctx, &cache, o, nullptr);
  ASSERT_TRUE(scores.ok()) << scores.status();
  EXPECT_TRUE(cache == before);
}

// The score of entry i is the largest attention probability the reconstruction queries give it:
// recomputed here for one pass with the runner's own attention (softmax over context + the
// pass's causal prefix, probabilities read off by attending with one-hot values).
TEST_F(ReconTest, OnePassScoreIsTheMaxAttentionProbabilityOverItsQueriesAndGroup) {
  const std::vector<int32_t> ctx = Context(24);
  ReconOptions o;
  o.chunk_tokens = 100;  // one pass
  o.prompt.first = {1, 40, 41, 2, 1};
  auto scores = ReconScores(*runner_, *model_, ctx, o, nullptr);
  ASSERT_TRUE(scores.ok()) << scores.status();

  // The pass: prompt + context at positions L.., capturing its queries and the layer caches.
  cache::KvCache cache;
  ASSERT_TRUE(runner_->Prefill(ctx, {}, &cache).ok());
  std::vector<int32_t> pass = o.prompt.first;
  pass.insert(pass.end(), ctx.begin(), ctx.end());
  const int64_t L = ctx.size(), n = pass.size();
  const int d = cfg().head_dim, H = cfg().n_heads, G = H / cfg().n_kv_heads;
  std::vector<std::vector<float>> queries(cfg().n_layers);
  runtime::ForwardOptions fwd;
  fwd.window = static_cast<int>(n);
  fwd.on_layer = [&](const runtime::PrefillLayer& pl) {
    queries[pl.layer].assign(pl.window_queries, pl.window_queries + n * H * d);
    return absl::OkStatus();
  };
  ASSERT_TRUE(runner_->Forward(pass, static_cast<int32_t>(L), fwd, &cache).ok());
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  for (int l = 0; l < cfg().n_layers; ++l) {
    for (int h = 0; h < cfg().n_kv_heads; ++h) {
      const cache::HeadSegment& seg = cache.layers[l].heads[h];
      for (int64_t i = 0; i < L; ++i) {
        double best = 0;
        for (int64_t j = 0; j < n; ++j) {
          for (int g = h * G; g < (h + 1) * G; ++g) {
            const float* q = queries[l].data() + (j * H + g) * d;
            const int64_t visible = L + j + 1;
            std::vector<double> z(visible);
            double m = -1e30, sum = 0;
            for (int64_t k = 0; k < visible; ++k) {
              double dot = 0;
              for (int c = 0; c < d; ++c) dot += double(q[c]) * seg.keys[k * d + c];
              z[k] = dot * scale;
              m = std::max(m, z[k]);
            }
            for (double x : z) sum += std::exp(x - m);
            best = std::max(best, std::exp(z[i] - m) / sum);
          }
        }
        EXPECT_NEAR((*scores)[l][h * L + i], best, 1e-4 * std::max(1.0, best))
            << "layer " << l << " head " << h << " entry " << i;
      }
    }
  }
}

TEST_F(ReconTest, ChunkingChangesOnlyWhatLaterPassesSee) {
  // With one pass the instruction turn precedes the whole context; with chunks each later pass
  // quotes its predecessor's tail. Both give valid, generally different, scores of equal shape.
  const std::vector<int32_t> ctx = Context(60);
  ReconOptions one, many;
  one.chunk_tokens = 60;
  many.chunk_tokens = 20;
  auto a = ReconScores(*runner_, *model_, ctx, one, nullptr);
  auto b = ReconScores(*runner_, *model_, ctx, many, nullptr);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_EQ(a->size(), b->size());
  EXPECT_NE((*a)[0], (*b)[0]);
}

TEST_F(ReconTest, PromptFollowsTheChatTemplate) {
  auto tok = runtime::LoadTokenizer(model_->gguf());
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto fresh = BuildReconPrompt(**tok, ReconTurn::kNewTurn);
  auto same = BuildReconPrompt(**tok, ReconTurn::kSameTurn);
  ASSERT_TRUE(fresh.ok() && same.ok());
  auto text = [&](const std::vector<int32_t>& ids) { return *(*tok)->Decode(ids); };
  EXPECT_EQ(text(fresh->first),
            "<|im_start|>user\nRepeat the previous context exactly.<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(text(same->first),
            "\n\nRepeat the previous context exactly.<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(text(same->part_head),
            "\n\nRepeat the part of the previous context exactly, starting with ");
  EXPECT_EQ(text(same->part_tail), "<|im_end|>\n<|im_start|>assistant\n");
}

TEST_F(ReconTest, RejectsBadArguments) {
  ReconOptions o;
  EXPECT_EQ(ReconScores(*runner_, *model_, {}, o, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  o.chunk_tokens = 0;
  EXPECT_EQ(ReconScores(*runner_, *model_, Context(8), o, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A compressed (or foreign) cache is refused and left alone.
  const std::vector<int32_t> ctx = Context(20);
  cache::KvCache cache;
  ASSERT_TRUE(runner_->Prefill(Context(19), {}, &cache).ok());
  const cache::KvCache before = cache;
  EXPECT_EQ(ReconScoresForCache(*runner_, *model_, ctx, &cache, {}, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(cache == before);
  // Too long for the model's context once the pass is appended.
  EXPECT_EQ(ReconScores(*runner_, *model_, Context(cfg().context_length - 4), {}, nullptr)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

// The compressor keeps, per head, the entries with the highest recon scores.
TEST_F(ReconTest, ReconSpecKeepsTheHighestScoringEntries) {
  const std::vector<int32_t> ctx = Context(120);
  auto scores = ReconScores(*runner_, *model_, ctx, {}, nullptr);
  ASSERT_TRUE(scores.ok()) << scores.status();
  const int64_t L = ctx.size();
  std::vector<float> keys, values, queries;
  runtime::ForwardOptions fwd;
  fwd.window = 32;
  fwd.on_layer = [&](const runtime::PrefillLayer& pl) {
    if (pl.layer != 0) return absl::OkStatus();
    const size_t kv = L * cfg().n_kv_heads * cfg().head_dim;
    keys.assign(pl.keys, pl.keys + kv);
    values.assign(pl.values, pl.values + kv);
    queries.assign(pl.window_queries, pl.window_queries + 32 * cfg().n_heads * cfg().head_dim);
    return absl::OkStatus();
  };
  cache::KvCache cache;
  ASSERT_TRUE(runner_->Prefill(ctx, fwd, &cache).ok());
  LayerInput in;
  in.n_tokens = L;
  in.n_heads = cfg().n_heads;
  in.n_kv_heads = cfg().n_kv_heads;
  in.head_dim = cfg().head_dim;
  in.scale = 1.0f / std::sqrt(static_cast<float>(cfg().head_dim));
  in.keys = keys.data();
  in.values = values.data();
  in.queries = queries.data();
  in.n_queries = 32;
  in.external_scores = (*scores)[0].data();
  auto comp = Compressor::Create(*CompressionSpec::Parse("recon/uniform"), 0.5f);
  ASSERT_TRUE(comp.ok());
  auto layer = comp->CompressLayer(in, nullptr);
  ASSERT_TRUE(layer.ok()) << layer.status();
  for (int h = 0; h < cfg().n_kv_heads; ++h) {
    const cache::HeadSegment& seg = layer->heads[h];
    const float* row = (*scores)[0].data() + h * L;
    // Outside the forced sinks and window, every kept entry scores at least as high as every
    // dropped one.
    float lowest_kept = 2, highest_dropped = -1;
    std::vector<bool> kept(L, false);
    for (int32_t p : seg.positions) kept[p] = true;
    for (int64_t i = 4; i < L - 32; ++i) {
      if (kept[i])
        lowest_kept = std::min(lowest_kept, row[i]);
      else
        highest_dropped = std::max(highest_dropped, row[i]);
    }
    EXPECT_GE(lowest_kept, highest_dropped) << "head " << h;
  }
}

}  // namespace
}  // namespace kvwire::compress
