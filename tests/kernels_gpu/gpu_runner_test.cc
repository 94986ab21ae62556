// GpuModel / GpuKvCache / GpuRunner against runtime::Runner on tiny random models: prefill and
// decode, decode over installed compressed-looking caches (ragged heads, log-votes), the per-layer
// hooks, DecodeBatch against one Decode per cache, Install/Download, and the error cases.
//
// Tolerance: the device multiplies 16-bit weights and activations (fp32 accumulation) and gathers
// 16-bit embedding rows, so logits and hook tensors agree with the CPU within 3 % of the largest
// |value| (a wrong RoPE, transpose, cache append or row offset moves them by O(1)); the argmax must
// agree wherever the CPU's top two differ by more than that. Two device paths over the same
// inputs (DecodeBatch vs Decode) differ only in cuBLAS's summation order: 1e-3 of the scale.
// Install/Download are copies: bit for bit.
#include "runtime/gpu_runner.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "kernels/cuda/model_ops.h"
#include "kvwire/base/status.h"
#include "runtime/gguf.h"
#include "runtime/model.h"
#include "runtime/runner.h"
#include "runtime/tiny_model.h"
#include "tests/kernels_gpu/gpu_test_util.h"

namespace kvwire::runtime {
namespace {

namespace kc = ::kvwire::kernels::cuda;

struct RunnerCase {
  const char* name;
  std::string arch;
  kernels::QuantType weights;
};

void PrintTo(const RunnerCase& c, std::ostream* os) { *os << c.name; }

const RunnerCase kLlamaQ8{"llama_q8_0", "llama", kernels::QuantType::kQ8_0};

std::unique_ptr<Model> TinyModel(const RunnerCase& c, int context_length = 1024) {
  TinyModelOptions o;
  o.context_length = context_length;
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

float Scale(const std::vector<float>& v) {
  float scale = 0;
  for (float x : v) scale = std::max(scale, std::fabs(x));
  return scale;
}

void ExpectClose(const std::vector<float>& gpu, const std::vector<float>& cpu, const char* what) {
  ASSERT_EQ(gpu.size(), cpu.size()) << what;
  const float tol = 0.03f * Scale(cpu) + 1e-3f;
  for (size_t i = 0; i < cpu.size(); ++i) ASSERT_NEAR(gpu[i], cpu[i], tol) << what << " " << i;
}

void ExpectSameArgmax(const std::vector<float>& gpu, const std::vector<float>& cpu,
                      const char* what) {
  const float tol = 0.03f * Scale(cpu) + 1e-3f;
  std::vector<float> sorted = cpu;
  std::sort(sorted.rbegin(), sorted.rend());
  if (sorted[0] - sorted[1] > 2 * tol) {
    EXPECT_EQ(std::max_element(gpu.begin(), gpu.end()) - gpu.begin(),
              std::max_element(cpu.begin(), cpu.end()) - cpu.begin())
        << what;
  }
}

void ExpectLogitsClose(const std::vector<float>& gpu, const std::vector<float>& cpu,
                       const char* what) {
  ExpectClose(gpu, cpu, what);
  ExpectSameArgmax(gpu, cpu, what);
}

std::vector<int32_t> Prompt(int n, int mul, int add) {
  std::vector<int32_t> p;
  for (int i = 0; i < n; ++i) p.push_back(3 + (i * mul + add) % 256);
  return p;
}

// A compressed-looking copy of `full`: each head drops a different share (ragged), some entries
// carry merge votes (log 3) or near-dropped biases (-30).
cache::KvCache RaggedVoted(const cache::KvCache& full, int shift) {
  cache::KvCache out = full;
  const int d = full.shape.head_dim;
  for (auto& layer : out.layers) {
    for (size_t h = 0; h < layer.heads.size(); ++h) {
      cache::HeadSegment kept;
      const cache::HeadSegment& seg = layer.heads[h];
      for (size_t i = 0; i < seg.size(); ++i) {
        if ((i + shift) % (h + 2) == 1) continue;
        kept.Append(seg.positions[i], i % 3 == 0 ? std::log(3.0f) : (i % 7 == 0 ? -30.0f : 0.0f),
                    seg.key(i, d), seg.value(i, d), d);
      }
      layer.heads[h] = kept;
    }
  }
  return out;
}

// The device side for one host model: weights, a runner and caches.
struct Device {
  std::shared_ptr<const GpuModel> model;
  std::unique_ptr<GpuRunner> runner;

  static Device Open(const Model& host) {
    Device d;
    absl::StatusOr<std::shared_ptr<const GpuModel>> m = GpuModel::Upload(host, {});
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) return d;
    d.model = *m;
    absl::StatusOr<std::unique_ptr<GpuRunner>> r = GpuRunner::Create(d.model);
    EXPECT_TRUE(r.ok()) << r.status();
    if (r.ok()) d.runner = *std::move(r);
    return d;
  }
  std::unique_ptr<GpuKvCache> Cache(int64_t capacity = 0) const {
    absl::StatusOr<std::unique_ptr<GpuKvCache>> c = GpuKvCache::Create(*model, capacity);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }
};

// Each test gets the case's tiny model, a CPU runner and the device side of the same model.
class GpuRunnerParity : public kc::testing::GpuParamTest<RunnerCase> {
 protected:
  void SetUp() override {
    kc::testing::GpuParamTest<RunnerCase>::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    model = TinyModel(GetParam());
    ASSERT_NE(model, nullptr);
    cpu = std::make_unique<Runner>(*model, 1);
    gpu = Device::Open(*model);
    ASSERT_NE(gpu.runner, nullptr);
  }
  std::unique_ptr<Model> model;
  std::unique_ptr<Runner> cpu;
  Device gpu;
};

TEST_P(GpuRunnerParity, PrefillAndDecodeMatchTheCpuRunner) {
  std::unique_ptr<GpuKvCache> gcache = gpu.Cache();
  ASSERT_NE(gcache, nullptr);
  const std::vector<int32_t> prompt = Prompt(45, 37, 11);
  cache::KvCache cache;
  absl::StatusOr<std::vector<float>> want = cpu->Prefill(prompt, {}, &cache);
  absl::StatusOr<std::vector<float>> got = gpu.runner->Prefill(prompt, {}, gcache.get());
  ASSERT_TRUE(want.ok() && got.ok()) << want.status() << got.status();
  ExpectLogitsClose(*got, *want, "prefill");
  EXPECT_EQ(gcache->original_length(), 45);
  for (int g = 0; g < 4; ++g) {
    const int32_t token = 3 + 17 * g;
    want = cpu->Decode(token, DecodePosition(cache, g), &cache);
    got = gpu.runner->Decode(token, gcache->original_length() + g, gcache.get());
    ASSERT_TRUE(want.ok() && got.ok()) << want.status() << got.status();
    ExpectLogitsClose(*got, *want, "decode");
  }
  EXPECT_EQ(gcache->entries(0, 0), static_cast<int64_t>(cache.layers[0].heads[0].size()));
}

TEST_P(GpuRunnerParity, DecodesOverAnInstalledRaggedVotedCache) {
  cache::KvCache full;
  ASSERT_TRUE(cpu->Prefill(Prompt(60, 53, 7), {}, &full).ok());
  cache::KvCache cache = RaggedVoted(full, 0);
  std::unique_ptr<GpuKvCache> gcache = gpu.Cache();
  ASSERT_NE(gcache, nullptr);
  ASSERT_TRUE(gcache->Install(cache).ok());
  for (int g = 0; g < 3; ++g) {
    const int32_t token = 5 + 29 * g;
    absl::StatusOr<std::vector<float>> want = cpu->Decode(token, DecodePosition(cache, g), &cache);
    absl::StatusOr<std::vector<float>> got =
        gpu.runner->Decode(token, gcache->original_length() + g, gcache.get());
    ASSERT_TRUE(want.ok() && got.ok()) << want.status() << got.status();
    ExpectLogitsClose(*got, *want, "decode over installed cache");
  }
}

// What one hook call saw, copied to the host.
struct SeenLayer {
  int layer = 0;
  int64_t n_tokens = 0, window = 0;
  int32_t first_position = 0;
  std::vector<float> keys, values, queries, input;
};

SeenLayer Copy(const PrefillLayer& pl, const ModelConfig& c) {
  const int64_t kv = int64_t{c.n_kv_heads} * c.head_dim, q = int64_t{c.n_heads} * c.head_dim;
  return {pl.layer,
          pl.n_tokens,
          pl.window,
          pl.first_position,
          std::vector<float>(pl.keys, pl.keys + pl.n_tokens * kv),
          std::vector<float>(pl.values, pl.values + pl.n_tokens * kv),
          std::vector<float>(pl.window_queries, pl.window_queries + pl.window * q),
          std::vector<float>(pl.attn_input, pl.attn_input + pl.n_tokens * c.hidden)};
}

absl::StatusOr<SeenLayer> CopyFromDevice(const GpuPrefillLayer& pl, const ModelConfig& c) {
  const int64_t kv = int64_t{c.n_kv_heads} * c.head_dim, q = int64_t{c.n_heads} * c.head_dim;
  SeenLayer s{pl.layer, pl.n_tokens, pl.window, pl.first_position};
  s.keys.resize(pl.n_tokens * kv);
  s.values.resize(pl.n_tokens * kv);
  s.queries.resize(pl.window * q);
  s.input.resize(pl.n_tokens * c.hidden);
  // The runner's stream computed these; wait for it before copying on the default stream.
  KVWIRE_RETURN_IF_ERROR(pl.ctx->Synchronize());
  const kc::CopyOp ops[] = {{s.keys.data(), pl.keys, sizeof(float) * s.keys.size()},
                            {s.values.data(), pl.values, sizeof(float) * s.values.size()},
                            {s.queries.data(), pl.window_queries, sizeof(float) * s.queries.size()},
                            {s.input.data(), pl.attn_input, sizeof(float) * s.input.size()}};
  KVWIRE_RETURN_IF_ERROR(
      kc::CopyAndWait(pl.ctx->properties().ordinal, kc::CopyKind::kDeviceToHost, ops));
  return s;
}

TEST_P(GpuRunnerParity, HooksSeeTheCpuRunnersTensors) {
  const ModelConfig& c = model->config();
  std::unique_ptr<GpuKvCache> gcache = gpu.Cache();
  ASSERT_NE(gcache, nullptr);
  const std::vector<int32_t> prompt = Prompt(37, 41, 5);
  std::vector<SeenLayer> want, on_device, on_host;
  ForwardOptions cpu_options{.window = 5,
                             .on_layer =
                                 [&](const PrefillLayer& pl) {
                                   want.push_back(Copy(pl, c));
                                   return absl::OkStatus();
                                 },
                             .all_logits = true};
  GpuForwardOptions gpu_options;
  gpu_options.window = 5;
  gpu_options.all_logits = true;
  gpu_options.on_layer_device = [&](const GpuPrefillLayer& pl) -> absl::Status {
    KVWIRE_ASSIGN_OR_RETURN(SeenLayer s, CopyFromDevice(pl, c));
    on_device.push_back(std::move(s));
    return absl::OkStatus();
  };
  gpu_options.on_layer = [&](const PrefillLayer& pl) {
    on_host.push_back(Copy(pl, c));
    return absl::OkStatus();
  };
  cache::KvCache cache;
  absl::StatusOr<std::vector<float>> cpu_logits = cpu->Prefill(prompt, cpu_options, &cache);
  absl::StatusOr<std::vector<float>> gpu_logits =
      gpu.runner->Prefill(prompt, gpu_options, gcache.get());
  ASSERT_TRUE(cpu_logits.ok() && gpu_logits.ok()) << cpu_logits.status() << gpu_logits.status();
  ASSERT_EQ(gpu_logits->size(), prompt.size() * c.vocab_size);
  ExpectClose(*gpu_logits, *cpu_logits, "all logits");
  ASSERT_EQ(want.size(), static_cast<size_t>(c.n_layers));
  ASSERT_EQ(on_device.size(), want.size());
  ASSERT_EQ(on_host.size(), want.size());
  for (size_t l = 0; l < want.size(); ++l) {
    for (const SeenLayer* got : {&on_device[l], &on_host[l]}) {
      EXPECT_EQ(got->layer, want[l].layer);
      EXPECT_EQ(got->n_tokens, want[l].n_tokens);
      EXPECT_EQ(got->window, want[l].window);
      EXPECT_EQ(got->first_position, want[l].first_position);
      ExpectClose(got->keys, want[l].keys, "keys");
      ExpectClose(got->values, want[l].values, "values");
      ExpectClose(got->queries, want[l].queries, "window queries");
      ExpectClose(got->input, want[l].input, "attention input");
    }
    // Both hooks see the same device tensors.
    EXPECT_EQ(on_device[l].keys, on_host[l].keys);
    EXPECT_EQ(on_device[l].queries, on_host[l].queries);
  }
}

TEST_P(GpuRunnerParity, DecodeBatchMatchesOneDecodePerCache) {
  // Three sequences of different lengths, compressed differently.
  std::vector<cache::KvCache> host(3);
  for (int i = 0; i < 3; ++i) {
    cache::KvCache full;
    ASSERT_TRUE(cpu->Prefill(Prompt(20 + 17 * i, 31 + 2 * i, i), {}, &full).ok());
    host[i] = RaggedVoted(full, i);
  }
  std::vector<std::unique_ptr<GpuKvCache>> batched, single;
  for (int i = 0; i < 3; ++i) {
    batched.push_back(gpu.Cache(128));
    single.push_back(gpu.Cache(128));
    ASSERT_NE(batched.back(), nullptr);
    ASSERT_NE(single.back(), nullptr);
    ASSERT_TRUE(batched[i]->Install(host[i]).ok());
    ASSERT_TRUE(single[i]->Install(host[i]).ok());
  }
  for (int g = 0; g < 3; ++g) {
    std::vector<GpuDecodeStep> steps;
    std::vector<DecodeStep> cpu_steps;
    for (int i = 0; i < 3; ++i) {
      const int32_t token = 7 + 13 * g + 50 * i;
      const int32_t position = DecodePosition(host[i], g);
      steps.push_back({token, position, batched[i].get()});
      cpu_steps.push_back({token, position, &host[i], nullptr});
    }
    absl::StatusOr<std::vector<std::vector<float>>> got = gpu.runner->DecodeBatch(steps);
    absl::StatusOr<std::vector<std::vector<float>>> want = cpu->DecodeBatch(cpu_steps);
    ASSERT_TRUE(got.ok() && want.ok()) << got.status() << want.status();
    ASSERT_EQ(got->size(), 3u);
    for (int i = 0; i < 3; ++i) {
      absl::StatusOr<std::vector<float>> one =
          gpu.runner->Decode(steps[i].token, steps[i].position, single[i].get());
      ASSERT_TRUE(one.ok()) << one.status();
      ExpectLogitsClose((*got)[i], (*want)[i], "batched vs cpu");
      const float tol = 1e-3f * Scale(*one) + 1e-4f;
      for (size_t v = 0; v < one->size(); ++v) {
        ASSERT_NEAR((*got)[i][v], (*one)[v], tol) << "sequence " << i << " logit " << v;
      }
    }
  }
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<cache::KvCache> a = batched[i]->Download();
    absl::StatusOr<cache::KvCache> b = single[i]->Download();
    ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
    for (int l = 0; l < a->shape.n_layers; ++l) {
      for (int h = 0; h < a->shape.n_kv_heads; ++h) {
        const cache::HeadSegment& sa = a->layers[l].heads[h];
        const cache::HeadSegment& sb = b->layers[l].heads[h];
        const cache::HeadSegment& sc = host[i].layers[l].heads[h];
        EXPECT_EQ(sa.positions, sc.positions);
        EXPECT_EQ(sa.log_votes, sc.log_votes);
        EXPECT_EQ(sb.positions, sc.positions);
        ExpectClose(sa.keys, sc.keys, "appended keys");
        ExpectClose(sa.values, sb.values, "appended values");
      }
    }
  }
}

const RunnerCase kRunnerCases[] = {
    kLlamaQ8,
    {"llama_q4_1", "llama", kernels::QuantType::kQ4_1},
    {"qwen2_biases_f16", "qwen2", kernels::QuantType::kF16},
};

INSTANTIATE_TEST_SUITE_P(TinyModels, GpuRunnerParity, ::testing::ValuesIn(kRunnerCases),
                         [](const auto& info) { return std::string(info.param.name); });

class GpuRunnerTest : public kc::testing::GpuTest {
 protected:
  void SetUp() override {
    kc::testing::GpuTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    model_ = TinyModel(kLlamaQ8);
    ASSERT_NE(model_, nullptr);
    gpu_ = Device::Open(*model_);
    ASSERT_NE(gpu_.runner, nullptr);
  }
  // The CPU's full cache of a prompt, compressed-looking.
  cache::KvCache HostCache(int n) {
    Runner cpu(*model_, 1);
    cache::KvCache full;
    EXPECT_TRUE(cpu.Prefill(Prompt(n, 29, 3), {}, &full).ok());
    return RaggedVoted(full, 1);
  }
  std::unique_ptr<Model> model_;
  Device gpu_;
};

TEST_F(GpuRunnerTest, InstallDownloadRoundTripsBitForBit) {
  cache::KvCache host = HostCache(33);
  host.original_length = 40;  // e.g. a prompt whose tail was dropped
  std::unique_ptr<GpuKvCache> c = gpu_.Cache(64);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->capacity(), 64);
  EXPECT_GT(c->device_bytes(), 0u);
  ASSERT_TRUE(c->Install(host).ok());
  EXPECT_EQ(c->original_length(), 40);
  EXPECT_EQ(c->entries(1, 1), static_cast<int64_t>(host.layers[1].heads[1].size()));
  absl::StatusOr<cache::KvCache> back = c->Download();
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(*back == host);
  c->set_original_length(7);
  EXPECT_EQ(c->original_length(), 7);
}

