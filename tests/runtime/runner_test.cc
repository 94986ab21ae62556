#include "runtime/runner.h"

#include <gtest/gtest.h>

#include <cmath>

#include "runtime/gguf_writer.h"
#include "runtime/sampling.h"
#include "runtime/tiny_model.h"

namespace kvwire::runtime {
namespace {

using kernels::QuantType;

std::unique_ptr<Model> TinyModel(const TinyModelOptions& o) {
  auto bytes = MakeTinyModel(o);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  auto gguf = GgufFile::FromBytes(*std::move(bytes));
  EXPECT_TRUE(gguf.ok()) << gguf.status();
  auto model = Model::FromGguf(*std::move(gguf));
  EXPECT_TRUE(model.ok()) << model.status();
  return *std::move(model);
}

std::vector<int32_t> Prompt(int n) {
  std::vector<int32_t> p;
  for (int i = 0; i < n; ++i) p.push_back(3 + (i * 37 + 11) % 256);
  return p;
}

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
  return m;
}

struct Case {
  const char* name;
  QuantType weights, embedding;
  bool tied;
  const char* arch;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class RunnerTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    TinyModelOptions o;
    o.weight_type = GetParam().weights;
    o.embedding_type = GetParam().embedding;
    o.tied_output = GetParam().tied;
    o.arch = GetParam().arch;
    model_ = TinyModel(o);
    ASSERT_NE(model_, nullptr);
  }
  std::unique_ptr<Model> model_;
};

TEST_P(RunnerTest, PrefillLastLogitsEqualPrefillShorterThenDecode) {
  Runner runner(*model_, 2);
  const auto prompt = Prompt(20);  // > kGemmMinTokens: prefill takes the sgemm path
  cache::KvCache full, partial;
  auto want = runner.Prefill(prompt, {}, &full);
  ASSERT_TRUE(want.ok()) << want.status();
  ASSERT_TRUE(runner.Prefill(absl::MakeConstSpan(prompt).first(19), {}, &partial).ok());
  auto got = runner.Decode(prompt.back(), DecodePosition(partial, 0), &partial);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_LT(MaxAbsDiff(*want, *got), 2e-3);
  EXPECT_EQ(ArgMax(*want), ArgMax(*got));
  EXPECT_EQ(full.TotalEntries(), partial.TotalEntries());
  EXPECT_EQ(full.layers[1].heads[1].positions, partial.layers[1].heads[1].positions);
}

TEST_P(RunnerTest, AllLogitsEndWithTheLastTokenLogits) {
  Runner runner(*model_, 2);
  cache::KvCache a, b;
  auto last = runner.Prefill(Prompt(9), {}, &a);
  auto all = runner.Prefill(Prompt(9), {.all_logits = true}, &b);
  ASSERT_TRUE(last.ok() && all.ok());
  const size_t vocab = model_->config().vocab_size;
  ASSERT_EQ(all->size(), 9 * vocab);
  // Nine rows go through sgemm, one row through fused dot products: equal up to rounding.
  EXPECT_LT(MaxAbsDiff(std::vector<float>(all->end() - vocab, all->end()), *last), 1e-3);
}

TinyModelOptions DefaultOptions() { return TinyModelOptions{}; }

class RunnerFixture : public ::testing::Test {
 protected:
  void SetUp() override { model_ = TinyModel(DefaultOptions()); }
  std::unique_ptr<Model> model_;
};

TEST_F(RunnerFixture, DecodeOnCompressedCacheContinuesFromOriginalLength) {
  Runner runner(*model_, 2);
  cache::KvCache cache;
  ASSERT_TRUE(runner.Prefill(Prompt(12), {}, &cache).ok());
  // Ragged compression: head h of every layer keeps every (h+2)-th entry, with votes.
  for (auto& layer : cache.layers) {
    for (size_t h = 0; h < layer.heads.size(); ++h) {
      cache::HeadSegment kept;
      const auto& seg = layer.heads[h];
      for (size_t i = 0; i < seg.size(); i += h + 2) {
        kept.Append(seg.positions[i], std::log(float(h + 2)), seg.key(i, 64), seg.value(i, 64), 64);
      }
      layer.heads[h] = kept;
    }
  }
  const size_t before = cache.layers[0].heads[1].size();
  for (int32_t g = 0; g < 2; ++g) {
    auto logits = runner.Decode(5 + g, DecodePosition(cache, g), &cache);
    ASSERT_TRUE(logits.ok()) << logits.status();
  }
  for (const auto& layer : cache.layers) {
    for (const auto& seg : layer.heads) {
      ASSERT_EQ(seg.positions.back(), 13);
      ASSERT_EQ(seg.positions[seg.size() - 2], 12);
      ASSERT_EQ(seg.log_votes.back(), 0.0f);
    }
  }
  EXPECT_EQ(cache.layers[0].heads[1].size(), before + 2);
  EXPECT_EQ(cache.original_length, 12);
}

