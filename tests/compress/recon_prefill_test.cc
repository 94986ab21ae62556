// The externally scored methods inside the compressing prefill: recon runs its reconstruction
// passes after the whole prompt, gate takes the caller's per-layer scores.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "kvwire/compress/recon.h"
#include "prefill_node/compressing_prefill.h"
#include "tests/compress/tiny_runner_fixture.h"

namespace kvwire::prefill {
namespace {

std::vector<int32_t> Prompt(int n) { return compress::testing::ByteTokens(n, 29); }

compress::Compressor Make(const char* spec, float budget) {
  return *compress::Compressor::Create(*compress::CompressionSpec::Parse(spec), budget);
}

class ReconPrefillTest : public ::testing::Test {
 protected:
  void SetUp() override {
    runtime::TinyModelOptions o;
    o.n_layers = 3;
    model_ = compress::testing::LoadTinyModel(o);
    ASSERT_NE(model_, nullptr);
    runner_ = std::make_unique<runtime::Runner>(*model_, 1);
  }
  const runtime::ModelConfig& cfg() const { return model_->config(); }

  // The prompt's per-layer inputs as the prefill hook sees them (copied), for a reference run.
  struct Capture {
    std::vector<std::vector<float>> keys, values, queries;
    std::vector<compress::LayerInput> inputs;
  };
  Capture CaptureLayers(const std::vector<int32_t>& prompt) {
    Capture c;
    const int L = static_cast<int>(prompt.size()), w = std::min(32, L);
    c.keys.resize(cfg().n_layers);
    c.values.resize(cfg().n_layers);
    c.queries.resize(cfg().n_layers);
    runtime::ForwardOptions fwd;
    fwd.window = w;
    fwd.on_layer = [&](const runtime::PrefillLayer& pl) {
      const size_t kv = size_t(L) * cfg().n_kv_heads * cfg().head_dim;
      c.keys[pl.layer].assign(pl.keys, pl.keys + kv);
      c.values[pl.layer].assign(pl.values, pl.values + kv);
      c.queries[pl.layer].assign(pl.window_queries,
                                 pl.window_queries + w * cfg().n_heads * cfg().head_dim);
      return absl::OkStatus();
    };
    cache::KvCache full;
    EXPECT_TRUE(runner_->Prefill(prompt, fwd, &full).ok());
    for (int l = 0; l < cfg().n_layers; ++l) {
      compress::LayerInput in;
      in.layer = l;
      in.n_tokens = L;
      in.n_heads = cfg().n_heads;
      in.n_kv_heads = cfg().n_kv_heads;
      in.head_dim = cfg().head_dim;
      in.scale = 1.0f / std::sqrt(static_cast<float>(cfg().head_dim));
      in.keys = c.keys[l].data();
      in.values = c.values[l].data();
      in.queries = c.queries[l].data();
      in.n_queries = w;
      c.inputs.push_back(in);
    }
    return c;
  }