TEST_F(GpuRunnerTest, InstallRejectsWrongShapeAndOverCapacityLeavingTheCacheAlone) {
  // HostCache keeps 1/2 of head 0's and 2/3 of head 1's entries: 26 of 40 in head 1.
  cache::KvCache host = HostCache(40);
  std::unique_ptr<GpuKvCache> c = gpu_.Cache(24);
  ASSERT_NE(c, nullptr);
  cache::KvCache small = HostCache(10);
  ASSERT_TRUE(c->Install(small).ok());
  cache::KvCache wrong = small;
  wrong.shape.head_dim *= 2;
  EXPECT_EQ(c->Install(wrong).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c->Install(host).code(), absl::StatusCode::kResourceExhausted);  // 26 > 24
  absl::StatusOr<cache::KvCache> back = c->Download();
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(*back == small);
}

// ReplaceHead swaps one head (what a --gpu decode node uploads after merging its host mirror):
// that head changes, every other stays, and bad arguments change nothing.
TEST_F(GpuRunnerTest, ReplaceHeadSwapsOneHeadAndRejectsBadArguments) {
  cache::KvCache host = HostCache(20);
  std::unique_ptr<GpuKvCache> c = gpu_.Cache(24);
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->Install(host).ok());
  cache::KvCache want = HostCache(12);
  want.original_length = host.original_length;
  cache::HeadSegment seg = want.layers[1].heads[0];
  seg.log_votes[0] = 1.25f;
  want.layers[1].heads[0] = seg;
  for (int l = 0; l < host.shape.n_layers; ++l) {
    for (int h = 0; h < host.shape.n_kv_heads; ++h) {
      if (l != 1 || h != 0) want.layers[l].heads[h] = host.layers[l].heads[h];
    }
  }
  ASSERT_TRUE(c->ReplaceHead(1, 0, seg).ok());
  EXPECT_EQ(c->entries(1, 0), static_cast<int64_t>(seg.size()));
  absl::StatusOr<cache::KvCache> back = c->Download();
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(*back == want);

  EXPECT_EQ(c->ReplaceHead(host.shape.n_layers, 0, seg).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c->ReplaceHead(0, -1, seg).code(), absl::StatusCode::kInvalidArgument);
  cache::HeadSegment torn = seg;
  torn.keys.pop_back();
  EXPECT_EQ(c->ReplaceHead(0, 0, torn).code(), absl::StatusCode::kInvalidArgument);
  cache::HeadSegment big = HostCache(60).layers[0].heads[0];  // 30 of 60 kept: 30 > 24
  EXPECT_EQ(c->ReplaceHead(0, 0, big).code(), absl::StatusCode::kResourceExhausted);
  back = c->Download();
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(*back == want);
}

