// The mirror protocol of a --gpu decode node (decode_node/mirror_step.h), with the CPU runner
// standing in for the device: its own cache plays the device copy, and only the heads
// HeadsChangedByHook names are copied over from the mirror after each layer, as the node uploads
// them with GpuKvCache::ReplaceHead. After every step the device copy, the mirror and a plain
// CPU run with decode-time merging must hold the same cache, and decode the same tokens.
#include "decode_node/mirror_step.h"

#include <algorithm>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "kvwire/compress/decode_compactor.h"
#include "kvwire/compress/spec.h"
#include "runtime/runner.h"
#include "runtime/sampling.h"
#include "tests/compress/tiny_runner_fixture.h"

namespace kvwire::decode {
namespace {

TEST(MirrorStep, AppendsEveryRowToEveryHeadAndReportsItsSizes) {
  cache::LayerCache layer;
  layer.heads.resize(2);
  const float one[4] = {1, 2, 3, 4};
  layer.heads[1].Append(7, 0.5f, one, one, 2);
  // Two tokens x two heads x head_dim 2.
  const std::vector<float> keys = {10, 11, 20, 21, 30, 31, 40, 41};
  const std::vector<float> values = {-10, -11, -20, -21, -30, -31, -40, -41};
  runtime::PrefillLayer pl;
  pl.n_tokens = 2;
  pl.first_position = 100;
  pl.keys = keys.data();
  pl.values = values.data();
  const std::vector<size_t> before = AppendStepToMirror(pl, 2, &layer);
  EXPECT_EQ(before, (std::vector<size_t>{0, 1}));
  ASSERT_EQ(layer.heads[0].size(), 2u);
  ASSERT_EQ(layer.heads[1].size(), 3u);
  EXPECT_EQ(layer.heads[0].positions, (std::vector<int32_t>{100, 101}));
  EXPECT_EQ(layer.heads[1].positions, (std::vector<int32_t>{7, 100, 101}));
  EXPECT_EQ(layer.heads[0].keys, (std::vector<float>{10, 11, 30, 31}));
  EXPECT_EQ(layer.heads[1].values, (std::vector<float>{1, 2, -20, -21, -40, -41}));
  EXPECT_EQ(layer.heads[1].log_votes, (std::vector<float>{0.5f, 0, 0}));
  EXPECT_TRUE(HeadsChangedByHook(before, 2, layer).empty());
  layer.heads[1].positions.pop_back();  // stands in for a merge's removal
  EXPECT_EQ(HeadsChangedByHook(before, 2, layer), (std::vector<int>{1}));
}

class MirrorStepDecode : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = compress::testing::LoadTinyModel({.n_layers = 2});
    ASSERT_NE(model_, nullptr);
  }
  std::unique_ptr<runtime::Model> model_;
};

TEST_F(MirrorStepDecode, DeviceCopyFollowsTheMirrorAndBothMatchCpuMerging) {
  runtime::Runner runner(*model_, 1);
  std::vector<int32_t> prompt;
  for (int i = 0; i < 64; ++i) prompt.push_back(3 + (i * 29 + 5) % 250);
  cache::KvCache reference;
  auto logits = runner.Prefill(prompt, {}, &reference);
  ASSERT_TRUE(logits.ok()) << logits.status();
  cache::KvCache mirror = reference;  // what the node installs, and keeps on the host
  cache::KvCache device = reference;  // the device copy

  auto spec = compress::CompressionSpec::Parse("snapkv/uniform/merge");
  ASSERT_TRUE(spec.ok()) << spec.status();
  const int n_heads = model_->config().n_heads;
  // Below the prompt, above sinks + window + 1: every step merges once in every head.
  const int64_t max_entries = 40;
  compress::DecodeCompactor ref_compactor(*spec, n_heads, max_entries);
  compress::DecodeCompactor mirror_compactor(*spec, n_heads, max_entries);

  runtime::ForwardOptions ref_options;
  ref_options.window = 1;
  ref_options.on_layer = [&](const runtime::PrefillLayer& pl) {
    return ref_compactor.OnStep(pl.layer, pl.window_queries, &reference.layers[pl.layer],
                                pl.attn_input);
  };
  // The node's compaction hook, on the mirror.
  runtime::ForwardOptions compaction;
  compaction.window = 1;
  compaction.on_layer = [&](const runtime::PrefillLayer& pl) {
    return mirror_compactor.OnStep(pl.layer, pl.window_queries, &mirror.layers[pl.layer],
                                   pl.attn_input);
  };
  // What DeviceDecoder wraps around it: append, compact, re-upload the changed heads. The
  // runner has already appended the step to `device`, like the device pass.
  int64_t uploads = 0;
  runtime::ForwardOptions device_options;
  device_options.window = 1;
  device_options.on_layer = [&](const runtime::PrefillLayer& pl) -> absl::Status {
    cache::LayerCache& layer = mirror.layers[pl.layer];
    const std::vector<size_t> before = AppendStepToMirror(pl, model_->config().head_dim, &layer);
    if (absl::Status s = compaction.on_layer(pl); !s.ok()) return s;
    const std::vector<int> changed = HeadsChangedByHook(before, pl.n_tokens, layer);
    for (size_t h = 0; h < layer.heads.size(); ++h) {
      const bool listed = std::find(changed.begin(), changed.end(), h) != changed.end();
      // A head not listed must already equal the device's (which holds the appended entry).
      if (!listed) {
        EXPECT_EQ(layer.heads[h], device.layers[pl.layer].heads[h]) << "head " << h;
      }
    }
    for (int h : changed) {
      device.layers[pl.layer].heads[h] = layer.heads[h];
      ++uploads;
    }
    return absl::OkStatus();
  };

  int32_t ref_token = runtime::ArgMax(*logits), dev_token = ref_token;
  constexpr int kSteps = 12;
  for (int g = 1; g <= kSteps; ++g) {
    auto ref_logits = runner.Decode(ref_token, runtime::DecodePosition(reference, g - 1),
                                    &reference, ref_options);
    ASSERT_TRUE(ref_logits.ok()) << ref_logits.status();
    auto dev_logits =
        runner.Decode(dev_token, runtime::DecodePosition(device, g - 1), &device, device_options);
    ASSERT_TRUE(dev_logits.ok()) << dev_logits.status();
    ASSERT_EQ(device, mirror) << "step " << g;
    ASSERT_EQ(mirror, reference) << "step " << g;
    ref_token = runtime::ArgMax(*ref_logits);
    dev_token = runtime::ArgMax(*dev_logits);
    EXPECT_EQ(dev_token, ref_token) << "step " << g;
  }
  // Merging happened, and every merge was uploaded: one head per layer and KV head per step.
  EXPECT_GT(mirror_compactor.merges(), 0);
  EXPECT_EQ(mirror_compactor.merges(), ref_compactor.merges());
  EXPECT_EQ(uploads, int64_t{kSteps} * model_->config().n_layers * model_->config().n_kv_heads);
  for (const cache::LayerCache& layer : mirror.layers) {
    for (const cache::HeadSegment& seg : layer.heads) {
      EXPECT_LE(static_cast<int64_t>(seg.size()), max_entries);
    }
  }
}

}  // namespace
}  // namespace kvwire::decode