  std::unique_ptr<runtime::Model> model_;
  std::unique_ptr<runtime::Runner> runner_;
};

TEST_F(ReconPrefillTest, ReconMethodEqualsPrefillThenReconScoresThenCompression) {
  const std::vector<int32_t> prompt = Prompt(150);
  compress::ReconOptions ro;
  ro.chunk_tokens = 64;
  CompressingPrefill pipeline(runner_.get());
  pipeline.set_recon_options(ro);
  const compress::Compressor comp = Make("recon/uniform/merge", 0.3f);
  PrefillResult result;
  auto got = pipeline.CompressPrompt(prompt, comp, &result);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_GT(result.external_score_seconds, 0.0);
  EXPECT_GE(result.compress_seconds, result.external_score_seconds);

  Capture c = CaptureLayers(prompt);
  auto scores = compress::ReconScores(*runner_, *model_, prompt, ro, nullptr);
  ASSERT_TRUE(scores.ok()) << scores.status();
  for (int l = 0; l < cfg().n_layers; ++l) c.inputs[l].external_scores = (*scores)[l].data();
  auto want = comp.CompressAll(c.inputs, nullptr);
  ASSERT_TRUE(want.ok()) << want.status();
  for (int l = 0; l < cfg().n_layers; ++l) {
    EXPECT_TRUE(got->layers[l] == (*want)[l]) << "layer " << l;
  }
  EXPECT_EQ(got->original_length, 150);
}

TEST_F(ReconPrefillTest, ReconAtBudgetOneIsTheUncompressedCache) {
  const std::vector<int32_t> prompt = Prompt(40);
  CompressingPrefill pipeline(runner_.get());
  PrefillResult result;
  auto got = pipeline.CompressPrompt(prompt, Make("recon/uniform", 1.0f), &result);
  ASSERT_TRUE(got.ok()) << got.status();
  cache::KvCache full;
  ASSERT_TRUE(runner_->Prefill(prompt, {}, &full).ok());
  EXPECT_TRUE(*got == full);
  EXPECT_EQ(result.external_score_seconds, 0.0);  // no reconstruction pass was run
}

TEST_F(ReconPrefillTest, GateScoresStreamLayerByLayer) {
  const std::vector<int32_t> prompt = Prompt(120);
  CompressingPrefill pipeline(runner_.get());
  // A stand-in gate: the attention input's first channel, per KV head.
  std::vector<std::vector<float>> given(cfg().n_layers);
  pipeline.set_gate_scorer(
      [&](const runtime::PrefillLayer& pl) -> absl::StatusOr<std::vector<float>> {
        std::vector<float> s(pl.n_tokens * cfg().n_kv_heads);
        for (int h = 0; h < cfg().n_kv_heads; ++h) {
          for (int64_t i = 0; i < pl.n_tokens; ++i)
            s[h * pl.n_tokens + i] = pl.attn_input[i * cfg().hidden + h];
        }
        given[pl.layer] = s;
        return s;
      });
  std::vector<int> order;
  const compress::Compressor comp = Make("gate/uniform", 0.25f);
  auto sink = [&](int layer, cache::LayerCache, const compress::LayerStats&) {
    order.push_back(layer);
    // Streaming: the sink sees layer l before the gate of layer l + 1 was asked.
    EXPECT_TRUE(layer + 1 >= cfg().n_layers || given[layer + 1].empty()) << layer;
    return absl::OkStatus();
  };
  auto r = pipeline.Run(prompt, comp, sink);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2}));

  // The same compression as handing those scores to the compressor directly.
  Capture c = CaptureLayers(prompt);
  auto again = pipeline.CompressPrompt(prompt, comp);
  ASSERT_TRUE(again.ok());
  for (int l = 0; l < cfg().n_layers; ++l) {
    c.inputs[l].external_scores = given[l].data();
    auto want = comp.CompressLayer(c.inputs[l], nullptr);
    ASSERT_TRUE(want.ok());
    EXPECT_TRUE(again->layers[l] == *want) << "layer " << l;
  }
}

TEST_F(ReconPrefillTest, GateWithoutScorerOrWithWrongSizeIsInvalidArgument) {
  const std::vector<int32_t> prompt = Prompt(64);
  CompressingPrefill pipeline(runner_.get());
  auto none = pipeline.CompressPrompt(prompt, Make("gate/uniform/merge", 0.5f));
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(none.status().message().find("set_gate_scorer"), absl::string_view::npos);

  pipeline.set_gate_scorer(
      [](const runtime::PrefillLayer& pl) -> absl::StatusOr<std::vector<float>> {
        return std::vector<float>(pl.n_tokens);  // one head's worth only
      });
  auto short_scores = pipeline.CompressPrompt(prompt, Make("gate/global", 0.5f));
  ASSERT_FALSE(short_scores.ok());
  EXPECT_EQ(short_scores.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(short_scores.status().message().find("n_kv_heads * L"), absl::string_view::npos);
}

}  // namespace
}  // namespace kvwire::prefill