// Replaces entry i of every head by p copies with log-vote 0, or by one entry with log-vote ln p.
cache::KvCache WithVotes(cache::KvCache cache, size_t i, int p, bool as_copies) {
  const int d = cache.shape.head_dim;
  for (auto& layer : cache.layers) {
    for (auto& seg : layer.heads) {
      cache::HeadSegment out;
      for (size_t j = 0; j < seg.size(); ++j) {
        const int copies = (j == i && as_copies) ? p : 1;
        const float vote = (j == i && !as_copies) ? std::log(float(p)) : 0.0f;
        for (int c = 0; c < copies; ++c)
          out.Append(seg.positions[j], vote, seg.key(j, d), seg.value(j, d), d);
      }
      seg = out;
    }
  }
  return cache;
}

TEST_F(RunnerFixture, DuplicatedEntriesEqualOneEntryWithLogVote) {
  Runner runner(*model_, 2);
  cache::KvCache cache;
  ASSERT_TRUE(runner.Prefill(Prompt(10), {}, &cache).ok());
  cache::KvCache copies = WithVotes(cache, 4, 3, true), voted = WithVotes(cache, 4, 3, false);
  auto a = runner.Decode(7, DecodePosition(cache, 0), &copies);
  auto b = runner.Decode(7, DecodePosition(cache, 0), &voted);
  ASSERT_TRUE(a.ok() && b.ok());
  double max_rel = 0;
  for (size_t i = 0; i < a->size(); ++i) {
    max_rel = std::max(max_rel, std::fabs((*a)[i] - (*b)[i]) / (std::fabs((*b)[i]) + 1e-3));
  }
  EXPECT_LT(max_rel, 1e-4);
  EXPECT_NE(*a, *runner.Decode(7, DecodePosition(cache, 0), &cache)) << "votes had no effect";
}

TEST_F(RunnerFixture, HookSeesEveryLayerWithCacheKeysAndWindowQueries) {
  Runner runner(*model_, 2);
  cache::KvCache cache;
  const ModelConfig& c = model_->config();
  std::vector<std::vector<float>> keys(c.n_layers);
  std::vector<int> seen;
  ForwardOptions options;
  options.window = 4;
  options.on_layer = [&](const PrefillLayer& layer) {
    seen.push_back(layer.layer);
    EXPECT_EQ(layer.n_tokens, 11);
    EXPECT_EQ(layer.window, 4);
    EXPECT_NE(layer.window_queries, nullptr);
    EXPECT_NE(layer.attn_input, nullptr);
    keys[layer.layer].assign(layer.keys, layer.keys + layer.n_tokens * c.n_kv_heads * c.head_dim);
    return absl::OkStatus();
  };
  ASSERT_TRUE(runner.Prefill(Prompt(11), options, &cache).ok());
  ASSERT_EQ(seen, (std::vector<int>{0, 1}));
  // keys are [L][n_kv_heads][head_dim]: token 6, head 1 lives in cache head 1 entry 6.
  const float* k = keys[1].data() + (6 * c.n_kv_heads + 1) * c.head_dim;
  EXPECT_EQ(std::vector<float>(k, k + c.head_dim),
            std::vector<float>(cache.layers[1].heads[1].key(6, c.head_dim),
                               cache.layers[1].heads[1].key(6, c.head_dim) + c.head_dim));
}