TEST_F(GpuRunnerTest, RejectsBadTokensPositionsAndForeignCaches) {
  const ModelConfig& cfg = model_->config();
  std::unique_ptr<GpuKvCache> c = gpu_.Cache(16);
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(gpu_.runner->Prefill(Prompt(4, 3, 1), {}, c.get()).ok());
  EXPECT_EQ(gpu_.runner->Decode(cfg.vocab_size, 4, c.get()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu_.runner->Decode(-1, 4, c.get()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu_.runner->Decode(5, cfg.context_length, c.get()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu_.runner->Decode(5, 4, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu_.runner->Prefill({}, {}, c.get()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c->entries(0, 0), 4);  // a rejected Prefill keeps the old contents
  // A cache of another upload of the same weights is not this model's; rejecting it leaves that
  // cache's contents (filled by its own runner) alone.
  Device other = Device::Open(*model_);
  ASSERT_NE(other.runner, nullptr);
  std::unique_ptr<GpuKvCache> foreign = other.Cache(16);
  ASSERT_NE(foreign, nullptr);
  ASSERT_TRUE(other.runner->Prefill(Prompt(3, 3, 1), {}, foreign.get()).ok());
  EXPECT_EQ(gpu_.runner->Prefill(Prompt(4, 3, 1), {}, foreign.get()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu_.runner->Decode(5, 3, foreign.get()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(foreign->entries(0, 0), 3);
  EXPECT_EQ(foreign->original_length(), 3);
  EXPECT_EQ(c->entries(0, 0), 4);
}

TEST_F(GpuRunnerTest, CapacityIsEnforcedBeforeAnythingChanges) {
  std::unique_ptr<GpuKvCache> c = gpu_.Cache(8);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(gpu_.runner->Prefill(Prompt(9, 5, 2), {}, c.get()).status().code(),
            absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(gpu_.runner->Prefill(Prompt(8, 5, 2), {}, c.get()).ok());
  EXPECT_EQ(gpu_.runner->Decode(3, 8, c.get()).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(c->entries(0, 0), 8);
  EXPECT_EQ(c->entries(model_->config().n_layers - 1, 1), 8);
}

TEST_F(GpuRunnerTest, DecodeBatchValidatesEveryStepFirst) {
  std::unique_ptr<GpuKvCache> a = gpu_.Cache(32), b = gpu_.Cache(32);
  ASSERT_TRUE(a != nullptr && b != nullptr);
  ASSERT_TRUE(gpu_.runner->Prefill(Prompt(6, 7, 1), {}, a.get()).ok());
  ASSERT_TRUE(gpu_.runner->Prefill(Prompt(9, 7, 2), {}, b.get()).ok());
  const GpuDecodeStep bad_token[] = {{5, 6, a.get()}, {-3, 9, b.get()}};
  EXPECT_EQ(gpu_.runner->DecodeBatch(bad_token).status().code(),
            absl::StatusCode::kInvalidArgument);
  const GpuDecodeStep shared[] = {{5, 6, a.get()}, {6, 7, a.get()}};
  EXPECT_EQ(gpu_.runner->DecodeBatch(shared).status().code(), absl::StatusCode::kInvalidArgument);
  const GpuDecodeStep no_cache[] = {{5, 6, a.get()}, {6, 9, nullptr}};
  EXPECT_EQ(gpu_.runner->DecodeBatch(no_cache).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a->entries(0, 0), 6);
  EXPECT_EQ(b->entries(0, 0), 9);
  absl::StatusOr<std::vector<std::vector<float>>> none = gpu_.runner->DecodeBatch({});
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_TRUE(none->empty());
}

// The error comes from layer 0 of the tiny model's 2: a pass that ran on would call the hook again
// (stopping at the last layer could not tell an aborted pass from a finished one).
TEST_F(GpuRunnerTest, AHooksErrorAbortsThePassAsIs) {
  ASSERT_GE(model_->config().n_layers, 2);
  std::unique_ptr<GpuKvCache> c = gpu_.Cache(32);
  ASSERT_NE(c, nullptr);
  int calls = 0;
  GpuForwardOptions o;
  o.on_layer_device = [&](const GpuPrefillLayer& pl) {
    ++calls;
    return pl.layer == 0 ? absl::CancelledError("stop at layer 0") : absl::OkStatus();
  };
  const absl::Status s = gpu_.runner->Prefill(Prompt(5, 3, 3), o, c.get()).status();
  EXPECT_EQ(s, absl::CancelledError("stop at layer 0"));
  EXPECT_EQ(calls, 1);
  int host_calls = 0;
  GpuForwardOptions host;
  host.on_layer = [&](const PrefillLayer&) {
    ++host_calls;
    return absl::DataLossError("host hook");
  };
  EXPECT_EQ(gpu_.runner->Prefill(Prompt(5, 3, 3), host, c.get()).status(),
            absl::DataLossError("host hook"));
  EXPECT_EQ(host_calls, 1);
}

TEST_F(GpuRunnerTest, RandomModelDecodesConsistently) {
  ModelConfig cfg = model_->config();
  cfg.tied_output = false;
  absl::StatusOr<std::shared_ptr<const GpuModel>> m = GpuModel::Random(cfg, 42, {});
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_GT((*m)->weight_bytes(), sizeof(uint16_t) * 2 * cfg.vocab_size * cfg.hidden);
  absl::StatusOr<std::unique_ptr<GpuRunner>> r = GpuRunner::Create(*m);
  ASSERT_TRUE(r.ok()) << r.status();
  absl::StatusOr<std::unique_ptr<GpuKvCache>> a = GpuKvCache::Create(**m, 40);
  absl::StatusOr<std::unique_ptr<GpuKvCache>> b = GpuKvCache::Create(**m, 40);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*r)->Prefill(Prompt(12, 11, 4), {}, a->get()).ok());
  ASSERT_TRUE((*r)->Prefill(Prompt(12, 11, 4), {}, b->get()).ok());
  absl::StatusOr<std::vector<float>> one = (*r)->Decode(9, 12, a->get());
  const GpuDecodeStep step[] = {{9, 12, b->get()}};
  absl::StatusOr<std::vector<std::vector<float>>> batch = (*r)->DecodeBatch(step);
  ASSERT_TRUE(one.ok() && batch.ok()) << one.status() << batch.status();
  for (float v : *one) ASSERT_TRUE(std::isfinite(v));
  EXPECT_GT(Scale(*one), 0.0f);
  // The same device path over identical caches: equal up to cuBLAS's choice of algorithm.
  const float tol = 1e-4f * Scale(*one);
  for (size_t v = 0; v < one->size(); ++v) ASSERT_NEAR((*batch)[0][v], (*one)[v], tol) << v;
}

// Past 4096 tokens the runner splits the prefill's attention into chunks of queries.
TEST_F(GpuRunnerTest, LongPrefillMatchesTheCpuAcrossAttentionChunks) {
  std::unique_ptr<Model> model = TinyModel(kLlamaQ8, 4608);
  ASSERT_NE(model, nullptr);
  Runner cpu(*model, 4);
  Device gpu = Device::Open(*model);
  ASSERT_NE(gpu.runner, nullptr);
  std::unique_ptr<GpuKvCache> gcache = gpu.Cache(4500);
  ASSERT_NE(gcache, nullptr);
  const std::vector<int32_t> prompt = Prompt(4400, 97, 13);
  cache::KvCache cache;
  absl::StatusOr<std::vector<float>> want = cpu.Prefill(prompt, {}, &cache);
  absl::StatusOr<std::vector<float>> got = gpu.runner->Prefill(prompt, {}, gcache.get());
  ASSERT_TRUE(want.ok() && got.ok()) << want.status() << got.status();
  ExpectLogitsClose(*got, *want, "long prefill");
  absl::StatusOr<cache::KvCache> back = gcache->Download();
  ASSERT_TRUE(back.ok()) << back.status();
  const cache::HeadSegment& seg = back->layers[1].heads[1];
  ASSERT_EQ(seg.size(), prompt.size());
  EXPECT_EQ(seg.positions, cache.layers[1].heads[1].positions);
  ExpectClose(seg.values, cache.layers[1].heads[1].values, "long prefill values");
}

// Needs no device: the config is checked before the device is touched.
TEST(GpuModelConfig, RandomRejectsAnInconsistentConfig) {
  ModelConfig cfg;
  cfg.n_layers = 2;
  cfg.n_heads = 6;
  cfg.n_kv_heads = 4;  // 6 % 4 != 0
  cfg.head_dim = 64;
  cfg.hidden = 384;
  cfg.ffn_hidden = 512;
  cfg.vocab_size = 300;
  cfg.context_length = 128;
  EXPECT_EQ(GpuModel::Random(cfg, 1, {}).status().code(), absl::StatusCode::kInvalidArgument);
  cfg.n_kv_heads = 2;
  cfg.head_dim = 0;
  EXPECT_EQ(GpuModel::Random(cfg, 1, {}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvwire::runtime