TEST_F(RunnerFixture, DecodeHookSeesTheStepQueryAndKeys) {
  Runner runner(*model_, 2);
  cache::KvCache cache;
  ASSERT_TRUE(runner.Prefill(Prompt(5), {}, &cache).ok());
  const int d = model_->config().head_dim;
  int calls = 0;
  ForwardOptions options;
  options.window = 8;
  options.on_layer = [&](const PrefillLayer& layer) {
    ++calls;
    EXPECT_EQ(layer.n_tokens, 1);
    EXPECT_EQ(layer.window, 1);
    EXPECT_EQ(layer.first_position, 5);
    // The step's key is the last entry of each head segment.
    const auto& seg = cache.layers[layer.layer].heads[0];
    EXPECT_EQ(std::vector<float>(layer.keys, layer.keys + d),
              std::vector<float>(seg.key(seg.size() - 1, d), seg.key(seg.size() - 1, d) + d));
    return absl::OkStatus();
  };
  ASSERT_TRUE(runner.Decode(9, DecodePosition(cache, 0), &cache, options).ok());
  EXPECT_EQ(calls, model_->config().n_layers);
}

TEST_F(RunnerFixture, HookErrorAbortsThePass) {
  Runner runner(*model_, 1);
  cache::KvCache cache;
  ForwardOptions options;
  options.on_layer = [](const PrefillLayer&) { return absl::CancelledError("stop"); };
  EXPECT_EQ(runner.Prefill(Prompt(3), options, &cache).status().code(),
            absl::StatusCode::kCancelled);
}

TEST_F(RunnerFixture, ChunkedPrefillMatchesOnePass) {
  Runner runner(*model_, 2);
  const auto prompt = Prompt(24);
  cache::KvCache one, chunked;
  auto want = runner.Prefill(prompt, {}, &one);
  ASSERT_TRUE(runner.Prefill(absl::MakeConstSpan(prompt).first(10), {}, &chunked).ok());
  auto got = runner.Forward(absl::MakeConstSpan(prompt).subspan(10), 10, {}, &chunked);
  ASSERT_TRUE(want.ok() && got.ok());
  EXPECT_LT(MaxAbsDiff(*want, *got), 1e-3);
}

TEST_F(RunnerFixture, RejectsBadTokensPositionsAndCaches) {
  Runner runner(*model_, 1);
  cache::KvCache cache;
  EXPECT_EQ(runner.Prefill({}, {}, &cache).status().code(), absl::StatusCode::kInvalidArgument);
  const std::vector<int32_t> bad = {1, model_->config().vocab_size};
  EXPECT_EQ(runner.Prefill(bad, {}, &cache).status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(runner.Prefill(Prompt(3), {}, &cache).ok());
  EXPECT_EQ(runner.Decode(1, -1, &cache).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(runner.Decode(1, model_->config().context_length, &cache).status().code(),
            absl::StatusCode::kInvalidArgument);
  cache::KvCache wrong = cache::KvCache::Empty({1, 2, 64}, 0);
  EXPECT_EQ(runner.Decode(1, 0, &wrong).status().code(), absl::StatusCode::kInvalidArgument);
}

std::vector<int32_t> Generate(const Model& model, const SamplingOptions& s, int n) {
  Runner runner(model, 2);
  cache::KvCache cache;
  Sampler sampler(s);
  auto logits = runner.Prefill(Prompt(6), {}, &cache);
  std::vector<int32_t> out;
  for (int g = 0; g < n && logits.ok(); ++g) {
    out.push_back(sampler.Sample(*logits));
    logits = runner.Decode(out.back(), DecodePosition(cache, g), &cache);
  }
  return out;
}

TEST_F(RunnerFixture, SeededSamplingIsDeterministic) {
  // The random model's logits span tens of units: a high temperature makes draws matter.
  const SamplingOptions hot{.temperature = 40.0f, .top_p = 0.99f, .seed = 17};
  const auto a = Generate(*model_, hot, 8);
  EXPECT_EQ(a, Generate(*model_, hot, 8));
  EXPECT_EQ(a.size(), 8u);
  EXPECT_NE(a, Generate(*model_, {.temperature = 40.0f, .top_p = 0.99f, .seed = 18}, 8));
}

absl::StatusCode LoadCode(const std::string& bytes) {
  auto gguf = GgufFile::FromBytes(bytes);
  if (!gguf.ok()) return gguf.status().code();
  return Model::FromGguf(*std::move(gguf)).status().code();
}

TEST(ModelLoad, RejectsMissingTensorsBadShapesAndUnknownArch) {
  TinyModelOptions o;
  o.n_layers = 1;
  GgufWriter no_weights;
  no_weights.SetString("general.architecture", "llama");
  EXPECT_EQ(LoadCode(no_weights.Serialize()), absl::StatusCode::kNotFound);
  GgufWriter mamba;
  mamba.SetString("general.architecture", "mamba");
  EXPECT_EQ(LoadCode(mamba.Serialize()), absl::StatusCode::kFailedPrecondition);
  std::string bytes = *MakeTinyModel(o);
  EXPECT_EQ(LoadCode(bytes), absl::StatusCode::kOk);
  // Metadata claiming 1 KV head while attn_k has rows for 2: a shape mismatch.
  const std::string key = "llama.attention.head_count_kv";
  const size_t at = bytes.find(key);
  ASSERT_NE(at, std::string::npos);
  bytes[at + key.size() + 4] = 1;
  EXPECT_EQ(LoadCode(bytes), absl::StatusCode::kDataLoss);
}

INSTANTIATE_TEST_SUITE_P(
    Types, RunnerTest,
    ::testing::Values(Case{"Q8_0", QuantType::kQ8_0, QuantType::kQ8_0, true, "llama"},
                      Case{"Q4_0", QuantType::kQ4_0, QuantType::kF16, false, "llama"},
                      Case{"Q4_1", QuantType::kQ4_1, QuantType::kQ8_0, true, "llama"},
                      Case{"Q5_0", QuantType::kQ5_0, QuantType::kBF16, true, "llama"},
                      Case{"Q5_1", QuantType::kQ5_1, QuantType::kF32, false, "llama"},
                      Case{"Q4_K", QuantType::kQ4_K, QuantType::kQ6_K, true, "llama"},
                      Case{"F16", QuantType::kF16, QuantType::kF16, true, "qwen2"}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace kvwire::runtime

namespace kvwire::runtime {
namespace {

// Batched decode of n sequences (prompts of different lengths) against one Decode per sequence.
void ExpectBatchMatchesSingles(const Model& model, int n, float tolerance) {
  Runner runner(model, 2);
  std::vector<cache::KvCache> batched(n), single(n);
  for (int i = 0; i < n; ++i) {
    ASSERT_TRUE(runner.Prefill(Prompt(5 + 3 * i), {}, &batched[i]).ok());
    single[i] = batched[i];
  }
  std::vector<DecodeStep> steps;
  for (int i = 0; i < n; ++i) {
    steps.push_back({7 + i, DecodePosition(batched[i], 0), &batched[i], nullptr});
  }
  auto logits = runner.DecodeBatch(steps);
  ASSERT_TRUE(logits.ok()) << logits.status();
  ASSERT_EQ(logits->size(), static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    auto one = runner.Decode(7 + i, DecodePosition(single[i], 0), &single[i]);
    ASSERT_TRUE(one.ok());
    EXPECT_LE(MaxAbsDiff((*logits)[i], *one), tolerance) << "sequence " << i;
    EXPECT_EQ(ArgMax((*logits)[i]), ArgMax(*one)) << "sequence " << i;
    EXPECT_EQ(batched[i].layers[1].heads[0].size(), single[i].layers[1].heads[0].size());
  }
}

TEST_F(RunnerFixture, DecodeBatchMatchesOneDecodePerSequence) {
  ExpectBatchMatchesSingles(*model_, 3, 1e-5f);   // fused dot products, as single steps use
  ExpectBatchMatchesSingles(*model_, 9, 2e-3f);   // the dequantize + sgemm path
}

TEST_F(RunnerFixture, DecodeBatchRejectsBadStepsAndChangesNothing) {
  Runner runner(*model_, 2);
  cache::KvCache a, b;
  ASSERT_TRUE(runner.Prefill(Prompt(6), {}, &a).ok());
  ASSERT_TRUE(runner.Prefill(Prompt(8), {}, &b).ok());
  const size_t a_size = a.layers[0].heads[0].size();
  const DecodeStep bad_token[] = {{5, 6, &a, nullptr}, {-1, 8, &b, nullptr}};
  EXPECT_EQ(runner.DecodeBatch(bad_token).status().code(), absl::StatusCode::kInvalidArgument);
  const DecodeStep shared[] = {{5, 6, &a, nullptr}, {6, 7, &a, nullptr}};
  EXPECT_EQ(runner.DecodeBatch(shared).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a.layers[0].heads[0].size(), a_size);
  EXPECT_TRUE(runner.DecodeBatch({}).ok());
}

}  // namespace
}  // namespace kvwire::runtime
